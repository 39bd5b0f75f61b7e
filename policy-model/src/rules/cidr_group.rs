//! `CiliumCIDRGroup` objects into the model's [`CidrGroup`]: the name
//! required, every CIDR parsed (a bare address is a host prefix), each
//! error with its field path.

use super::parse::parse_cidr;
use super::rule::{RuleError, rerr};
use crate::api::CiliumCidrGroup;
use crate::topology::cidr_group::CidrGroup;

/// Translates one `CiliumCIDRGroup`. Its CIDRs keep their order; one
/// written twice is kept once.
pub fn from_cidr_group(g: &CiliumCidrGroup) -> Result<CidrGroup, RuleError> {
    if g.metadata.name.is_empty() {
        return Err(rerr("metadata.name", "is required"));
    }
    let mut cidrs = Vec::with_capacity(g.spec.external_cidrs.len());
    for (i, s) in g.spec.external_cidrs.iter().enumerate() {
        let net = parse_cidr(s, &format!("spec.externalCIDRs[{i}]"))?;
        if !cidrs.contains(&net) {
            cidrs.push(net);
        }
    }
    Ok(CidrGroup {
        name: g.metadata.name.clone(),
        labels: g.metadata.labels.clone(),
        cidrs,
    })
}

#[cfg(test)]
mod tests;
