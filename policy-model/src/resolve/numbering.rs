//! Numbering fixed from outside: identity numbers of label sets and
//! endpoint ids of pods that an earlier resolution handed out, so a
//! resolution from scratch gives the objects that did not change the
//! numbers the kernel maps already hold.

use crate::identity::NumericIdentity;
use crate::labels::LabelSet;
use std::collections::{BTreeMap, BTreeSet};

/// Identity numbers and endpoint ids to keep. A label set or pod not
/// listed gets a new number: above every number listed and at or above
/// the `next_*` floors, so released numbers are not handed out again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Numbering {
    /// Label set -> identity, for endpoint label sets and node-local
    /// (CIDR, FQDN) ones. Reserved identities are fixed and not listed.
    pub identities: BTreeMap<LabelSet, NumericIdentity>,
    /// `namespace/name` -> endpoint id.
    pub endpoints: BTreeMap<String, u16>,
    /// The lowest number a new endpoint label set may get.
    pub next_endpoint: u32,
    /// The lowest number a new node-local label set may get.
    pub next_local: u32,
}

/// Endpoint ids during one allocation: topology position + 1 without a
/// numbering (as [`Cluster::new`](super::Cluster::new) always did); with
/// one, the listed id, and for a pod not listed the lowest id neither
/// listed nor given yet.
pub(super) struct EndpointIds {
    given: Option<BTreeMap<String, u16>>,
    taken: BTreeSet<u16>,
    next: u16,
}

impl EndpointIds {
    pub(super) fn new(numbering: Option<&Numbering>) -> Self {
        EndpointIds {
            given: numbering.map(|n| n.endpoints.clone()),
            taken: numbering
                .map(|n| n.endpoints.values().copied().collect())
                .unwrap_or_default(),
            next: 1,
        }
    }

    /// The id of the pod at topology position `index`.
    pub(super) fn id(&mut self, index: usize, full_name: &str) -> u16 {
        let Some(given) = &self.given else {
            return u16::try_from(index + 1).unwrap_or(u16::MAX);
        };
        if let Some(id) = given.get(full_name) {
            return *id;
        }
        while self.taken.contains(&self.next) && self.next < u16::MAX {
            self.next += 1;
        }
        let id = self.next;
        self.taken.insert(id);
        id
    }
}

#[cfg(test)]
mod tests;
