//! Root-only lab tests of audit mode and visibility in the L7 proxies
//! (issue 17), with real clients and servers: curl against haproxy
//! (HTTP/1.1 and h2c), grpcio, dig against knot, curl against an
//! `openssl s_server` (TLS SNI), and confluent-kafka against tansu when it
//! is installed. An audited policy's L7 rules, an audited namespace and a
//! node in audit mode let through what they would deny and report it as
//! AUDIT, naming the policy; an enforced L7 policy still denies; the
//! `policy.cilium.io/proxy-visibility` annotation (pod and namespace)
//! yields L7 records without denying anything L3/L4 policy allows, and
//! allows nothing it denies. IPv4 and IPv6.
//!
//! Run them one at a time machine-wide:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test lab_l7_audit`.

#[path = "support/lab.rs"]
mod lab;

use lab::{TestLab, lab_guard, must, wait_until};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {team: x}}
  - {name: y, labels: {team: y}, annotations: {policy.cilium.io/audit-mode: "true"}}
  - {name: v, labels: {team: v}, annotations: {policy.cilium.io/proxy-visibility: "<Egress/53/UDP/DNS>"}}
pods:
  - {namespace: x, name: client, labels: {app: client}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: web, labels: {app: web}, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: api, labels: {app: api}, ips: [10.200.1.12, "fd00:200::1:12"]}
  - {namespace: x, name: vis, labels: {app: vis}, ips: [10.200.1.13, "fd00:200::1:13"], annotations: {policy.cilium.io/proxy-visibility: "<Ingress/80/TCP/HTTP>"}}
  - {namespace: x, name: other, labels: {app: other}, ips: [10.200.1.14, "fd00:200::1:14"]}
  - {namespace: x, name: kafka, labels: {app: kafka}, ips: [10.200.1.92]}
  - {namespace: y, name: yweb, labels: {app: yweb}, ips: [10.200.2.11, "fd00:200::2:11"]}
  - {namespace: v, name: asker, labels: {app: asker}, ips: [10.200.3.10, "fd00:200::3:10"]}
world: {ips: [10.201.0.53, "fd00:201::53"]}
"#;

/// web: only an audited L7 policy (HTTP on 80, gRPC on 50051, SNI on
/// 443). client's DNS: only an audited policy. api: an enforced L7
/// policy. kafka: an audited Kafka policy. vis: an enforced L3 allow from
/// client (its annotation asks for HTTP visibility on 80). yweb (in the
/// audited namespace y): an enforced L7 policy.
const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-l7-audit
  namespace: x
  annotations: {policy.cilium.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/public/.*"}]}
    - ports: [{port: "50051", protocol: TCP}]
      rules: {http: [{method: POST, path: "/grpc.health.v1.Health/Check"}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: client-dns-audit
  namespace: x
  annotations: {policy.cilium.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEntities: [world]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules: {dns: [{matchPattern: "*.ok.test"}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-l7, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/public/.*"}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: kafka-audit
  namespace: x
  annotations: {policy.cilium.io/audit-mode: "true"}
spec:
  endpointSelector: {matchLabels: {app: kafka}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "9092", protocol: TCP}]
      rules:
        kafka: [{role: produce, topic: orders}, {apiKey: initproducerid}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: vis-from-client, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: vis}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: yweb-l7, namespace: y}
spec:
  endpointSelector: {matchLabels: {app: yweb}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client, k8s:io.kubernetes.pod.namespace: x}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/public/.*"}]}
    - ports: [{port: "443", protocol: TCP}]
      serverNames: [ok.test]
"#;

const ZONE: &str = "$TTL 60
@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 60
@ NS ns.lab.
ns.lab. A 10.201.0.53
www.ok.test. 60 A 10.201.9.1
www.bad.test. 60 A 10.201.9.2
";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// haproxy answering 200 "ok" to every request on port 80 of `pod`.
fn serve_http(lab: &mut TestLab, pod: &str) {
    let cfg = lab
        .dir
        .join(format!("haproxy-{}.cfg", pod.replace('/', "-")));
    std::fs::write(
        &cfg,
        "global\n  maxconn 256\ndefaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 2s\nfrontend pod\n  bind :::80 v4v6\n  http-request return status 200 content-type text/plain string \"ok\"\n",
    )
    .expect("haproxy config");
    lab.spawn(pod, &["haproxy", "-db", "-f", cfg.to_str().expect("utf-8")]);
}

/// `openssl s_server -www` on port 443 of `pod` with a throwaway cert.
fn serve_tls(lab: &mut TestLab, pod: &str) {
    let (key, cert) = (lab.dir.join("tls.key"), lab.dir.join("tls.crt"));
    if !cert.exists() {
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=lab", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req")
            .status
            .success();
        assert!(ok, "openssl req");
    }
    lab.spawn(
        pod,
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            "443",
            "-cert",
            cert.to_str().expect("utf-8"),
            "-key",
            key.to_str().expect("utf-8"),
        ],
    );
}

/// The HTTP status `curl` in `pod` gets for `url` ("000": no answer).
fn curl(lab: &TestLab, pod: &str, url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    lab.sh(pod, &args)
}

/// `https://NAME/` from `pod`, NAME resolved to `ip`, certificate not
/// checked (only the SNI matters here): the status, "000" when refused.
fn tls_get(lab: &TestLab, pod: &str, name: &str, ip: &str) -> String {
    let resolve = format!("{name}:443:{ip}");
    curl(
        lab,
        pod,
        &format!("https://{name}/"),
        &["-k", "--resolve", &resolve],
    )
}

/// The status line of `dig` in `pod` for `name` at `server`.
fn dig(lab: &TestLab, pod: &str, server: &str, name: &str) -> String {
    let at = format!("@{server}");
    let out = lab.sh(pod, &["dig", "+time=2", "+tries=1", &at, name, "A"]);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string()
}

/// The gRPC status of one Health call from `pod` (grpcio).
fn grpc(lab: &TestLab, pod: &str, addr: &str, method: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/health_peer.py");
    lab.sh(pod, &["python3", script, "client", addr, method])
}

fn observe(flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["observe", "-o", "json", "--all"];
    args.extend_from_slice(flags);
    must(&args)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| r["flow"].clone())
        .collect()
}

/// `Kind ns/name` of each policy in `list`.
fn names(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .map(|l| {
            l.iter()
                .map(|p| {
                    format!(
                        "{} {}/{}",
                        p["kind"].as_str().unwrap_or(""),
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.dedup();
    out
}

/// The L7 flows of `flows` matching `pred`, or a panic listing them all.
fn l7_flow<'a>(flows: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    flows
        .iter()
        .filter(|f| f["Type"] == "L7")
        .find(|f| pred(f))
        .unwrap_or_else(|| {
            panic!(
                "no L7 flow: {what}\n{}",
                flows
                    .iter()
                    .filter(|f| f["Type"] == "L7")
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

/// The HTTP flow to `ip` for `path` (a suffix of the URL) with `verdict`.
fn http_flow<'a>(flows: &'a [Value], ip: &str, path: &str, verdict: &str) -> &'a Value {
    l7_flow(flows, &format!("HTTP {verdict} {ip} {path}"), |f| {
        f["IP"]["destination"] == ip
            && f["verdict"] == verdict
            && f["l7"]["http"]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(path))
    })
}

/// The policies a flow names as deciding it, by verdict and direction.
fn deciders(f: &Value) -> Vec<String> {
    let key = match (f["verdict"].as_str(), f["traffic_direction"].as_str()) {
        (Some("FORWARDED"), Some("INGRESS")) => "ingress_allowed_by",
        (Some("FORWARDED"), _) => "egress_allowed_by",
        (_, Some("INGRESS")) => "ingress_denied_by",
        _ => "egress_denied_by",
    };
    names(&f[key])
}

#[test]
fn audited_l7_policies_and_namespaces_pass_what_they_would_deny_and_visibility_records() {
    let Some(_guard) = lab_guard() else { return };
    for tool in ["haproxy", "curl", "dig", "knotd", "openssl", "python3"] {
        assert!(have(tool), "needs {tool} (bash deploy/install-deps.sh)");
    }
    let mut lab = TestLab::up("l7-audit", TOPOLOGY, POLICIES, &[]);
    for pod in ["x/web", "x/api", "x/vis", "y/yweb"] {
        serve_http(&mut lab, pod);
    }
    serve_tls(&mut lab, "y/yweb");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/health_peer.py");
    lab.spawn("x/web", &["python3", script, "server", "50051"]);
    lab.serve_dns_zone("world", ZONE);
    std::thread::sleep(Duration::from_millis(1500));

    let families = [
        (
            "10.200.1.11",
            "10.200.1.12",
            "10.200.1.13",
            "10.200.2.11",
            "10.201.0.53",
        ),
        (
            "[fd00:200::1:11]",
            "[fd00:200::1:12]",
            "[fd00:200::1:13]",
            "[fd00:200::2:11]",
            "fd00:201::53",
        ),
    ];
    for (web, api, vis, yweb, dns) in families {
        for h2 in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
            // An audited HTTP policy: what it allows and what it would deny
            // both pass.
            let public = format!("http://{web}/public/a");
            assert_eq!(
                curl(&lab, "x/client", &public, h2),
                "200",
                "{public} {h2:?}"
            );
            let private = format!("http://{web}/private");
            assert_eq!(
                curl(&lab, "x/client", &private, h2),
                "200",
                "{private} {h2:?}"
            );
            // The enforced L7 policy still denies.
            let denied = format!("http://{api}/private");
            assert_eq!(
                curl(&lab, "x/client", &denied, h2),
                "403",
                "{denied} {h2:?}"
            );
            let allowed = format!("http://{api}/public/a");
            assert_eq!(
                curl(&lab, "x/client", &allowed, h2),
                "200",
                "{allowed} {h2:?}"
            );
            // The audited namespace: its enforced L7 policy only audits.
            let y = format!("http://{yweb}/private");
            assert_eq!(curl(&lab, "x/client", &y, h2), "200", "{y} {h2:?}");
            // Visibility: client is allowed, recorded; other stays dropped.
            let v = format!("http://{vis}/seen");
            assert_eq!(curl(&lab, "x/client", &v, h2), "200", "{v} {h2:?}");
            assert_eq!(curl(&lab, "x/other", &v, h2), "000", "{v} from other");
        }
        // gRPC: the audited rule allows Check only; Watch passes too.
        let bare = web.trim_start_matches('[').trim_end_matches(']');
        let addr = if bare.contains(':') {
            format!("[{bare}]:50051")
        } else {
            format!("{bare}:50051")
        };
        assert_eq!(grpc(&lab, "x/client", &addr, "Check"), "OK SERVING");
        assert_eq!(grpc(&lab, "x/client", &addr, "Watch"), "OK SERVING");
        // DNS: the audited rule allows *.ok.test; bad.test is answered too.
        assert_eq!(dig(&lab, "x/client", dns, "www.ok.test"), "NOERROR");
        assert_eq!(dig(&lab, "x/client", dns, "www.bad.test"), "NOERROR");
        // DNS visibility of namespace v.
        assert_eq!(dig(&lab, "v/asker", dns, "www.bad.test"), "NOERROR");
        // TLS in the audited namespace: an SNI its policy does not name
        // passes.
        let ytls = yweb.trim_start_matches('[').trim_end_matches(']');
        assert_eq!(tls_get(&lab, "x/client", "ok.test", ytls), "200");
        assert_eq!(tls_get(&lab, "x/client", "bad.test", ytls), "200");
    }

    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--verdict", "AUDIT", "--type", "l7"]).len() >= 10
    }));
    let flows = observe(&[]);
    for (web, api, vis, yweb, _) in families {
        let ip = |s: &str| s.trim_start_matches('[').trim_end_matches(']').to_string();
        let (web, api, vis, yweb) = (ip(web), ip(api), ip(vis), ip(yweb));
        // Per policy: the would-be denial is AUDIT and names the policy.
        let f = http_flow(&flows, &web, "/private", "AUDIT");
        assert_eq!(deciders(f), ["CiliumNetworkPolicy x/web-l7-audit"], "{f}");
        assert!(f.get("drop_reason_desc").is_none(), "AUDIT is no drop: {f}");
        assert_eq!(f["l7"]["http"]["code"], 200, "{f}");
        assert!(
            !flows.iter().any(|g| g["Type"] == "L7"
                && g["IP"]["destination"] == web.as_str()
                && g["verdict"] == "AUDIT"
                && g["l7"]["http"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/public/a"))),
            "an allowed request was reported AUDIT"
        );
        let f = l7_flow(&flows, "gRPC Watch AUDIT", |f| {
            f["IP"]["destination"] == web.as_str()
                && f["verdict"] == "AUDIT"
                && f["l7"]["http"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/grpc.health.v1.Health/Watch"))
        });
        assert_eq!(deciders(f), ["CiliumNetworkPolicy x/web-l7-audit"], "{f}");
        // Enforced: still DROPPED, named.
        let f = http_flow(&flows, &api, "/private", "DROPPED");
        assert_eq!(deciders(f), ["CiliumNetworkPolicy x/api-l7"], "{f}");
        let f = http_flow(&flows, &api, "/public/a", "FORWARDED");
        assert_eq!(deciders(f), ["CiliumNetworkPolicy x/api-l7"], "{f}");
        // Per namespace.
        let f = http_flow(&flows, &yweb, "/private", "AUDIT");
        assert_eq!(deciders(f), ["CiliumNetworkPolicy y/yweb-l7"], "{f}");
        // Visibility: FORWARDED L7 records, attributed to the L3 allow.
        let f = http_flow(&flows, &vis, "/seen", "FORWARDED");
        assert_eq!(f["traffic_direction"], "INGRESS", "{f}");
        assert_eq!(
            deciders(f),
            ["CiliumNetworkPolicy x/vis-from-client"],
            "{f}"
        );
        assert_eq!(f["source"]["pod_name"], "client", "{f}");
    }
    // DNS, per policy: the would-be denial is AUDIT, the allowed name not.
    let f = l7_flow(&flows, "DNS www.bad.test AUDIT", |f| {
        f["l7"]["dns"]["query"] == "www.bad.test."
            && f["source"]["pod_name"] == "client"
            && f["verdict"] == "AUDIT"
    });
    assert_eq!(
        deciders(f),
        ["CiliumNetworkPolicy x/client-dns-audit"],
        "{f}"
    );
    assert!(f.get("drop_reason_desc").is_none(), "{f}");
    let f = l7_flow(&flows, "DNS www.ok.test", |f| {
        f["l7"]["dns"]["query"] == "www.ok.test." && f["source"]["pod_name"] == "client"
    });
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
    // DNS visibility (namespace annotation): recorded, forwarded.
    let f = l7_flow(&flows, "DNS visibility of v/asker", |f| {
        f["l7"]["dns"]["query"] == "www.bad.test." && f["source"]["pod_name"] == "asker"
    });
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
    assert_eq!(f["traffic_direction"], "EGRESS", "{f}");
    assert_eq!(f["l7"]["dns"]["ips"][0], "10.201.9.2", "{f}");
    // TLS: the audited namespace's SNI refusal is AUDIT.
    let f = l7_flow(&flows, "TLS bad.test AUDIT", |f| {
        f["verdict"] == "AUDIT"
            && f["Summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("TLS SNI bad.test"))
    });
    assert_eq!(deciders(f), ["CiliumNetworkPolicy y/yweb-l7"], "{f}");

    // Kafka with a real broker and client, when tansu is installed.
    kafka_part(&mut lab);

    // explain shows both verdicts of an L7 request.
    let dir = &lab.dir;
    let explained = must(&[
        "policy",
        "explain",
        "--policy",
        dir.join("policy.yaml").to_str().expect("utf-8"),
        "--topology",
        dir.join("topology.yaml").to_str().expect("utf-8"),
        "--from",
        "x/client",
        "--to",
        "x/web",
        "--port",
        "80",
        "--http-method",
        "GET",
        "--http-path",
        "/private",
    ]);
    assert!(explained.starts_with("ALLOWED"), "{explained}");
    assert!(
        explained.contains("audit mode") && explained.contains("web-l7-audit"),
        "{explained}"
    );
}

fn tansu_bin() -> Option<String> {
    if have("tansu") {
        return Some("tansu".into());
    }
    let p = format!("{}/.cargo/bin/tansu", std::env::var("HOME").ok()?);
    std::path::Path::new(&p).exists().then_some(p)
}

/// The audited Kafka policy: producing to a topic it does not name passes,
/// reported AUDIT. Skipped (with a note) without tansu or the clients.
fn kafka_part(lab: &mut TestLab) {
    let clients = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success());
    let Some(tansu) = tansu_bin().filter(|_| clients) else {
        eprintln!("note: tansu or confluent-kafka missing; the Kafka part is skipped");
        return;
    };
    lab.spawn(
        "x/kafka",
        &[
            &tansu,
            "broker",
            "--listener-url",
            "tcp://0.0.0.0:9092",
            "--advertised-listener-url",
            "tcp://10.200.1.92:9092",
            "--storage-engine",
            "memory://tansu/",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    for topic in ["orders", "payments"] {
        let out = lab.exec(
            "x/kafka",
            &[
                &tansu,
                "topic",
                "create",
                topic,
                "--broker",
                "tcp://127.0.0.1:9092",
                "--partitions",
                "1",
            ],
        );
        assert!(out.status.success(), "topic {topic}");
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proxy/tests/support/kafka_clients.py"
    );
    let produce = |topic: &str| {
        lab.sh(
            "x/client",
            &[
                "timeout",
                "40",
                "python3",
                script,
                "produce",
                "10.200.1.92:9092",
                topic,
            ],
        )
    };
    assert_eq!(produce("orders"), "OK");
    assert_eq!(
        produce("payments"),
        "OK",
        "the audited policy let it through"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--verdict", "AUDIT", "--protocol", "kafka"])
            .iter()
            .any(|f| f["l7"]["kafka"]["topic"] == "payments")
    }));
    let flows = observe(&["--verdict", "AUDIT", "--protocol", "kafka"]);
    let f = l7_flow(&flows, "Kafka payments AUDIT", |f| {
        f["l7"]["kafka"]["topic"] == "payments"
    });
    assert_eq!(deciders(f), ["CiliumNetworkPolicy x/kafka-audit"], "{f}");
}

#[test]
fn a_node_in_audit_mode_passes_what_its_l7_policies_would_deny() {
    let Some(_guard) = lab_guard() else { return };
    for tool in ["haproxy", "curl"] {
        assert!(have(tool), "needs {tool} (bash deploy/install-deps.sh)");
    }
    let mut lab = TestLab::up(
        "l7-audit-node",
        TOPOLOGY,
        POLICIES,
        &["--agent-arg=--policy-audit-mode"],
    );
    serve_http(&mut lab, "x/api");
    std::thread::sleep(Duration::from_millis(800));
    for api in ["10.200.1.12", "[fd00:200::1:12]"] {
        let private = format!("http://{api}/private");
        assert_eq!(curl(&lab, "x/client", &private, &[]), "200", "{private}");
        // Not even L3/L4 would allow other: passes too, at the kernel.
        assert_eq!(
            curl(&lab, "x/other", &private, &[]),
            "200",
            "{private} from other"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--verdict", "AUDIT", "--type", "l7"]).len() >= 2
    }));
    let flows = observe(&[]);
    for api in ["10.200.1.12", "fd00:200::1:12"] {
        let f = l7_flow(&flows, "client -> api /private AUDIT", |f| {
            f["IP"]["destination"] == api
                && f["verdict"] == "AUDIT"
                && f["source"]["pod_name"] == "client"
        });
        assert_eq!(deciders(f), ["CiliumNetworkPolicy x/api-l7"], "{f}");
    }
}
