//! The resolved policy of one endpoint: its map state, the L7 rules of
//! its redirected keys, and why each key is there.

use crate::identity::NumericIdentity;
use crate::l7::tls::{PortTls, TlsRule};
use crate::l7::{L7Parser, L7Rules};
use crate::mapstate::{MapKey, MapState};
use crate::origin::PolicyRef;
use crate::rules::Direction;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why an entry is in the map: one rule entry (or the default allow of a
/// direction no policy enforces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// `None` for the default allow of a non-enforced direction.
    pub origin: Option<Arc<PolicyRef>>,
    /// Field path of the rule entry (`spec.ingress[0]`).
    pub rule: String,
    /// The peer selector that selected the remote identity.
    pub peer: String,
    pub deny: bool,
    pub l7: Option<Arc<L7Rules>>,
    /// TLS settings (`serverNames`, TLS contexts) of the port entry.
    pub tls: Option<Arc<PortTls>>,
    /// The key this contribution was written for.
    pub key: MapKey,
    /// Which verdict it takes part in: both, only the audit verdict (a
    /// rule of an audited policy), or only the enforced one (the default
    /// allow of a direction that only audited policies put into default
    /// deny).
    pub scope: Scope,
    /// The rule's `spec.log.value`.
    pub log: Option<Arc<str>>,
}

/// Which of an entry's two verdicts a contribution takes part in: the
/// enforced one (what the kernel does) and the audit one (what it would do
/// with the audited policies enforced too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    #[default]
    Both,
    /// A rule of an audited policy.
    AuditOnly,
    /// The default allow that only audited policies take away.
    EnforcedOnly,
}

/// The L7 rules a proxy applies to one redirected (identity, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Policy {
    pub parser: L7Parser,
    /// An L3/L4 allow of the same traffic without L7 rules cancels the L7
    /// restrictions: every request is allowed (still redirected).
    pub allow_all: bool,
    /// Rules OR-ed together, with where they came from (entries without
    /// TLS settings).
    pub rules: Vec<(Arc<L7Rules>, Arc<PolicyRef>, String)>,
    /// Entries with TLS settings, each with its own rules (see
    /// [`crate::l7::tls::plan_side`]).
    pub tls: Vec<TlsRule>,
    /// The audit verdict's L7 policy (audited policies' rules enforced
    /// too) where audited policies add L7 rules to the port: a request the
    /// enforced rules allow and these deny passes, reported as AUDIT.
    /// `None` when it is the enforced one.
    pub audit: Option<Box<L7Policy>>,
    /// Redirected only for `policy.cilium.io/proxy-visibility`: every
    /// request passes and is recorded.
    pub visibility: bool,
}

impl L7Policy {
    /// The policy of a port redirected for audit or visibility only: every
    /// request passes (`audit`, when set, says which it would not).
    pub fn pass_all(parser: L7Parser, audit: Option<Box<L7Policy>>, visibility: bool) -> L7Policy {
        L7Policy {
            parser,
            allow_all: true,
            rules: Vec::new(),
            tls: Vec::new(),
            audit,
            visibility,
        }
    }
}

/// The resolved policy of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub endpoint_id: u16,
    pub identity: NumericIdentity,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// What the kernel's policy map holds for this endpoint.
    pub map: MapState,
    /// L7 rules of redirected keys.
    pub l7: BTreeMap<MapKey, L7Policy>,
    /// Why each key is there.
    pub provenance: BTreeMap<MapKey, Vec<Contribution>>,
    /// Policies whose rules put a direction into default deny.
    pub enforcing: BTreeMap<Direction, Vec<Arc<PolicyRef>>>,
    /// Audited policies whose rules would put a direction into default
    /// deny (what an AUDIT verdict of "no rule allows it" names).
    pub audit_enforcing: BTreeMap<Direction, Vec<Arc<PolicyRef>>>,
    /// Non-fatal resolution problems (e.g. an ambiguous named port).
    pub warnings: Vec<String>,
}

impl EndpointPolicy {
    /// Whether a direction is enforced (default deny).
    pub fn enforced(&self, d: Direction) -> bool {
        match d {
            Direction::Ingress => self.ingress_enforced,
            Direction::Egress => self.egress_enforced,
        }
    }
}
