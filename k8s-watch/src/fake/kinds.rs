//! The resource types the fake serves, with the names discovery and the
//! error messages use.

/// A resource type the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub kind: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// `v1` or `GROUP/VERSION`.
    pub api_version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// A custom resource (a CRD): no strategic merge patch, as with the
    /// real server.
    pub custom: bool,
    /// Whether `status` is a subresource: writes to the object keep the
    /// stored status.
    pub has_status: bool,
    /// Whether `metadata.generation` is kept (set on create, bumped when
    /// anything outside `metadata` and `status` changes).
    pub has_generation: bool,
    /// Served for reading only (get, list, watch): the fake's
    /// CustomResourceDefinitions are its compiled-in files.
    pub read_only: bool,
}

impl Kind {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}", self.api_version)
        }
    }
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    api_version: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        kind,
        group,
        version,
        api_version,
        plural,
        singular,
        namespaced,
        short_names: &[],
        categories: &[],
        custom: false,
        has_status: false,
        has_generation: false,
        read_only: false,
    }
}

pub(crate) const KINDS: &[Kind] = &[
    Kind {
        short_names: &["ns"],
        has_status: true,
        ..kind(
            "Namespace",
            "",
            "v1",
            "v1",
            "namespaces",
            "namespace",
            false,
        )
    },
    Kind {
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        has_generation: true,
        ..kind("Pod", "", "v1", "v1", "pods", "pod", true)
    },
    Kind {
        short_names: &["no"],
        has_status: true,
        ..kind("Node", "", "v1", "v1", "nodes", "node", false)
    },
    kind("Secret", "", "v1", "v1", "secrets", "secret", true),
    Kind {
        short_names: &["ep"],
        ..kind("Endpoints", "", "v1", "v1", "endpoints", "endpoints", true)
    },
    kind(
        "EndpointSlice",
        "discovery.k8s.io",
        "v1",
        "discovery.k8s.io/v1",
        "endpointslices",
        "endpointslice",
        true,
    ),
    Kind {
        short_names: &["netpol"],
        has_generation: true,
        ..kind(
            "NetworkPolicy",
            "networking.k8s.io",
            "v1",
            "networking.k8s.io/v1",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    Kind {
        short_names: &["cnp", "ciliumnp"],
        categories: &["cilium", "ciliumpolicy"],
        custom: true,
        has_status: true,
        has_generation: true,
        ..kind(
            "CiliumNetworkPolicy",
            "cilium.io",
            "v2",
            "cilium.io/v2",
            "ciliumnetworkpolicies",
            "ciliumnetworkpolicy",
            true,
        )
    },
    Kind {
        short_names: &["ccnp"],
        categories: &["cilium", "ciliumpolicy"],
        custom: true,
        has_status: true,
        has_generation: true,
        ..kind(
            "CiliumClusterwideNetworkPolicy",
            "cilium.io",
            "v2",
            "cilium.io/v2",
            "ciliumclusterwidenetworkpolicies",
            "ciliumclusterwidenetworkpolicy",
            false,
        )
    },
    Kind {
        short_names: &["ccg"],
        categories: &["cilium"],
        custom: true,
        has_generation: true,
        ..kind(
            "CiliumCIDRGroup",
            "cilium.io",
            "v2",
            "cilium.io/v2",
            "ciliumcidrgroups",
            "ciliumcidrgroup",
            false,
        )
    },
    Kind {
        custom: true,
        has_status: true,
        has_generation: true,
        ..kind(
            "ClusterNetworkPolicy",
            "policy.networking.k8s.io",
            "v1alpha2",
            "policy.networking.k8s.io/v1alpha2",
            "clusternetworkpolicies",
            "clusternetworkpolicy",
            false,
        )
    },
    Kind {
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        has_status: true,
        has_generation: true,
        read_only: true,
        ..kind(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            "v1",
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            false,
        )
    },
];

pub(crate) fn kind_named(kind: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.kind == kind)
}

/// The group-versions served, in discovery order: `v1` first.
pub(crate) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}
