//! HTTP/1.1, HTTP/2 and gRPC: serve a redirected connection, judge each
//! request against the current policy snapshot, deny or forward.
//!
//! Parts: [`request`] (parse and safety checks, no I/O), [`judge`] (the
//! rules of a connection and the verdict, pure), [`deny`] (the wire form
//! of a refusal), [`detect`] (HTTP/2 preface sniffing), `serve.rs`
//! (serving a connection, one request at a time), `forward.rs` (the
//! upstream side, over [`crate::upstream`]).

mod conn;
pub mod deny;
pub mod detect;
mod forward;
pub mod judge;
pub mod metrics;
pub mod request;
mod serve;

pub use conn::{HttpSettings, TlsSession};
pub use deny::ProxyBody;
pub(crate) use serve::close_revoked;
pub use serve::{serve_connection, serve_io};
