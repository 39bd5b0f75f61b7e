//! In-process proxy tests: real hyper clients and a real upstream, the
//! proxy on a fixed destination (no namespaces needed).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proxy::PolicyHandle;
use proxy::http::metrics::{ProtocolLabel, VerdictLabel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_header(
    mut req: Request<Full<Bytes>>,
    name: &'static str,
    value: &str,
) -> Request<Full<Bytes>> {
    req.headers_mut()
        .append(name, value.parse().expect("valid header value"));
    req
}

fn with_host(mut req: Request<Full<Bytes>>, host: &str) -> Request<Full<Bytes>> {
    req.headers_mut()
        .insert("host", host.parse().expect("valid host"));
    req
}

fn assert_denied(got: &Got) {
    assert_eq!(got.status, StatusCode::FORBIDDEN, "{got:?}");
    assert_eq!(got.body, "Access denied\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_method_path_host_and_headers_are_judged() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;

    let ok = h1_send(&mut c, get("/public/a?x=1")).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(ok.body, "upstream got ");

    assert_denied(&h1_send(&mut c, get("/admin")).await);
    let post = Request::post("/public/a")
        .header("host", "svc")
        .body(Full::new(Bytes::from_static(b"x")))
        .expect("valid");
    assert_denied(&h1_send(&mut c, post).await);
    let submit = Request::post("/submit")
        .header("host", "svc")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("valid");
    let got = h1_send(&mut c, submit).await;
    assert_eq!(got.body, "upstream got payload", "the body is forwarded");

    assert_denied(&h1_send(&mut c, get("/host-only")).await);
    let good = h1_send(&mut c, with_host(get("/host-only"), "good.example")).await;
    assert_eq!(good.status, StatusCode::OK);

    assert_denied(&h1_send(&mut c, get("/needs-header")).await);
    assert_denied(
        &h1_send(
            &mut c,
            with_header(get("/needs-header"), "x-token", "wrong"),
        )
        .await,
    );
    let tok = h1_send(
        &mut c,
        with_header(get("/needs-header"), "x-token", "secret"),
    )
    .await;
    assert_eq!(tok.status, StatusCode::OK);

    assert_eq!(
        h.upstream.paths(),
        vec!["/public/a?x=1", "/submit", "/host-only", "/needs-header"],
        "only allowed requests reach the upstream, on one keep-alive connection"
    );
    let m = h.proxy.metrics();
    assert_eq!(m.requests(ProtocolLabel::Http1, VerdictLabel::Allowed), 4);
    assert_eq!(m.requests(ProtocolLabel::Http1, VerdictLabel::Denied), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_a_403() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    for _ in 0..3 {
        assert_denied(&h1_send(&mut c, get("/admin")).await);
        let ok = h1_send(&mut c, get("/public/x")).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    assert_eq!(h.upstream.paths().len(), 3);
    assert_eq!(
        h.proxy.metrics().active_connections(),
        1,
        "one client connection throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_judged() {
    let h = harness(false).await;
    let out = raw(
        h.addr,
        b"GET /public/1 HTTP/1.1\r\nHost: svc\r\n\r\nGET /admin HTTP/1.1\r\nHost: svc\r\n\r\nGET /public/2 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let RawOutcome::Status(_, text) = out else {
        panic!("no response");
    };
    // Bodies have no trailing newline: find status lines anywhere.
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, vec!["200", "403", "200"], "{text}");
    assert_eq!(h.upstream.paths(), vec!["/public/1", "/public/2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_a_denied_stream_does_not_disturb_the_others() {
    let h = harness(true).await;
    let c = h2_client(h.addr).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 {
                format!("/public/{i}")
            } else {
                format!("/admin/{i}")
            };
            (i, h2_send(&c, get(&path)).await)
        }));
    }
    for t in tasks {
        let (i, got) = t.await.expect("task");
        if i % 2 == 0 {
            assert_eq!(got.status, StatusCode::OK, "stream {i}: {got:?}");
        } else {
            assert_denied(&got);
        }
    }
    let mut paths = h.upstream.paths();
    paths.sort();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(paths.iter().all(|p| p.contains("/public/")), "{paths:?}");
    assert!(
        h.upstream
            .all()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2),
        "HTTP/2 is forwarded as HTTP/2"
    );
    // The connection is still usable.
    assert_eq!(
        h2_send(&c, get("/public/after")).await.status,
        StatusCode::OK
    );
}

fn grpc(path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://svc{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("valid grpc request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_denials_are_permission_denied() {
    let h = harness(true).await;
    let c = h2_client(h.addr).await;
    let denied = h2_send(&c, grpc("/pkg.Svc/Forbidden")).await;
    assert_eq!(denied.status, StatusCode::OK, "gRPC denials are HTTP 200");
    assert_eq!(
        denied.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );
    assert!(denied.headers.contains_key("grpc-message"));
    assert_eq!(
        denied.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    assert_eq!(denied.body, "", "trailers-only");
    let allowed = h2_send(&c, grpc("/pkg.Svc/Allowed")).await;
    assert_eq!(
        allowed.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let rec = h.upstream.all();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].uri, "http://svc/pkg.Svc/Allowed");
    assert_eq!(
        rec[0].headers.get("te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..]),
        "TE: trailers is kept for gRPC"
    );
    assert_eq!(
        h.proxy
            .metrics()
            .requests(ProtocolLabel::Grpc, VerdictLabel::Denied),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_swap_applies_to_the_next_request_on_the_same_connection() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    assert_denied(&h1_send(&mut c, get("/later")).await);
    h.handle.update(policy(&server_policy(
        "        - {method: GET, path: /later}\n",
    )));
    assert_eq!(h1_send(&mut c, get("/later")).await.status, StatusCode::OK);
    assert_denied(&h1_send(&mut c, get("/public/x")).await);
    // A change that takes the flow's allowance away closes the open
    // connection (issue 13: revocation reaches proxied connections); a new
    // connection is judged, and denied, by the new snapshot.
    h.handle.update(proxy::ProxyPolicy::empty());
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        while c.ready().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked connection stayed open");
    let (mut c, _t) = h1_client(h.addr).await;
    assert_denied(&h1_send(&mut c, get("/later")).await);
    assert_eq!(h.upstream.paths(), vec!["/later"]);

    // HTTP/2 too: a swap that keeps the flow applies to the next stream.
    let h = harness(true).await;
    let c = h2_client(h.addr).await;
    assert_eq!(h2_send(&c, get("/public/x")).await.status, StatusCode::OK);
    h.handle.update(policy(&server_policy(
        "        - {method: GET, path: /later}\n",
    )));
    assert_denied(&h2_send(&c, get("/public/x")).await);
    assert_eq!(h2_send(&c, get("/later")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_actions_edit_the_forwarded_request() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    let mut req = get("/edit");
    for (n, v) in [
        ("x-replace", "old"),
        ("x-delete", "bad"),
        ("x-log", "other"),
        ("x-untouched", "1"),
    ] {
        req.headers_mut()
            .append(n, v.parse().expect("valid header value"));
    }
    let got = h1_send(&mut c, req).await;
    assert_eq!(got.status, StatusCode::OK, "mismatches do not deny");
    let rec = h.upstream.all();
    let headers = &rec[0].headers;
    let values = |n: &str| -> Vec<String> {
        headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    };
    assert_eq!(values("x-replace"), vec!["new"]);
    assert_eq!(values("x-add"), vec!["added"]);
    assert!(values("x-delete").is_empty());
    assert_eq!(values("x-log"), vec!["other"], "LOG only logs");
    assert_eq!(values("x-untouched"), vec!["1"]);

    // Matching values: nothing to do.
    let mut req = get("/edit");
    for (n, v) in [
        ("x-replace", "new"),
        ("x-add", "added"),
        ("x-delete", "keep"),
    ] {
        req.headers_mut()
            .append(n, v.parse().expect("valid header value"));
    }
    h1_send(&mut c, req).await;
    let rec = h.upstream.all();
    assert_eq!(rec[1].headers.get_all("x-add").iter().count(), 1);
    assert_eq!(rec[1].headers.get_all("x-delete").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_upgrade_passes_through() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    let req = Request::get("/ws")
        .header("host", "svc")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    c.ready().await.expect("ready");
    let mut resp = c.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"hello through the tunnel")
        .await
        .expect("write");
    let mut buf = vec![0u8; 24];
    tokio::time::timeout(Duration::from_secs(3), io.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"hello through the tunnel");

    // A denied upgrade is a 403 and nothing is tunnelled.
    let (mut c, _t) = h1_client(h.addr).await;
    let req = Request::get("/other-ws")
        .header("host", "svc")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    assert_denied(&h1_send(&mut c, req).await);
    assert_eq!(h.upstream.paths(), vec!["/ws"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_forwarded_without_its_upgrade_headers() {
    let h = harness(false).await;
    let out = raw(
        h.addr,
        b"GET /public/x HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(matches!(out, RawOutcome::Status(200, _)), "{out:?}");
    let rec = h.upstream.all();
    assert_eq!(rec.len(), 1);
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(!rec[0].headers.contains_key(name), "{name} forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_without_rules() {
    let h = harness_with(PolicyHandle::deny_all(), false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    assert_denied(&h1_send(&mut c, get("/public/x")).await);
    let c2 = h2_client(h.addr).await;
    assert_denied(&h2_send(&c2, get("/public/x")).await);
    // A flow no policy redirects (no L7 rules on it) is denied too.
    let h = harness_with(
        PolicyHandle::new(policy(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l4-only, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
",
        )),
        false,
    )
    .await;
    let (mut c, _t) = h1_client(h.addr).await;
    assert_denied(&h1_send(&mut c, get("/public/x")).await);
    assert!(h.upstream.paths().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502() {
    let h = harness(false).await;
    // Point a second proxy at a closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let p = proxy::Proxy::serve_with_fixed_destination(
        listener,
        h.handle.clone(),
        proxy::ProxyConfig {
            http_port: 0,
            upstream: proxy::UpstreamConfig::plain(),
            detect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            limits: proxy::LimitConfig::from_process(),
            tls_secrets: Default::default(),
        },
        proxy::FixedDestination {
            client: Some(CLIENT.parse().expect("literal")),
            original_dst: SERVER.parse().expect("literal"),
            upstream: closed,
        },
    )
    .expect("starts");
    let (mut c, _t) = h1_client(addr).await;
    assert_eq!(
        h1_send(&mut c, get("/public/x")).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        p.metrics()
            .requests(ProtocolLabel::Http1, VerdictLabel::UpstreamError),
        1
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_render_as_openmetrics() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    h1_send(&mut c, get("/public/x")).await;
    h1_send(&mut c, get("/admin")).await;
    let text = h.proxy.render_metrics();
    assert!(
        text.contains(
            "portcullis_proxy_http_requests_total{protocol=\"Http1\",verdict=\"Allowed\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("verdict=\"Denied\"} 1"), "{text}");
    assert!(
        text.contains("portcullis_proxy_http_request_duration_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_proxy_active_connections 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_listener() {
    let h = harness(false).await;
    let addr = h.addr;
    h.proxy.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_a_403_with_a_large_body() {
    let h = harness(false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    let post = Request::post("/admin")
        .header("host", "svc")
        .body(Full::new(Bytes::from(vec![b'x'; 256 * 1024])))
        .expect("valid");
    assert_denied(&h1_send(&mut c, post).await);
    let ok = h1_send(&mut c, get("/public/after")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(h.proxy.metrics().active_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_confusion_is_a_400_for_that_stream_only() {
    let h = harness(true).await;
    let c = h2_client(h.addr).await;
    let confused = Request::get("http://good.example/host-only")
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    let got = h2_send(&c, confused).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{got:?}");
    let dotted = h2_send(&c, get("/public/%2e%2e/admin")).await;
    assert_denied(&dotted);
    let ok = Request::get("http://good.example/host-only")
        .body(Full::new(Bytes::new()))
        .expect("valid");
    assert_eq!(h2_send(&c, ok).await.status, StatusCode::OK);
    assert_eq!(h.upstream.paths(), vec!["http://good.example/host-only"]);
}

/// The server in audit mode, under the usual rules.
fn audited_server() -> PolicyHandle {
    let mut p = policy(&server_policy(RULES));
    p.set_audited(|name| name == "ns1/server");
    PolicyHandle::new(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_in_audit_mode_forwards_what_its_rules_deny() {
    let h = harness_with(audited_server(), false).await;
    let (mut c, _t) = h1_client(h.addr).await;
    let passed = h1_send(&mut c, get("/admin")).await;
    assert_eq!(passed.status, StatusCode::OK, "{passed:?}");
    let ok = h1_send(&mut c, get("/public/x")).await;
    assert_eq!(ok.status, StatusCode::OK);
    // The proxy's own checks are no policy: still refused.
    let connect = raw(
        h.addr,
        b"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        matches!(&connect, RawOutcome::Status(403, _)),
        "{connect:?}"
    );
    assert_eq!(h.upstream.paths(), vec!["/admin", "/public/x"]);
    let m = h.proxy.metrics();
    assert_eq!(m.requests(ProtocolLabel::Http1, VerdictLabel::Audit), 1);
    assert_eq!(m.requests(ProtocolLabel::Http1, VerdictLabel::Allowed), 1);
    assert_eq!(m.requests(ProtocolLabel::Http1, VerdictLabel::Denied), 1);
    assert!(
        h.proxy.render_metrics().contains(
            "portcullis_proxy_http_requests_total{protocol=\"Http1\",verdict=\"Audit\"} 1"
        ),
        "{}",
        h.proxy.render_metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_in_audit_mode_forwards_a_grpc_call_its_rules_deny() {
    let h = harness_with(audited_server(), true).await;
    let c = h2_client(h.addr).await;
    let passed = h2_send(&c, grpc("/pkg.Svc/Forbidden")).await;
    assert_eq!(
        passed.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{passed:?}"
    );
    assert_eq!(h.upstream.all().len(), 1);
    assert_eq!(
        h.proxy
            .metrics()
            .requests(ProtocolLabel::Grpc, VerdictLabel::Audit),
        1
    );
}
