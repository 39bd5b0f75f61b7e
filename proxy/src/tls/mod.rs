//! TLS on the HTTP proxy port: `serverNames` judged on the ClientHello
//! without decrypting, `terminatingTLS` (terminate, judge HTTP on the
//! plaintext) and `originatingTLS` (TLS to the original destination,
//! verified with the secret's CA).
//!
//! Parts: [`hello`] (bounded ClientHello reader, no I/O), the decision in
//! `policy_model::l7::tls` via [`crate::policy`] (pure), [`crate::secrets`]
//! (certificates from files or pushed Kubernetes Secrets, rebuilt when they
//! change). A TLS connection that no rule admits, or whose secret is
//! missing or bad, is closed: TLS has no way to say 403 before a handshake
//! the proxy cannot complete.

pub mod hello;
mod plan;

pub use plan::ConnDecision;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use policy_model::l7::tls::{ClientStart, ConnPlan, ResolvedTlsContext};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_log::{AccessRecord, TlsOutcome};
use crate::conn::ConnAddrs;
use crate::http::detect::Rewind;
use crate::http::metrics::ClosedConnection;
use crate::http::{HttpSettings, TlsSession, serve_connection, serve_io};
use crate::limits::{ConnectionPermit, IdleTimeout};
use crate::policy::Refusal;
pub use crate::secrets::{SecretError, SecretItems, TlsSecrets};

/// Serves one connection accepted on the HTTP proxy port: TLS by its
/// ClientHello, plaintext as HTTP.
pub async fn serve(
    stream: TcpStream,
    addrs: ConnAddrs,
    settings: Arc<HttpSettings>,
    shutdown: watch::Receiver<bool>,
    permit: ConnectionPermit,
) {
    let permit = Arc::new(permit);
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(settings.detect_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        _ => {
            tracing::debug!(client = %addrs.client, dst = %addrs.original_dst, "connection closed or silent before its first byte");
            return;
        }
    }
    if hello::looks_like_tls(first[0]) {
        serve_tls(stream, addrs, settings, shutdown, permit).await;
        return;
    }
    let plan = settings.policy.snapshot().connection_plan(
        addrs.client,
        addrs.original_dst,
        ClientStart::Plaintext,
    );
    // What only audit mode passes is reported by each request (see
    // `http_rules_in`).
    match plan.map(|d| d.plan) {
        Ok(ConnPlan::Inspect {
            originate: Some(ctx),
            ..
        }) => {
            if let Err(e) = settings.tls_secrets.client_config(&ctx, false) {
                closed(&addrs, None, &format!("originatingTLS unusable: {e}"));
                return;
            }
            let name = upstream_name(None, addrs.original_dst);
            let session = TlsSession {
                client_sni: None,
                originate: Some((ctx, name)),
            };
            serve_io(stream, addrs, settings, shutdown, Some(session), permit).await;
        }
        // Plaintext without origination: the HTTP path judges (and
        // denies, if nothing allows) every request.
        _ => serve_connection(stream, addrs, settings, shutdown, permit).await,
    }
}

/// The name the upstream certificate must carry: the client's SNI, else
/// the original destination's address.
fn upstream_name(sni: Option<&str>, dst: SocketAddr) -> ServerName<'static> {
    sni.and_then(|s| ServerName::try_from(s.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(dst.ip().to_canonical().into()))
}

/// Logs a closed TLS (or TLS-bound) connection as a denial.
fn closed(addrs: &ConnAddrs, sni: Option<&str>, reason: &str) {
    AccessRecord::Tls {
        sni: sni.unwrap_or(""),
        addrs: *addrs,
        outcome: TlsOutcome::Closed(reason),
    }
    .emit();
}

async fn serve_tls(
    mut stream: TcpStream,
    addrs: ConnAddrs,
    settings: Arc<HttpSettings>,
    shutdown: watch::Receiver<bool>,
    permit: Arc<ConnectionPermit>,
) {
    let mut buf = BytesMut::with_capacity(2048);
    let read = tokio::time::timeout(settings.detect_timeout, async {
        loop {
            match hello::parse(&buf) {
                hello::Hello::Incomplete => {}
                other => return Ok::<_, std::io::Error>(other),
            }
            if buf.len() >= hello::MAX_HELLO {
                return Ok(hello::Hello::Malformed("ClientHello too large"));
            }
            let want = (hello::MAX_HELLO - buf.len()).min(4096);
            buf.reserve(want);
            let mut chunk = vec![0u8; want];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(hello::Hello::Malformed("closed inside the ClientHello"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let sni = match read {
        Ok(Ok(hello::Hello::ClientHello { sni })) => sni,
        Ok(Ok(hello::Hello::SeveralServerNames)) => {
            settings.metrics.closed(ClosedConnection::SniList);
            closed(
                &addrs,
                None,
                "several names in the ClientHello's server_name list",
            );
            return;
        }
        Ok(Ok(other)) => {
            closed(
                &addrs,
                None,
                &format!("not a usable ClientHello: {other:?}"),
            );
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %addrs.client, error = %e, "reading the ClientHello failed");
            return;
        }
        Err(_) => {
            closed(&addrs, None, "no complete ClientHello in time");
            return;
        }
    };
    let start = ClientStart::Tls {
        sni: sni.as_deref(),
    };
    let plan = settings
        .policy
        .snapshot()
        .connection_plan(addrs.client, addrs.original_dst, start);
    let (plan, audit_faults) = match plan {
        Ok(d) => (d.plan, d.audit_faults),
        Err(why) => {
            closed(&addrs, sni.as_deref(), &why);
            return;
        }
    };
    match plan {
        ConnPlan::Splice => {
            let audit: Vec<String> = audit_faults.iter().map(Refusal::audit_reason).collect();
            let audit = (!audit.is_empty()).then(|| audit.join("; "));
            splice(stream, buf, addrs, &settings, sni.as_deref(), audit).await
        }
        ConnPlan::Inspect {
            terminate: Some(term),
            originate,
        } => {
            terminate(
                stream, buf, addrs, settings, shutdown, sni, term, originate, permit,
            )
            .await
        }
        ConnPlan::Inspect {
            terminate: None, ..
        } => closed(
            &addrs,
            sni.as_deref(),
            "TLS connection without a terminating context",
        ),
    }
}

/// Passes the connection through untouched (the ClientHello first);
/// `audit` says why a policy would close it when only audit mode passes
/// it.
async fn splice(
    client: TcpStream,
    hello: BytesMut,
    addrs: ConnAddrs,
    settings: &HttpSettings,
    sni: Option<&str>,
    audit: Option<String>,
) {
    let _guard = settings.metrics.connection();
    let mut upstream = match crate::upstream::connect(
        &settings.upstream,
        &settings.policy.snapshot(),
        addrs.client,
        addrs.upstream,
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            AccessRecord::Tls {
                sni: sni.unwrap_or(""),
                addrs,
                outcome: TlsOutcome::UpstreamUnreachable(&e.to_string()),
            }
            .emit();
            return;
        }
    };
    AccessRecord::Tls {
        sni: sni.unwrap_or(""),
        addrs,
        outcome: match &audit {
            None => TlsOutcome::PassedThrough,
            Some(reason) => TlsOutcome::PassedThroughAudit(reason),
        },
    }
    .emit();
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let mut client = IdleTimeout::new(
        client,
        settings.limits.config().idle_timeout,
        settings.metrics.limits().clone(),
    );
    // A policy change after which the ClientHello would no longer be
    // spliced closes the tunnel.
    let sni_owned = sni.map(str::to_string);
    let revoked = settings.policy.revoked(move |p| {
        match p.connection_plan(
            addrs.client,
            addrs.original_dst,
            ClientStart::Tls {
                sni: sni_owned.as_deref(),
            },
        ) {
            Ok(ConnDecision {
                plan: ConnPlan::Splice,
                ..
            }) => None,
            Ok(_) => Some("the server name is no longer passed through".to_string()),
            Err(why) => Some(why),
        }
    });
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(client = %addrs.client, error = %e, "spliced TLS connection ended");
            }
        }
        why = revoked => crate::http::close_revoked(settings, &addrs, &why),
    }
}

/// Terminates with `term`'s certificate and serves HTTP inside, judged
/// with the rules the SNI admits; upstream with TLS from `originate`.
#[allow(clippy::too_many_arguments)]
async fn terminate(
    stream: TcpStream,
    hello: BytesMut,
    addrs: ConnAddrs,
    settings: Arc<HttpSettings>,
    shutdown: watch::Receiver<bool>,
    sni: Option<String>,
    term: ResolvedTlsContext,
    originate: Option<ResolvedTlsContext>,
    permit: Arc<ConnectionPermit>,
) {
    let config = match settings.tls_secrets.server_config(&term) {
        Ok(c) => c,
        Err(e) => {
            closed(
                &addrs,
                sni.as_deref(),
                &format!("terminatingTLS unusable: {e}"),
            );
            return;
        }
    };
    if let Some(o) = &originate
        && let Err(e) = settings.tls_secrets.client_config(o, false)
    {
        closed(
            &addrs,
            sni.as_deref(),
            &format!("originatingTLS unusable: {e}"),
        );
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepted = tokio::time::timeout(
        settings.detect_timeout,
        acceptor.accept(Rewind::new(hello.freeze(), stream)),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            closed(
                &addrs,
                sni.as_deref(),
                &format!("TLS handshake failed: {e}"),
            );
            return;
        }
        Err(_) => {
            closed(&addrs, sni.as_deref(), "TLS handshake timed out");
            return;
        }
    };
    let name = upstream_name(sni.as_deref(), addrs.original_dst);
    let session = TlsSession {
        client_sni: Some(sni),
        originate: originate.map(|o| (o, name)),
    };
    serve_io(tls, addrs, settings, shutdown, Some(session), permit).await;
}
