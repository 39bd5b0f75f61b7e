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
//!   those (`%252e`), a dot segment hidden by `..%3b`, by overlong UTF-8
//!   (`%c0%ae`) or by a Unicode compatibility form (fullwidth `．`,
//!   `%ef%bc%8e`), or any decoded path that is not UTF-8, is refused with
//!   403 before matching. Envoy forwards
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
    /// A path the proxy refuses before matching (dot segments and their
    /// encodings): 403.
    #[error("refused path: {0}")]
    UnsafePath(&'static str),
    /// An `Upgrade` the proxy would not keep judging: 403.
    #[error("refused upgrade: {0}")]
    Upgrade(&'static str),
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
    upgrade_ask(parts.version, &parts.headers)?;
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
        return Err(Rejection::UnsafePath(why));
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
    // What an upstream that decodes the path sees: percent-decoded once
    // (`%25` is refused above, so once is all), then read as UTF-8.
    let decoded = percent_decode(path);
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        // Overlong forms (`%c0%ae` for `.`, `%c0%af` for `/`) and other
        // invalid sequences: a lenient decoder reads them as ASCII.
        return Some("the decoded path is not UTF-8 (overlong or invalid sequence)");
    };
    if decoded.chars().any(compatibility_punctuation) {
        return Some("a Unicode form of `.`, `/`, `\\` or `;` in the path");
    }
    for segment in decoded.split('/') {
        // `..;x` is `..` to servlet containers (also written `..%3b`).
        let segment = segment.split(';').next().unwrap_or(segment);
        if segment == "." || segment == ".." {
            return Some("dot segment in the path");
        }
    }
    None
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits is kept.
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Characters an upstream applying Unicode compatibility normalisation
/// (NFKC, as some frameworks and file systems do) turns into path
/// punctuation or other ASCII: the fullwidth ASCII forms (U+FF01..U+FF5E,
/// `．` `／` `＼` `；` among them), the small form variants (U+FE50..U+FE6B:
/// `﹒` `﹔` `﹨`), and the one/two dot leaders and the ellipsis
/// (U+2024..U+2026). The matcher sees them as they are sent, so a path
/// holding one is refused rather than judged in a form the upstream may
/// not use.
fn compatibility_punctuation(c: char) -> bool {
    matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{FE50}'..='\u{FE6B}' | '\u{2024}'..='\u{2026}')
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

/// The upgrade a request asks for, read from **every** `Upgrade` and
/// `Connection` header (a second `Upgrade: h2c` after `Upgrade: websocket`
/// must not slip past a check of the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeAsk {
    /// No upgrade the proxy honours: any `Upgrade` header is stripped and
    /// the request is forwarded as a plain one.
    None,
    /// One WebSocket upgrade on HTTP/1.1 with `Connection: upgrade`:
    /// forwarded with its upgrade headers, spliced after a `101` that
    /// switches to `websocket`.
    WebSocket,
}

/// The one protocol the proxy lets a connection switch to. It does not
/// judge WebSocket frames, like Cilium's Envoy (`upgrade_configs:
/// websocket`); every other protocol would carry requests it never judges.
const HONOURED_UPGRADE: &str = "websocket";

/// The protocol tokens of every `Upgrade` header, lowercased, the version
/// suffix (`/13`) dropped; `None` when a value is not visible ASCII.
fn upgrade_tokens(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut tokens = Vec::new();
    for value in headers.get_all(header::UPGRADE) {
        let value = value.to_str().ok()?;
        for token in value.split(',') {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            let name = token.split('/').next().unwrap_or(token);
            tokens.push(name.to_ascii_lowercase());
        }
    }
    Some(tokens)
}

/// What a request's `Upgrade` asks, or why it is refused (403):
/// - no `Upgrade` header: [`UpgradeAsk::None`];
/// - exactly one `Upgrade` token, `h2c`: ignored ([`UpgradeAsk::None`], the
///   headers are stripped; RFC 9113 §3.1 lets a server ignore it, and it is
///   what `curl --http2` sends on `http://`), so the upstream never sees it;
/// - exactly one token, `websocket`: [`UpgradeAsk::WebSocket`] on HTTP/1.1
///   with `upgrade` listed in some `Connection` header, else ignored;
/// - anything else (several tokens across all `Upgrade` headers, `h2c`
///   next to another protocol, an unknown protocol, an unreadable value):
///   refused. The proxy cannot know which one an upstream would pick.
pub fn upgrade_ask(version: Version, headers: &HeaderMap) -> Result<UpgradeAsk, Rejection> {
    if !headers.contains_key(header::UPGRADE) {
        return Ok(UpgradeAsk::None);
    }
    let tokens = upgrade_tokens(headers)
        .ok_or(Rejection::Upgrade("an Upgrade value is not visible ASCII"))?;
    match tokens.as_slice() {
        [] => Err(Rejection::Upgrade("an empty Upgrade header")),
        [one] if one == "h2c" => Ok(UpgradeAsk::None),
        [one] if one == HONOURED_UPGRADE => {
            let connection_upgrade = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            if version == Version::HTTP_11 && connection_upgrade {
                Ok(UpgradeAsk::WebSocket)
            } else {
                Ok(UpgradeAsk::None)
            }
        }
        [_] => Err(Rejection::Upgrade(
            "upgrade to a protocol the proxy does not judge",
        )),
        _ => Err(Rejection::Upgrade(
            "several upgrade protocols (the upstream could pick any)",
        )),
    }
}

/// Whether a request asks for an upgrade the proxy passes through
/// ([`UpgradeAsk::WebSocket`]).
pub fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    upgrade_ask(version, headers) == Ok(UpgradeAsk::WebSocket)
}

/// Whether an upstream's `101` switches to the protocol that was asked
/// (one `Upgrade` token, `websocket`). Any other switch is not spliced.
pub fn switches_to_websocket(headers: &HeaderMap) -> bool {
    matches!(upgrade_tokens(headers).as_deref(), Some([one]) if one == HONOURED_UPGRADE)
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
