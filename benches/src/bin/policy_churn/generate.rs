//! The deterministic cluster of the policy churn bench: namespaces, pods
//! (a few on the lab's node, the rest on other nodes), policies as one
//! file per object, and the two versions of the policy the edits flip.
//!
//! Everything derives from the object's index and the seed (SplitMix64),
//! so the same flags always give the same files.

use std::fmt::Write as _;
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone, clap::Args)]
pub struct GenConfig {
    /// Policy objects in all (the flip policy is one of them).
    #[arg(long, default_value_t = 10_000)]
    pub policies: usize,
    /// Pods in all.
    #[arg(long, default_value_t = 5_000)]
    pub pods: usize,
    /// Namespaces (pods are spread evenly).
    #[arg(long, default_value_t = 100)]
    pub namespaces: usize,
    /// Pods on the lab's node (real namespaces); at least 2.
    #[arg(long, default_value_t = 100)]
    pub local: usize,
    /// Other nodes the remote pods run on.
    #[arg(long, default_value_t = 49)]
    pub nodes: usize,
    #[arg(long, default_value_t = 15)]
    pub seed: u64,
}

/// The lab's node name (`portcullis_lab::LAB_NODE`).
pub const LAB_NODE: &str = portcullis_lab::LAB_NODE;
/// The port the flip policy allows in its "allow" version.
pub const FLIP_PORT: u16 = 8080;
/// The port it allows instead in its "deny" version.
pub const FLIP_OTHER_PORT: u16 = 8081;
/// The flip policy's file name in the policy directory.
pub const FLIP_FILE: &str = "00000-churn-flip.yaml";

const DEPLOYMENTS: usize = 5;
const APPS: usize = 40;
const TEAMS: usize = 10;
const TIERS: [&str; 4] = ["web", "api", "db", "cache"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

/// SplitMix64's output function: a well-mixed 64-bit value per input.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One generated pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// `key: value` pairs in order.
    pub labels: Vec<(String, String)>,
    pub ip: std::net::Ipv4Addr,
    /// `None`: the lab's node.
    pub node: Option<String>,
}

impl Pod {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn namespace_name(ns: usize) -> String {
    format!("ns-{ns:03}")
}

fn app(ns: usize, d: usize) -> String {
    format!("app-{:02}", (ns * 3 + d) % APPS)
}

/// The address of pod number `g`: 10.200.(1 + g / 250).(1 + g % 250).
pub fn pod_ip(g: usize) -> std::net::Ipv4Addr {
    let third = u8::try_from(1 + g / 250).expect("fewer than 63,500 pods");
    let fourth = u8::try_from(1 + g % 250).expect("below 251");
    std::net::Ipv4Addr::new(10, 200, third, fourth)
}

/// Address of node `n` (0 = the lab's node): 10.200.0.(1 + n).
pub fn node_ip(n: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(
        10,
        200,
        0,
        u8::try_from(1 + n).expect("fewer than 255 nodes"),
    )
}

impl GenConfig {
    fn pods_per_namespace(&self) -> usize {
        self.pods.div_ceil(self.namespaces.max(1))
    }

    /// Every `stride`-th pod is on the lab's node.
    fn local_stride(&self) -> usize {
        (self.pods / self.local.max(1)).max(1)
    }

    fn is_local(&self, g: usize) -> bool {
        g.is_multiple_of(self.local_stride()) && g / self.local_stride() < self.local
    }

    /// The pod the edits probe from (on the lab's node).
    pub fn client(&self) -> usize {
        0
    }

    /// The pod the edits probe (on the lab's node).
    pub fn server(&self) -> usize {
        self.local_stride()
    }

    /// Checks the counts fit the lab's address plan and the flip pair.
    pub fn check(&self) -> Result<(), String> {
        if self.local < 2 || self.local > self.pods {
            return Err(format!("--local must be 2..={} (pods)", self.pods));
        }
        if self.namespaces < 2 || self.namespaces > 999 {
            return Err("--namespaces must be 2..=999".into());
        }
        if self.pods / self.local_stride() < 2 || self.server() / self.pods_per_namespace() == 0 {
            return Err("the client and the server must be in different namespaces: use fewer namespaces or more local pods".into());
        }
        if self.pods > 250 * 98 {
            return Err("at most 24,500 pods (10.200.1.0 to 10.200.98.255)".into());
        }
        if self.nodes == 0 || self.nodes > 200 {
            return Err("--nodes must be 1..=200".into());
        }
        if self.policies == 0 {
            return Err("--policies must be at least 1 (the flip policy)".into());
        }
        Ok(())
    }

    /// Every pod, in topology order (which is also the lab's endpoint id
    /// order: pod `g` is endpoint `g + 1`).
    pub fn pods(&self) -> Vec<Pod> {
        let per_ns = self.pods_per_namespace();
        (0..self.pods)
            .map(|g| {
                let (ns, p) = (g / per_ns, g % per_ns);
                let d = p % DEPLOYMENTS;
                let namespace = namespace_name(ns);
                let (name, labels) = if g == self.client() {
                    (
                        "churn-client".to_string(),
                        vec![("app".into(), "churn-client".into())],
                    )
                } else if g == self.server() {
                    (
                        "churn-server".to_string(),
                        vec![("app".into(), "churn-server".into())],
                    )
                } else {
                    (
                        format!("{}-{p}", app(ns, d)),
                        vec![
                            ("app".into(), app(ns, d)),
                            ("tier".into(), TIERS[d % TIERS.len()].into()),
                            ("team".into(), format!("team-{}", ns % TEAMS)),
                        ],
                    )
                };
                let node = (!self.is_local(g)).then(|| format!("node-{}", 1 + g % self.nodes));
                Pod {
                    namespace,
                    name,
                    labels,
                    ip: pod_ip(g),
                    node,
                }
            })
            .collect()
    }

    /// The topology file's text, after `remote_step` remote pod changes
    /// (see [`RemoteChange`]).
    pub fn topology_yaml(&self, remote_step: usize) -> String {
        let mut pods = self.pods();
        apply_remote_changes(self, &mut pods, remote_step);
        let mut out = format!(
            "# policy churn bench cluster: seed {}, {} pods ({} on {LAB_NODE}), {} namespaces, {} other nodes; remote changes applied: {remote_step}\n",
            self.seed, self.pods, self.local, self.namespaces, self.nodes
        );
        out.push_str("namespaces:\n");
        for ns in 0..self.namespaces {
            let _ = writeln!(
                out,
                "  - {{name: {}, labels: {{team: team-{}, env: {}}}}}",
                namespace_name(ns),
                ns % TEAMS,
                ENVS[ns % ENVS.len()]
            );
        }
        out.push_str("nodes:\n");
        let _ = writeln!(out, "  - {{name: {LAB_NODE}, ips: [{}]}}", node_ip(0));
        for n in 1..=self.nodes {
            let _ = writeln!(
                out,
                "  - {{name: node-{n}, ips: [{}], labels: {{zone: zone-{}}}}}",
                node_ip(n),
                n % 3
            );
        }
        out.push_str("pods:\n");
        for p in &pods {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = write!(
                out,
                "  - {{namespace: {}, name: {}, labels: {{{}}}, ip: {}, ports: [{{name: http, containerPort: 8080, protocol: TCP}}, {{name: metrics, containerPort: 9090, protocol: TCP}}]",
                p.namespace,
                p.name,
                labels.join(", "),
                p.ip
            );
            if let Some(n) = &p.node {
                let _ = write!(out, ", node: {n}");
            }
            out.push_str("}\n");
        }
        out
    }

    /// Policy number `i` (1 and up; 0 is the flip policy) as one YAML
    /// document: NetworkPolicy and CiliumNetworkPolicy, L3 selectors
    /// (some across namespaces), L4 ports and ranges, HTTP rules, CIDR
    /// sets with `except`, and deny rules. Subjects always select by a
    /// deployment's `app` or `tier`, so the flip pair (labelled only
    /// `app: churn-*`) is governed by the flip policy alone.
    pub fn policy(&self, i: usize) -> (String, String) {
        let ns = i % self.namespaces;
        let h = mix(self.seed ^ mix(i as u64));
        let name = format!("pol-{i:05}");
        let nsn = namespace_name(ns);
        let subject = app(ns, (h % DEPLOYMENTS as u64) as usize);
        let peer_app = format!("app-{:02}", (h >> 8) % APPS as u64);
        let peer_tier = TIERS[((h >> 16) % TIERS.len() as u64) as usize];
        let peer_team = format!("team-{}", (h >> 24) % TEAMS as u64);
        let peer_env = ENVS[((h >> 32) % ENVS.len() as u64) as usize];
        let peer_ns = namespace_name(((h >> 40) % self.namespaces as u64) as usize);
        let c = (h >> 48) % 250;
        let net = format!("10.201.{c}.0/24");
        let except = format!("10.201.{c}.{}/28", (h >> 4) % 16 * 16);
        let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy";
        let cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy";
        let meta = format!("metadata: {{name: {name}, namespace: {nsn}}}");
        let (kind, body) = match i % 10 {
            0 | 1 => (
                "np",
                format!(
                    "{np}\n{meta}\nspec:\n  podSelector: {{matchLabels: {{app: {subject}}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: {peer_app}}}}}\n    ports:\n    - {{port: 8080, protocol: TCP}}\n"
                ),
            ),
            2 => (
                "np",
                format!(
                    "{np}\n{meta}\nspec:\n  podSelector: {{matchLabels: {{app: {subject}}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: {peer_team}}}}}\n      podSelector: {{matchLabels: {{tier: {peer_tier}}}}}\n    ports:\n    - {{port: http, protocol: TCP}}\n    - {{port: 9000, endPort: 9100, protocol: TCP}}\n"
                ),
            ),
            3 => (
                "np",
                format!(
                    "{np}\n{meta}\nspec:\n  podSelector: {{matchLabels: {{app: {subject}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {net}, except: [{except}]}}\n    ports:\n    - {{port: 443, protocol: TCP}}\n  - to:\n    - namespaceSelector: {{matchLabels: {{env: {peer_env}}}}}\n    ports:\n    - {{port: http, protocol: TCP}}\n"
                ),
            ),
            4 | 5 => (
                "cnp",
                format!(
                    "{cnp}\n{meta}\nspec:\n  endpointSelector: {{matchLabels: {{app: {subject}}}}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{app: {peer_app}}}\n    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": {peer_ns}, tier: {peer_tier}}}\n    toPorts:\n    - ports:\n      - {{port: \"8080\", protocol: TCP}}\n      - {{port: \"9090\", protocol: TCP}}\n"
                ),
            ),
            6 => (
                "cnp",
                format!(
                    "{cnp}\n{meta}\nspec:\n  endpointSelector: {{matchLabels: {{app: {subject}}}}}\n  egress:\n  - toCIDRSet:\n    - {{cidr: {net}, except: [{except}]}}\n    toPorts:\n    - ports:\n      - {{port: \"443\", protocol: TCP}}\n  - toEndpoints:\n    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": {peer_ns}, app: {peer_app}}}\n    toPorts:\n    - ports:\n      - {{port: \"8080\", protocol: TCP}}\n"
                ),
            ),
            7 => (
                "cnp",
                format!(
                    "{cnp}\n{meta}\nspec:\n  endpointSelector: {{matchLabels: {{app: {subject}}}}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{tier: {peer_tier}}}\n    toPorts:\n    - ports:\n      - {{port: \"8080\", protocol: TCP}}\n      rules:\n        http:\n        - {{method: GET, path: \"/api/v1/{subject}/.*\"}}\n        - {{method: POST, path: /api/v1/{subject}/orders, headers: [\"X-Team {peer_team}\"]}}\n        - {{method: GET, path: /healthz}}\n"
                ),
            ),
            8 => (
                "cnp",
                format!(
                    "{cnp}\n{meta}\nspec:\n  endpointSelector: {{matchLabels: {{app: {subject}}}}}\n  ingressDeny:\n  - fromEndpoints:\n    - matchLabels: {{io.cilium.k8s.namespace.labels.env: {peer_env}, app: {peer_app}}}\n  egressDeny:\n  - toCIDR: [{except}]\n"
                ),
            ),
            _ => (
                "cnp",
                format!(
                    "{cnp}\n{meta}\nspec:\n  endpointSelector:\n    matchExpressions:\n    - {{key: tier, operator: In, values: [{peer_tier}, web]}}\n  ingress:\n  - fromEntities: [cluster, host]\n    toPorts:\n    - ports:\n      - {{port: \"9090\", protocol: TCP}}\n  egress:\n  - toEndpoints:\n    - matchExpressions:\n      - {{key: app, operator: NotIn, values: [{peer_app}]}}\n      - {{key: team, operator: Exists}}\n  - toEntities: [kube-apiserver]\n"
                ),
            ),
        };
        (format!("{i:05}-{kind}-{name}.yaml"), body)
    }

    /// The flip policy: the server's ingress from the client on
    /// [`FLIP_PORT`] (`allow`) or on [`FLIP_OTHER_PORT`] only (not allow:
    /// the probe on [`FLIP_PORT`] is dropped).
    pub fn flip_policy(&self, allow: bool) -> String {
        let pods = self.pods();
        let (client, server) = (&pods[self.client()], &pods[self.server()]);
        let port = if allow { FLIP_PORT } else { FLIP_OTHER_PORT };
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: churn-flip, namespace: {}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: churn-server}}}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": {}, app: churn-client}}\n    toPorts:\n    - ports:\n      - {{port: \"{port}\", protocol: TCP}}\n",
            server.namespace, client.namespace
        )
    }

    /// Writes `DIR/topology.yaml`, `DIR/policies/` (one file per policy,
    /// the flip policy in its allow version), `DIR/flip-allow.yaml`,
    /// `DIR/flip-deny.yaml` and `DIR/cluster.json` (what the driver and
    /// the script need: the flip pair's names, addresses and endpoint ids).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let pdir = dir.join("policies");
        std::fs::create_dir_all(&pdir)?;
        std::fs::write(dir.join("topology.yaml"), self.topology_yaml(0))?;
        std::fs::write(dir.join("flip-allow.yaml"), self.flip_policy(true))?;
        std::fs::write(dir.join("flip-deny.yaml"), self.flip_policy(false))?;
        std::fs::write(pdir.join(FLIP_FILE), self.flip_policy(true))?;
        for i in 1..self.policies {
            let (file, body) = self.policy(i);
            std::fs::write(pdir.join(file), body)?;
        }
        let pods = self.pods();
        let (c, s) = (self.client(), self.server());
        let info = serde_json::json!({
            "policies": self.policies,
            "pods": self.pods,
            "local": self.local,
            "namespaces": self.namespaces,
            "nodes": self.nodes,
            "seed": self.seed,
            "client": {"pod": pods[c].full_name(), "ip": pods[c].ip.to_string(), "endpoint": c + 1},
            "server": {"pod": pods[s].full_name(), "ip": pods[s].ip.to_string(), "endpoint": s + 1},
            "flip_port": FLIP_PORT,
            "flip_other_port": FLIP_OTHER_PORT,
            "flip_file": FLIP_FILE,
        });
        std::fs::write(
            dir.join("cluster.json"),
            serde_json::to_string_pretty(&info)?,
        )
    }
}

/// One remote pod change of the churn: every third step adds a remote pod
/// with labels no other pod has (a new identity), the next removes it, the
/// one after relabels a fixed remote pod to a label value never used
/// before (a new identity, the old one released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Add { name: String },
    Remove { name: String },
    Relabel { pod: String, revision: usize },
}

/// Change number `k` (0-based) of the remote churn.
pub fn remote_change(cfg: &GenConfig, k: usize) -> RemoteChange {
    match k % 3 {
        0 => RemoteChange::Add {
            name: format!("churn-remote-{k}"),
        },
        1 => RemoteChange::Remove {
            name: format!("churn-remote-{}", k - 1),
        },
        _ => RemoteChange::Relabel {
            pod: cfg.pods()[relabelled_pod(cfg)].full_name(),
            revision: k,
        },
    }
}

/// The remote pod the relabel changes use: the last pod (remote unless
/// every pod is local).
fn relabelled_pod(cfg: &GenConfig) -> usize {
    (0..cfg.pods)
        .rev()
        .find(|g| !cfg.is_local(*g))
        .unwrap_or(cfg.pods - 1)
}

/// The pods after the first `steps` remote changes.
fn apply_remote_changes(cfg: &GenConfig, pods: &mut Vec<Pod>, steps: usize) {
    let relabel_at = relabelled_pod(cfg);
    // Only the last relabel counts; an add stands unless its remove came.
    let last_relabel = (0..steps).rev().find(|k| k % 3 == 2);
    if let Some(k) = last_relabel {
        pods[relabel_at]
            .labels
            .push(("churn-rev".into(), format!("r{k}")));
    }
    if steps % 3 == 1 {
        let k = steps - 1;
        let ns = "ns-002".to_string();
        let ns = if cfg.namespaces > 2 {
            ns
        } else {
            "ns-000".into()
        };
        pods.push(Pod {
            namespace: ns,
            name: format!("churn-remote-{k}"),
            labels: vec![
                ("app".into(), app(2, k % DEPLOYMENTS)),
                ("tier".into(), TIERS[k % TIERS.len()].into()),
                ("team".into(), "team-2".into()),
                ("churn-id".into(), format!("c{k}")),
            ],
            // Above the generated pods' range, one address per step.
            ip: std::net::Ipv4Addr::new(10, 200, 99 + (k / 250 % 100) as u8, 1 + (k % 250) as u8),
            node: Some("node-1".into()),
        });
    }
}
