//! TLS on the HTTP proxy port, in process: rustls clients and a rustls
//! upstream with certificates made by rcgen at test time; the proxy on a
//! fixed destination judging client 10.0.1.2 -> server 10.0.1.1:443.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};
use proxy::{
    FixedDestination, PolicyHandle, Proxy, ProxyConfig, ProxyPolicy, TlsSecrets, UpstreamConfig,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: server, labels: {app: server}, ip: 10.0.1.1}
- {namespace: ns1, name: client, labels: {app: client}, ip: 10.0.1.2}
";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA that issues leaf certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA cert"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("root");
        roots
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "portcullis-tls-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Writes secret `ns/name` with `items`; replaces files atomically
/// (rename), as a Kubernetes volume update does.
fn write_secret(dir: &Path, ns: &str, name: &str, items: &[(&str, &str)]) {
    let d = dir.join(ns).join(name);
    std::fs::create_dir_all(&d).expect("secret dir");
    for entry in std::fs::read_dir(&d).expect("read secret dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove old item");
    }
    for (k, v) in items {
        let tmp = d.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, v).expect("write item");
        std::fs::rename(&tmp, d.join(k)).expect("rename item");
    }
}

fn policy(yaml: &str) -> PolicyHandle {
    let set = load_str(yaml, "test.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "topo.yaml").expect("topology");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    PolicyHandle::new(ProxyPolicy::new(&cluster))
}

/// Ingress of `server` on 443 from `client` with the given port-rule body.
fn server_policy(port_rule: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: server-in, namespace: ns1}}
spec:
  endpointSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: client}}}}]
    toPorts:
    - ports: [{{port: '443', protocol: TCP}}]
{port_rule}"
    )
}

/// A TLS HTTP/1.1 upstream answering `200 <path>` with a certificate for
/// `names` from `ca`.
async fn tls_upstream(ca: &Ca, names: &[&str]) -> SocketAddr {
    let (cert, key) = ca.leaf(names);
    let chain: Vec<CertificateDer<'static>> = rustls_pki_types_certs(&cert);
    let key = {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem")
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "upstream saw {}",
                        req.uri().path()
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn rustls_pki_types_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert pem")
}

async fn start_proxy(handle: PolicyHandle, secrets: TlsSecrets, upstream: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    Proxy::serve_with_fixed_destination(
        listener,
        handle,
        ProxyConfig {
            http_port: 0,
            upstream: UpstreamConfig::plain(),
            detect_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(2),
            limits: proxy::LimitConfig::from_process(),
            tls_secrets: secrets,
        },
        FixedDestination {
            client: Some("10.0.1.2:40000".parse().expect("literal")),
            original_dst: "10.0.1.1:443".parse().expect("literal"),
            upstream,
        },
    )
    .expect("proxy starts")
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// One HTTPS GET through the proxy: `Err` when the TLS handshake fails
/// (the proxy closed the connection or the certificate is not trusted).
async fn https_get(
    proxy: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", sni)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn server_names_pass_matching_sni_untouched_and_close_others() {
    let up_ca = Ca::new("upstream CA");
    let upstream = tls_upstream(&up_ca, &["api.test", "other.test"]).await;
    let handle = policy(&server_policy(
        "      serverNames: [api.test, '*.wild.test']",
    ));
    let proxy = start_proxy(handle, TlsSecrets::default(), upstream).await;
    let addr = proxy.local_addrs()[0];
    let client = client_config(up_ca.roots());
    // Spliced: the client sees the upstream's own certificate.
    let (status, body) = https_get(addr, "api.test", client.clone(), "/anything")
        .await
        .expect("allowed SNI passes");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "upstream saw /anything");
    let denied = https_get(addr, "other.test", client.clone(), "/").await;
    assert!(denied.is_err(), "SNI other.test must be closed: {denied:?}");
    // Plaintext HTTP on the SNI-only port gets no rule: 403.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/")
                .header("host", "api.test")
                .body(Empty::<Bytes>::new())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    proxy.shutdown().await;
}

struct Terminating {
    dir: PathBuf,
    proxy: Proxy,
    proxy_ca: Ca,
}

/// serverNames api.test, terminatingTLS ns1/term (no ca.crt, or with one
/// when `term_with_ca`), originatingTLS ns1/orig (ca.crt = the upstream's
/// CA), HTTP GET /public/.* only.
async fn terminating(term_with_ca: bool, orig_ca: Option<&Ca>) -> Terminating {
    let up_ca = Ca::new("upstream CA");
    let upstream = tls_upstream(&up_ca, &["api.test"]).await;
    let proxy_ca = Ca::new("portcullis CA");
    let dir = tempdir("term");
    let (crt, key) = proxy_ca.leaf(&["api.test"]);
    let ca_pem = proxy_ca.pem();
    let mut items = vec![("tls.crt", crt.as_str()), ("tls.key", key.as_str())];
    if term_with_ca {
        items.push(("ca.crt", ca_pem.as_str()));
    }
    write_secret(&dir, "ns1", "term", &items);
    let orig_pem = orig_ca.unwrap_or(&up_ca).pem();
    write_secret(&dir, "ns1", "orig", &[("ca.crt", orig_pem.as_str())]);
    let handle = policy(&server_policy(
        "      serverNames: [api.test]
      terminatingTLS: {secret: {name: term}}
      originatingTLS: {secret: {name: orig, namespace: ns1}}
      rules:
        http:
        - {method: GET, path: '/public/.*'}",
    ));
    let proxy = start_proxy(handle, TlsSecrets::from_dir(&dir), upstream).await;
    Terminating {
        dir,
        proxy,
        proxy_ca,
    }
}

#[tokio::test]
async fn terminate_judge_http_and_originate_verified() {
    for with_ca in [false, true] {
        let t = terminating(with_ca, None).await;
        let addr = t.proxy.local_addrs()[0];
        let client = client_config(t.proxy_ca.roots());
        let (status, body) = https_get(addr, "api.test", client.clone(), "/public/a")
            .await
            .expect("allowed request");
        assert_eq!(status, StatusCode::OK, "ca.crt in secret: {with_ca}");
        assert_eq!(body, "upstream saw /public/a");
        let (status, body) = https_get(addr, "api.test", client.clone(), "/private")
            .await
            .expect("denied request still gets an answer");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "Access denied\r\n");
        // The proxy presents its own certificate: a client trusting only
        // the upstream's CA would fail; wrong SNI is closed before that.
        assert!(
            https_get(addr, "nope.test", client.clone(), "/public/a")
                .await
                .is_err()
        );
        t.proxy.shutdown().await;
        let _ = std::fs::remove_dir_all(&t.dir);
    }
}

#[tokio::test]
async fn upstream_not_trusted_by_the_originating_ca_is_a_bad_gateway() {
    let stranger = Ca::new("some other CA");
    let t = terminating(false, Some(&stranger)).await;
    let addr = t.proxy.local_addrs()[0];
    let (status, _) = https_get(
        addr,
        "api.test",
        client_config(t.proxy_ca.roots()),
        "/public/a",
    )
    .await
    .expect("the client side still works");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    t.proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

#[tokio::test]
async fn rotated_certificate_applies_to_new_connections() {
    let t = terminating(false, None).await;
    let addr = t.proxy.local_addrs()[0];
    let old = client_config(t.proxy_ca.roots());
    assert!(
        https_get(addr, "api.test", old.clone(), "/public/1")
            .await
            .is_ok()
    );
    let new_ca = Ca::new("rotated CA");
    let (crt, key) = new_ca.leaf(&["api.test"]);
    write_secret(
        &t.dir,
        "ns1",
        "term",
        &[("tls.crt", crt.as_str()), ("tls.key", key.as_str())],
    );
    let new = client_config(new_ca.roots());
    let (status, _) = https_get(addr, "api.test", new, "/public/2")
        .await
        .expect("new connection gets the rotated certificate");
    assert_eq!(status, StatusCode::OK);
    assert!(
        https_get(addr, "api.test", old, "/public/3").await.is_err(),
        "the old CA no longer verifies the new certificate"
    );
    t.proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

#[tokio::test]
async fn missing_or_bad_secrets_close_the_connection() {
    let t = terminating(false, None).await;
    let addr = t.proxy.local_addrs()[0];
    let client = client_config(t.proxy_ca.roots());
    // A key that does not parse.
    let (crt, _) = t.proxy_ca.leaf(&["api.test"]);
    write_secret(
        &t.dir,
        "ns1",
        "term",
        &[("tls.crt", crt.as_str()), ("tls.key", "not a key")],
    );
    assert!(
        https_get(addr, "api.test", client.clone(), "/public/a")
            .await
            .is_err()
    );
    // No tls.key at all.
    write_secret(&t.dir, "ns1", "term", &[("tls.crt", crt.as_str())]);
    assert!(
        https_get(addr, "api.test", client.clone(), "/public/a")
            .await
            .is_err()
    );
    // The secret is gone.
    std::fs::remove_dir_all(t.dir.join("ns1").join("term")).expect("remove secret");
    assert!(
        https_get(addr, "api.test", client, "/public/a")
            .await
            .is_err()
    );
    t.proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

#[tokio::test]
async fn no_secret_source_denies_terminating_ports() {
    let up_ca = Ca::new("upstream CA");
    let upstream = tls_upstream(&up_ca, &["api.test"]).await;
    let handle = policy(&server_policy(
        "      terminatingTLS: {secret: {name: term}}",
    ));
    let proxy = start_proxy(handle, TlsSecrets::default(), upstream).await;
    let addr = proxy.local_addrs()[0];
    let got = https_get(addr, "api.test", client_config(up_ca.roots()), "/").await;
    assert!(got.is_err(), "{got:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn h2_client_reaches_an_http1_upstream_through_termination() {
    let t = terminating(false, None).await;
    let addr = t.proxy.local_addrs()[0];
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(t.proxy_ca.roots())
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(c))
        .connect(ServerName::try_from("api.test").expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for (path, want) in [
        ("/public/h2", StatusCode::OK),
        ("/secret", StatusCode::FORBIDDEN),
    ] {
        let req = Request::get(format!("https://api.test{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), want, "{path}");
        if want == StatusCode::OK {
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, Bytes::from(format!("upstream saw {path}")));
        }
    }
    t.proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// A raw ClientHello record whose `server_name` list holds `names` in
/// order (one extension, several `host_name` entries).
fn client_hello_with_names(names: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0u8); // host_name
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(name.as_bytes());
    }
    let mut ext = vec![0u8, 0]; // server_name
    ext.extend(((list.len() + 2) as u16).to_be_bytes());
    ext.extend((list.len() as u16).to_be_bytes());
    ext.extend(list);
    let mut body = vec![3u8, 3];
    body.extend([7u8; 32]);
    body.push(0); // session id
    body.extend([0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend([1, 0]); // null compression
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1u8];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16u8, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// A TCP upstream that records the first bytes of every connection.
async fn recording_tcp_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                s.lock().expect("lock").push(buf[..n].to_vec());
                // Keep the connection open past the client's wait.
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    (addr, seen)
}

/// Sends `hello` to the proxy; whether the proxy closed the connection
/// (EOF or reset) within two seconds.
async fn closed_after_hello(addr: SocketAddr, hello: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(hello).await.expect("write hello");
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn every_name_of_a_server_name_list_counts() {
    let (upstream, seen) = recording_tcp_upstream().await;
    let handle = policy(&server_policy("      serverNames: [api.test]"));
    let proxy = start_proxy(handle, TlsSecrets::default(), upstream).await;
    let addr = proxy.local_addrs()[0];
    // Control: the allowed name alone is spliced to the upstream.
    let alone = client_hello_with_names(&["api.test"]);
    assert!(!closed_after_hello(addr, &alone).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().expect("lock").clone(), vec![alone]);
    // An allowed name first and a denied one second, and the reverse:
    // never spliced (RFC 6066 allows one host_name; an upstream could
    // pick the second).
    for names in [["api.test", "admin.test"], ["admin.test", "api.test"]] {
        let hello = client_hello_with_names(&names);
        assert!(
            closed_after_hello(addr, &hello).await,
            "{names:?} not closed"
        );
    }
    // The same name twice is still a list of two.
    let twice = client_hello_with_names(&["api.test", "api.test"]);
    assert!(closed_after_hello(addr, &twice).await, "a doubled name");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "only the control reached the upstream"
    );
    assert_eq!(
        proxy
            .metrics()
            .closed_count(proxy::http::metrics::ClosedConnection::SniList),
        3
    );
    proxy.shutdown().await;
}
