//! TLS material from secrets: files in lab/file mode
//! (`DIR/<namespace>/<name>/<item>`, items as a Kubernetes Secret's keys:
//! `tls.crt`, `tls.key`, `ca.crt`), or secrets pushed in by the agent's
//! Kubernetes watch. Configs are built once per secret content and rebuilt
//! when the content changes, checked on every new connection: a rotated
//! certificate applies to the next connection without a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use policy_model::l7::tls::ResolvedTlsContext;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest secret item read from a file.
const MAX_ITEM: u64 = 1 << 20;

/// Why a TLS context cannot be used: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {reason}")]
pub struct SecretError {
    /// `secret ns/name`.
    pub context: String,
    pub reason: String,
}

/// The items of one secret.
pub type SecretItems = BTreeMap<String, Vec<u8>>;

/// Where secrets come from.
#[derive(Debug)]
enum Source {
    /// No source configured: every TLS context fails (the port denies).
    None,
    /// `DIR/<namespace>/<name>/<item>` files.
    Dir(PathBuf),
    /// Secrets set by the agent (Kubernetes mode), with a version bumped
    /// on every change.
    Memory(RwLock<PushedSecrets>),
}

/// Pushed secrets by (namespace, name), with their version.
type PushedSecrets = HashMap<(String, String), (u64, Arc<SecretItems>)>;

/// A built config (or why it could not be built) and the stamp it was
/// built from.
type Built<C> = (Stamp, Result<Arc<C>, SecretError>);

/// A secret's content identity: for files, each item's name, size and
/// modification time; for pushed secrets, their version.
type Stamp = Vec<(String, u64, Option<SystemTime>)>;

/// Built configs per (context, role), with the stamp they were built from.
#[derive(Default)]
struct Cache {
    server: HashMap<ResolvedTlsContext, Built<ServerConfig>>,
    client: HashMap<(ResolvedTlsContext, bool), Built<ClientConfig>>,
    /// The last error logged per context and role, so a broken secret is
    /// logged when it breaks, not on every connection.
    reported: HashMap<(ResolvedTlsContext, &'static str), String>,
}

/// The proxy's TLS secrets. Cloning shares the store.
#[derive(Clone)]
pub struct TlsSecrets {
    source: Arc<Source>,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for TlsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecrets")
            .field("source", &self.source)
            .finish()
    }
}

impl Default for TlsSecrets {
    /// No source: every TLS context fails and its port denies.
    fn default() -> Self {
        TlsSecrets::with_source(Source::None)
    }
}

impl TlsSecrets {
    fn with_source(source: Source) -> Self {
        TlsSecrets {
            source: Arc::new(source),
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    /// Secrets read from `DIR/<namespace>/<name>/<item>`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        TlsSecrets::with_source(Source::Dir(dir.into()))
    }

    /// Secrets set with [`set`](Self::set) (Kubernetes mode).
    pub fn in_memory() -> Self {
        TlsSecrets::with_source(Source::Memory(RwLock::new(HashMap::new())))
    }

    /// Sets (or with `None` removes) a pushed secret; no-op for other
    /// sources.
    pub fn set(&self, namespace: &str, name: &str, items: Option<SecretItems>) {
        static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if let Source::Memory(map) = self.source.as_ref()
            && let Ok(mut map) = map.write()
        {
            let key = (namespace.to_string(), name.to_string());
            match items {
                Some(items) => {
                    let v = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    map.insert(key, (v, Arc::new(items)));
                }
                None => {
                    map.remove(&key);
                }
            }
        }
    }

    /// The secret's stamp and, when `read`, its items.
    fn load(
        &self,
        ctx: &ResolvedTlsContext,
        read: bool,
    ) -> Result<(Stamp, Option<Arc<SecretItems>>), SecretError> {
        let err = |reason: String| SecretError {
            context: ctx.to_string(),
            reason,
        };
        match self.source.as_ref() {
            Source::None => Err(err(
                "no TLS secret source is configured (agent flag --tls-secrets-dir, or \
                 Kubernetes mode)"
                    .into(),
            )),
            Source::Memory(map) => {
                let map = map
                    .read()
                    .map_err(|_| err("secret store poisoned".into()))?;
                match map.get(&(ctx.namespace.clone(), ctx.name.clone())) {
                    None => Err(err("the secret does not exist".into())),
                    Some((v, items)) => {
                        Ok((vec![(String::new(), *v, None)], read.then(|| items.clone())))
                    }
                }
            }
            Source::Dir(dir) => {
                let path = secret_dir(dir, ctx);
                let entries = std::fs::read_dir(&path).map_err(|e| {
                    err(format!(
                        "cannot read the secret directory {}: {e}",
                        path.display()
                    ))
                })?;
                let mut stamp = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| err(format!("{}: {e}", path.display())))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    // Follow symlinks (the Kubernetes volume layout is one).
                    let Ok(meta) = std::fs::metadata(entry.path()) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    stamp.push((name, meta.len(), meta.modified().ok()));
                }
                stamp.sort();
                if !read {
                    return Ok((stamp, None));
                }
                let mut items = SecretItems::new();
                for (name, len, _) in &stamp {
                    if *len > MAX_ITEM {
                        return Err(err(format!("item {name} is larger than {MAX_ITEM} bytes")));
                    }
                    let p = path.join(name);
                    let bytes = std::fs::read(&p)
                        .map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
                    items.insert(name.clone(), bytes);
                }
                Ok((stamp, Some(Arc::new(items))))
            }
        }
    }

    /// Logs `result`'s error once per change (and a recovery), naming the
    /// secret and the reason.
    fn report<T>(
        &self,
        ctx: &ResolvedTlsContext,
        role: &'static str,
        result: Result<T, SecretError>,
    ) -> Result<T, SecretError> {
        let Ok(mut cache) = self.cache.lock() else {
            return result;
        };
        let key = (ctx.clone(), role);
        match &result {
            Err(e) => {
                if cache.reported.get(&key) != Some(&e.reason) {
                    tracing::error!(
                        secret = %ctx,
                        role,
                        error = %e,
                        "TLS secret unusable; connections that need it are denied"
                    );
                    cache.reported.insert(key, e.reason.clone());
                }
            }
            Ok(_) => {
                if cache.reported.remove(&key).is_some() {
                    tracing::info!(secret = %ctx, role, "TLS secret usable again");
                }
            }
        }
        result
    }

    /// The server config of a `terminatingTLS` context (errors logged
    /// once per change).
    pub fn server_config(
        &self,
        ctx: &ResolvedTlsContext,
    ) -> Result<Arc<ServerConfig>, SecretError> {
        let r = self.server_config_inner(ctx);
        self.report(ctx, "terminatingTLS", r)
    }

    /// The client config of an `originatingTLS` context, offering ALPN
    /// `h2` or `http/1.1` (errors logged once per change).
    pub fn client_config(
        &self,
        ctx: &ResolvedTlsContext,
        h2: bool,
    ) -> Result<Arc<ClientConfig>, SecretError> {
        let r = self.client_config_inner(ctx, h2);
        self.report(ctx, "originatingTLS", r)
    }

    fn server_config_inner(
        &self,
        ctx: &ResolvedTlsContext,
    ) -> Result<Arc<ServerConfig>, SecretError> {
        let (stamp, _) = self.load(ctx, false)?;
        if let Ok(cache) = self.cache.lock()
            && let Some((s, built)) = cache.server.get(ctx)
            && *s == stamp
        {
            return built.clone();
        }
        let (stamp, items) = self.load(ctx, true)?;
        let items = items.expect("read was requested");
        let built = build_server(ctx, &items)
            .map(Arc::new)
            .map_err(|reason| SecretError {
                context: ctx.to_string(),
                reason,
            });
        if built.is_ok() {
            tracing::info!(secret = %ctx, "terminatingTLS certificate loaded");
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.server.insert(ctx.clone(), (stamp, built.clone()));
        }
        built
    }

    fn client_config_inner(
        &self,
        ctx: &ResolvedTlsContext,
        h2: bool,
    ) -> Result<Arc<ClientConfig>, SecretError> {
        let (stamp, _) = self.load(ctx, false)?;
        let key = (ctx.clone(), h2);
        if let Ok(cache) = self.cache.lock()
            && let Some((s, built)) = cache.client.get(&key)
            && *s == stamp
        {
            return built.clone();
        }
        let (stamp, items) = self.load(ctx, true)?;
        let items = items.expect("read was requested");
        let built = build_client(ctx, &items, h2)
            .map(Arc::new)
            .map_err(|reason| SecretError {
                context: ctx.to_string(),
                reason,
            });
        if let Ok(mut cache) = self.cache.lock() {
            cache.client.insert(key, (stamp, built.clone()));
        }
        built
    }
}

fn secret_dir(dir: &Path, ctx: &ResolvedTlsContext) -> PathBuf {
    dir.join(&ctx.namespace).join(&ctx.name)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An item the policy names (must exist) or its default (may be absent).
fn item<'a>(
    items: &'a SecretItems,
    named: Option<&String>,
    default: &str,
) -> Result<Option<(&'a [u8], String)>, String> {
    match named {
        Some(n) => items
            .get(n)
            .map(|v| Some((v.as_slice(), n.clone())))
            .ok_or_else(|| format!("the policy names item {n:?}, which the secret does not have")),
        None => Ok(items
            .get(default)
            .map(|v| (v.as_slice(), default.to_string()))),
    }
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what} is not a PEM private key: {e}"))
}

fn roots(pem: &[u8], what: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(pem, what)? {
        store
            .add(c)
            .map_err(|e| format!("{what}: a CA certificate is unusable: {e}"))?;
    }
    Ok(store)
}

/// The system trust store, loaded once (originatingTLS without a CA).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                Err(format!(
                    "the secret has no CA and the system trust store is empty ({} errors)",
                    loaded.errors.len()
                ))
            } else {
                Ok(Arc::new(store))
            }
        })
        .clone()
}

fn build_server(ctx: &ResolvedTlsContext, items: &SecretItems) -> Result<ServerConfig, String> {
    let (crt, crt_name) = item(items, ctx.certificate.as_ref(), "tls.crt")?
        .ok_or("terminatingTLS needs a certificate: the secret has no tls.crt")?;
    let (k, k_name) = item(items, ctx.private_key.as_ref(), "tls.key")?
        .ok_or("terminatingTLS needs a private key: the secret has no tls.key")?;
    let chain = certs(crt, &crt_name)?;
    let key = key(k, &k_name)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    // A client CA only when the policy names `trustedCA` (see
    // policy_model::l7::tls for why an implicit ca.crt is not one).
    let builder = match &ctx.trusted_ca {
        Some(named) => {
            let (ca, ca_name) = item(items, Some(named), "")?.ok_or("unreachable: named item")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, &ca_name)?),
                provider(),
            )
            .build()
            .map_err(|e| format!("client CA {ca_name}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{crt_name} and {k_name} do not form a usable key pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn build_client(
    ctx: &ResolvedTlsContext,
    items: &SecretItems,
    h2: bool,
) -> Result<ClientConfig, String> {
    let roots = match item(items, ctx.trusted_ca.as_ref(), "ca.crt")? {
        Some((ca, name)) => Arc::new(roots(ca, &name)?),
        None => system_roots()?,
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("CA: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier);
    let crt = item(items, ctx.certificate.as_ref(), "tls.crt")?;
    let k = item(items, ctx.private_key.as_ref(), "tls.key")?;
    let mut config = match (crt, k) {
        (Some((crt, crt_name)), Some((k, k_name))) => builder
            .with_client_auth_cert(certs(crt, &crt_name)?, key(k, &k_name)?)
            .map_err(|e| format!("client certificate {crt_name}/{k_name}: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        (Some((_, n)), None) | (None, Some((_, n))) => {
            return Err(format!(
                "the secret has {n} but not its pair (tls.crt with tls.key) for a client \
                 certificate"
            ));
        }
    };
    // An h2 client is forwarded as h2 if the upstream takes it, else as
    // HTTP/1.1 (see upstream::open_tls).
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}
