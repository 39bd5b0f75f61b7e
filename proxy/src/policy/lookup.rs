//! The one lookup: which local sides of a redirected flow apply to a
//! parser's proxy, found with the kernel's own `MapState::lookup` on the
//! same resolved policy. Every proxy asks it (HTTP, Kafka: both ends of a
//! TCP flow; DNS: the client's egress; TLS: the raw L7 policy of the
//! HTTP port) and fails closed on whatever it cannot account for.

use std::net::SocketAddr;

use policy_model::{Direction, L7Parser, MapKey, MapVerdict, NumericIdentity};

use super::side::{FlowRules, Refusal, RuleSet, Side, SideFault};
use super::{EndpointEntry, ProxyPolicy};

/// IP protocol number of TCP, the transport of every redirect but DNS
/// over UDP.
const TCP: u8 = 6;

/// One local end of a redirected flow whose entry redirects to the parser
/// asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSide<'p> {
    /// The endpoint's index in the snapshot.
    pub index: usize,
    pub entry: &'p EndpointEntry,
    pub direction: Direction,
    /// The map key the kernel's lookup found.
    pub key: &'p MapKey,
    /// The endpoint is in audit mode.
    pub audited: bool,
}

impl LocalSide<'_> {
    /// A refusal of this side for `fault`.
    pub(crate) fn refusal(&self, fault: SideFault) -> Refusal {
        Refusal::Side {
            endpoint: self.entry.name.clone(),
            direction: self.direction,
            fault,
        }
    }

    /// This side's compiled `R` rules.
    pub(crate) fn rules<R: RuleSet>(&self) -> Result<Side<R>, Refusal> {
        self.entry
            .rules
            .get(self.key)
            .and_then(R::compiled)
            .map(|policy| Side {
                endpoint: self.entry.name.clone(),
                direction: self.direction,
                policy: policy.clone(),
                audited: self.audited,
            })
            .ok_or_else(|| self.refusal(SideFault::MissingRules(R::PARSER)))
    }
}

impl ProxyPolicy {
    /// The kernel's lookup for one local end: its entry for (`direction`,
    /// `remote`, `protocol`, `port`). `Ok(None)` when the entry allows the
    /// flow without a redirect (the side imposes no L7 rule), `Err` when
    /// the flow should not have reached `parser`'s proxy.
    pub(crate) fn local_side<'p>(
        &'p self,
        index: usize,
        direction: Direction,
        remote: NumericIdentity,
        (protocol, port): (u8, u16),
        parser: L7Parser,
    ) -> Result<Option<LocalSide<'p>>, Refusal> {
        let entry = &self.endpoints[index];
        let refusal = |fault| Refusal::Side {
            endpoint: entry.name.clone(),
            direction,
            fault,
        };
        let Some((key, value)) = entry.policy.map.lookup(direction, remote, protocol, port) else {
            return Err(refusal(SideFault::NoEntry));
        };
        if value.verdict == MapVerdict::Deny {
            return Err(refusal(SideFault::DeniedAtL4));
        }
        match value.redirect {
            None => Ok(None),
            Some(p) if p == parser => Ok(Some(LocalSide {
                index,
                entry,
                direction,
                key,
                audited: self.audited.get(index).copied().unwrap_or(false),
            })),
            Some(found) => Err(refusal(SideFault::OtherParser {
                found,
                wanted: parser,
            })),
        }
    }

    /// The local ends of a redirected TCP flow from `src` to `orig_dst`
    /// that redirect it to `parser`, each passed through `side`: the
    /// source's egress, then the destination's ingress, each found with
    /// the kernel's lookup. Sides that impose no rule are left out; the
    /// first `Err` ends the walk and is the refusal, as is
    /// [`Refusal::NotRedirected`] when no side is left. An end in audit
    /// mode whose L3/L4 entry would refuse the flow (none, or a deny) is
    /// not a refusal: it is pushed to `audit_faults` and passes.
    pub(crate) fn local_sides<T>(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        parser: L7Parser,
        audit_faults: &mut Vec<Refusal>,
        mut side: impl FnMut(LocalSide<'_>) -> Result<T, Refusal>,
    ) -> (NumericIdentity, NumericIdentity, Result<Vec<T>, Refusal>) {
        let src_ip = src.ip().to_canonical();
        let dst_ip = orig_dst.ip().to_canonical();
        let src_identity = self.identity(src_ip);
        let dst_identity = self.identity(dst_ip);
        let candidates = [
            (self.by_ip.get(&src_ip), Direction::Egress, dst_identity),
            (self.by_ip.get(&dst_ip), Direction::Ingress, src_identity),
        ];
        let mut sides = Vec::new();
        for (index, direction, remote) in candidates {
            let Some(&index) = index else { continue };
            let looked_up =
                self.local_side(index, direction, remote, (TCP, orig_dst.port()), parser);
            if let Err(why @ Refusal::Side { fault, .. }) = &looked_up
                && matches!(fault, SideFault::NoEntry | SideFault::DeniedAtL4)
                && self.audited.get(index).copied().unwrap_or(false)
            {
                audit_faults.push(why.clone());
                continue;
            }
            let found = looked_up.and_then(|s| s.map(&mut side).transpose());
            match found {
                Ok(Some(s)) => sides.push(s),
                Ok(None) => {}
                Err(why) => return (src_identity, dst_identity, Err(why)),
            }
        }
        if sides.is_empty() {
            return (
                src_identity,
                dst_identity,
                Err(Refusal::NotRedirected(parser)),
            );
        }
        (src_identity, dst_identity, Ok(sides))
    }

    /// The `R` rules of a redirected TCP flow from `src` to `orig_dst`:
    /// every local side that redirects it to `R`'s parser must allow a
    /// request. Fails closed: anything the lookup cannot account for is
    /// the refusal.
    pub fn flow_rules<R: RuleSet>(&self, src: SocketAddr, orig_dst: SocketAddr) -> FlowRules<R> {
        let mut audit_faults = Vec::new();
        let (src_identity, dst_identity, sides) =
            self.local_sides(src, orig_dst, R::PARSER, &mut audit_faults, |s| {
                s.rules::<R>()
            });
        let (sides, refusal) = match sides {
            Ok(sides) => (sides, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        FlowRules {
            src_identity,
            dst_identity,
            sides,
            refusal,
            audit_faults,
        }
    }
}

impl ProxyPolicy {
    /// The `R` rules of the source's egress side alone, for the protocol
    /// `protocol`: a DNS query is judged by what its local client may ask.
    /// The side must redirect the flow to `R`'s parser; anything else
    /// (not a local client, no entry, no redirect) is the refusal.
    pub(crate) fn egress_rules<R: RuleSet>(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        protocol: u8,
    ) -> (NumericIdentity, NumericIdentity, Result<Side<R>, Refusal>) {
        let src_ip = src.ip().to_canonical();
        let dst_ip = orig_dst.ip().to_canonical();
        let src_identity = self.identity(src_ip);
        let dst_identity = self.identity(dst_ip);
        let side = match self.by_ip.get(&src_ip) {
            None => Err(Refusal::NotLocal),
            Some(&index) => match self.local_side(
                index,
                Direction::Egress,
                dst_identity,
                (protocol, orig_dst.port()),
                R::PARSER,
            ) {
                Ok(Some(side)) => side.rules::<R>(),
                Ok(None) => Err(Refusal::Side {
                    endpoint: self.endpoints[index].name.clone(),
                    direction: Direction::Egress,
                    fault: SideFault::NotRedirected(R::PARSER),
                }),
                Err(why) => Err(why),
            },
        };
        (src_identity, dst_identity, side)
    }
}
