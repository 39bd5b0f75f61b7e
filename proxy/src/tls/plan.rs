//! TLS on HTTP-redirected ports: what the proxy does with a connection
//! (splice, terminate and inspect, originate, close), and the HTTP rules
//! that apply inside it. Pure: the decision is
//! [`policy_model::l7::tls::plan_side`] on each side's L7 policy, found
//! with the kernel's own lookup as for plaintext HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use policy_model::l7::HttpRuleSet;
use policy_model::l7::tls::{ClientStart, ConnPlan, SidePlan, combine_sides, plan_side};
use policy_model::resolve::L7Policy;
use policy_model::rules::L7Rules;
use policy_model::{Direction, L7Parser, MapKey};

use crate::http::judge::{HttpRules, SideRules};
use crate::policy::{ProxyPolicy, Refusal, SideFault, SidePolicy};

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

impl ProxyPolicy {
    /// The local sides of a flow with their plans for `start`.
    #[allow(clippy::type_complexity)]
    fn side_plans(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        start: ClientStart<'_>,
    ) -> Result<Vec<(usize, MapKey, Direction, Result<SidePlan, String>)>, String> {
        // An audited end's L3/L4 refusal passes here; the HTTP rules of
        // the connection (`http_rules_in`) report it as AUDIT.
        let mut audit_faults = Vec::new();
        let (_, _, sides) = self.local_sides(src, orig_dst, L7Parser::Http, &mut audit_faults, |side| {
            let Some(l7) = side.entry.policy.l7.get(side.key) else {
                return Err(side.refusal(SideFault::MissingRules(L7Parser::Http)));
            };
            let plan = if start == ClientStart::Plaintext && l7.tls.is_empty() {
                // The common case, on every plaintext connection: no TLS
                // settings, nothing to terminate or originate (the HTTP
                // rules are the precompiled set, see http_rules_in).
                Ok(SidePlan::Inspect {
                    terminate: None,
                    originate: None,
                    allow_all: l7.allow_all,
                    http: Vec::new(),
                })
            } else {
                plan_side(l7.allow_all, &l7.rules, &l7.tls, start)
                    .map_err(|why| format!("{} {}: {why}", side.entry.name, side.direction))
            };
            Ok((side.index, *side.key, side.direction, plan))
        });
        sides.map_err(|why| why.to_string())
    }

    /// What the proxy does with a connection from `src` to `orig_dst` that
    /// starts as `start`; `Err` says why it is closed.
    pub fn connection_plan(
        &self,
        src: SocketAddr,
        orig_dst: SocketAddr,
        start: ClientStart<'_>,
    ) -> Result<ConnPlan, String> {
        let sides = self.side_plans(src, orig_dst, start)?;
        let mut plans = Vec::new();
        for (_, _, _, plan) in &sides {
            plans.push(plan.as_ref().map_err(Clone::clone)?);
        }
        combine_sides(&plans, start)
    }

    /// The HTTP rules for requests of a connection that started as
    /// `start` (inside TLS once terminated): as
    /// [`http_rules`](Self::http_rules), except that ports with TLS
    /// settings judge with the rules whose `serverNames` admit it.
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
        let sides = match self.side_plans(src, orig_dst, start) {
            Ok(s) => s,
            Err(why) => {
                rules.refusal = Some(Refusal::Tls(why));
                return rules;
            }
        };
        let mut out = Vec::new();
        for (index, key, direction, plan) in sides {
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
                    let h = Arc::new(side_policy_of_plan(&plan));
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

/// The HTTP side policy a plan implies: a splice side or an entry without
/// HTTP rules allows every request; otherwise the entries' rules OR-ed.
fn side_policy_of_plan(plan: &SidePlan) -> SidePolicy<HttpRuleSet> {
    match plan {
        SidePlan::Splice { .. } => SidePolicy::compile(&L7Policy {
            parser: L7Parser::Http,
            allow_all: true,
            rules: Vec::new(),
            tls: Vec::new(),
            audit: None,
            visibility: false,
        }),
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
            SidePolicy::compile(&L7Policy {
                parser: L7Parser::Http,
                allow_all: all,
                rules,
                tls: Vec::new(),
                audit: None,
                visibility: false,
            })
        }
    }
}
