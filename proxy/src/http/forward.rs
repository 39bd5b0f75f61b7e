//! Forwarding an allowed request: the connection's upstream (reused,
//! reconnected, TLS-originated), the request-target it is sent with, and
//! the header edits of `headerMatches`.

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use policy_model::api::MismatchAction;

use super::conn::Conn;
use super::detect::Detected;
use super::judge::HeaderEdit;
use crate::access_log::AccessRecord;
use crate::conn::ConnAddrs;
use crate::upstream::{self, UpstreamConn, UpstreamError};

/// Sends an allowed request to the upstream of `conn`, (re)connecting as
/// needed.
pub(crate) async fn forward(
    conn: &Conn,
    mut req: Request<Incoming>,
    authority: Option<&str>,
) -> Result<Response<Incoming>, UpstreamError> {
    let h2 = conn.protocol == Detected::Http2;
    let dst = conn.addrs.upstream;
    let pending = {
        let mut slot = conn.upstream.lock().await;
        let reusable = match slot.as_mut() {
            Some(UpstreamConn::Http1(s)) => s.ready().await.is_ok(),
            Some(UpstreamConn::Http2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *slot = None;
            let policy = conn.settings.policy.snapshot();
            let fresh = match conn.tls.as_ref().and_then(|t| t.originate.as_ref()) {
                None => {
                    upstream::open(&conn.settings.upstream, &policy, conn.addrs.client, dst, h2)
                        .await?
                }
                Some((ctx, name)) => {
                    let config = conn
                        .settings
                        .tls_secrets
                        .client_config(ctx, h2)
                        .map_err(|e| UpstreamError::Tls {
                            dst,
                            reason: e.to_string(),
                        })?;
                    upstream::open_tls(
                        &conn.settings.upstream,
                        &policy,
                        conn.addrs.client,
                        dst,
                        h2,
                        config,
                        name.clone(),
                    )
                    .await?
                }
            };
            *slot = Some(fresh);
        }
        // The upstream's protocol: the client's, except that an
        // originated TLS upstream may settle on HTTP/1.1 by ALPN.
        let up_h2 = matches!(slot.as_ref(), Some(UpstreamConn::Http2(_)));
        if h2 && !up_h2 && !req.headers().contains_key(http::header::HOST) {
            let host = req
                .uri()
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| authority.map(str::to_string));
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        *req.uri_mut() = upstream_uri(req.uri(), up_h2, authority, conn.addrs.original_dst);
        if !up_h2 {
            *req.version_mut() = Version::HTTP_11;
        }
        match slot.as_mut() {
            Some(UpstreamConn::Http1(s)) => {
                if s.ready().await.is_err() {
                    *slot = None;
                    return Err(UpstreamError::Connect {
                        dst,
                        source: std::io::Error::other("new upstream connection closed at once"),
                    });
                }
                Pending::Http1(s.send_request(req))
            }
            Some(UpstreamConn::Http2(s)) => Pending::Http2(s.clone().send_request(req)),
            None => unreachable!("the slot was just filled"),
        }
    };
    let result = match pending {
        Pending::Http1(f) => f.await,
        Pending::Http2(f) => f.await,
    };
    result.map_err(|source| UpstreamError::Request { dst, source })
}

/// A request in flight on an upstream sender.
enum Pending<A, B> {
    Http1(A),
    Http2(B),
}

/// The request-target sent upstream: origin-form for HTTP/1; for HTTP/2
/// a scheme and authority are required (from the request, else the
/// original destination).
fn upstream_uri(uri: &Uri, h2: bool, authority: Option<&str>, original_dst: SocketAddr) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if !h2 {
        return Uri::from(path);
    }
    let authority = uri
        .authority()
        .cloned()
        .or_else(|| authority.and_then(|a| a.parse::<Authority>().ok()))
        .or_else(|| original_dst.to_string().parse::<Authority>().ok());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(uri.scheme().cloned().unwrap_or(Scheme::HTTP));
    parts.authority = authority;
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Applies `headerMatches` mismatch actions to the forwarded headers.
pub(crate) fn apply_edits(headers: &mut http::HeaderMap, edits: &[HeaderEdit], addrs: &ConnAddrs) {
    for edit in edits {
        let shown = if edit.secret {
            "[redacted]"
        } else {
            edit.value.as_str()
        };
        let parsed = (
            HeaderName::from_bytes(edit.name.as_bytes()),
            HeaderValue::from_str(&edit.value),
        );
        let (Ok(name), Ok(value)) = parsed else {
            tracing::warn!(header = %edit.name, "header action with an unusable name or value skipped");
            continue;
        };
        match edit.action {
            MismatchAction::Log => {}
            MismatchAction::Add => {
                headers.append(name, value);
            }
            MismatchAction::Delete => {
                headers.remove(name);
            }
            MismatchAction::Replace => {
                headers.insert(name, value);
            }
        }
        AccessRecord::HeaderMismatch {
            addrs: *addrs,
            header: &edit.name,
            expected: shown,
            action: edit.action,
        }
        .emit();
    }
}
