//! Reading a topology file again after an edit without parsing it all
//! again: each entry of the `pods:` list is kept parsed by its text, so an
//! edit that adds, removes or changes a few pods parses only those.
//!
//! The file is cut along YAML's block structure, which makes an entry of a
//! block sequence self-contained: a line at column 0 starts a top-level
//! key; under `pods:`, a line at the first entry's indentation starting
//! with `- ` starts the next entry. Whatever this cut cannot read with
//! certainty (documents markers, directives, flow style at the top,
//! anchors used across entries, a `pods:` written inline or twice, any
//! entry that does not parse on its own) is parsed whole by
//! [`Topology::from_yaml`], so errors read exactly as they always did.

use super::{PodSpec, Topology, TopologyError};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Entries by their text. The text is hashed a word at a time (the
/// multiply-rotate of rustc's FxHash): every read hashes the whole file, and
/// the file is the operator's own, not input a pod controls.
type Entries = HashMap<String, Arc<PodSpec>, BuildHasherDefault<EntryHasher>>;

#[derive(Default)]
struct EntryHasher(u64);

impl Hasher for EntryHasher {
    fn finish(&self) -> u64 {
        // Spread every word's bits over the whole hash (the table picks
        // buckets with the low bits and tags with the high ones).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h.rotate_left(26) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(26) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
}

/// Parses topology texts, remembering the last text's pods by entry.
#[derive(Debug, Default)]
pub struct TopologyReader {
    /// Each `pods:` entry of the last text read (its exact lines) and the
    /// pod it parsed to.
    entries: Entries,
    /// Entries parsed by the last [`TopologyReader::parse`] (not found in
    /// the previous text), or `None` if the text was parsed whole.
    last_parsed: Option<usize>,
    /// Whether `entries` are exactly the pods of the topology the last
    /// parse returned (read by entry, valid).
    baseline: bool,
    /// What the last parse changed, when it is known (see
    /// [`TopologyReader::pod_changes`]).
    changes: Option<PodChanges>,
    /// What the checks across pods need, kept for the pods of the last
    /// text read by entry: see [`Tally`].
    tally: Tally,
    /// The text of everything but the pods, and what it parsed to.
    rest: Option<(String, Topology)>,
    /// Whether the last text read by entry passed validation.
    passed: bool,
}

/// How often each pod name and address occurs among the pods of the last
/// text read by entry, and how many of those pods fail the checks that
/// concern them alone. Kept up to date from each read's changes, so a
/// read that changed a few pods knows at once whether the uniqueness
/// checks can fail; only then is the whole topology validated (for the
/// exact error).
#[derive(Debug, Default)]
struct Tally {
    /// Whether the counts are those of `entries` (a text with the same
    /// entry written twice is counted again from its pods next time).
    valid: bool,
    names: HashMap<(String, String), u32>,
    addresses: HashMap<std::net::IpAddr, u32>,
    /// Names and addresses that occur more than once.
    clashes: usize,
    /// Pods that fail [`PodSpec::is_sound`].
    unsound: usize,
}

impl Tally {
    fn count(&mut self, pod: &PodSpec, add: bool) {
        fn bump<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, u32>,
            key: K,
            add: bool,
            clashes: &mut usize,
        ) {
            use std::collections::hash_map::Entry;
            match (map.entry(key), add) {
                (Entry::Occupied(mut e), true) => {
                    *e.get_mut() += 1;
                    if *e.get() == 2 {
                        *clashes += 1;
                    }
                }
                (Entry::Vacant(e), true) => {
                    e.insert(1);
                }
                (Entry::Occupied(mut e), false) => {
                    if *e.get() == 2 {
                        *clashes = clashes.saturating_sub(1);
                    }
                    if *e.get() <= 1 {
                        // Gone: the key goes too (no growth with churn).
                        e.remove();
                    } else {
                        *e.get_mut() -= 1;
                    }
                }
                (Entry::Vacant(_), false) => {}
            }
        }
        bump(
            &mut self.names,
            (pod.namespace.clone(), pod.name.clone()),
            add,
            &mut self.clashes,
        );
        for a in pod.addresses() {
            bump(&mut self.addresses, a, add, &mut self.clashes);
        }
        if !pod.is_sound() {
            if add {
                self.unsound += 1;
            } else {
                self.unsound = self.unsound.saturating_sub(1);
            }
        }
    }

    fn recount(&mut self, pods: &[Arc<PodSpec>]) {
        *self = Tally::default();
        for p in pods {
            self.count(p, true);
        }
        self.valid = true;
    }

    /// Whether [`Topology::validate`] passes on `topology`, whose pods are
    /// the ones counted: the lists' names, each pod's namespace and node
    /// listed, no clash, no unsound pod.
    ///
    /// `only`: the pods whose namespace and node are to be looked up (the
    /// others were, against the same lists, by a read that passed).
    fn passes(&self, topology: &Topology, file: &str, only: Option<&[Arc<PodSpec>]>) -> bool {
        let Ok((namespaces, nodes)) = topology.validate_names(file) else {
            return false;
        };
        self.clashes == 0
            && self.unsound == 0
            && only.unwrap_or(&topology.pods).iter().all(|p| {
                namespaces.contains(p.namespace.as_str())
                    && (topology.nodes.is_empty()
                        || p.node.as_deref().is_none_or(|n| nodes.contains(n)))
            })
    }
}

/// The pods one parse changed from the topology the parse before it
/// returned: the entries it did not find in that text (added or changed
/// pods, and pods only rewritten) and that text's entries it no longer
/// has (removed or changed pods, in their old version).
#[derive(Debug, Default, Clone)]
pub struct PodChanges {
    pub fresh: Vec<Arc<PodSpec>>,
    pub gone: Vec<Arc<PodSpec>>,
}

impl TopologyReader {
    /// Parses and validates `text` (named `file` in errors); the result is
    /// the same as [`Topology::from_yaml`]'s.
    pub fn parse(&mut self, text: &str, file: &str) -> Result<Topology, TopologyError> {
        let had_baseline = std::mem::take(&mut self.baseline);
        self.changes = None;
        match self.by_entry(text) {
            Some((topology, changes, repeated, rest_same)) => {
                let passed_before = std::mem::take(&mut self.passed);
                let only = (rest_same && passed_before && self.tally.valid && !repeated)
                    .then_some(changes.fresh.as_slice());
                if self.tally.valid && !repeated {
                    for p in &changes.gone {
                        self.tally.count(p, false);
                    }
                    for p in &changes.fresh {
                        self.tally.count(p, true);
                    }
                } else {
                    self.tally.recount(&topology.pods);
                }
                self.tally.valid = !repeated;
                if !self.tally.passes(&topology, file, only) {
                    topology.validate(file)?;
                }
                self.passed = true;
                self.baseline = true;
                self.changes = had_baseline.then_some(changes);
                Ok(topology)
            }
            None => {
                self.entries.clear();
                self.tally = Tally::default();
                self.passed = false;
                self.last_parsed = None;
                Topology::from_yaml(text, file)
            }
        }
    }

    /// The pods the last parse changed from the topology the parse before
    /// it returned, when both were read by entry and valid; `None` when
    /// that is not known (the first parse, a whole parse, a rejected text
    /// before): the caller compares the topologies.
    pub fn pod_changes(&self) -> Option<&PodChanges> {
        self.changes.as_ref()
    }

    /// How many `pods:` entries the last parse had to parse (the others
    /// were known from the text before); `None` when it parsed the whole
    /// text at once.
    pub fn entries_parsed(&self) -> Option<usize> {
        self.last_parsed
    }

    /// The topology read entry by entry, or `None` where the cut is not
    /// certain (the caller then parses the whole text).
    /// Also whether an entry's text occurs twice (the same pod twice).
    /// And whether everything but the pods reads as the text before.
    fn by_entry(&mut self, text: &str) -> Option<(Topology, PodChanges, bool, bool)> {
        let layout = Layout::of(text)?;
        // Everything but the pods, parsed again only when its text changed.
        let rest_same = self.rest.as_ref().is_some_and(|(t, _)| *t == layout.rest);
        let mut topology: Topology = match &self.rest {
            Some((text, parsed)) if *text == layout.rest => parsed.clone(),
            _ => {
                let parsed: Topology = if layout.rest.trim().is_empty() {
                    Topology::default()
                } else {
                    serde_yaml_ng::from_str(&layout.rest).ok()?
                };
                self.rest = Some((layout.rest.clone(), parsed.clone()));
                parsed
            }
        };
        let mut previous = std::mem::take(&mut self.entries);
        let mut kept = Entries::with_capacity_and_hasher(layout.pods.len(), Default::default());
        let mut parsed = 0;
        let mut pods = Vec::with_capacity(layout.pods.len());
        let mut fresh = Vec::new();
        let mut repeated = false;
        for entry in &layout.pods {
            // The previous text's entry moves over, its key's text too.
            if let Some((text, pod)) = previous.remove_entry(*entry) {
                pods.push(pod.clone());
                kept.insert(text, pod);
                continue;
            }
            let pod = match kept.get(*entry) {
                Some(pod) => {
                    repeated = true;
                    pod.clone()
                }
                None => {
                    parsed += 1;
                    let mut one: Vec<PodSpec> = serde_yaml_ng::from_str(entry).ok()?;
                    if one.len() != 1 {
                        return None;
                    }
                    let pod = Arc::new(one.pop()?);
                    kept.insert((*entry).to_string(), pod.clone());
                    pod
                }
            };
            fresh.push(pod.clone());
            pods.push(pod);
        }
        topology.pods = pods;
        self.entries = kept;
        self.last_parsed = Some(parsed);
        let gone = previous.into_values().collect();
        Some((topology, PodChanges { fresh, gone }, repeated, rest_same))
    }
}

/// A topology text cut in two: the `pods:` entries (each its exact lines)
/// and everything else.
struct Layout<'a> {
    pods: Vec<&'a str>,
    rest: String,
}

impl<'a> Layout<'a> {
    fn of(text: &'a str) -> Option<Layout<'a>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rest = String::new();
        let mut pods = Vec::new();
        let mut seen_pods = false;
        let mut in_pods = false;
        // The indentation of the entries under `pods:` and where the
        // current entry starts (a byte offset into `text`).
        let mut indent: Option<usize> = None;
        let mut entry_start: Option<usize> = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let content = line.trim_end_matches(['\n', '\r']);
            let trimmed = content.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') {
                // Blank and comment lines belong to what surrounds them.
                if !in_pods {
                    rest.push_str(line);
                }
                continue;
            }
            let spaces = content.len() - trimmed.len();
            if spaces == 0 {
                // A top-level key: `name:` alone or `name: value`.
                let key = top_level_key(content)?;
                if let Some(s) = entry_start.take() {
                    pods.push(&text[s..start]);
                }
                in_pods = false;
                if key == "pods" {
                    let value = content["pods:".len()..].trim();
                    if seen_pods || !(value.is_empty() || value.starts_with('#')) {
                        return None;
                    }
                    seen_pods = true;
                    in_pods = true;
                } else {
                    rest.push_str(line);
                }
                continue;
            }
            if !in_pods {
                rest.push_str(line);
                continue;
            }
            if trimmed.starts_with('\t') {
                return None;
            }
            let starts_entry = trimmed == "-" || trimmed.starts_with("- ");
            match indent {
                None if starts_entry => indent = Some(spaces),
                None => return None,
                Some(i) if spaces < i => return None,
                Some(_) => {}
            }
            if starts_entry
                && Some(spaces) == indent
                && let Some(s) = entry_start.replace(start)
            {
                pods.push(&text[s..start]);
            }
        }
        if let Some(s) = entry_start {
            pods.push(&text[s..]);
        }
        // `pods:` with nothing under it is null, which the whole parse
        // reports (or accepts) as it always did.
        if seen_pods && pods.is_empty() {
            return None;
        }
        Some(Layout { pods, rest })
    }
}

/// The key a top-level line starts, if it is a plain `key:` the topology
/// may hold; `None` for anything else (document markers, directives, flow
/// or quoted keys, anchors, sequences at the top).
fn top_level_key(line: &str) -> Option<&str> {
    let colon = line.find(':')?;
    let key = &line[..colon];
    let after = &line[colon + 1..];
    let plain = !key.is_empty()
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (plain && (after.is_empty() || after.starts_with([' ', '\t']))).then_some(key)
}

#[cfg(test)]
mod tests;
