//! The policy and topology files by object: each file is read and parsed
//! once and kept with the hash of its content; a refresh re-parses only the
//! files whose content changed. A file whose new content is invalid keeps
//! its previous version in force (the rejection is reported) while every
//! other file keeps updating; a file that is gone takes its objects with it.

use super::changes::{ObjectKey, Policies, PolicyDelta, TopologyDelta, object_keys};
use policy_model::load::{combine_file_hashes, file_hash};
use policy_model::topology::reader::TopologyReader;
use policy_model::{PolicySet, Topology};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The version of a policy file in force (its bytes are not kept: their
/// hash tells a return to this version).
struct InForce {
    /// FNV-1a of the file's bytes (what `applied.hash` is made of).
    hash: u64,
    set: Arc<PolicySet>,
}

/// One policy file: what was last read of it and the version in force.
#[derive(Default)]
struct CachedFile {
    /// Hash of the content last read (in force or rejected).
    seen: u64,
    /// The version in force.
    in_force: Option<InForce>,
    /// Why the content last read is not in force.
    rejected: Option<String>,
}

/// What one refresh of the policy files found besides the delta.
#[derive(Debug, Default)]
pub(super) struct Refresh {
    pub(super) delta: PolicyDelta,
    /// New rejections: the loader's errors (file, object, field, reason).
    pub(super) rejected: Vec<String>,
    /// Reads that failed for lack of resources (retried; nothing changed).
    pub(super) unreadable: Vec<String>,
}

/// The policy files in force, by path.
#[derive(Default)]
pub(super) struct PolicyFileCache {
    files: HashMap<PathBuf, CachedFile>,
    /// Load order of the last walk (`policy_model::load::policy_files`).
    order: Vec<PathBuf>,
    /// Each file's set in force, in load order, and each path's position
    /// there (for [`Self::set`]; kept until the order changes, a file's
    /// slot replaced when its version in force changes).
    slots: Option<Slots>,
}

/// The sets in force in load order, and where each path is.
struct Slots {
    sets: Vec<Option<Arc<PolicySet>>>,
    /// Each file's hash in force (of nothing when none is).
    hashes: Vec<u64>,
    at: HashMap<PathBuf, usize>,
}

impl PolicyFileCache {
    /// Walks `inputs` and reads the listed files again: all of them, or
    /// with `only`, the ones it names and the ones not seen before; parses
    /// only those whose content changed. When `only` names files already
    /// known and still there (an edit), nothing is walked.
    pub(super) fn refresh(
        &mut self,
        inputs: &[PathBuf],
        only: Option<&BTreeSet<PathBuf>>,
    ) -> Refresh {
        let mut out = Refresh::default();
        if let Some(only) = only
            && only
                .iter()
                .all(|p| self.files.contains_key(p) && p.is_file())
        {
            for p in only {
                self.refresh_file(p, &mut out);
            }
            return out;
        }
        let mut listed = Vec::new();
        // Files under an input that cannot be walked stay as they are.
        let mut unwalkable: Vec<&Path> = Vec::new();
        for input in inputs {
            let walk = policy_model::load::policy_files(std::slice::from_ref(input));
            if !walk.errors.is_empty() {
                unwalkable.push(input);
                for e in walk.errors {
                    let e = e.to_string();
                    let sink = if super::fdlimit::is_resource_error(&e) {
                        &mut out.unreadable
                    } else {
                        &mut out.rejected
                    };
                    sink.push(e);
                }
            }
            listed.extend(walk.files);
        }
        for f in &listed {
            if only.is_none_or(|o| o.contains(f)) || !self.files.contains_key(f) {
                self.refresh_file(f, &mut out);
            }
        }
        self.forget_gone(&listed, &unwalkable, &mut out);
        self.slots = None;
        // Unwalkable inputs keep their files in force, in their old place.
        let mut order = listed;
        order.extend(
            self.order
                .iter()
                .filter(|p| self.files.contains_key(*p))
                .filter(|p| unwalkable.iter().any(|u| p.starts_with(u)))
                .cloned(),
        );
        self.order = order;
        out
    }

    /// Drops the files no longer listed (except under `unwalkable` inputs).
    fn forget_gone(&mut self, listed: &[PathBuf], unwalkable: &[&Path], out: &mut Refresh) {
        let listed: HashSet<&PathBuf> = listed.iter().collect();
        let mut gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(p) && !unwalkable.iter().any(|u| p.starts_with(u)))
            .cloned()
            .collect();
        gone.sort();
        for p in gone {
            let old = self.files.remove(&p).and_then(|c| c.in_force);
            let old = old.map(|f| object_keys(&f.set)).unwrap_or_default();
            out.delta.file(&old, &BTreeSet::new());
            out.delta.files_removed.push(p);
        }
    }

    fn refresh_file(&mut self, path: &Path, out: &mut Refresh) {
        let name = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let e = policy_model::load::LoadError::Read {
                    file: name,
                    reason: e.to_string(),
                }
                .to_string();
                if super::fdlimit::is_resource_error(&e) {
                    out.unreadable.push(e);
                } else {
                    self.reject(path, e.clone(), None);
                    out.rejected.push(e);
                }
                return;
            }
        };
        let seen = file_hash(&bytes);
        let entry = self.files.get(path);
        if entry.is_some_and(|c| c.seen == seen) {
            return;
        }
        if let Some(old) = entry.and_then(|c| c.in_force.as_ref())
            && old.hash == seen
        {
            // Back to the version in force: nothing to re-parse.
            let c = self.files.get_mut(path).expect("looked up above");
            (c.seen, c.rejected) = (seen, None);
            return;
        }
        let parsed = String::from_utf8(bytes)
            .map_err(|e| vec![read_error(&name, &e.to_string())])
            .and_then(|text| policy_model::load::load_str(&text, &name));
        match parsed {
            Ok(set) => {
                let c = self.files.entry(path.to_path_buf()).or_default();
                let old = c.in_force.as_ref().map(|f| object_keys(&f.set));
                out.delta.file(&old.unwrap_or_default(), &object_keys(&set));
                out.delta.files_changed.push(path.to_path_buf());
                let set = Arc::new(set);
                out.delta.upserted.push(set.clone());
                *c = CachedFile {
                    seen,
                    in_force: Some(InForce {
                        hash: seen,
                        set: set.clone(),
                    }),
                    rejected: None,
                };
                if let Some(s) = &mut self.slots {
                    match s.at.get(path) {
                        Some(i) => (s.sets[*i], s.hashes[*i]) = (Some(set), seen),
                        None => self.slots = None,
                    }
                }
            }
            Err(errs) => {
                let e = errs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
                self.reject(path, e.clone(), Some(seen));
                out.rejected.push(e);
            }
        }
    }

    /// Records why `path`'s newest content is not in force (its previous
    /// version, if any, stays).
    fn reject(&mut self, path: &Path, reason: String, seen: Option<u64>) {
        let c = self.files.entry(path.to_path_buf()).or_default();
        c.rejected = Some(reason);
        // An unreadable file is read again on the next refresh.
        c.seen = seen.unwrap_or(0);
    }

    /// Every policy object in force, in load order (each file's parsed
    /// set shared, not copied).
    pub(super) fn set(&mut self) -> Policies {
        Policies(self.slots().sets.iter().flatten().cloned().collect())
    }

    /// The files in force in load order (built when the order changed).
    fn slots(&mut self) -> &Slots {
        let files = &self.files;
        let order = &self.order;
        self.slots.get_or_insert_with(|| {
            let in_force = |p: &PathBuf| files.get(p).and_then(|c| c.in_force.as_ref());
            Slots {
                sets: order
                    .iter()
                    .map(|p| Some(in_force(p)?.set.clone()))
                    .collect(),
                hashes: order
                    .iter()
                    .map(|p| in_force(p).map_or_else(|| file_hash(&[]), |f| f.hash))
                    .collect(),
                at: order
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.clone(), i))
                    .collect(),
            }
        })
    }

    /// The hash of the policy in force, as `policy_model::load::content_hash`
    /// computes it from the files (equal to it when every file's newest
    /// content is in force): what `applied.hash` records. Made of each
    /// file's hash, kept since it was read.
    pub(super) fn content_hash(&mut self) -> u64 {
        combine_file_hashes(self.slots().hashes.iter().copied())
    }

    /// The files whose newest content is not in force, with why (by path).
    pub(super) fn rejections(&self) -> Vec<String> {
        let mut out: Vec<(&PathBuf, String)> = self
            .files
            .iter()
            .filter_map(|(p, c)| Some((p, c.rejected.clone()?)))
            .collect();
        out.sort();
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Objects of the files whose newest content is rejected (their
    /// previous version, if any, is in force).
    pub(super) fn kept_back(&self) -> BTreeSet<ObjectKey> {
        self.files
            .values()
            .filter(|c| c.rejected.is_some())
            .filter_map(|c| c.in_force.as_ref().map(|f| object_keys(&f.set)))
            .flatten()
            .collect()
    }
}

fn read_error(file: &str, reason: &str) -> policy_model::load::LoadError {
    policy_model::load::LoadError::Read {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// The topology file: parsed again only when its content changed; an
/// invalid version keeps the previous one in force.
pub(super) struct TopologyFile {
    path: PathBuf,
    /// The content last read (compared whole: cheaper than hashing it).
    seen: Vec<u8>,
    topology: Topology,
    /// Keeps the pods parsed by entry: an edit parses only what changed.
    reader: TopologyReader,
    /// Why the content last read is not in force.
    rejected: Option<String>,
}

/// What a topology refresh found.
pub(super) enum TopologyRefresh {
    Unchanged,
    Changed(TopologyDelta),
    Rejected(String),
    Unreadable(String),
}

impl TopologyFile {
    /// Reads and parses `path` (an error when it is invalid: there is no
    /// previous version to keep).
    pub(super) fn open(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| read_error(&path.display().to_string(), &e.to_string()).to_string())?;
        let mut reader = TopologyReader::default();
        let topology = parse_topology(&mut reader, path, &bytes)?;
        Ok(TopologyFile {
            path: path.to_path_buf(),
            seen: bytes,
            topology,
            reader,
            rejected: None,
        })
    }

    /// Why the newest content is not in force, if it is not.
    pub(super) fn rejection(&self) -> Option<String> {
        self.rejected.clone()
    }

    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Reads the file again; parses it when its content changed.
    pub(super) fn refresh(&mut self) -> TopologyRefresh {
        let name = self.path.display().to_string();
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let e = read_error(&name, &e.to_string()).to_string();
                if super::fdlimit::is_resource_error(&e) {
                    return TopologyRefresh::Unreadable(e);
                }
                self.rejected = Some(e.clone());
                return TopologyRefresh::Rejected(e);
            }
        };
        if bytes == self.seen {
            return TopologyRefresh::Unchanged;
        }
        let started = std::time::Instant::now();
        let read = parse_topology(&mut self.reader, &self.path, &bytes);
        self.seen = bytes;
        match read {
            Ok(new) => {
                let parsed = started.elapsed();
                let delta = match self.reader.pod_changes() {
                    Some(pods) => TopologyDelta::from_pod_changes(&self.topology, &new, pods),
                    None => TopologyDelta::between(&self.topology, &new),
                };
                tracing::debug!(
                    parse_us = parsed.as_micros() as u64,
                    entries_parsed = ?self.reader.entries_parsed(),
                    delta_us = (started.elapsed() - parsed).as_micros() as u64,
                    "topology read"
                );
                self.topology = new;
                self.rejected = None;
                TopologyRefresh::Changed(delta)
            }
            Err(e) => {
                self.rejected = Some(e.clone());
                TopologyRefresh::Rejected(e)
            }
        }
    }
}

fn parse_topology(
    reader: &mut TopologyReader,
    path: &Path,
    bytes: &[u8],
) -> Result<Topology, String> {
    let name = path.display().to_string();
    let text =
        std::str::from_utf8(bytes).map_err(|e| read_error(&name, &e.to_string()).to_string())?;
    reader.parse(text, &name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
