//! The L7 half of `explain`: a request judged against the L7 policy of a
//! redirected key, with the same rule sets and TLS plan the proxy uses.

use super::query::{HttpRequestSpec, L7Request, PolicyName, Reason};
use crate::l7::{self, L7Rules};
use crate::resolve::L7Policy;
use crate::rules::Direction;
use std::sync::Arc;

pub(super) enum L7Outcome {
    NotGiven,
    Allowed(Reason),
    Denied(Reason),
}

pub(super) fn judge(pol: &L7Policy, req: Option<&L7Request>, direction: Direction) -> L7Outcome {
    let Some(req) = req else {
        return L7Outcome::NotGiven;
    };
    let base = Reason {
        direction: Some(direction),
        policy: None,
        rule: None,
        message: String::new(),
    };
    if req.parser() != pol.parser {
        return L7Outcome::Denied(Reason {
            message: format!(
                "the port is redirected to the {} proxy; a {} request does not parse there and is denied",
                pol.parser,
                req.parser()
            ),
            ..base
        });
    }
    match req {
        L7Request::Tls(t) => return judge_tls(pol, t.sni.as_deref(), t.http.as_ref(), base),
        L7Request::Http(h) if !pol.tls.is_empty() => return judge_tls_plain(pol, h, base),
        _ => {}
    }
    if pol.allow_all && pol.visibility {
        return L7Outcome::Allowed(Reason {
            message: format!(
                "redirected to the {} proxy for visibility only (policy.cilium.io/proxy-visibility): every request passes and is recorded",
                pol.parser
            ),
            ..base
        });
    }
    if pol.allow_all && pol.rules.is_empty() && pol.tls.is_empty() && pol.audit.is_some() {
        return L7Outcome::Allowed(Reason {
            message: format!(
                "only audited policies have {} rules on this port: every request passes",
                pol.parser
            ),
            ..base
        });
    }
    if pol.allow_all {
        return L7Outcome::Allowed(Reason {
            message: format!(
                "an L3/L4 rule without L7 rules also allows this traffic, which cancels the {} rules: every request is allowed",
                pol.parser
            ),
            ..base
        });
    }
    for (rules, origin, path) in &pol.rules {
        if let Some(detail) = l7_allows(rules, req) {
            return L7Outcome::Allowed(Reason {
                policy: Some(PolicyName::from(origin.as_ref())),
                rule: Some(path.clone()),
                message: format!("{} rule allows the request: {detail}", pol.parser),
                ..base
            });
        }
    }
    let names: Vec<String> = pol
        .rules
        .iter()
        .map(|(_, o, p)| format!("{o} {p}"))
        .collect();
    L7Outcome::Denied(Reason {
        message: format!(
            "no {} rule allows the request (rules from: {})",
            pol.parser,
            names.join("; ")
        ),
        ..base
    })
}

/// A TLS connection on an HTTP-redirected port: the side's plan for its
/// SNI, then the HTTP request (if given) against the plan's rules.
fn judge_tls(
    pol: &L7Policy,
    sni: Option<&str>,
    http: Option<&HttpRequestSpec>,
    base: Reason,
) -> L7Outcome {
    let plan = l7::tls::plan_side(
        pol.allow_all,
        &pol.rules,
        &pol.tls,
        l7::tls::ClientStart::Tls { sni },
    );
    match plan {
        Err(why) => L7Outcome::Denied(Reason {
            message: format!("TLS connection closed: {why}"),
            ..base
        }),
        Ok(l7::tls::SidePlan::Splice { why }) => L7Outcome::Allowed(Reason {
            message: format!("TLS passes through without termination: {why}"),
            ..base
        }),
        Ok(l7::tls::SidePlan::Inspect {
            terminate,
            allow_all,
            http: rules,
            ..
        }) => {
            let shown = terminate.map(|t| t.to_string()).unwrap_or_default();
            match http {
                None => L7Outcome::Allowed(Reason {
                    message: format!(
                        "TLS terminated with {shown}; give an HTTP request to see its verdict"
                    ),
                    ..base
                }),
                Some(h) => judge_plan_http(
                    allow_all,
                    &rules,
                    h,
                    &format!("inside TLS terminated with {shown}"),
                    base,
                ),
            }
        }
    }
}

/// A plaintext HTTP request on a port that also has TLS rules: only the
/// rules that apply to plaintext judge it.
fn judge_tls_plain(pol: &L7Policy, h: &HttpRequestSpec, base: Reason) -> L7Outcome {
    match l7::tls::plan_side(
        pol.allow_all,
        &pol.rules,
        &pol.tls,
        l7::tls::ClientStart::Plaintext,
    ) {
        Err(why) => L7Outcome::Denied(Reason {
            message: why,
            ..base
        }),
        Ok(l7::tls::SidePlan::Splice { why }) => L7Outcome::Allowed(Reason {
            message: why,
            ..base
        }),
        Ok(l7::tls::SidePlan::Inspect {
            allow_all, http, ..
        }) => judge_plan_http(allow_all, &http, h, "in plaintext", base),
    }
}

/// One HTTP request against the rule lists of a plan (an entry without
/// rules allows every request).
fn judge_plan_http(
    allow_all: bool,
    rules: &[l7::tls::PlanRules],
    h: &HttpRequestSpec,
    context: &str,
    base: Reason,
) -> L7Outcome {
    if allow_all {
        return L7Outcome::Allowed(Reason {
            message: format!("an L3/L4 rule without L7 rules allows every request {context}"),
            ..base
        });
    }
    let req = L7Request::Http(h.clone());
    for r in rules {
        let detail = match &r.rules {
            None => Some(format!(
                "the rule has no HTTP rules: every request {context} passes"
            )),
            Some(list) => l7_allows(list, &req).map(|d| format!("{d} {context}")),
        };
        if let Some(detail) = detail {
            return L7Outcome::Allowed(Reason {
                policy: Some(PolicyName::from(r.origin.as_ref())),
                rule: Some(r.rule.clone()),
                message: format!("http rule allows the request: {detail}"),
                ..base
            });
        }
    }
    let names: Vec<String> = rules
        .iter()
        .map(|r| format!("{} {}", r.origin, r.rule))
        .collect();
    L7Outcome::Denied(Reason {
        message: format!(
            "no http rule allows the request {context} (rules from: {})",
            names.join("; ")
        ),
        ..base
    })
}

/// Whether one rule list allows the request; `Some(detail)` if it does.
fn l7_allows(rules: &Arc<L7Rules>, req: &L7Request) -> Option<String> {
    match (rules.as_ref(), req) {
        (L7Rules::Http(list), L7Request::Http(h)) => {
            let set = l7::http::HttpRuleSet::compile(list).ok()?;
            let headers: Vec<(&str, &str)> = h
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let view = l7::http::HttpRequest {
                method: &h.method,
                path: &h.path,
                authority: (!h.host.is_empty()).then_some(h.host.as_str()),
                headers: &headers,
            };
            match set.judge(&view) {
                l7::http::HttpVerdict::Allowed { rule, .. } => {
                    Some(format!("http[{rule}] matches {} {}", h.method, h.path))
                }
                l7::http::HttpVerdict::Denied => None,
            }
        }
        (L7Rules::Dns(list), L7Request::Dns { name }) => {
            let set = l7::dns::DnsRuleSet::compile(list).ok()?;
            set.matching_rule(name)
                .map(|i| format!("dns[{i}] matches {name}"))
        }
        (L7Rules::Kafka(list), L7Request::Kafka(k)) => {
            let set = l7::kafka::KafkaRuleSet::compile(list).ok()?;
            let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
            let view = l7::kafka::KafkaRequest {
                api_key: k.api_key,
                api_version: k.api_version,
                client_id: k.client_id.as_deref(),
                topics: &topics,
            };
            if set.judge(&view).is_allowed() {
                Some(format!(
                    "kafka api key {} v{} topics [{}]",
                    k.api_key,
                    k.api_version,
                    k.topics.join(",")
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}
