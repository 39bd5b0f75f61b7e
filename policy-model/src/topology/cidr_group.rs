//! CIDR groups (Cilium's `CiliumCIDRGroup`): named, labelled lists of
//! CIDRs that `fromCIDRSet`/`toCIDRSet` entries reach by name
//! (`cidrGroupRef`) or by label (`cidrGroupSelector`). Like namespaces they
//! are cluster objects a policy refers to, so they travel with the
//! topology; a policy naming a group that does not exist (yet) selects
//! nothing through it.

use crate::labels::LabelSet;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The label source of the labels a group gives its CIDRs' identities.
pub const SOURCE_CIDR_GROUP: &str = "cidrgroup";
/// The key prefix of the label naming a group (`cidrgroup:` source), as
/// Cilium writes it: `cidrgroup:io.cilium.policy.cidrgroupname/<name>`.
pub const CIDR_GROUP_NAME_PREFIX: &str = "io.cilium.policy.cidrgroupname/";

/// One CIDR group: its name, its labels and its CIDRs (`externalCIDRs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrGroup {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, rename = "externalCIDRs")]
    pub cidrs: Vec<IpNet>,
}

impl CidrGroup {
    /// The group's labels as a `cidrGroupSelector` matches them: its
    /// Kubernetes labels under the `cidrgroup` source.
    pub fn selector_labels(&self) -> LabelSet {
        let mut l = LabelSet::new();
        for (k, v) in &self.labels {
            l.insert(SOURCE_CIDR_GROUP, k, v);
        }
        l
    }

    /// Adds what membership in this group labels a CIDR's identity with:
    /// `cidrgroup:io.cilium.policy.cidrgroupname/<name>` and each of the
    /// group's labels as `cidrgroup:<key>=<value>`.
    pub fn label_member(&self, labels: &mut LabelSet) {
        labels.insert(
            SOURCE_CIDR_GROUP,
            &format!("{CIDR_GROUP_NAME_PREFIX}{}", self.name),
            "",
        );
        for (k, v) in &self.labels {
            labels.insert(SOURCE_CIDR_GROUP, k, v);
        }
    }
}
