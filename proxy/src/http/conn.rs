//! What a served HTTP connection holds: the addresses, the settings every
//! connection of a proxy shares, the TLS around it and its upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::detect::Detected;
use super::metrics::HttpMetrics;
use crate::conn::ConnAddrs;
use crate::limits::ConnectionPermit;
use crate::policy::PolicyHandle;
use crate::upstream::{UpstreamConfig, UpstreamConn};

/// Settings shared by every connection of a proxy.
#[derive(Debug)]
pub struct HttpSettings {
    pub policy: PolicyHandle,
    pub metrics: Arc<HttpMetrics>,
    pub upstream: UpstreamConfig,
    /// Bound on waiting for the first bytes (protocol detection).
    pub detect_timeout: Duration,
    /// Bound on receiving an HTTP/1 request head.
    pub header_timeout: Duration,
    /// Certificates and keys of `terminatingTLS` / `originatingTLS`.
    pub tls_secrets: crate::secrets::TlsSecrets,
    /// Connection caps and the idle timeout, shared by every connection.
    pub limits: Arc<crate::limits::ConnectionLimits>,
}

/// TLS around a served connection (set by [`crate::tls`]).
#[derive(Debug, Clone)]
pub struct TlsSession {
    /// How the client's connection started: `Some(sni)` when it was TLS
    /// (terminated by the proxy), `None` for plaintext.
    pub client_sni: Option<Option<String>>,
    /// Connect upstream with TLS from this context, verifying this name.
    pub originate: Option<(
        policy_model::l7::tls::ResolvedTlsContext,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl TlsSession {
    /// The connection's start, as the policy judges it.
    pub fn start(&self) -> policy_model::l7::tls::ClientStart<'_> {
        match &self.client_sni {
            None => policy_model::l7::tls::ClientStart::Plaintext,
            Some(sni) => policy_model::l7::tls::ClientStart::Tls {
                sni: sni.as_deref(),
            },
        }
    }
}

/// One downstream connection's state.
pub(crate) struct Conn {
    pub(crate) addrs: ConnAddrs,
    pub(crate) protocol: Detected,
    pub(crate) settings: Arc<HttpSettings>,
    /// The upstream connection, reused by every request of this downstream
    /// connection (keep-alive; HTTP/2 multiplexes on it).
    pub(crate) upstream: Mutex<Option<UpstreamConn>>,
    /// Set when the port has TLS settings (see [`crate::tls`]).
    pub(crate) tls: Option<TlsSession>,
    /// The connection's place under the limits, held by an upgraded
    /// (spliced) connection too.
    pub(crate) permit: Arc<ConnectionPermit>,
}
