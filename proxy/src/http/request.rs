//! Parse: the checks a request head must pass before it is judged, and the
//! view of it the matcher sees. No I/O; hyper has already parsed the wire
//! format and rejected what it rejects (obs-fold, invalid bytes in names,
//! differing `Content-Length`s, `Transfer-Encoding` not ending in
//! `chunked`, bad chunk sizes).
//!
//! What is added here, so that the proxy never forwards a request the
//! upstream could read differently from the proxy:
//! - `Content-Length` together with `Transfer-Encoding`, or
//!   `Content-Length` values that are not one decimal number: 400;
//! - no `Host` in HTTP/1.1, several `Host`s, or a `Host` differing from an
//!   absolute-form target or `:authority`: 400;
//! - header values that are not visible ASCII (the matcher and the
//!   upstream could disagree on their meaning): 400;
//! - `CONNECT` (authority-form): the proxy does not tunnel, 403;
//! - **a deliberate deviation from Cilium/Envoy**: a path with a dot
//!   segment (`/./`, `/../`, trailing `/.` or `/..`, also written `%2e`,
//!   or followed by `;params`), an encoded slash or backslash (`%2f`,
//!   `%5c`), a raw backslash, an encoded NUL or a double-encoded form of
//!   those (`%252e`) is refused with 403 before matching. Envoy forwards
//!   the raw path, so a `/public/.*` rule would let `/public/../admin`
//!   reach an upstream that normalises it to `/admin`; refusing is the
//!   safe reading of an allow-list.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Version, request::Parts};
use policy_model::l7::HttpRequest;

/// Why a request is refused before it is judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed or ambiguous: answered with 400 and the connection is
    /// closed (HTTP/1).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Well-formed but refused by the proxy's own rules: 403.
    #[error("refused: {0}")]
    Refused(&'static str),
}

/// The parts of a request head the policy matches on, borrowed.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The request-target's path and query, as sent.
    pub path: &'a str,
    pub authority: Option<&'a str>,
    /// Every header but `Host`, as sent.
    pub headers: Vec<(&'a str, &'a str)>,
}

impl RequestView<'_> {
    /// The matcher's view.
    pub fn as_request(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: self.method,
            path: self.path,
            authority: self.authority,
            headers: &self.headers,
        }
    }
}

/// Checks a request head and returns what the matcher sees.
pub fn view(parts: &Parts) -> Result<RequestView<'_>, Rejection> {
    if parts.method == Method::CONNECT {
        return Err(Rejection::Refused("CONNECT tunnels are not proxied"));
    }
    check_framing(&parts.headers)?;
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = value
            .to_str()
            .map_err(|_| Rejection::BadRequest("a header value is not visible ASCII"))?;
        if name != header::HOST {
            headers.push((name.as_str(), value));
        }
    }
    let authority = authority(parts)?;
    let path = match parts.uri.path_and_query() {
        Some(pq) => pq.as_str(),
        None if parts.uri == "*" => "*",
        None => "/",
    };
    if path != "*" && !path.starts_with('/') {
        return Err(Rejection::BadRequest("the request-target is not a path"));
    }
    if path == "*" && parts.method != Method::OPTIONS {
        return Err(Rejection::BadRequest("`*` is only a target for OPTIONS"));
    }
    if let Some(why) = unsafe_path(path) {
        return Err(Rejection::Refused(why));
    }
    Ok(RequestView {
        method: parts.method.as_str(),
        path,
        authority,
        headers,
    })
}

/// `Content-Length` and `Transfer-Encoding` must not both be present, and
/// every `Content-Length` must be the same decimal number.
fn check_framing(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(Rejection::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let bytes = first.as_bytes();
        if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(Rejection::BadRequest("Content-Length is not a number"));
        }
        if lengths.any(|other| other.as_bytes() != bytes) {
            return Err(Rejection::BadRequest("differing Content-Length values"));
        }
    }
    Ok(())
}

/// The authority of the request: `Host`, or the target's (absolute-form,
/// `:authority`); both present must agree.
fn authority(parts: &Parts) -> Result<Option<&str>, Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = match hosts.next() {
        None => None,
        Some(h) => {
            if hosts.next().is_some() {
                return Err(Rejection::BadRequest("several Host headers"));
            }
            let h = h
                .to_str()
                .map_err(|_| Rejection::BadRequest("Host is not visible ASCII"))?;
            if h.is_empty() || h.bytes().any(|b| b"/?#@ \\".contains(&b)) {
                return Err(Rejection::BadRequest("Host is not an authority"));
            }
            Some(h)
        }
    };
    let target = parts.uri.authority().map(|a| a.as_str());
    if target.is_some_and(|t| t.contains('@')) {
        return Err(Rejection::BadRequest("userinfo in the request-target"));
    }
    match (target, host) {
        (Some(t), Some(h)) if !t.eq_ignore_ascii_case(h) => Err(Rejection::BadRequest(
            "Host differs from the request-target's authority",
        )),
        (Some(t), _) => Ok(Some(t)),
        (None, Some(h)) => Ok(Some(h)),
        (None, None) if parts.version == Version::HTTP_11 => {
            Err(Rejection::BadRequest("HTTP/1.1 request without Host"))
        }
        (None, None) => Ok(None),
    }
}

/// Why a path is refused before matching, if it is (see the module doc).
pub fn unsafe_path(path_and_query: &str) -> Option<&'static str> {
    let path = match path_and_query.split_once('?') {
        Some((path, _)) => path,
        None => path_and_query,
    };
    if path.contains('\\') {
        return Some("backslash in the path");
    }
    let lower = path.to_ascii_lowercase();
    for (needle, why) in [
        ("%2f", "encoded slash in the path"),
        ("%5c", "encoded backslash in the path"),
        ("%00", "encoded NUL in the path"),
        ("%25", "double percent-encoding in the path"),
    ] {
        if lower.contains(needle) {
            return Some(why);
        }
    }
    for segment in lower.split('/') {
        // `..;x` is `..` to servlet containers.
        let segment = segment.split(';').next().unwrap_or(segment);
        let decoded = segment.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Some("dot segment in the path");
        }
    }
    None
}

/// Header fields that describe one hop and must not be forwarded: the
/// standard hop-by-hop set plus every name listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in [
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    // `TE: trailers` is end-to-end meaning for gRPC; any other TE is not.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// Whether the request asks for a protocol upgrade the proxy passes
/// through (HTTP/1.1 `Connection: upgrade` with an `Upgrade` header). An
/// upgrade to `h2c` is not passed: the requests on the upgraded connection
/// would bypass the policy; such a request is forwarded without its
/// upgrade headers.
pub fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return false;
    };
    let h2c = upgrade
        .to_str()
        .map(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(true);
    version == Version::HTTP_11
        && !h2c
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the request is gRPC (`content-type: application/grpc[+...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

#[cfg(test)]
mod tests;
