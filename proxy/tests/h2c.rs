//! h2c smuggling (issue 13, finding 2): an `Upgrade` the proxy does not
//! judge must never reach an upstream that would honour it.
//!
//! The upstream here honours `Upgrade: h2c` the way an h2c-capable server
//! does: it scans *every* `Upgrade` header of an HTTP/1.1 request head, and
//! on `h2c` answers `101 Switching Protocols` and serves HTTP/2 (hyper's
//! HTTP/2 server) on the rest of the connection. A client that gets the
//! 101 through the proxy can then send any request on the spliced
//! connection, never judged. Requests it answers over HTTP/2 are recorded.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the h2c-honouring upstream saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Every HTTP/1.1 request head, raw.
    heads: Arc<Mutex<Vec<String>>>,
    /// Paths it served over HTTP/2 after an upgrade.
    h2_paths: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
    fn h2_paths(&self) -> Vec<String> {
        self.h2_paths.lock().expect("lock").clone()
    }
}

/// An upstream that honours h2c upgrades (any `Upgrade` header listing
/// `h2c`) and WebSocket upgrades (echo); `/public/switch` answers 101 to
/// h2c whatever was asked (a server that switches on its own).
async fn spawn_h2c_upstream() -> (std::net::SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_one(stream, s.clone()));
        }
    });
    (addr, seen)
}

async fn serve_one(mut stream: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 2048];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    seen.heads.lock().expect("lock").push(head.clone());
    let upgrades: Vec<String> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("upgrade"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let rest = Bytes::copy_from_slice(&buf[head_end..]);
    if upgrades.iter().any(|u| u == "h2c") || path == "/public/switch" {
        let _ = stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            )
            .await;
        let io = proxy::http::detect::Rewind::new(rest, stream);
        let paths = seen.h2_paths.clone();
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let paths = paths.clone();
            async move {
                paths
                    .lock()
                    .expect("lock")
                    .push(req.uri().path().to_string());
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "served over h2: {}",
                    req.uri().path()
                )))))
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await;
    } else if upgrades == ["websocket"] {
        let _ = stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await;
        let mut chunk = [0u8; 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 || stream.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    } else {
        let body = format!("plain: {path}");
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    }
}

/// Sends `head` through the proxy; if the answer is a 101, speaks HTTP/2
/// on the connection and asks for `/admin`. Returns the status of the
/// first answer and, after a 101, what `/admin` returned over HTTP/2.
async fn attack(proxy: std::net::SocketAddr, head: &str) -> (u16, Option<String>) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to proxy");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return (0, None),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        return (status, None);
    }
    let io = proxy::http::detect::Rewind::new(Bytes::copy_from_slice(&buf[end..]), s);
    let Ok(Ok((mut sender, conn))) = tokio::time::timeout(
        Duration::from_secs(3),
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)),
    )
    .await
    else {
        return (status, Some("no HTTP/2 after the 101".into()));
    };
    tokio::spawn(conn);
    let req = Request::get("http://svc/admin")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    let got = tokio::time::timeout(Duration::from_secs(3), sender.send_request(req)).await;
    match got {
        Ok(Ok(resp)) => (status, Some(read(resp).await.body)),
        _ => (status, Some("HTTP/2 request failed".into())),
    }
}

const SMUGGLES: &[(&str, &str)] = &[
    (
        "websocket then a second Upgrade: h2c",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
    ),
    (
        "h2c then websocket",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n",
    ),
    (
        "one Upgrade listing websocket and h2c",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
    ),
    (
        "Connection: upgrade in a second Connection header",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive\r\nUpgrade: websocket\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    ),
    (
        "an unknown protocol",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n",
    ),
    (
        "h2c with a version suffix next to websocket",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: H2C \r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upgrade_header_cannot_smuggle_h2c() {
    let (up, seen) = spawn_h2c_upstream().await;
    let handle = proxy::PolicyHandle::new(policy(&server_policy(RULES)));
    let (proxy, addr) = proxy_in_front_of(handle, up).await;
    let mut failures = Vec::new();
    for (name, head) in SMUGGLES {
        let (status, admin) = attack(addr, head).await;
        if status != 403 || admin.is_some() {
            failures.push(format!(
                "{name}: got {status}, /admin over the upgrade: {admin:?}"
            ));
        }
    }
    let h2c_heads: Vec<String> = seen
        .heads()
        .into_iter()
        .filter(|h| h.to_ascii_lowercase().contains("h2c"))
        .collect();
    if !h2c_heads.is_empty() {
        failures.push(format!("the upstream saw h2c upgrades: {h2c_heads:?}"));
    }
    if !seen.h2_paths().is_empty() {
        failures.push(format!(
            "served over the smuggled HTTP/2: {:?}",
            seen.h2_paths()
        ));
    }
    let refused = proxy
        .render_metrics()
        .lines()
        .find(|l| l.starts_with("portcullis_proxy_refused_requests_total{reason=\"Upgrade\"}"))
        .map(str::to_string);
    if refused.as_deref()
        != Some(&format!(
            "portcullis_proxy_refused_requests_total{{reason=\"Upgrade\"}} {}",
            SMUGGLES.len()
        ))
    {
        failures.push(format!("refused upgrades not counted: {refused:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controls_still_work_against_the_h2c_upstream() {
    let (up, seen) = spawn_h2c_upstream().await;
    let handle = proxy::PolicyHandle::new(policy(&server_policy(RULES)));
    let (_proxy, addr) = proxy_in_front_of(handle, up).await;
    // A lone h2c upgrade (what `curl --http2` sends) is ignored: forwarded
    // as HTTP/1.1 without its upgrade headers, answered plainly.
    let (status, admin) = attack(
        addr,
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!((status, admin), (200, None));
    // A WebSocket upgrade alone is honoured and spliced.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = vec![0u8; 12];
    s.read_exact(&mut head).await.expect("101");
    assert_eq!(&head, b"HTTP/1.1 101");
    // An upstream that switches to h2c when WebSocket was asked is not
    // spliced: 502.
    let (status, admin) = attack(
        addr,
        "GET /public/switch HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!((status, admin), (502, None));
    assert!(seen.h2_paths().is_empty(), "{:?}", seen.h2_paths());
    assert!(
        seen.heads()
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("h2c")),
        "{:?}",
        seen.heads()
    );
}
