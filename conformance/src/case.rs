//! The case file format: topology + policies + probes with expected
//! verdicts (individual probes and full reachability matrices).

use policy_model::Topology;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A case file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub name: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// A topology name (`conformance/topologies/<name>.yaml`) or inline.
    pub topology: TopologyRef,
    /// Multi-document policy YAML.
    #[serde(default)]
    pub policies: String,
    #[serde(default)]
    pub probes: Vec<Probe>,
    #[serde(default)]
    pub matrices: Vec<MatrixSpec>,
}

/// A topology by name or inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TopologyRef {
    Named(String),
    Inline(Box<Topology>),
}

/// How a probe names a node as its source or destination: `node/NAME`
/// (`from: node/node-2`), for a node listed under the topology's `nodes:`.
/// The model takes the node's first address; the lab sends from (or to)
/// that node's namespace, from its address of each family.
pub const NODE_PREFIX: &str = "node/";

/// One probe. `from` and `to` name a pod (`ns/pod`) or a node
/// ([`NODE_PREFIX`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Probe {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub from_ip: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub to_ip: Option<String>,
    #[serde(default)]
    pub to_fqdn: Option<String>,
    /// More names `to-ip` was learned under before the probe (an address
    /// several names resolve to); needs `to-fqdn`.
    #[serde(default)]
    pub to_fqdn_also: Vec<String>,
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    pub expect: Expect,
    #[serde(default)]
    pub layer: Option<String>,
    #[serde(default)]
    pub http: Option<HttpProbe>,
    #[serde(default)]
    pub dns: Option<String>,
    #[serde(default)]
    pub kafka: Option<KafkaProbe>,
    /// The connection is TLS (with this ClientHello); `http`, when given,
    /// is a request sent inside it (HTTPS).
    #[serde(default)]
    pub tls: Option<TlsProbe>,
    /// `false` when the probe cannot run end to end in the lab.
    #[serde(default)]
    pub e2e: Option<bool>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Expected verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    #[default]
    Allowed,
    Denied,
}

/// An HTTP request of a probe.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

/// The TLS ClientHello of a probe.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsProbe {
    /// The server name the client sends; none when absent.
    #[serde(default)]
    pub sni: Option<String>,
}

/// A Kafka request of a probe.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaProbe {
    pub api_key: serde_yaml_ng::Value,
    #[serde(default)]
    pub api_version: Option<i16>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
}

/// A full matrix of one port/protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    pub port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    pub expect: String,
}

/// A case ready to run: resolved topology, probes expanded from matrices.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: PathBuf,
    pub name: String,
    pub source: Option<String>,
    pub topology: Topology,
    pub policies: String,
    pub probes: Vec<Probe>,
}

/// A broken case file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct CaseError {
    pub file: String,
    pub reason: String,
}

/// The conformance directory of this crate.
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Loads every `cases/**/*.yaml` under `root`, in path order.
pub fn load_cases(root: &Path) -> Result<Vec<Case>, CaseError> {
    let dir = root.join("cases");
    if let Err(e) = std::fs::read_dir(&dir) {
        return Err(CaseError {
            file: dir.display().to_string(),
            reason: format!("cannot read the cases directory: {e}"),
        });
    }
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    files.iter().map(|f| load_case(root, f)).collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Loads one case file.
pub fn load_case(root: &Path, file: &Path) -> Result<Case, CaseError> {
    let fname = file.display().to_string();
    let err = |reason: String| CaseError {
        file: fname.clone(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let cf: CaseFile = serde_path_to_error::deserialize(de)
        .map_err(|e| err(format!("{}: {}", e.path(), e.inner())))?;
    let topology = match &cf.topology {
        TopologyRef::Inline(t) => {
            t.validate(&fname).map_err(|e| err(e.to_string()))?;
            (**t).clone()
        }
        TopologyRef::Named(n) => {
            let p = root.join("topologies").join(format!("{n}.yaml"));
            Topology::from_file(&p).map_err(|e| err(e.to_string()))?
        }
    };
    let mut probes = cf.probes.clone();
    for (mi, m) in cf.matrices.iter().enumerate() {
        probes.extend(expand_matrix(m).map_err(|r| err(format!("matrices[{mi}]: {r}")))?);
    }
    Ok(Case {
        file: file.to_path_buf(),
        name: cf.name,
        source: cf.source,
        topology,
        policies: cf.policies,
        probes,
    })
}

/// Turns a matrix into probes (`-` cells are not probed).
pub fn expand_matrix(m: &MatrixSpec) -> Result<Vec<Probe>, String> {
    let mut lines = m.expect.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty matrix")?
        .split_whitespace()
        .skip(1)
        .collect();
    let mut out = Vec::new();
    for line in lines {
        let mut cells = line.split_whitespace();
        let from = cells.next().ok_or("empty row")?;
        let cells: Vec<&str> = cells.collect();
        if cells.len() != header.len() {
            return Err(format!(
                "row {from} has {} cells, the header {}",
                cells.len(),
                header.len()
            ));
        }
        for (to, c) in header.iter().zip(cells) {
            let expect = match c {
                "." => Expect::Allowed,
                "X" | "x" => Expect::Denied,
                "-" => continue,
                other => {
                    return Err(format!(
                        "cell {from}->{to}: {other:?} is not '.', 'X' or '-'"
                    ));
                }
            };
            out.push(Probe {
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                port: m.port,
                protocol: m.protocol.clone(),
                expect,
                ..Default::default()
            });
        }
    }
    Ok(out)
}

impl Probe {
    /// A one-line description (`x/a -> y/b TCP/80 [GET /x]`).
    pub fn describe(&self) -> String {
        let from = self
            .from
            .clone()
            .or_else(|| self.from_ip.clone())
            .unwrap_or_default();
        let mut to = self
            .to
            .clone()
            .or_else(|| self.to_ip.clone())
            .unwrap_or_default();
        if let Some(f) = &self.to_fqdn {
            to = format!("{to}({f})");
            for also in &self.to_fqdn_also {
                to = format!("{to}({also})");
            }
        }
        let mut s = format!(
            "{from} -> {to} {}/{}",
            self.protocol.as_deref().unwrap_or("TCP"),
            self.port
        );
        if let Some(t) = &self.tls {
            s.push_str(&format!(" [tls sni={}]", t.sni.as_deref().unwrap_or("-")));
        }
        if let Some(h) = &self.http {
            s.push_str(&format!(
                " [{} {}]",
                h.method.as_deref().unwrap_or("GET"),
                h.path.as_deref().unwrap_or("/")
            ));
        }
        if let Some(d) = &self.dns {
            s.push_str(&format!(" [dns {d}]"));
        }
        if let Some(k) = &self.kafka {
            s.push_str(&format!(
                " [kafka {} {}]",
                yaml_scalar(&k.api_key),
                k.topics.join(",")
            ));
        }
        s
    }
}

/// A YAML scalar as text.
pub fn yaml_scalar(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => s.clone(),
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}
