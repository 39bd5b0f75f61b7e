//! Judging one HTTP request against 1,000 `rules.http` entries with
//! [`HttpRuleSet`].
//!
//! Three rule sets of 1,000 rules each:
//! - `literal`: `GET /api/v1/svc-NNNN/items`, literal method and path (hash
//!   lookups in the compiled set);
//! - `regex`: `GET|POST /api/v1/svc-NNNN/items/[0-9]+`, regex paths (one
//!   shared `RegexSet`);
//! - `headers`: the same path regex `/api/.*` in every rule, told apart only
//!   by an `X-Tenant` header value: every rule survives the field indexes,
//!   so the header checks run over all of them.
//!
//! For each, a request allowed by the first rule, one allowed by the last
//! rule, and one no rule allows; plus the compile time of the set.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use policy_model::api::HttpRule;
use policy_model::l7::http::{HttpRequest, HttpRuleSet, HttpVerdict};

const RULES: usize = 1_000;

fn literal_rules() -> Vec<HttpRule> {
    (0..RULES)
        .map(|i| HttpRule {
            method: Some("GET".into()),
            path: Some(format!("/api/v1/svc-{i:04}/items")),
            ..HttpRule::default()
        })
        .collect()
}

fn regex_rules() -> Vec<HttpRule> {
    (0..RULES)
        .map(|i| HttpRule {
            method: Some("GET|POST".into()),
            path: Some(format!("/api/v1/svc-{i:04}/items/[0-9]+")),
            ..HttpRule::default()
        })
        .collect()
}

fn header_rules() -> Vec<HttpRule> {
    (0..RULES)
        .map(|i| HttpRule {
            method: Some("GET".into()),
            path: Some("/api/.*".into()),
            headers: vec![format!("X-Tenant tenant-{i:04}")],
            ..HttpRule::default()
        })
        .collect()
}

/// One rule set and its three requests: (case, path, X-Tenant value,
/// expected allowing rule).
struct Scenario {
    name: &'static str,
    rules: Vec<HttpRule>,
    requests: [(&'static str, String, String, Option<usize>); 3],
}

fn scenarios() -> Vec<Scenario> {
    let last = RULES - 1;
    let tenant = |i: usize| format!("tenant-{i:04}");
    vec![
        Scenario {
            name: "literal",
            rules: literal_rules(),
            requests: [
                ("first", "/api/v1/svc-0000/items".into(), tenant(0), Some(0)),
                (
                    "last",
                    format!("/api/v1/svc-{last:04}/items"),
                    tenant(0),
                    Some(last),
                ),
                ("none", "/api/v1/svc-9999/items".into(), tenant(0), None),
            ],
        },
        Scenario {
            name: "regex",
            rules: regex_rules(),
            requests: [
                (
                    "first",
                    "/api/v1/svc-0000/items/12345".into(),
                    tenant(0),
                    Some(0),
                ),
                (
                    "last",
                    format!("/api/v1/svc-{last:04}/items/12345"),
                    tenant(0),
                    Some(last),
                ),
                (
                    "none",
                    "/api/v1/svc-0000/items/12345x".into(),
                    tenant(0),
                    None,
                ),
            ],
        },
        Scenario {
            name: "headers",
            rules: header_rules(),
            requests: [
                ("first", "/api/v1/orders".into(), tenant(0), Some(0)),
                ("last", "/api/v1/orders".into(), tenant(last), Some(last)),
                ("none", "/api/v1/orders".into(), tenant(9999), None),
            ],
        },
    ]
}

fn allowing_rule(verdict: &HttpVerdict<'_>) -> Option<usize> {
    match verdict {
        HttpVerdict::Allowed { rule, .. } => Some(*rule),
        HttpVerdict::Denied => None,
    }
}

fn http_match(c: &mut Criterion) {
    for scenario in scenarios() {
        let set = HttpRuleSet::compile(&scenario.rules).expect("the generated rules compile");
        let mut g = c.benchmark_group(format!("http_match_1000_rules/{}", scenario.name));
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
        for (case, path, tenant, expected) in &scenario.requests {
            let headers = [("user-agent", "bench/1.0"), ("x-tenant", tenant.as_str())];
            let req = HttpRequest {
                method: "GET",
                path,
                authority: Some("svc.ns-001.svc.cluster.local"),
                headers: &headers,
            };
            assert_eq!(
                allowing_rule(&set.judge(&req)),
                *expected,
                "{}/{case}: unexpected verdict",
                scenario.name
            );
            g.bench_function(*case, |b| {
                b.iter(|| black_box(&set).judge(black_box(&req)).is_allowed())
            });
        }
        g.sample_size(10);
        g.bench_function("compile", |b| {
            b.iter(|| HttpRuleSet::compile(black_box(&scenario.rules)))
        });
        g.finish();
    }
}

criterion_group!(benches, http_match);
criterion_main!(benches);
