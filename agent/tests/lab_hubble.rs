//! Root-only lab tests of Hubble's Observer API (issue 17): real traffic
//! (curl, TCP connects) judged by the kernel and the HTTP proxy, IPv4 and
//! IPv6; the flows read back with `portcullis observe` (JSON and compact,
//! Hubble's filter flags), with grpcurl (reflection, the unix socket, the
//! lab's relay on 4245) and with a Python grpcio client generated from
//! `agent/proto`. Every verdict of these flows names its policy.
//!
//! Run them one at a time machine-wide:
//! `flock -o /run/portcullis-lab.lock cargo test --release -p portcullis --test lab_hubble`.

#[path = "support/lab.rs"]
mod lab;

use lab::{BIN, TestLab, lab_guard, must, wait_until};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const TOPOLOGY: &str = r#"
namespaces:
  - {name: x, labels: {team: x}}
pods:
  - {namespace: x, name: client, labels: {app: client}, ips: [10.200.1.10, "fd00:200::1:10"]}
  - {namespace: x, name: web, labels: {app: web}, ips: [10.200.1.11, "fd00:200::1:11"]}
  - {namespace: x, name: other, labels: {app: other}, ips: [10.200.1.12, "fd00:200::1:12"]}
world: {ips: [10.201.0.53]}
"#;

/// web admits client: port 80 for `GET /public/...` only (HTTP rules),
/// port 81 at L3/L4. Nobody else.
const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-ingress, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  log: {value: "web ingress"}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/public/.*"}]
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
"#;

const WEB4: &str = "10.200.1.11";
const WEB6: &str = "fd00:200::1:11";
const SOCKET: &str = "/run/portcullis/lab/hubble.sock";
const RELAY: &str = "127.0.0.1:4245";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn curl(lab: &TestLab, pod: &str, url: &str) -> String {
    lab.sh(
        pod,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            "--http1.1",
            url,
        ],
    )
}

/// A TCP connect to `addr` (`ip:port` or `[ip]:port`) from `pod`: whether
/// it was answered.
fn connects(lab: &TestLab, pod: &str, addr: &str) -> bool {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    lab.exec(
        pod,
        &[
            "timeout",
            "2",
            "bash",
            "-c",
            &format!("echo > /dev/tcp/{host}/{port}"),
        ],
    )
    .status
    .success()
}

fn lab_with_servers(extra: &[&str]) -> TestLab {
    let mut lab = TestLab::up("hubble", TOPOLOGY, POLICY, extra);
    let cfg = lab.dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        "global\n  maxconn 256\ndefaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 2s\nfrontend pod\n  bind :::80 v4v6\n  http-request return status 200 content-type text/plain string \"ok\"\n",
    )
    .expect("haproxy config");
    lab.spawn(
        "x/web",
        &["haproxy", "-db", "-f", cfg.to_str().expect("utf-8")],
    );
    lab.serve_tcp("x/web", "81");
    lab
}

/// Traffic of every kind the policy decides, both families.
fn traffic(lab: &TestLab) {
    for (web, url) in [
        (WEB4, format!("http://{WEB4}")),
        (WEB6, format!("http://[{WEB6}]")),
    ] {
        assert_eq!(curl(lab, "x/client", &format!("{url}/public/a")), "200");
        assert_eq!(curl(lab, "x/client", &format!("{url}/private")), "403");
        let l4 = if web.contains(':') {
            format!("[{web}]:81")
        } else {
            format!("{web}:81")
        };
        assert!(connects(lab, "x/client", &l4), "client -> {l4}");
        assert!(!connects(lab, "x/other", &l4), "other -> {l4} passed");
    }
}

/// `observe -o json --all` with `flags`: one GetFlowsResponse per line.
fn observe(flags: &[&str]) -> Vec<Value> {
    let mut args = vec!["observe", "-o", "json", "--all"];
    args.extend_from_slice(flags);
    must(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|p| {
                    format!(
                        "{} {}/{}",
                        str_of(&p["kind"]),
                        str_of(&p["namespace"]),
                        str_of(&p["name"])
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

const WEB_INGRESS: &str = "CiliumNetworkPolicy x/web-ingress";

/// The flow of `responses` that `pick` accepts, or a panic that shows them.
fn find<'a>(responses: &'a [Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    responses
        .iter()
        .map(|r| &r["flow"])
        .find(|f| pick(f))
        .unwrap_or_else(|| {
            panic!(
                "no flow: {what}\n{}",
                responses
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

#[test]
fn flows_carry_endpoints_verdicts_and_the_deciding_policy() {
    let Some(_guard) = lab_guard() else { return };
    if !have("haproxy") || !have("curl") {
        panic!("needs haproxy and curl (bash deploy/install-deps.sh)");
    }
    let lab = lab_with_servers(&[]);
    traffic(&lab);
    // The proxy's records reach the ring a moment after the answer.
    assert!(wait_until(Duration::from_secs(5), || {
        observe(&["--protocol", "http"]).len() >= 4
    }));
    let all = observe(&[]);
    for r in &all {
        assert!(r["flow"].is_object(), "{r}");
        assert_eq!(r["node_name"], "lab-node", "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    }
    for (web, version) in [(WEB4, "IPv4"), (WEB6, "IPv6")] {
        // Kernel: other -> web:81 dropped by web's default deny.
        let drop = find(&all, &format!("other -> {web}:81 dropped"), |f| {
            f["verdict"] == "DROPPED"
                && f["Type"] == "L3_L4"
                && f["IP"]["destination"] == web
                && f["l4"]["TCP"]["destination_port"] == 81
                && f["source"]["pod_name"] == "other"
        });
        assert_eq!(drop["IP"]["ipVersion"], version, "{drop}");
        assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED", "{drop}");
        assert_eq!(drop["traffic_direction"], "INGRESS", "{drop}");
        assert_eq!(drop["event_type"]["type"], 1, "{drop}");
        assert_eq!(drop["source"]["namespace"], "x", "{drop}");
        assert!(
            drop["source"]["labels"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == "k8s:app=other")),
            "{drop}"
        );
        assert_eq!(drop["destination"]["pod_name"], "web", "{drop}");
        assert_eq!(names(&drop["ingress_denied_by"]), [WEB_INGRESS], "{drop}");
        // Kernel: client -> web:81 allowed by the L3/L4 rule.
        let allow = find(&all, &format!("client -> {web}:81 allowed"), |f| {
            f["verdict"] == "FORWARDED"
                && f["traffic_direction"] == "INGRESS"
                && f["IP"]["destination"] == web
                && f["l4"]["TCP"]["destination_port"] == 81
                && f["source"]["pod_name"] == "client"
        });
        assert_eq!(
            names(&allow["ingress_allowed_by"]),
            [WEB_INGRESS],
            "{allow}"
        );
        assert_eq!(allow["event_type"]["type"], 9, "{allow}");
        assert_eq!(
            allow["policy_log"],
            serde_json::json!(["web ingress"]),
            "{allow}"
        );
        // Kernel: client -> web:80 handed to the proxy.
        let redirected = find(&all, &format!("client -> {web}:80 redirected"), |f| {
            f["verdict"] == "REDIRECTED" && f["IP"]["destination"] == web
        });
        assert_eq!(
            names(&redirected["ingress_allowed_by"]),
            [WEB_INGRESS],
            "{redirected}"
        );
        // L7: the proxy's verdicts, each naming the policy.
        let ok = find(&all, &format!("GET /public/a on {web}"), |f| {
            f["Type"] == "L7"
                && f["IP"]["destination"] == web
                && f["l7"]["http"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/public/a"))
        });
        assert_eq!(ok["verdict"], "FORWARDED", "{ok}");
        assert_eq!(ok["l7"]["http"]["code"], 200, "{ok}");
        assert_eq!(ok["l7"]["http"]["method"], "GET", "{ok}");
        assert_eq!(ok["event_type"]["type"], 129, "{ok}");
        assert_eq!(names(&ok["ingress_allowed_by"]), [WEB_INGRESS], "{ok}");
        assert_eq!(ok["policy_log"], serde_json::json!(["web ingress"]), "{ok}");
        assert!(
            ok["ingress_allowed_by"][0]["labels"]
                .as_array()
                .is_some_and(|l| l
                    .iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains("rules.http[0]")))),
            "the L7 verdict names the rule: {ok}"
        );
        let denied = find(&all, &format!("GET /private on {web}"), |f| {
            f["Type"] == "L7"
                && f["IP"]["destination"] == web
                && f["l7"]["http"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/private"))
        });
        assert_eq!(denied["verdict"], "DROPPED", "{denied}");
        assert_eq!(denied["l7"]["http"]["code"], 403, "{denied}");
        assert_eq!(
            names(&denied["ingress_denied_by"]),
            [WEB_INGRESS],
            "{denied}"
        );
    }

    // Hubble's filter flags pick exactly what they say.
    let drops = observe(&["--from-pod", "x/other", "--verdict", "DROPPED"]);
    assert!(drops.len() >= 2, "{drops:?}");
    for r in &drops {
        assert_eq!(r["flow"]["source"]["pod_name"], "other", "{r}");
        assert_eq!(r["flow"]["verdict"], "DROPPED", "{r}");
    }
    let private = observe(&["--http-path", "^/private", "--http-status", "4+"]);
    assert_eq!(private.len(), 2, "{private:?}");
    let v6 = observe(&["--to-ip", WEB6, "--to-port", "81", "--type", "drop"]);
    assert!(
        !v6.is_empty() && v6.iter().all(|r| r["flow"]["IP"]["destination"] == WEB6),
        "{v6:?}"
    );
    let pod = observe(&["--pod", "x/other"]);
    assert!(
        pod.iter()
            .all(|r| r["flow"]["source"]["pod_name"] == "other"
                || r["flow"]["destination"]["pod_name"] == "other")
    );
    let raw = |flags: &[&str]| -> Vec<Value> {
        let mut args = vec!["observe", "-o", "json"];
        args.extend_from_slice(flags);
        must(&args)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert_eq!(raw(&["--last", "3"]).len(), 3);
    let first = raw(&["--first", "2"]);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["flow"]["uuid"], all[0]["flow"]["uuid"]);
    // Compact lines, as hubble observe prints them (plus the policy).
    let compact = must(&[
        "observe",
        "--all",
        "--from-pod",
        "x/other",
        "--to-port",
        "81",
    ]);
    assert!(
        compact.lines().any(|l| l.contains("x/other:")
            && l.contains("-> x/web:81")
            && l.contains("DROPPED")
            && l.ends_with(&format!("by {WEB_INGRESS}"))),
        "{compact}"
    );
    // A bad filter is refused with the reason, not a crash.
    let bad = lab::portcullis(&["observe", "--all", "--to-ip", "10.0.0.300"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("destination_ip") && err.contains("10.0.0.300"),
        "{err}"
    );
    assert!(
        lab.status_json()["policies"].is_array(),
        "the agent still answers"
    );
}

/// grpcurl output: stdout and stderr.
fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl (bash deploy/install-deps.sh)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn python_client(args: &[&str]) -> Command {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/hubble_client.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    cmd
}

#[test]
fn grpcurl_and_a_generated_grpcio_client_speak_to_the_observer_and_the_relay() {
    let Some(_guard) = lab_guard() else { return };
    assert!(
        have("grpcurl"),
        "needs grpcurl (bash deploy/install-deps.sh)"
    );
    assert!(have("haproxy") && have("curl"), "needs haproxy and curl");
    let lab = lab_with_servers(&["--agent-arg=--hubble-max-flows=64"]);
    // Reflection, on the relay (TCP 4245) and on the agent's unix socket
    // (grpcurl names a socket's path as the authority, which HTTP/2 servers
    // refuse: `-authority localhost`, as Hubble's own CLI sends).
    for target in [
        vec!["-plaintext", RELAY],
        vec!["-plaintext", "-unix", "-authority", "localhost", SOCKET],
    ] {
        let mut args = target.clone();
        args.push("list");
        let listed = grpcurl(&args);
        for service in [
            "observer.Observer",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(listed.contains(service), "{target:?}: {listed}");
        }
        let mut args = target.clone();
        args.extend(["describe", "flow.Flow"]);
        let described = grpcurl(&args);
        assert!(
            described.contains("egress_denied_by = 21004"),
            "{described}"
        );
        let mut args = target.clone();
        args.extend(["grpc.health.v1.Health/Check"]);
        assert!(grpcurl(&args).contains("SERVING"));
    }
    // A generated client follows flows with a filter while traffic runs.
    let follower = python_client(&[
        &format!("unix://{SOCKET}"),
        "follow",
        "8",
        r#"{"destination_pod": ["x/web"], "verdict": ["DROPPED"]}"#,
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("python3 hubble_client.py");
    std::thread::sleep(Duration::from_millis(1500));
    traffic(&lab);
    let out = follower.wait_with_output().expect("follower");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("following"), "{text}");
    let flows: Vec<Value> = text
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Two kernel drops (other, both families) and two HTTP denials.
    assert!(flows.len() >= 4, "{text}");
    for r in &flows {
        assert_eq!(r["flow"]["destination"]["pod_name"], "web", "{r}");
        assert_eq!(r["flow"]["verdict"], "DROPPED", "{r}");
        let by = &r["flow"]["ingress_denied_by"];
        assert_eq!(
            by[0]["name"], "web-ingress",
            "every drop names its policy: {r}"
        );
    }
    // The same flows through grpcurl and the relay (the node's name on each).
    let streamed = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"number": 5, "whitelist": [{"verdict": ["DROPPED"]}]}"#,
        RELAY,
        "observer.Observer/GetFlows",
    ]);
    assert!(
        streamed.contains("\"nodeName\": \"lab-node\""),
        "{streamed}"
    );
    assert!(
        streamed.contains("DROPPED") && !streamed.contains("FORWARDED"),
        "{streamed}"
    );
    assert!(
        streamed.contains("NODE_CONNECTED"),
        "the relay says which nodes answered: {streamed}"
    );
    // A bad filter: InvalidArgument with the reason, from the agent and the relay.
    let bad = python_client(&[&format!("unix://{SOCKET}"), "bad-filter"])
        .output()
        .expect("python client");
    let bad = String::from_utf8_lossy(&bad.stdout);
    assert!(
        bad.starts_with("INVALID_ARGUMENT") && bad.contains("http_path"),
        "{bad}"
    );
    let bad = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"whitelist": [{"source_ip": ["nonsense"]}]}"#,
        RELAY,
        "observer.Observer/GetFlows",
    ]);
    assert!(
        bad.contains("InvalidArgument") && bad.contains("source_ip"),
        "{bad}"
    );
    // The ring holds at most --hubble-max-flows; more were seen.
    for _ in 0..6 {
        traffic(&lab);
    }
    let status = python_client(&[RELAY, "status"]).output().expect("status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(status["max_flows"], "64", "{status}");
    assert_eq!(status["num_flows"], "64", "{status}");
    let seen: u64 = status["seen_flows"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(seen > 64, "{status}");
    assert_eq!(status["num_connected_nodes"], 1, "{status}");
    let nodes = grpcurl(&["-plaintext", RELAY, "observer.Observer/GetNodes"]);
    assert!(
        nodes.contains("lab-node") && nodes.contains("NODE_CONNECTED"),
        "{nodes}"
    );
    let namespaces = grpcurl(&["-plaintext", RELAY, "observer.Observer/GetNamespaces"]);
    assert!(namespaces.contains("\"namespace\": \"x\""), "{namespaces}");
    // A client that stops reading never holds up the agent: a follower
    // stalled on a full socket while traffic runs, then the agent still
    // answers at once.
    let mut stalled = Command::new(BIN)
        .args(["observe", "-f", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("observe -f");
    for _ in 0..4 {
        traffic(&lab);
    }
    let last = must(&["observe", "-o", "json", "--last", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    let _ = stalled.kill();
    let _ = stalled.wait();
}
