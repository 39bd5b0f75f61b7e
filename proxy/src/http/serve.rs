//! Serving one redirected HTTP connection: protocol detection, hyper's
//! server for HTTP/1 and HTTP/2, each request judged and denied or
//! forwarded ([`handle`]), and the connection closed when a policy change
//! revokes its flow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};

use super::conn::{Conn, HttpSettings, TlsSession};
use super::deny::{self, Denial, ProxyBody};
use super::detect::{self, Detected};
use super::forward::{apply_edits, forward};
use super::judge::{Decision, Forwarding, decide};
use super::metrics::{ClosedConnection, ProtocolLabel, RefusedRequest, VerdictLabel};
use super::request;
use crate::access_log::AccessRecord;
use crate::conn::{ConnAddrs, stopped};
use crate::limits::{ConnectionPermit, IdleTimeout, TimeoutKind};

/// Serves one redirected connection until it closes or `shutdown` turns
/// true (then gracefully).
pub async fn serve_connection(
    stream: TcpStream,
    addrs: ConnAddrs,
    settings: Arc<HttpSettings>,
    shutdown: watch::Receiver<bool>,
    permit: Arc<ConnectionPermit>,
) {
    let _ = stream.set_nodelay(true);
    serve_io(stream, addrs, settings, shutdown, None, permit).await
}

/// Serves HTTP on any byte stream (plaintext, or TLS the proxy
/// terminated); `tls` carries what the port's TLS settings decided.
pub async fn serve_io<I>(
    stream: I,
    addrs: ConnAddrs,
    settings: Arc<HttpSettings>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<TlsSession>,
    permit: Arc<ConnectionPermit>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _guard = settings.metrics.connection();
    let stream = IdleTimeout::new(
        stream,
        settings.limits.config().idle_timeout,
        settings.metrics.limits().clone(),
    );
    let (protocol, io) = match detect::detect(stream, settings.detect_timeout).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::debug!(client = %addrs.client, dst = %addrs.original_dst, "connection closed before a request");
            return;
        }
        Err(e) => {
            tracing::debug!(client = %addrs.client, error = %e, "reading the first bytes failed");
            return;
        }
    };
    let tls_for_check = tls.clone();
    let conn = Arc::new(Conn {
        addrs,
        protocol,
        settings: settings.clone(),
        upstream: Mutex::new(None),
        tls,
        permit,
    });
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    let io = TokioIo::new(io);
    // A policy change that takes away the flow's allowance closes the
    // connection (the requests on it would all be denied anyway).
    let policy = settings.policy.clone();
    let tls_start = conn_tls_start(&tls_for_check);
    let revoked = policy.revoked(move |p| flow_refusal(p, addrs, tls_start.as_ref()));
    tokio::pin!(revoked);
    let result = match protocol {
        Detected::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                why = revoked.as_mut() => {
                    close_revoked(&settings, &addrs, &why);
                    return;
                }
            }
        }
        Detected::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                why = revoked.as_mut() => {
                    close_revoked(&settings, &addrs, &why);
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            // hyper's header read timeout (slowloris).
            settings.metrics.limits().timed_out(TimeoutKind::Header);
        }
        tracing::debug!(client = %addrs.client, dst = %addrs.original_dst, error = %e, "downstream connection ended with an error");
    }
}

/// How a served connection started, owned, for re-checking it later.
#[derive(Debug, Clone)]
pub(crate) enum OwnedStart {
    Plaintext,
    Tls(Option<String>),
}

impl OwnedStart {
    fn as_start(&self) -> policy_model::l7::tls::ClientStart<'_> {
        match self {
            OwnedStart::Plaintext => policy_model::l7::tls::ClientStart::Plaintext,
            OwnedStart::Tls(sni) => policy_model::l7::tls::ClientStart::Tls {
                sni: sni.as_deref(),
            },
        }
    }
}

fn conn_tls_start(tls: &Option<TlsSession>) -> Option<OwnedStart> {
    tls.as_ref().map(|t| match &t.client_sni {
        None => OwnedStart::Plaintext,
        Some(sni) => OwnedStart::Tls(sni.clone()),
    })
}

/// Why the flow of a served HTTP connection may not continue under
/// `policy`, if it may not: the same lookup as each request's (no side
/// redirects it to HTTP any more, a side denies it at L4 or has no entry).
pub(crate) fn flow_refusal(
    policy: &crate::policy::ProxyPolicy,
    addrs: ConnAddrs,
    tls: Option<&OwnedStart>,
) -> Option<String> {
    let rules = match tls {
        None => policy.http_rules(addrs.client, addrs.original_dst),
        Some(start) => policy.http_rules_in(addrs.client, addrs.original_dst, start.as_start()),
    };
    rules.refusal.map(|r| r.to_string())
}

/// Logs and counts a connection closed because its flow was revoked.
pub(crate) fn close_revoked(settings: &HttpSettings, addrs: &ConnAddrs, why: &str) {
    settings.metrics.closed(ClosedConnection::Revoked);
    AccessRecord::HttpRevoked {
        addrs: *addrs,
        reason: why,
    }
    .emit();
}

/// What the access log says about a request.
struct Outcome {
    verdict: VerdictLabel,
    status: StatusCode,
    reason: String,
}

async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let grpc = request::is_grpc(req.headers());
    let protocol = match (grpc, req.version()) {
        (true, _) => ProtocolLabel::Grpc,
        (false, Version::HTTP_2) => ProtocolLabel::Http2,
        (false, _) => ProtocolLabel::Http1,
    };
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), |pq| pq.to_string());
    let client_upgrade = if request::wants_upgrade(req.version(), req.headers()) {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();

    let decision = {
        let policy = conn.settings.policy.snapshot();
        let tls = conn.tls.as_ref().map(TlsSession::start);
        decide(&policy, &conn.addrs, tls, &parts)
    };
    let (checked, authority_for_log, identities) = match decision {
        Decision::Rejected(rejection) => (Err(rejection), None, None),
        Decision::Judged {
            judgement,
            src_identity,
            dst_identity,
            authority,
        } => (
            Ok(judgement.into_forwarding()),
            authority,
            Some((src_identity, dst_identity)),
        ),
    };

    let (response, outcome) = match checked {
        Err(rejection) => {
            let denial = match rejection {
                request::Rejection::BadRequest(_) => Denial::BadRequest,
                request::Rejection::Refused(_) => {
                    conn.settings.metrics.refused(RefusedRequest::Other);
                    Denial::Forbidden
                }
                request::Rejection::UnsafePath(_) => {
                    conn.settings.metrics.refused(RefusedRequest::Path);
                    Denial::Forbidden
                }
                request::Rejection::Upgrade(_) => {
                    conn.settings.metrics.refused(RefusedRequest::Upgrade);
                    Denial::Forbidden
                }
            };
            let verdict = match denial {
                Denial::BadRequest => VerdictLabel::Invalid,
                Denial::Forbidden => VerdictLabel::Denied,
            };
            let mut resp = deny::response(denial, grpc);
            if conn.protocol == Detected::Http1 {
                // The request may be framed ambiguously: never read past it.
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            let outcome = Outcome {
                verdict,
                status: resp.status(),
                reason: rejection.to_string(),
            };
            (resp, outcome)
        }
        Ok(Err(denial)) => {
            let mut resp = deny::response(Denial::Forbidden, grpc);
            if conn.protocol == Detected::Http1 && !drain_denied_body(&parts, body).await {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            let (verdict, reason) = denial.logged();
            let outcome = Outcome {
                verdict,
                status: resp.status(),
                reason,
            };
            (resp, outcome)
        }
        Ok(Ok(Forwarding {
            edits,
            verdict,
            reason,
        })) => {
            apply_edits(&mut parts.headers, &edits, &conn.addrs);
            let upgrade = client_upgrade.is_some();
            request::strip_hop_by_hop(&mut parts.headers, upgrade);
            let req = Request::from_parts(parts, body);
            let (resp, outcome) = match forward(&conn, req, authority_for_log.as_deref()).await {
                Ok(resp)
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && !(client_upgrade.is_some()
                            && request::switches_to_websocket(resp.headers())) =>
                {
                    // The upstream switched to a protocol that was not
                    // asked (or without an asked upgrade): what follows
                    // would never be judged. Not spliced; the upstream
                    // connection is dropped.
                    drop(resp);
                    *conn.upstream.lock().await = None;
                    conn.settings
                        .metrics
                        .refused(RefusedRequest::UpgradeResponse);
                    let resp = deny::bad_gateway(grpc);
                    let outcome = Outcome {
                        verdict: VerdictLabel::UpstreamError,
                        status: resp.status(),
                        reason: "the upstream switched to a protocol that was not asked".into(),
                    };
                    (resp, outcome)
                }
                Ok(mut resp) => {
                    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) =
                        (client_upgrade, resp.status())
                    {
                        splice_upgrade(client, hyper::upgrade::on(&mut resp), conn.clone());
                    } else {
                        request::strip_hop_by_hop(resp.headers_mut(), false);
                    }
                    let status = resp.status();
                    (
                        resp.map(|b| b.boxed()),
                        Outcome {
                            verdict,
                            status,
                            reason,
                        },
                    )
                }
                Err(e) => {
                    let resp = deny::bad_gateway(grpc);
                    let outcome = Outcome {
                        verdict: VerdictLabel::UpstreamError,
                        status: resp.status(),
                        reason: e.to_string(),
                    };
                    (resp, outcome)
                }
            };
            (resp, outcome)
        }
    };

    let latency = start.elapsed();
    conn.settings
        .metrics
        .request(protocol, outcome.verdict, latency.as_secs_f64());
    let (src_identity, dst_identity) = identities
        .map(|(s, d)| (s.to_string(), d.to_string()))
        .unwrap_or_default();
    AccessRecord::Http {
        method: &method,
        path: &target,
        authority: authority_for_log.as_deref().unwrap_or(""),
        status: outcome.status.as_u16(),
        verdict: outcome.verdict,
        protocol,
        addrs: conn.addrs,
        src_identity: &src_identity,
        dst_identity: &dst_identity,
        latency,
        reason: &outcome.reason,
    }
    .emit();
    let mut response = response;
    if method == "HEAD" && !matches!(outcome.verdict, VerdictLabel::Allowed | VerdictLabel::Audit) {
        // A response to HEAD carries no body (RFC 9110 §9.3.2); HTTP/2
        // clients reject one (the proxy's own responses have one).
        *response.body_mut() = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed();
    }
    response
}

/// Most a denied HTTP/1 request body is read and discarded to keep the
/// connection usable.
const DRAIN_LIMIT: usize = 1 << 20;
/// How long reading it may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and discards the body of a denied HTTP/1 request so the next
/// request on the connection can be read; `false` when it could not be
/// (too large, too slow, or the client waits for `100 Continue`, which is
/// never sent for a denied request): then the connection is closed.
async fn drain_denied_body(parts: &http::request::Parts, mut body: Incoming) -> bool {
    use hyper::body::Body;
    if body.is_end_stream() {
        return true;
    }
    if parts.headers.contains_key(http::header::EXPECT) {
        return false;
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    total += frame.data_ref().map_or(0, |d| d.len());
                    if total > DRAIN_LIMIT {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    drained.unwrap_or(false)
}

/// After a 101 from upstream, copies bytes both ways between the upgraded
/// downstream and upstream connections.
fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    conn: Arc<Conn>,
) {
    let addrs = conn.addrs;
    tokio::spawn(async move {
        // Counted under the limits until the tunnel closes.
        let _permit = conn.permit.clone();
        let start = conn_tls_start(&conn.tls);
        let settings = conn.settings.clone();
        drop(conn);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(client = %addrs.client, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let policy = settings.policy.clone();
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(client = %addrs.client, error = %e, "upgraded connection ended");
                }
            }
            why = policy.revoked(move |p| flow_refusal(p, addrs, start.as_ref())) => {
                close_revoked(&settings, &addrs, &why);
            }
        }
    });
}
