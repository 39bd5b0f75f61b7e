//! Test harness: a policy cluster, a recording upstream (hyper, HTTP/1.1
//! with upgrades or HTTP/2), the proxy on a fixed destination, and clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{FixedDestination, PolicyHandle, Proxy, ProxyConfig, ProxyPolicy, UpstreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: server, labels: {app: server}, ip: 10.0.1.1}
- {namespace: ns1, name: client, labels: {app: client}, ip: 10.0.1.2}
";

/// Ingress of `server` from `client` on TCP/80 with HTTP rules.
pub fn server_policy(http_rules: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: server-in, namespace: ns1}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}]
    toPorts:
    - ports: [{{port: '80', protocol: TCP}}]
      rules:
        http:
{http_rules}"
    )
}

/// The rules most tests use.
pub const RULES: &str = "        - {method: GET, path: '/public/.*'}
        - {method: POST, path: /submit}
        - {method: GET, path: /host-only, host: good.example}
        - {method: GET, path: /needs-header, headers: ['X-Token: secret']}
        - method: GET
          path: /edit
          headerMatches:
          - {name: x-replace, value: new, mismatch: REPLACE}
          - {name: x-add, value: added, mismatch: ADD}
          - {name: x-delete, value: keep, mismatch: DELETE}
          - {name: x-log, value: expected, mismatch: LOG}
        - {method: GET, path: /ws}
        - {method: POST, path: /pkg.Svc/Allowed}
";

pub fn policy(policies: &str) -> ProxyPolicy {
    let set = load_str(policies, "test.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "topo.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The upstream connection's peer (the proxy's source address).
    pub peer: SocketAddr,
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub version: http::Version,
}

#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Received>>>);

impl Recorder {
    pub fn all(&self) -> Vec<Received> {
        self.0.lock().expect("recorder lock").clone()
    }
    pub fn paths(&self) -> Vec<String> {
        self.all().into_iter().map(|r| r.uri).collect()
    }
    pub fn clear(&self) {
        self.0.lock().expect("recorder lock").clear();
    }
}

async fn upstream_handle(
    rec: Recorder,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    rec.0.lock().expect("recorder lock").push(Received {
        peer,
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        version: req.version(),
    });
    if req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().expect("literal"));
        resp.headers_mut()
            .insert("upgrade", "websocket".parse().expect("literal"));
        return Ok(resp);
    }
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if grpc {
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().expect("literal"));
        resp.headers_mut()
            .insert("grpc-status", "0".parse().expect("literal"));
        return Ok(resp);
    }
    let mut text = b"upstream got ".to_vec();
    text.extend_from_slice(&body);
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A recording upstream speaking HTTP/1.1 (with upgrades) or HTTP/2.
pub async fn spawn_upstream(h2: bool) -> (SocketAddr, Recorder) {
    spawn_upstream_on("127.0.0.1:0".parse().expect("literal"), h2).await
}

/// A recording upstream on `addr`.
pub async fn spawn_upstream_on(addr: SocketAddr, h2: bool) -> (SocketAddr, Recorder) {
    let listener = TcpListener::bind(addr).await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let rec = Recorder::default();
    let r = rec.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| upstream_handle(r.clone(), peer, req));
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    (addr, rec)
}

pub struct Harness {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    pub handle: PolicyHandle,
    pub upstream: Recorder,
}

pub const CLIENT: &str = "10.0.1.2:40000";
pub const SERVER: &str = "10.0.1.1:80";

/// The proxy on a loopback port in front of `upstream`, judging as
/// client -> server:80; its address.
pub async fn proxy_in_front_of(handle: PolicyHandle, upstream: SocketAddr) -> (Proxy, SocketAddr) {
    proxy_in_front_of_with(handle, upstream, Duration::from_secs(2)).await
}

/// As [`proxy_in_front_of`] with `header_timeout` (hyper's HTTP/1 header
/// timeout also bounds how long a keep-alive connection may wait idle).
pub async fn proxy_in_front_of_with(
    handle: PolicyHandle,
    upstream: SocketAddr,
    header_timeout: Duration,
) -> (Proxy, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let config = ProxyConfig {
        http_port: 0,
        upstream: UpstreamConfig::plain(),
        detect_timeout: Duration::from_secs(2),
        header_timeout,
        limits: proxy::LimitConfig::from_process(),
        tls_secrets: Default::default(),
    };
    let proxy = Proxy::serve_with_fixed_destination(
        listener,
        handle,
        config,
        FixedDestination {
            client: Some(CLIENT.parse().expect("literal")),
            original_dst: SERVER.parse().expect("literal"),
            upstream,
        },
    )
    .expect("proxy starts");
    (proxy, addr)
}

/// Proxy in front of a fresh upstream, judging as client -> server:80.
pub async fn harness_with(handle: PolicyHandle, h2_upstream: bool) -> Harness {
    let (up, upstream) = spawn_upstream(h2_upstream).await;
    let (proxy, addr) = proxy_in_front_of(handle.clone(), up).await;
    Harness {
        proxy,
        addr,
        handle,
        upstream,
    }
}

pub async fn harness(h2_upstream: bool) -> Harness {
    harness_with(
        PolicyHandle::new(policy(&server_policy(RULES))),
        h2_upstream,
    )
    .await
}

pub type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
pub type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// One HTTP/1.1 client connection (keep-alive).
pub async fn h1_client(addr: SocketAddr) -> (H1, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    (sender, task)
}

/// One HTTP/2 (prior knowledge) client connection.
pub async fn h2_client(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn read(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "svc")
        .body(Full::new(Bytes::new()))
        .expect("valid test request")
}

pub async fn h1_send(sender: &mut H1, req: Request<Full<Bytes>>) -> Got {
    sender.ready().await.expect("connection usable");
    read(sender.send_request(req).await.expect("response")).await
}

pub async fn h2_send(sender: &H2, req: Request<Full<Bytes>>) -> Got {
    let mut s = sender.clone();
    s.ready().await.expect("connection usable");
    read(s.send_request(req).await.expect("response")).await
}

/// Raw exchange: writes `bytes`, reads until EOF, a complete response
/// head, or `wait`.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawOutcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(bytes).await.expect("write request");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    if buf.is_empty() {
        return RawOutcome::Closed;
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    RawOutcome::Status(status, text)
}

#[derive(Debug)]
pub enum RawOutcome {
    Closed,
    Status(u16, String),
}

pub fn empty_body() -> Empty<Bytes> {
    Empty::new()
}
