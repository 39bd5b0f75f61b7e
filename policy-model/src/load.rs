//! Loading policy objects from YAML files and directories: multi-document
//! files, `List` objects, unknown kinds skipped with a warning, and every
//! error naming the file, the document and the field. `CiliumCIDRGroup`
//! objects are read beside the policies (their CIDR sets name them).

use crate::api::{CiliumCidrGroup, CiliumPolicy, NetworkPolicy};
use crate::origin::{PolicyKind, PolicyRef};
use crate::rules::{self, PolicyRule};
use crate::topology::cidr_group::CidrGroup;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where in the input a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// Name of the object, when it could be read.
    pub object: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

/// A policy input that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{location}: {path}: {reason}")]
    Invalid {
        location: Location,
        path: String,
        reason: String,
    },
    #[error("{file}: YAML syntax error: {reason}")]
    Syntax { file: String, reason: String },
}

/// A non-fatal remark (e.g. a skipped object of another kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// One loaded policy object and its internal rules.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub origin: Arc<PolicyRef>,
    pub rules: Vec<PolicyRule>,
}

/// Everything loaded from a set of inputs.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub policies: Vec<LoadedPolicy>,
    /// The `CiliumCIDRGroup` objects, in load order: not policies, but what
    /// the policies' CIDR set entries may name (see
    /// [`Topology::cidr_groups`](crate::Topology)).
    pub cidr_groups: Vec<CidrGroup>,
    pub warnings: Vec<LoadWarning>,
}

impl PolicySet {
    /// All internal rules of all policies.
    pub fn rules(&self) -> impl Iterator<Item = &PolicyRule> {
        self.policies.iter().flat_map(|p| p.rules.iter())
    }

    /// Adds the policies of another set (later inputs after earlier ones).
    pub fn extend(&mut self, other: PolicySet) {
        self.policies.extend(other.policies);
        self.cidr_groups.extend(other.cidr_groups);
        self.warnings.extend(other.warnings);
    }

    /// Loads the policy files of `paths` ([`policy_files`]: files as
    /// named, directories recursively, `*.yaml`/`*.yml`/`*.json`, in name
    /// order). Any invalid object fails the whole load.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Self, Vec<LoadError>> {
        let PolicyFiles { files, mut errors } = policy_files(paths);
        let mut set = PolicySet::default();
        for loaded in load_files(&files) {
            match loaded {
                Ok(s) => set.extend(s),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            set.warn_unseen_fqdn_denies();
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Warns about each `egressDeny` `toFQDNs` entry when no policy of the
    /// set redirects DNS to the proxy, so the deny could learn nothing
    /// (see [`rules::fqdn_denies_without_dns`]).
    pub fn warn_unseen_fqdn_denies(&mut self) {
        let all: Vec<&PolicyRule> = self.rules().collect();
        let found: Vec<LoadWarning> = rules::fqdn_denies_without_dns(&all)
            .into_iter()
            .map(|(rule, path)| {
                let o = &rule.origin;
                let object = match &o.namespace {
                    Some(ns) => format!("{}/{}/{}", o.kind, ns, o.name),
                    None => format!("{}/{}", o.kind, o.name),
                };
                LoadWarning {
                    location: Location {
                        file: o.file.clone().unwrap_or_default(),
                        document: o.document.unwrap_or_default(),
                        object: Some(object),
                    },
                    message: rules::fqdn_deny_unseen_message(path),
                }
            })
            .collect();
        self.warnings.extend(found);
    }
}

/// Reads and loads each of `files`, in their order. Files are independent,
/// so large sets are read on every core (each thread takes a contiguous
/// share; the results keep the files' order, so the set and its errors do
/// not depend on the number of threads).
fn load_files(files: &[PathBuf]) -> Vec<Result<PolicySet, Vec<LoadError>>> {
    let load_one = |f: &PathBuf| {
        let name = f.display().to_string();
        match std::fs::read_to_string(f) {
            Ok(text) => load_str(&text, &name),
            Err(e) => Err(vec![LoadError::Read {
                file: name,
                reason: e.to_string(),
            }]),
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    // Small sets are not worth a thread.
    if threads < 2 || files.len() < 64 {
        return files.iter().map(load_one).collect();
    }
    let share = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(share)
            .map(|chunk| scope.spawn(move || chunk.iter().map(load_one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(loaded) => loaded,
                // A panic while loading is a bug; it still fails the load
                // rather than dropping the share's policies silently.
                Err(_) => vec![Err(vec![LoadError::Read {
                    file: "(policy files)".to_string(),
                    reason: "a loader thread panicked".to_string(),
                }])],
            })
            .collect()
    })
}

/// The files a list of policy inputs stands for, and the inputs that
/// could not be walked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFiles {
    /// In load order: the inputs in the order given; a file as named
    /// (whatever its extension); a directory's `*.yaml`, `*.yml` and
    /// `*.json` files, recursively, each directory in name order.
    pub files: Vec<PathBuf>,
    /// Inputs that do not exist and directories that cannot be listed.
    pub errors: Vec<LoadError>,
}

/// Which files the policy inputs `paths` stand for: the one walk that
/// decides what the loader reads and what [`content_hash`] covers, so a
/// README or an editor's swap file beside the policies is neither loaded
/// nor hashed.
pub fn policy_files<P: AsRef<Path>>(paths: &[P]) -> PolicyFiles {
    let mut out = PolicyFiles::default();
    for p in paths {
        collect_files(p.as_ref(), &mut out.files, &mut out.errors);
    }
    out
}

/// A hash of the policy in `paths`: FNV-1a over each file's own hash
/// ([`file_hash`], 8 bytes little-endian) with a 0xff separator after each,
/// for the files [`policy_files`] lists, in load order
/// ([`combine_file_hashes`]). The agent records the hash of the policy it
/// put in force (`applied.hash`), keeping each file's hash since it read
/// it, and the wire runner waits for the hash of the one file it wrote. A
/// file that cannot be read hashes as empty; an input that cannot be walked
/// adds nothing (its load fails, so no hash of it is ever put in force).
pub fn content_hash(paths: &[PathBuf]) -> u64 {
    combine_file_hashes(
        policy_files(paths)
            .files
            .iter()
            .map(|f| file_hash(&std::fs::read(f).unwrap_or_default())),
    )
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// One file's part of [`content_hash`]: FNV-1a of its bytes.
pub fn file_hash(bytes: &[u8]) -> u64 {
    fnv(FNV_START, bytes)
}

/// [`content_hash`] of the files whose [`file_hash`]es are `files`, in
/// load order.
pub fn combine_file_hashes(files: impl IntoIterator<Item = u64>) -> u64 {
    files
        .into_iter()
        .fold(FNV_START, |h, f| fnv(fnv(h, &f.to_le_bytes()), &[0xff]))
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => {
            errors.push(LoadError::Read {
                file: p.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    if !meta.is_dir() {
        out.push(p.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push(LoadError::Read {
                file: p.display().to_string(),
                reason: e.to_string(),
            });
            return;
        }
    };
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect_files(&e, out, errors);
        } else if matches!(
            e.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(e);
        }
    }
}

/// Loads every document of one YAML text; `file` names it in messages.
pub fn load_str(text: &str, file: &str) -> Result<PolicySet, Vec<LoadError>> {
    let mut set = PolicySet::default();
    let mut errors = Vec::new();
    for (document, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                errors.push(LoadError::Syntax {
                    file: file.to_string(),
                    reason: format!("document {document}: {e}"),
                });
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        };
        let loc = Location {
            file: file.to_string(),
            document,
            object: None,
        };
        load_value(value, loc, "", &mut set, &mut errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn load_value(
    value: serde_yaml_ng::Value,
    mut loc: Location,
    path_prefix: &str,
    set: &mut PolicySet,
    errors: &mut Vec<LoadError>,
) {
    if value.is_null() {
        return; // an empty document (e.g. a trailing `---`)
    }
    let invalid = |loc: &Location, path: &str, reason: String| LoadError::Invalid {
        location: loc.clone(),
        path: format!("{path_prefix}{path}"),
        reason,
    };
    let Some(map) = value.as_mapping() else {
        errors.push(invalid(
            &loc,
            "(root)",
            "expected a Kubernetes object (a mapping)".into(),
        ));
        return;
    };
    let get = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let kind = get("kind");
    let api_version = get("apiVersion");
    let meta = map.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(|v| v.as_str());
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|v| v.as_str());
    if let Some(n) = name {
        loc.object = Some(match namespace {
            Some(ns) => format!("{}/{}/{}", kind.as_deref().unwrap_or("?"), ns, n),
            None => format!("{}/{}", kind.as_deref().unwrap_or("?"), n),
        });
    }
    let (Some(kind), Some(api_version)) = (kind, api_version) else {
        errors.push(invalid(
            &loc,
            "(root)",
            "missing `apiVersion` or `kind`".into(),
        ));
        return;
    };
    let pkind = match (api_version.as_str(), kind.as_str()) {
        (_, "List") => {
            match map.get("items").and_then(|v| v.as_sequence()) {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        load_value(
                            item.clone(),
                            loc.clone(),
                            &format!("{path_prefix}items[{i}]."),
                            set,
                            errors,
                        );
                    }
                }
                None => errors.push(invalid(&loc, "items", "a List needs `items`".into())),
            }
            return;
        }
        ("cilium.io/v2" | "cilium.io/v2alpha1", "CiliumCIDRGroup") => {
            load_cidr_group(value, &loc, set, errors, &invalid);
            return;
        }
        (v, "CiliumCIDRGroup") => {
            errors.push(invalid(
                &loc,
                "apiVersion",
                format!(
                    "{v:?} is not a supported apiVersion for CiliumCIDRGroup (use cilium.io/v2)"
                ),
            ));
            return;
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => PolicyKind::NetworkPolicy,
        ("cilium.io/v2", "CiliumNetworkPolicy") => PolicyKind::CiliumNetworkPolicy,
        ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => {
            PolicyKind::CiliumClusterwideNetworkPolicy
        }
        (v, k @ ("NetworkPolicy" | "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")) => {
            errors.push(invalid(
                &loc,
                "apiVersion",
                format!(
                    "{v:?} is not a supported apiVersion for {k} (use networking.k8s.io/v1 or cilium.io/v2)"
                ),
            ));
            return;
        }
        (v, k) => {
            set.warnings.push(LoadWarning {
                location: loc.clone(),
                message: format!("skipping {v} {k}: not a network policy kind"),
            });
            return;
        }
    };
    let make_origin = |ns: Option<String>, name: String| {
        Arc::new(PolicyRef {
            kind: pkind,
            namespace: ns,
            name,
            file: Some(loc.file.clone()),
            document: Some(loc.document),
        })
    };
    let result = match pkind {
        PolicyKind::NetworkPolicy => {
            match serde_path_to_error::deserialize::<_, NetworkPolicy>(value) {
                Ok(np) => {
                    let origin = make_origin(
                        Some(
                            np.metadata
                                .namespace
                                .clone()
                                .unwrap_or_else(|| "default".into()),
                        ),
                        np.metadata.name.clone(),
                    );
                    rules::from_network_policy(&np, origin.clone()).map(|r| (origin, r))
                }
                Err(e) => {
                    errors.push(invalid(&loc, &e.path().to_string(), e.inner().to_string()));
                    return;
                }
            }
        }
        PolicyKind::CiliumNetworkPolicy | PolicyKind::CiliumClusterwideNetworkPolicy => {
            match serde_path_to_error::deserialize::<_, CiliumPolicy>(value) {
                Ok(cp) => {
                    let ns = if pkind == PolicyKind::CiliumNetworkPolicy {
                        Some(
                            cp.metadata
                                .namespace
                                .clone()
                                .unwrap_or_else(|| "default".into()),
                        )
                    } else {
                        if cp.metadata.namespace.is_some() {
                            set.warnings.push(LoadWarning {
                                location: loc.clone(),
                                message: "metadata.namespace is ignored on a cluster-wide policy"
                                    .into(),
                            });
                        }
                        None
                    };
                    let origin = make_origin(ns.clone(), cp.metadata.name.clone());
                    for message in rules::authentication_warnings(&cp) {
                        set.warnings.push(LoadWarning {
                            location: loc.clone(),
                            message,
                        });
                    }
                    rules::from_cilium_policy(&cp, ns.as_deref(), origin.clone())
                        .map(|r| (origin, r))
                }
                Err(e) => {
                    errors.push(invalid(&loc, &e.path().to_string(), e.inner().to_string()));
                    return;
                }
            }
        }
    };
    match result {
        Ok((origin, rules)) => set.policies.push(LoadedPolicy { origin, rules }),
        Err(e) => errors.push(invalid(&loc, &e.path, e.reason)),
    }
}

/// A `CiliumCIDRGroup` document: kept in the set's groups, or an error
/// with its field path.
fn load_cidr_group(
    value: serde_yaml_ng::Value,
    loc: &Location,
    set: &mut PolicySet,
    errors: &mut Vec<LoadError>,
    invalid: &dyn Fn(&Location, &str, String) -> LoadError,
) {
    match serde_path_to_error::deserialize::<_, CiliumCidrGroup>(value) {
        Ok(g) => match rules::from_cidr_group(&g) {
            Ok(group) => set.cidr_groups.push(group),
            Err(e) => errors.push(invalid(loc, &e.path, e.reason)),
        },
        Err(e) => errors.push(invalid(loc, &e.path().to_string(), e.inner().to_string())),
    }
}

#[cfg(test)]
mod tests;
