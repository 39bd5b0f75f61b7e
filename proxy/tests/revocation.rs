//! Revocation reaches proxied connections (issue 13, finding 4, proxy
//! side): when a policy change takes away the flow's L4 allowance, open
//! HTTP/1, HTTP/2 and upgraded (spliced) connections are closed; a change
//! that keeps the flow allowed closes nothing, and requests on a kept
//! connection are judged by the new rules.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proxy::http::metrics::ClosedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `server` takes port 80 only from pods labelled `app: other`: the
/// client's flow has no allowance left.
const REVOKED: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-in, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts:
    - ports: [{port: '80', protocol: TCP}]
";

/// The proxy in front of a fresh upstream, with a header timeout longer
/// than the test (so an idle HTTP/1 keep-alive connection stays open).
async fn harness_for(handle: proxy::PolicyHandle, h2_upstream: bool) -> Harness {
    let (up, upstream) = spawn_upstream(h2_upstream).await;
    let (proxy, addr) = proxy_in_front_of_with(handle.clone(), up, Duration::from_secs(60)).await;
    Harness {
        proxy,
        addr,
        handle,
        upstream,
    }
}

/// Open connections of every kind; `true` for each that the proxy closed
/// within three seconds of `change`.
async fn closed_after(h: &Harness, over_h2: &Harness, change: &str) -> [bool; 3] {
    let (mut h1, h1_task) = h1_client(h.addr).await;
    assert_eq!(
        h1_send(&mut h1, get("/public/a")).await.status,
        StatusCode::OK
    );
    let h2 = h2_client(over_h2.addr).await;
    assert_eq!(h2_send(&h2, get("/public/b")).await.status, StatusCode::OK);
    let (mut ws, _t) = h1_client(h.addr).await;
    ws.ready().await.expect("ready");
    let mut resp = ws
        .send_request(
            Request::get("/ws")
                .header("host", "svc")
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()))
                .expect("valid"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut tunnel = TokioIo::new(hyper::upgrade::on(&mut resp).await.expect("upgraded"));
    tunnel.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tunnel.read_exact(&mut buf).await.expect("echo");

    h.handle.update(policy(change));

    let wait = Duration::from_secs(3);
    let h1_closed = tokio::time::timeout(wait, h1_task).await.is_ok();
    let h2_closed = tokio::time::timeout(wait, async {
        let mut s = h2.clone();
        loop {
            if s.ready().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    let ws_closed = matches!(
        tokio::time::timeout(wait, tunnel.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    [h1_closed, h2_closed, ws_closed]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_flow_closes_its_proxied_connections() {
    let h = harness_for(
        proxy::PolicyHandle::new(policy(&server_policy(RULES))),
        false,
    )
    .await;
    let over_h2 = harness_for(h.handle.clone(), true).await;
    let closed = closed_after(&h, &over_h2, REVOKED).await;
    assert_eq!(
        closed,
        [true, true, true],
        "[HTTP/1, HTTP/2, upgraded] closed after the revocation"
    );
    let count = |h: &Harness| h.proxy.metrics().closed_count(ClosedConnection::Revoked);
    assert_eq!(count(&h) + count(&over_h2), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_keeps_the_flow_closes_nothing_and_judges_by_the_new_rules() {
    let h = harness_for(
        proxy::PolicyHandle::new(policy(&server_policy(RULES))),
        false,
    )
    .await;
    let over_h2 = harness_for(h.handle.clone(), true).await;
    // The new rules allow /ws and /public/a only.
    let kept = server_policy(
        "        - {method: GET, path: /public/a}
        - {method: GET, path: /ws}
",
    );
    let closed = closed_after(&h, &over_h2, &kept).await;
    assert_eq!(closed, [false, false, false]);
    let count = |h: &Harness| h.proxy.metrics().closed_count(ClosedConnection::Revoked);
    assert_eq!(count(&h) + count(&over_h2), 0);
    let (mut h1, _t) = h1_client(h.addr).await;
    assert_eq!(
        h1_send(&mut h1, get("/public/a")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h1_send(&mut h1, get("/public/b")).await.status,
        StatusCode::FORBIDDEN
    );
}
