//! Smuggling and normalisation corpus: raw requests over a TcpStream, each
//! with the answer it must get. None of them may reach the upstream (the
//! recording upstream must stay empty), although the rule set allows
//! `GET /public/.*` and `POST /submit`. The one exception is
//! [`Expect::TransferEncodingWins`]: the request is forwarded as its
//! `Transfer-Encoding` frames it, alone, and the smuggled one never is.

mod common;

use std::time::Duration;

use common::*;

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 403 `Access denied` (policy, or the proxy's path rules).
    Forbidden,
    /// 400, or the connection closed without an answer.
    BadRequest,
    /// 400, 403, 431, or the connection closed.
    Refused,
    /// `Content-Length` with `Transfer-Encoding`: hyper drops the
    /// `Content-Length` before the proxy sees the request (RFC 9112 6.3:
    /// Transfer-Encoding overrides it) and closes the connection after the
    /// response. The proxy cannot tell this apart from a plain chunked
    /// request, so the only request forwarded is the chunked one, without
    /// `Content-Length`, and the smuggled request after it is never read.
    TransferEncodingWins,
}

const CASES: &[(&str, &str, Expect)] = &[
    // Framing ambiguities (CL.TE / TE.CL).
    (
        "CL and TE",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::TransferEncodingWins,
    ),
    (
        "TE and CL",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /admin HTTP/1.1\r\nHost: svc\r\n\r\n0\r\n\r\n",
        Expect::TransferEncodingWins,
    ),
    (
        "differing Content-Lengths",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        Expect::BadRequest,
    ),
    (
        "Content-Length list with different values",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 3, 4\r\n\r\nabcd",
        Expect::BadRequest,
    ),
    (
        "Content-Length list with equal values",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 3, 3\r\n\r\nabc",
        Expect::BadRequest,
    ),
    (
        "signed Content-Length",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: +3\r\n\r\nabc",
        Expect::BadRequest,
    ),
    (
        "Transfer-Encoding not ending in chunked",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "unknown Transfer-Encoding",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "space before the colon",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        "POST /submit HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Expect::BadRequest,
    ),
    // Malformed heads.
    (
        "obs-fold",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n b\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "obs-fold of Transfer-Encoding",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "NUL in a header value",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX-A: a\0b\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "bare CR in a header value",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX-A: a\rb\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "space in a header name",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX A: b\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "obs-text in a header value",
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX-A: caf\u{e9}\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "space in the request-target",
        "GET /public/x /admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "NUL in the request-target",
        "GET /public/\0/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "tabs as request-line separators",
        "GET\t/public/x\tHTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Refused,
    ),
    // Authority confusion.
    (
        "no Host in HTTP/1.1",
        "GET /public/x HTTP/1.1\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "two Host headers",
        "GET /host-only HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "absolute-form differing from Host",
        "GET http://good.example/host-only HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "userinfo in absolute-form",
        "GET http://good.example@evil.example/public/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        Expect::BadRequest,
    ),
    (
        "absolute-form to a denied path",
        "GET http://svc/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "authority-form CONNECT",
        "CONNECT svc:80 HTTP/1.1\r\nHost: svc:80\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "asterisk-form",
        "OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    // Path normalisation: all would match `/public/.*` unnormalised.
    (
        "dot-dot segment",
        "GET /public/../admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "dot segment",
        "GET /public/./x HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "trailing dot-dot",
        "GET /public/x/../.. HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "encoded dot-dot",
        "GET /public/%2e%2e/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "encoded dot-dot, upper case",
        "GET /public/%2E%2E/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "half-encoded dot-dot",
        "GET /public/.%2e/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "double-encoded dot-dot",
        "GET /public/%252e%252e/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "encoded slash",
        "GET /public/..%2fadmin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "encoded backslash",
        "GET /public/..%5cadmin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "raw backslash",
        "GET /public/..\\admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Refused,
    ),
    (
        "dot-dot with path parameters",
        "GET /public/..;/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    // Encodings an upstream may decode to a dot segment (issue 13).
    (
        "dot-dot with encoded path parameters (..%3b)",
        "GET /public/..%3badmin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "dot-dot with encoded path parameters and a slash",
        "GET /public/..%3B/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "overlong UTF-8 dots (2 bytes)",
        "GET /public/%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "overlong UTF-8 dots (3 bytes) and slash",
        "GET /public/%e0%80%ae%e0%80%ae%c0%afadmin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "fullwidth dots (U+FF0E)",
        "GET /public/%ef%bc%8e%ef%bc%8e/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "fullwidth solidus (U+FF0F)",
        "GET /public/..%EF%BC%8Fadmin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "small full stops (U+FE52)",
        "GET /public/%ef%b9%92%ef%b9%92/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "two dot leader (U+2025)",
        "GET /public/%e2%80%a5/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "fullwidth dots sent raw",
        "GET /public/\u{ff0e}\u{ff0e}/admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Refused,
    ),
    (
        "a byte that is not UTF-8",
        "GET /public/%ff/x HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "encoded NUL",
        "GET /public/x%00.html HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    // Policy as written, on odd but valid requests.
    (
        "lower-case method",
        "get /public/x HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
    (
        "bare LF line endings to a denied path",
        "GET /admin HTTP/1.1\nHost: svc\n\n",
        Expect::Forbidden,
    ),
    (
        "path prefix is not a match",
        "GET /publicity HTTP/1.1\r\nHost: svc\r\n\r\n",
        Expect::Forbidden,
    ),
];

fn oversized_head() -> String {
    format!(
        "GET /public/x HTTP/1.1\r\nHost: svc\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    )
}

fn check(name: &str, expect: Expect, out: &RawOutcome) -> Result<(), String> {
    let ok = match (expect, out) {
        (Expect::Forbidden, RawOutcome::Status(403, text)) => text.ends_with("Access denied\r\n"),
        (Expect::BadRequest, RawOutcome::Status(400, _) | RawOutcome::Closed) => true,
        (Expect::Refused, RawOutcome::Status(400 | 403 | 431, _) | RawOutcome::Closed) => true,
        // Still streaming the chunked body when the wait ended.
        (Expect::TransferEncodingWins, RawOutcome::Closed) => true,
        (Expect::TransferEncodingWins, RawOutcome::Status(_, text)) => {
            text.to_ascii_lowercase().contains("connection: close")
                && text.matches("HTTP/1.1 ").count() == 1
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name}: expected {expect:?}, got {out:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_corpus_request_reaches_the_upstream() {
    let h = harness(false).await;
    let mut failures = Vec::new();
    let mut cases: Vec<(String, String, Expect)> = CASES
        .iter()
        .map(|(n, r, e)| (n.to_string(), r.to_string(), *e))
        .collect();
    cases.push(("oversized head".into(), oversized_head(), Expect::Refused));
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    for (name, request, expect) in &cases {
        let out = raw(h.addr, request.as_bytes(), Duration::from_millis(400)).await;
        if let Err(e) = check(name, *expect, &out) {
            failures.push(e);
        }
        let reached = h.upstream.all();
        let acceptable = match expect {
            Expect::TransferEncodingWins => {
                reached.len() == 1
                    && reached[0].uri == "/submit"
                    && !reached[0].headers.contains_key("content-length")
            }
            _ => reached.is_empty(),
        };
        if !acceptable {
            failures.push(format!("{name}: reached the upstream: {reached:?}"));
        }
        h.upstream.clear();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_controls_are_forwarded() {
    // The same shapes, made valid, do pass: the corpus fails for the
    // reason it names, not because the harness forwards nothing.
    let h = harness(false).await;
    for request in [
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "POST /submit HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "GET http://svc/public/x HTTP/1.1\r\nHost: svc\r\n\r\n",
        "GET /public/a.b/.well-known/x?next=/../admin HTTP/1.1\r\nHost: svc\r\n\r\n",
        "GET /public/x HTTP/1.0\r\n\r\n",
        "GET /public/caf%C3%A9/%e2%82%ac.txt HTTP/1.1\r\nHost: svc\r\n\r\n",
    ] {
        let out = raw(h.addr, request.as_bytes(), Duration::from_millis(400)).await;
        assert!(
            matches!(out, RawOutcome::Status(200, _)),
            "{request:?}: {out:?}"
        );
    }
    let rec = h.upstream.all();
    assert_eq!(rec.len(), 7, "{rec:?}");
    assert_eq!(
        rec[3].uri, "/public/x",
        "absolute-form goes upstream as origin-form"
    );
    assert!(
        rec.iter()
            .all(|r| !(r.headers.contains_key("content-length")
                && r.headers.contains_key("transfer-encoding"))),
        "never both framings upstream"
    );
}
