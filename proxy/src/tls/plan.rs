//! TLS on HTTP-redirected ports: what the proxy does with a connection
//! (splice, terminate and inspect, originate, close), and the HTTP rules
//! that apply inside it. Pure: the decision is
//! [`policy_model::l7::tls::plan_side`] on each side's L7 policy, found
//! with the kernel's own lookup as for plaintext HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use policy_model::l7::tls::{ClientStart, ConnPlan, SidePlan, combine_sides, plan_side};
use policy_model::resolve::L7Policy;
use policy_model::rules::L7Rules;
use policy_model::{Direction, L7Parser, MapKey};

use crate::http::judge::{HttpRules, SideRules};
use crate::policy::{ProxyPolicy, Refusal, SideFault, SidePolicy};

#[cfg(test)]
mod tests;

/// Most memoized per-SNI rule sets per snapshot (SNI values come from
/// clients: bounded so they cannot grow memory).
const MAX_MEMO: usize = 4096;

/// The connection's start as a memo key.
fn start_key(start: ClientStart<'_>) -> String {
    match start {
        ClientStart::Plaintext => "\0plain".to_string(),
        ClientStart::Tls { sni: None } => "\0tls".to_string(),
        ClientStart::Tls { sni: Some(s) } => s.to_ascii_lowercase(),
    }
}

/// What the proxy does with a connection on an HTTP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnDecision {
    pub plan: ConnPlan,
    /// What only audit mode lets through: an end in audit mode whose
    /// L3/L4 entry or TLS settings would refuse the connection, or a side
    /// whose audited policies' `serverNames` would. A spliced connection
    /// is logged as AUDIT with these reasons; the requests of an
    /// inspected one carry them (see [`ProxyPolicy::http_rules_in`]).
    pub audit_faults: Vec<Refusal>,
}

/// One local side of a connection with what its policy requires of it.
struct PlannedSide {
    /// The endpoint's index in the snapshot.
    index: usize,
    key: MapKey,
    direction: Direction,
    /// `Err`: why the side closes the connection. An end in audit mode
    /// splices instead (and its reason is an audit fault).
    plan: Result<SidePlan, String>,
    /// The audit verdict's plan (the audited policies' rules too) where
    /// audited policies add rules to the key and it admits the connection
    /// (one it would close is an audit fault).
    audit: Option<SidePlan>,
}

/// The local sides of a connection and what only audit mode passes.
struct PlannedSides {
    sides: Vec<PlannedSide>,
    /// See [`ConnDecision::audit_faults`].
    audit_faults: Vec<Refusal>,
}

/// The plan of one side's L7 policy `l7` for `start`, errors naming the
/// side.
fn plan_of(l7: &L7Policy, start: ClientStart<'_>, side: &str) -> Result<SidePlan, String> {
    plan_side(l7.allow_all, &l7.rules, &l7.tls, start).map_err(|why| format!("{side}: {why}"))
}

/// A TLS audit fault: `why`, then `Kind ns/name rule-path` of every rule
/// entry of `l7` (the policies that would close the connection), each
/// once, `; `-separated as the access log's reasons are.
fn tls_audit_fault(why: String, l7: &L7Policy) -> Refusal {
    let mut parts = vec![why];
    let entries = l7.rules.iter().map(|(_, origin, path)| (origin, path));
    let tls = l7.tls.iter().map(|t| (&t.origin, &t.rule));
    for (origin, path) in entries.chain(tls) {
        let part = format!("{origin} {path}");
        if !parts[1..].contains(&part) {
            parts.push(part);
        }
    }
    Refusal::Tls(parts.join("; "))
}

impl ProxyPolicy {
    /// The local sides of a flow with their plans for `start`.
    fn side_plans(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        start: ClientStart<'_>,
    ) -> Result<PlannedSides, String> {
        // An audited end's L3/L4 refusal passes here, as for plaintext
        // HTTP (`flow_rules`); its TLS refusal passes too.
        let mut audit_faults = Vec::new();
        let mut tls_faults = Vec::new();
        let (_, _, sides) =
            self.local_sides(src, orig_dst, L7Parser::Http, &mut audit_faults, |side| {
                let Some(l7) = side.entry.policy.l7.get(side.key) else {
                    return Err(side.refusal(SideFault::MissingRules(L7Parser::Http)));
                };
                let name = format!("{} {}", side.entry.name, side.direction);
                if start == ClientStart::Plaintext && l7.tls.is_empty() {
                    // The common case, on every plaintext connection: no
                    // TLS settings, nothing to terminate or originate (the
                    // HTTP rules are the precompiled set, audit verdict
                    // included, see http_rules_in).
                    let plan = SidePlan::Inspect {
                        terminate: None,
                        originate: None,
                        allow_all: l7.allow_all,
                        http: Vec::new(),
                    };
                    return Ok(PlannedSide {
                        index: side.index,
                        key: *side.key,
                        direction: side.direction,
                        plan: Ok(plan),
                        audit: None,
                    });
                }
                let mut audit = None;
                let plan = match plan_of(l7, start, &name) {
                    Err(why) if side.audited => {
                        tls_faults.push(tls_audit_fault(why.clone(), l7));
                        Ok(SidePlan::Splice {
                            why: format!("audit mode: {why}"),
                        })
                    }
                    Err(why) => Err(why),
                    Ok(plan) => {
                        if let Some(a) = l7.audit.as_deref() {
                            match plan_of(a, start, &format!("{name}: audited policies")) {
                                Ok(p) => audit = Some(p),
                                Err(why) => tls_faults.push(tls_audit_fault(why, a)),
                            }
                        }
                        Ok(plan)
                    }
                };
                Ok(PlannedSide {
                    index: side.index,
                    key: *side.key,
                    direction: side.direction,
                    plan,
                    audit,
                })
            });
        let sides = sides.map_err(|why| why.to_string())?;
        audit_faults.extend(tls_faults);
        Ok(PlannedSides {
            sides,
            audit_faults,
        })
    }

    /// What the proxy does with a connection from `src` to `orig_dst` that
    /// starts as `start`; `Err` says why it is closed.
    pub fn connection_plan(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        start: ClientStart<'_>,
    ) -> Result<ConnDecision, String> {
        let planned = self.side_plans(src, orig_dst, start)?;
        let mut plans = Vec::new();
        for side in &planned.sides {
            plans.push(side.plan.as_ref().map_err(Clone::clone)?);
        }
        Ok(ConnDecision {
            plan: combine_sides(&plans, start)?,
            audit_faults: planned.audit_faults,
        })
    }

    /// The HTTP rules for requests of a connection that started as
    /// `start` (inside TLS once terminated): as
    /// [`http_rules`](Self::http_rules), except that ports with TLS
    /// settings judge with the rules whose `serverNames` admit it, and
    /// what only audit mode let through (see
    /// [`ConnDecision::audit_faults`]) makes every request an AUDIT.
    pub fn http_rules_in(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        start: ClientStart<'_>,
    ) -> HttpRules {
        let mut rules = self.http_rules(src, orig_dst);
        if rules.refusal.is_some() {
            return rules;
        }
        let planned = match self.side_plans(src, orig_dst, start) {
            Ok(s) => s,
            Err(why) => {
                rules.refusal = Some(Refusal::Tls(why));
                return rules;
            }
        };
        // The same lookup as http_rules' on the same snapshot: its L3/L4
        // faults, and the TLS ones.
        rules.audit_faults = planned.audit_faults;
        let mut out = Vec::new();
        for PlannedSide {
            index,
            key,
            direction,
            plan,
            audit,
        } in planned.sides
        {
            let entry = &self.endpoints[index];
            let l7 = entry.policy.l7.get(&key);
            let plain_port = l7.is_some_and(|l| l.tls.is_empty());
            if plain_port && start == ClientStart::Plaintext {
                // Unchanged plaintext semantics: the precompiled set.
                if let Some(side) = rules
                    .sides
                    .iter()
                    .find(|s| s.direction == direction && s.endpoint == entry.name)
                {
                    out.push(side.clone());
                }
                continue;
            }
            let plan = match plan {
                Ok(p) => p,
                Err(why) => {
                    rules.refusal = Some(Refusal::Tls(why));
                    return rules;
                }
            };
            let memo_key = (index, key, start_key(start));
            let cached = self
                .tls_memo
                .lock()
                .ok()
                .and_then(|m| m.get(&memo_key).cloned());
            let http = match cached {
                Some(h) => h,
                None => {
                    let h = Arc::new(SidePolicy::compile(&L7Policy {
                        audit: audit.as_ref().map(|a| Box::new(l7_of_plan(a))),
                        ..l7_of_plan(&plan)
                    }));
                    if let Ok(mut m) = self.tls_memo.lock() {
                        if m.len() >= MAX_MEMO {
                            m.clear();
                        }
                        m.insert(memo_key, h.clone());
                    }
                    h
                }
            };
            out.push(SideRules {
                endpoint: entry.name.clone(),
                direction,
                policy: http,
                audited: self.audited.get(index).copied().unwrap_or(false),
            });
        }
        rules.sides = out;
        rules
    }
}

/// The HTTP rules a plan implies: a splice side or an entry without HTTP
/// rules allows every request; otherwise the entries' rules OR-ed.
fn l7_of_plan(plan: &SidePlan) -> L7Policy {
    match plan {
        SidePlan::Splice { .. } => L7Policy::pass_all(L7Parser::Http, None, false),
        SidePlan::Inspect {
            allow_all, http, ..
        } => {
            let mut rules = Vec::new();
            let mut all = *allow_all;
            for r in http {
                match &r.rules {
                    Some(list) => rules.push((list.clone(), r.origin.clone(), r.rule.clone())),
                    None => all = true,
                }
            }
            // Foreign rule kinds cannot reach here (rules.rs admits TLS
            // only with HTTP rules); compile() would deny them anyway.
            debug_assert!(
                rules
                    .iter()
                    .all(|(l, _, _)| matches!(l.as_ref(), L7Rules::Http(_)))
            );
            L7Policy {
                parser: L7Parser::Http,
                allow_all: all,
                rules,
                tls: Vec::new(),
                audit: None,
                visibility: false,
            }
        }
    }
}
