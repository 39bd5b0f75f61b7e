//! gRPC through the proxy with tonic on both ends: a tonic server
//! upstream and a tonic client, over HTTP/2 prior knowledge. The messages
//! are raw bytes (a codec that copies them), so no protobuf code is
//! generated; the framing, headers and trailers are tonic's own.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use common::*;
use proxy::PolicyHandle;
use proxy::http::metrics::{ProtocolLabel, VerdictLabel};

use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::{Code, Status};

/// Messages are their bytes.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The upstream gRPC server: every method of `demo.Greeter` answers
/// "<method> got <request>", and records that it was called.
#[derive(Clone, Default)]
struct Greeter {
    calls: Arc<Mutex<Vec<String>>>,
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "demo.Greeter";
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = req.uri().path().to_string();
        self.calls.lock().expect("lock").push(method.clone());
        Box::pin(async move {
            let answer = Answer { method };
            Ok(tonic::server::Grpc::new(BytesCodec)
                .unary(answer, req)
                .await)
        })
    }
}

/// One unary call's answer.
struct Answer {
    method: String,
}

impl Service<tonic::Request<Bytes>> for Answer {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFut<Result<tonic::Response<Bytes>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let mut out = format!("{} got ", self.method).into_bytes();
        out.extend_from_slice(req.get_ref());
        Box::pin(async move { Ok(tonic::Response::new(Bytes::from(out))) })
    }
}

/// A tonic server on a loopback port.
async fn spawn_greeter() -> (SocketAddr, Greeter) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let greeter = Greeter::default();
    let svc = greeter.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(svc, tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("tonic server");
    });
    (addr, greeter)
}

const GRPC_RULES: &str = "        - {method: POST, path: /demo.Greeter/SayHello}
        - {method: POST, path: '/demo.Greeter/Admin.*', headers: ['X-Role: admin']}
";

async fn call(
    client: &mut tonic::client::Grpc<tonic::transport::Channel>,
    method: &'static str,
    message: &'static [u8],
    role: Option<&'static str>,
) -> Result<Bytes, Status> {
    client.ready().await.expect("channel ready");
    let mut req = tonic::Request::new(Bytes::from_static(message));
    if let Some(role) = role {
        req.metadata_mut()
            .insert("x-role", role.parse().expect("metadata"));
    }
    client
        .unary(
            req,
            http::uri::PathAndQuery::from_static(method),
            BytesCodec,
        )
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_calls_are_judged_per_method_on_one_channel() {
    let (upstream, greeter) = spawn_greeter().await;
    let handle = PolicyHandle::new(policy(&server_policy(GRPC_RULES)));
    let (proxy, addr) = proxy_in_front_of(handle, upstream).await;

    // One channel (one HTTP/2 connection): each call is judged on its own.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect through the proxy");
    let mut client = tonic::client::Grpc::new(channel);

    let hello = call(&mut client, "/demo.Greeter/SayHello", b"world", None).await;
    assert_eq!(
        hello.expect("allowed call"),
        Bytes::from_static(b"/demo.Greeter/SayHello got world")
    );

    let denied = call(&mut client, "/demo.Greeter/SayGoodbye", b"x", None)
        .await
        .expect_err("a method no rule allows is denied");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let no_role = call(&mut client, "/demo.Greeter/AdminReset", b"x", None)
        .await
        .expect_err("the admin method needs the header");
    assert_eq!(no_role.code(), Code::PermissionDenied, "{no_role:?}");
    let wrong_role = call(&mut client, "/demo.Greeter/AdminReset", b"x", Some("user"))
        .await
        .expect_err("the admin method needs the right value");
    assert_eq!(wrong_role.code(), Code::PermissionDenied);
    let admin = call(
        &mut client,
        "/demo.Greeter/AdminReset",
        b"now",
        Some("admin"),
    )
    .await;
    assert_eq!(
        admin.expect("admin call"),
        Bytes::from_static(b"/demo.Greeter/AdminReset got now")
    );

    // The channel is still good after the denials.
    let again = call(&mut client, "/demo.Greeter/SayHello", b"again", None).await;
    assert_eq!(
        again.expect("allowed after denials"),
        Bytes::from_static(b"/demo.Greeter/SayHello got again")
    );

    // Denied calls never reached the server.
    assert_eq!(
        *greeter.calls.lock().expect("lock"),
        [
            "/demo.Greeter/SayHello",
            "/demo.Greeter/AdminReset",
            "/demo.Greeter/SayHello"
        ]
    );
    let m = proxy.metrics();
    assert_eq!(m.requests(ProtocolLabel::Grpc, VerdictLabel::Allowed), 3);
    assert_eq!(m.requests(ProtocolLabel::Grpc, VerdictLabel::Denied), 3);
}
