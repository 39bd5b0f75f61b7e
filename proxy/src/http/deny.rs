//! Deny: the one place where a refusal becomes a response, as Cilium's
//! Envoy answers: HTTP 403 `Access denied\r\n`; gRPC a trailers-only 200
//! with `grpc-status: 7` (PERMISSION_DENIED); malformed requests 400.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The body of every response the proxy sends downstream.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Body of an HTTP denial (Cilium/Envoy's).
pub const ACCESS_DENIED: &str = "Access denied\r\n";

/// The gRPC status code for a denial.
pub const GRPC_PERMISSION_DENIED: &str = "7";

/// How a refused request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Policy (or the proxy's path rules) refused it: 403, or gRPC 7.
    Forbidden,
    /// Malformed or ambiguous: 400 (HTTP/1 then closes the connection).
    BadRequest,
}

fn body(text: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// The response for a refused request; `grpc` selects gRPC's form.
pub fn response(denial: Denial, grpc: bool) -> Response<ProxyBody> {
    let mut resp = match (denial, grpc) {
        (Denial::Forbidden, true) => {
            let mut r = Response::new(body(""));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(
                "grpc-status",
                HeaderValue::from_static(GRPC_PERMISSION_DENIED),
            );
            h.insert("grpc-message", HeaderValue::from_static("Access%20denied"));
            r
        }
        (Denial::Forbidden, false) => {
            let mut r = Response::new(body(ACCESS_DENIED));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        (Denial::BadRequest, _) => {
            let mut r = Response::new(body("Bad request\r\n"));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
    };
    resp.headers_mut()
        .insert("server", HeaderValue::from_static("portcullis"));
    resp
}

/// A 502 for an upstream that could not be reached or failed mid-request.
pub fn bad_gateway(grpc: bool) -> Response<ProxyBody> {
    if grpc {
        let mut r = Response::new(body(""));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        // UNAVAILABLE
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("upstream%20unavailable"),
        );
        return r;
    }
    let mut r = Response::new(body("Bad gateway\r\n"));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
