//! Internal rules: NetworkPolicy, CNP and CCNP translated into one form
//! (as Cilium translates everything into `api.Rule`), with selectors
//! compiled, ports parsed and every input error reported with its path.
//!
//! `rule.rs` is the form; `network_policy.rs` and `cilium.rs` translate
//! the two policy families into it, sharing `parse.rs`; a Cilium entry's
//! ports (`port_rule.rs`), TLS settings (`tls.rs`) and `authentication`
//! (`authentication.rs`) have a file each; `fqdn_deny.rs` holds what a
//! `toFQDNs` deny needs to learn (a DNS redirect) and the warnings when
//! it has none; `cidr_group.rs` reads `CiliumCIDRGroup` objects, which
//! CIDR set entries name.

mod authentication;
mod cidr_group;
mod cilium;
mod fqdn_deny;
mod network_policy;
mod parse;
mod port_rule;
mod rule;
mod tls;
mod visibility;

pub use authentication::authentication_warnings;
pub use cidr_group::from_cidr_group;
pub use cilium::from_cilium_policy;
pub use fqdn_deny::{
    fqdn_denies_without_dns, fqdn_deny_endpoint_message, fqdn_deny_unseen_message,
};
pub use network_policy::from_network_policy;
pub use parse::parse_cidr;
pub use rule::{
    CidrGroupRef, Direction, DirectionRules, Entity, Peer, PolicyRule, PortMatch, PortSpec,
    Protocol, RuleEntry, RuleError, Subject,
};

pub use visibility::{PROXY_VISIBILITY_ANNOTATION, Visibility, parse_visibility, visibility_of};

pub use crate::l7::{L7Parser, L7Rules};
pub use crate::origin::{PolicyKind, PolicyRef};

#[cfg(test)]
pub(crate) mod testing;
