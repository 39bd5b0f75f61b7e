//! The fake API server driven by real kubectl binaries with default
//! flags: `/usr/bin/kubectl` and, when present, Debian bookworm's
//! kubectl 1.20 (`PORTCULLIS_KUBECTL_120`, or extracted to
//! `/tmp/kubectl120` with `cd /tmp && apt-get download kubernetes-client &&
//! dpkg -x kubernetes-client_*.deb /tmp/kubectl120`). A missing kubectl is
//! a SKIP line, not a failure.
//!
//! Each kubectl creates a namespace, applies, reads, labels and deletes a
//! pod, applies, edits, re-applies and deletes a NetworkPolicy, a
//! CiliumNetworkPolicy and a CiliumClusterwideNetworkPolicy, is refused a
//! broken policy with the watcher's own reason, and every change is seen
//! on raw watches and by the crate's watcher. The project's policy
//! examples (conformance cases) pass both kubectls' validation.

#[path = "support/project_policies.rs"]
mod project_policies;

use futures::StreamExt;
use k8s_watch::fake::{FakeApiServer, FakeHandle, policy_validator};
use k8s_watch::{PodScope, WatchConfig, Watcher};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, WatchEvent, WatchParams};
use project_policies::project_policies;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-kubectl-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kubectl binaries present, by label: `/usr/bin/kubectl`, kubectl
/// 1.20, and any listed in `PORTCULLIS_KUBECTL_EXTRA` (colon-separated
/// paths, e.g. the versioned binaries of the Google Cloud SDK).
fn kubectls() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let current = PathBuf::from("/usr/bin/kubectl");
    if current.exists() {
        out.push(("kubectl".to_string(), current));
    } else {
        eprintln!("SKIP /usr/bin/kubectl: not installed");
    }
    let old = std::env::var_os("PORTCULLIS_KUBECTL_120")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/kubectl120/usr/bin/kubectl"));
    if old.exists() {
        out.push((OLD.to_string(), old));
    } else {
        eprintln!(
            "SKIP kubectl 1.20: {} is missing (cd /tmp && apt-get download kubernetes-client && \
             dpkg -x kubernetes-client_*.deb /tmp/kubectl120, or set PORTCULLIS_KUBECTL_120)",
            old.display()
        );
    }
    if let Some(extra) = std::env::var_os("PORTCULLIS_KUBECTL_EXTRA") {
        for p in std::env::split_paths(&extra).filter(|p| p.exists()) {
            out.push((p.display().to_string(), p));
        }
    }
    out
}

/// The label of kubectl 1.20, which validates on the client (OpenAPI v2)
/// and sends no `fieldValidation`.
const OLD: &str = "kubectl-1.20";

/// One kubectl against one fake server, with its own HOME (discovery
/// cache) and kubeconfig.
struct Kubectl {
    label: String,
    bin: PathBuf,
    dir: TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(label: &str, bin: &Path, fake: &FakeHandle) -> Kubectl {
        Kubectl::with_kubeconfig(label, bin, &fake.kubeconfig_yaml())
    }

    fn with_kubeconfig(label: &str, bin: &Path, kubeconfig_text: &str) -> Kubectl {
        let dir = TempDir::new("kubectl");
        let kubeconfig = dir.0.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text).expect("write the kubeconfig");
        Kubectl {
            label: label.to_string(),
            bin: bin.to_path_buf(),
            dir,
            kubeconfig,
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.0.join(name);
        std::fs::write(&path, text).expect("write a manifest");
        path.display().to_string()
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HOME", &self.dir.0)
            .env_remove("KUBECONFIG");
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("the kubectl task runs")
            .expect("kubectl starts")
    }

    /// Runs, asserts success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {stderr}{stdout}",
            self.label
        );
        assert!(
            !stderr.contains("error calculating patch"),
            "{} {args:?}: {stderr}",
            self.label
        );
        stdout
    }

    /// Runs, asserts failure, returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "{} {args:?} succeeded: {}",
            self.label,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all).await).expect("kubectl prints JSON")
    }
}

/// Raw watches of every kind the test changes, recording
/// `TYPE Kind namespace/name` lines per kind.
struct Recorder {
    events: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn record_watches(fake: &FakeHandle) -> Recorder {
    let kinds = [
        ("", "v1", "Namespace", "namespaces"),
        ("", "v1", "Pod", "pods"),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        (
            "cilium.io",
            "v2",
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
        ),
        (
            "cilium.io",
            "v2",
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
        ),
    ];
    let events: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    let before = fake.requests().len();
    for (group, version, kind, plural) in kinds {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(fake.client(), &ar);
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(290), "0")
                .await
                .expect("the watch starts")
                .boxed();
            while let Some(Ok(ev)) = stream.next().await {
                let (t, o) = match ev {
                    WatchEvent::Added(o) => ("ADDED", o),
                    WatchEvent::Modified(o) => ("MODIFIED", o),
                    WatchEvent::Deleted(o) => ("DELETED", o),
                    _ => continue,
                };
                let name = format!(
                    "{}/{}",
                    o.metadata.namespace.unwrap_or_default(),
                    o.metadata.name.unwrap_or_default()
                );
                let mut e = events.lock().expect("not poisoned");
                e.entry(kind.to_string())
                    .or_default()
                    .push(format!("{t} {name}"));
            }
        }));
    }
    // The watches must be open before the first change.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests()[before..]
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count()
        < kinds.len()
    {
        assert!(Instant::now() < deadline, "the watches did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Recorder { events, tasks }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: x
  labels: {app: a}
spec:
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: 80
";

fn network_policy(from: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-from-b, namespace: x}}
spec:
  podSelector:
    matchLabels: {{app: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {{app: {from}}}
    ports:
    - {{port: 80, protocol: TCP}}
"
    )
}

fn cilium_policy(port: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: a-from-c, namespace: x}}
spec:
  endpointSelector:
    matchLabels: {{app: a}}
  ingress:
  - fromEndpoints:
    - matchLabels: {{app: c}}
    toPorts:
    - ports:
      - {{port: \"{port}\", protocol: TCP}}
"
    )
}

fn clusterwide_policy(entities: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: from-host}}
spec:
  endpointSelector: {{}}
  ingress:
  - fromEntities: [{entities}]
"
    )
}

const BROKEN_SELECTOR: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: x}
spec:
  endpointSelector:
    matchExpressions:
    - {key: app, operator: Sometimes}
";

const BROKEN_PORT: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken-port, namespace: x}
spec:
  endpointSelector: {}
  ingress:
  - toPorts:
    - ports:
      - {port: \"99999\", protocol: TCP}
";

fn labels(pod: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default()
}

async fn drive(label: &str, bin: &Path) {
    let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
    fake.set_validator(policy_validator());
    let recorder = record_watches(&fake).await;
    let mut config = WatchConfig::new("n1");
    config.pod_scope = PodScope::Cluster;
    let watcher = Watcher::start(fake.client(), config);
    let k = Kubectl::new(label, bin, &fake);

    let out = k.ok(&["create", "namespace", "x"]).await;
    assert!(out.contains("namespace/x created"), "{out}");

    // A pod: apply, read, label.
    let pod = k.file("pod.yaml", POD);
    let out = k.ok(&["apply", "-f", &pod]).await;
    assert!(out.contains("pod/a created"), "{out}");
    let got = k.json(&["get", "pod", "a", "-n", "x"]).await;
    assert_eq!(got["kind"], "Pod");
    assert_eq!(got["spec"]["containers"][0]["image"], "nginx");
    assert!(got["metadata"]["uid"].as_str().is_some());
    let table = k.ok(&["get", "pods", "-n", "x"]).await;
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "STATUS", "AGE"] {
        assert!(header.contains(column), "{label}: {table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("Pending")),
        "{table}"
    );
    k.ok(&["label", "pod", "a", "-n", "x", "team=blue"]).await;
    assert_eq!(
        labels(&k.json(&["get", "pod", "a", "-n", "x"]).await)["team"],
        "blue"
    );
    let err = k.fails(&["label", "pod", "a", "-n", "x", "team=red"]).await;
    assert!(err.contains("already has a value"), "{err}");
    k.ok(&["label", "pod", "a", "-n", "x", "team=red", "--overwrite"])
        .await;
    assert_eq!(
        labels(&k.json(&["get", "pod", "a", "-n", "x"]).await)["team"],
        "red"
    );
    k.ok(&["label", "pod", "a", "-n", "x", "team-"]).await;
    let l = labels(&k.json(&["get", "pod", "a", "-n", "x"]).await);
    assert_eq!(l, BTreeMap::from([("app".to_string(), "a".to_string())]));
    let selected = k
        .ok(&["get", "pods", "-A", "-l", "app in (a,b),!team"])
        .await;
    assert!(selected.contains(" a "), "{selected}");

    // The three policy kinds: apply, edit, apply again.
    let np = k.file("np.yaml", &network_policy("b"));
    let cnp = k.file("cnp.yaml", &cilium_policy("80"));
    let ccnp = k.file("ccnp.yaml", &clusterwide_policy("host"));
    for f in [&np, &cnp, &ccnp] {
        let out = k.ok(&["apply", "-f", f]).await;
        assert!(out.contains("created"), "{out}");
    }
    k.ok(&["apply", "-f", &np]).await;
    k.file("np.yaml", &network_policy("c"));
    k.file("cnp.yaml", &cilium_policy("8080"));
    k.file("ccnp.yaml", &clusterwide_policy("host, world"));
    for f in [&np, &cnp, &ccnp] {
        let out = k.ok(&["apply", "-f", f]).await;
        assert!(out.contains("configured"), "{out}");
    }
    let got = k
        .json(&["get", "networkpolicy", "a-from-b", "-n", "x"])
        .await;
    assert_eq!(
        got["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
        "c"
    );
    assert_eq!(got["metadata"]["generation"], 2);
    let got = k.json(&["get", "cnp", "a-from-c", "-n", "x"]).await;
    assert_eq!(
        got["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
        "8080"
    );
    let got = k.json(&["get", "ccnp", "from-host"]).await;
    assert_eq!(
        got["spec"]["ingress"][0]["fromEntities"],
        json!(["host", "world"])
    );

    // The agent's watcher has the edited policies.
    let mut snapshots = watcher.subscribe();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = snapshots.borrow().as_ref().is_some_and(|s| {
            s.policies.len() == 3
                && s.policies.iter().any(|p| p.json.contains("8080"))
                && s.policies.iter().any(|p| p.json.contains("world"))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the watcher did not see the policies"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), snapshots.changed()).await;
    }

    // Broken policies are refused with the watcher's reason.
    let broken = k.file("broken.yaml", BROKEN_SELECTOR);
    let err = k.fails(&["apply", "-f", &broken]).await;
    assert!(
        err.contains("\"broken\" is invalid") && err.contains("Sometimes"),
        "{label}: {err}"
    );
    let broken = k.file("broken-port.yaml", BROKEN_PORT);
    let err = k.fails(&["apply", "-f", &broken]).await;
    assert!(
        err.contains("\"broken-port\" is invalid") && err.contains("99999"),
        "{label}: {err}"
    );
    let err = k.fails(&["get", "cnp", "broken", "-n", "x"]).await;
    assert!(
        err.contains("ciliumnetworkpolicies.cilium.io \"broken\" not found"),
        "{err}"
    );

    // Delete everything.
    for f in [&np, &cnp, &ccnp, &pod] {
        let out = k.ok(&["delete", "-f", f]).await;
        assert!(out.contains("deleted"), "{out}");
    }
    let err = k.fails(&["get", "pod", "a", "-n", "x"]).await;
    assert!(err.contains("pods \"a\" not found"), "{err}");
    k.ok(&["delete", "namespace", "x"]).await;

    let want: BTreeMap<String, Vec<String>> = [
        ("Namespace", vec!["ADDED /x", "DELETED /x"]),
        (
            "Pod",
            vec![
                "ADDED x/a",
                "MODIFIED x/a",
                "MODIFIED x/a",
                "MODIFIED x/a",
                "DELETED x/a",
            ],
        ),
        (
            "NetworkPolicy",
            vec![
                "ADDED x/a-from-b",
                "MODIFIED x/a-from-b",
                "DELETED x/a-from-b",
            ],
        ),
        (
            "CiliumNetworkPolicy",
            vec![
                "ADDED x/a-from-c",
                "MODIFIED x/a-from-c",
                "DELETED x/a-from-c",
            ],
        ),
        (
            "CiliumClusterwideNetworkPolicy",
            vec![
                "ADDED /from-host",
                "MODIFIED /from-host",
                "DELETED /from-host",
            ],
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = recorder.events.lock().expect("not poisoned").clone();
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "{label}: watch events {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked: BTreeSet<String> = fake
        .requests()
        .iter()
        .map(|r| r.split('?').next().unwrap_or_default().to_string())
        .filter(|r| !r.contains("watch"))
        .collect();
    eprintln!("{label} run, requests served (kubectl's and the watchers'): {asked:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_manages_objects_and_the_watch_sees_every_change() {
    for (label, bin) in kubectls() {
        drive(&label, &bin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_validates_the_project_policy_examples() {
    let policies = project_policies();
    assert!(policies.len() > 50, "found {} policies", policies.len());
    for (label, bin) in kubectls() {
        let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
        let namespaces: BTreeSet<&str> = policies
            .iter()
            .filter_map(|p| p.pointer("/metadata/namespace").and_then(Value::as_str))
            .collect();
        for ns in namespaces {
            fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .expect("a namespace");
        }
        let k = Kubectl::new(&label, &bin, &fake);
        // One JSON List: kubectl's YAML 1.1 would read the cases'
        // unquoted `y` and `n` as booleans.
        let list = json!({"apiVersion": "v1", "kind": "List", "items": policies});
        let file = k.file("policies.json", &list.to_string());
        let out = k.ok(&["apply", "--dry-run=server", "-f", &file]).await;
        assert_eq!(
            out.lines()
                .filter(|l| l.contains("(server dry run)"))
                .count(),
            policies.len(),
            "{label}: {out}"
        );
        // A clearly wrong type is refused.
        let wrong = k.file(
            "wrong.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: w, namespace: default}\nspec: {podSelector: [1]}\n",
        );
        let err = k.fails(&["apply", "-f", &wrong]).await;
        assert!(err.contains("podSelector"), "{label}: {err}");
        // Dry runs and refusals stored nothing: only the namespaces.
        assert_eq!(
            fake.resource_version() as usize,
            namespaces_count(&policies)
        );
    }
}

fn namespaces_count(policies: &[Value]) -> usize {
    policies
        .iter()
        .filter_map(|p| p.pointer("/metadata/namespace").and_then(Value::as_str))
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_and_field_validation_on_a_second_listener() {
    for (label, bin) in kubectls() {
        let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a second listener");
        let second = format!("http://{}", listener.local_addr().expect("an address"));
        fake.serve_listener(listener);
        let k = Kubectl::with_kubeconfig(&label, &bin, &FakeHandle::kubeconfig_yaml_for(&second));

        // Server-side apply: created, then the edited fields merged in.
        let ccnp = k.file("ccnp.yaml", &clusterwide_policy("host"));
        let out = k.ok(&["apply", "--server-side", "-f", &ccnp]).await;
        assert!(out.contains("serverside-applied"), "{label}: {out}");
        k.file("ccnp.yaml", &clusterwide_policy("world"));
        k.ok(&["apply", "--server-side", "-f", &ccnp]).await;
        let got = k.json(&["get", "ccnp", "from-host"]).await;
        assert_eq!(got["spec"]["ingress"][0]["fromEntities"], json!(["world"]));
        assert_eq!(got["metadata"]["generation"], 2);

        // Unknown fields: refused by default (by kubectl 1.20 itself,
        // which validates against /openapi/v2), stored without them when
        // validation is off.
        let unknown = k.file(
            "unknown.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: u, namespace: default}\nspec: {podSelector: {}, foo: 1}\n",
        );
        let err = k.fails(&["apply", "-f", &unknown]).await;
        assert!(
            err.contains("unknown field") && err.contains("foo"),
            "{label}: {err}"
        );
        let out = k.run(&["apply", "--validate=false", "-f", &unknown]).await;
        assert!(out.status.success(), "{label}: {out:?}");
        let got = k.json(&["get", "netpol", "u"]).await;
        assert_eq!(got["spec"], json!({"podSelector": {}}));
        if label != OLD {
            let err = k
                .fails(&["apply", "-f", &unknown, "--dry-run=server"])
                .await;
            assert!(
                err.contains("strict decoding error: unknown field \"spec.foo\""),
                "{err}"
            );
            k.ok(&["delete", "netpol", "u"]).await;
            let out = k.run(&["apply", "--validate=warn", "-f", &unknown]).await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            assert!(err.contains("unknown field \"spec.foo\""), "{err}");
        }
        // The status subresource (kubectl 1.24+): a pod gets an address.
        if label != OLD {
            let pod = k.file(
                "pod.yaml",
                &POD.replace("namespace: x", "namespace: default"),
            );
            k.ok(&["apply", "-f", &pod]).await;
            k.ok(&[
                "patch",
                "pod",
                "a",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status": {"phase": "Running", "podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}]}}"#,
            ])
            .await;
            let wide = k.ok(&["get", "pod", "a", "-o", "wide"]).await;
            assert!(
                wide.contains("Running") && wide.contains("10.1.2.3"),
                "{wide}"
            );
            // Writes to the object keep the status.
            k.ok(&["label", "pod", "a", "seen=yes"]).await;
            let got = k.json(&["get", "pod", "a"]).await;
            assert_eq!(got["status"]["podIP"], "10.1.2.3");
        }
        // Every request came through the second listener.
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.starts_with("PATCH /apis/cilium.io"))
        );
    }
}

const CIDR_GROUP: &str = "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners}
spec:
  externalCIDRs: [198.51.100.0/24, 2001:db8:1::/48]
";

const CLUSTER_POLICY: &str = "apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: sensitive-ns}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {team: vault}}
  ingress:
  - {name: nobody, action: Deny, from: [{namespaces: {}}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_the_crds_and_manages_cidr_groups_and_cluster_policies() {
    for (label, bin) in kubectls() {
        let (_url, fake) = FakeApiServer::start().await.expect("the fake starts");
        let k = Kubectl::new(&label, &bin, &fake);
        let crds = k.ok(&["get", "crd"]).await;
        for name in [
            "ciliumcidrgroups.cilium.io",
            "ciliumclusterwidenetworkpolicies.cilium.io",
            "ciliumnetworkpolicies.cilium.io",
            "clusternetworkpolicies.policy.networking.k8s.io",
        ] {
            assert!(crds.contains(name), "{label}: {crds}");
        }
        let crd = k
            .json(&["get", "crd", "ciliumnetworkpolicies.cilium.io"])
            .await;
        assert_eq!(crd["spec"]["names"]["kind"], "CiliumNetworkPolicy");
        let err = k
            .fails(&["delete", "crd", "ciliumnetworkpolicies.cilium.io"])
            .await;
        assert!(err.contains("read-only"), "{label}: {err}");

        let group = k.file("group.yaml", CIDR_GROUP);
        let policy = k.file("cluster-policy.yaml", CLUSTER_POLICY);
        for f in [&group, &policy] {
            let out = k.ok(&["apply", "-f", f]).await;
            assert!(out.contains("created"), "{label}: {out}");
        }
        let table = k.ok(&["get", "ccg"]).await;
        assert!(
            table.contains("partners") && table.contains("198.51.100.0/24"),
            "{label}: {table}"
        );
        let table = k.ok(&["get", "clusternetworkpolicies"]).await;
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAME", "TIER", "PRIORITY", "AGE"] {
            assert!(header.contains(column), "{label}: {table}");
        }
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("sensitive-ns") && l.contains("Admin") && l.contains("10")),
            "{label}: {table}"
        );
        // Edited: the tier is refused in the wrong case, then applied.
        k.file(
            "cluster-policy.yaml",
            &CLUSTER_POLICY.replace("tier: Admin", "tier: admin"),
        );
        let err = k.fails(&["apply", "-f", &policy]).await;
        assert!(
            err.contains("\"sensitive-ns\" is invalid") && err.contains("spec.tier"),
            "{label}: {err}"
        );
        k.file(
            "cluster-policy.yaml",
            &CLUSTER_POLICY.replace("priority: 10", "priority: 20"),
        );
        let out = k.ok(&["apply", "-f", &policy]).await;
        assert!(out.contains("configured"), "{label}: {out}");
        let got = k
            .json(&["get", "clusternetworkpolicy", "sensitive-ns"])
            .await;
        assert_eq!(got["spec"]["priority"], 20);
        for f in [&group, &policy] {
            let out = k.ok(&["delete", "-f", f]).await;
            assert!(out.contains("deleted"), "{label}: {out}");
        }
    }
}
