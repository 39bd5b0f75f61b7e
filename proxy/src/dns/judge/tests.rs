use std::sync::Arc;

use policy_model::Direction;
use policy_model::api::FqdnSelector;

use super::*;
use crate::policy::SidePolicy;

/// The rules of `ns1/a`'s egress side with `set` as its compiled rules.
fn rules(set: Result<DnsRuleSet, String>) -> DnsRules {
    DnsRules {
        src_identity: NumericIdentity(1000),
        dst_identity: NumericIdentity(1001),
        side: Ok(Side {
            endpoint: "ns1/a".to_string(),
            direction: Direction::Egress,
            policy: Arc::new(SidePolicy {
                allow_all: false,
                set,
                origins: Vec::new(),
                audit: None,
            }),
            audited: false,
        }),
    }
}

/// The reason a denial carries, as the access log writes it.
fn denial_reason(judgement: &DnsJudgement) -> String {
    let (verdict, reason) = judgement.logged();
    let want = match judgement {
        DnsJudgement::Denied(DnsDenial::Malformed(_)) => DnsVerdict::Invalid,
        DnsJudgement::Denied(_) => DnsVerdict::Denied,
        DnsJudgement::Allowed { .. } | DnsJudgement::Audit { .. } => {
            panic!("expected a denial: {judgement:?}")
        }
    };
    assert_eq!(verdict, want);
    assert_eq!(judgement.reason(), reason);
    reason
}

#[test]
fn denial_reasons_keep_their_texts() {
    let none = DnsRuleSet::compile(&[]).expect("no rules compile");
    assert_eq!(
        denial_reason(&rules(Ok(none)).judge(["evil.test."])),
        "ns1/a egress: no DNS rule matches evil.test."
    );
    assert_eq!(
        denial_reason(&rules(Err("a bad pattern".to_string())).judge(["a.test."])),
        "ns1/a egress: DNS rules do not compile: a bad pattern"
    );
    assert_eq!(
        denial_reason(&rules(Err("a bad pattern".to_string())).judge([])),
        "the query has no question"
    );
    let refused = DnsRules {
        side: Err(Refusal::NotLocal),
        ..rules(Err(String::new()))
    };
    assert_eq!(
        denial_reason(&refused.judge(["a.test."])),
        "the client is not a local endpoint"
    );
    let policy = ProxyPolicy::empty();
    let addr = |s: &str| s.parse::<SocketAddr>().expect("literal socket address");
    let short = decide(
        &policy,
        addr("10.0.1.1:40000"),
        addr("10.0.1.2:53"),
        Transport::Udp,
        &[0; 5],
    );
    assert_eq!(
        denial_reason(&short.judgement),
        "5 bytes is shorter than a DNS header (12)"
    );
    let unredirected = decide(
        &policy,
        addr("10.0.1.1:40000"),
        addr("10.0.1.2:53"),
        Transport::Udp,
        &[0; 12],
    );
    assert!(!unredirected.judgement.is_allowed());
}

// ---- audit mode ----

/// A compiled side policy of `names` (`matchName` each), their origins
/// `CiliumNetworkPolicy ns1/{policy} spec.egress[0].toPorts[0].rules.dns[i]`.
fn side_policy(policy: &str, names: &[&str]) -> SidePolicy<DnsRuleSet> {
    let rules: Vec<FqdnSelector> = names
        .iter()
        .map(|n| FqdnSelector {
            match_name: Some(n.to_string()),
            match_pattern: None,
        })
        .collect();
    SidePolicy {
        allow_all: false,
        set: DnsRuleSet::compile(&rules).map_err(|e| e.to_string()),
        origins: (0..names.len())
            .map(|i| {
                format!("CiliumNetworkPolicy ns1/{policy} spec.egress[0].toPorts[0].rules.dns[{i}]")
            })
            .collect(),
        audit: None,
    }
}

/// `ns1/a`'s egress side with `policy`, in audit mode when `audited`.
fn side_rules(policy: SidePolicy<DnsRuleSet>, audited: bool) -> DnsRules {
    DnsRules {
        side: Ok(Side {
            endpoint: "ns1/a".to_string(),
            direction: Direction::Egress,
            policy: Arc::new(policy),
            audited,
        }),
        ..rules(Err(String::new()))
    }
}

/// The reason of a query that passes as AUDIT, as the access log writes
/// it.
fn audit_reason(judgement: &DnsJudgement) -> String {
    let (verdict, reason) = judgement.logged();
    assert_eq!(verdict, DnsVerdict::Audit, "{judgement:?}");
    assert!(judgement.forwards() && !judgement.is_allowed());
    reason
}

#[test]
fn an_audited_client_passes_what_its_rules_deny_naming_its_policies() {
    let enforced = side_policy("dns", &["a.test", "b.test", "a.test"]);
    let rules = side_rules(enforced, true);
    assert!(rules.judge(["a.test."]).is_allowed());
    assert_eq!(
        audit_reason(&rules.judge(["a.test.", "evil.test."])),
        "ns1/a egress: audit: no DNS rule matches evil.test.; \
         CiliumNetworkPolicy ns1/dns spec.egress[0].toPorts[0].rules.dns[0]; \
         CiliumNetworkPolicy ns1/dns spec.egress[0].toPorts[0].rules.dns[1]; \
         CiliumNetworkPolicy ns1/dns spec.egress[0].toPorts[0].rules.dns[2]"
    );
    // Not in audit mode: the same query is denied.
    let enforcing = side_rules(side_policy("dns", &["a.test"]), false);
    assert_eq!(
        denial_reason(&enforcing.judge(["evil.test."])),
        "ns1/a egress: no DNS rule matches evil.test."
    );
}

#[test]
fn an_audited_client_passes_rules_that_do_not_compile() {
    let broken = SidePolicy {
        allow_all: false,
        set: Err("a bad pattern".to_string()),
        origins: vec!["CiliumNetworkPolicy ns1/dns spec.egress[0].toPorts[0].rules.dns[0]".into()],
        audit: None,
    };
    assert_eq!(
        audit_reason(&side_rules(broken, true).judge(["a.test."])),
        "ns1/a egress: audit: DNS rules do not compile: a bad pattern; \
         CiliumNetworkPolicy ns1/dns spec.egress[0].toPorts[0].rules.dns[0]"
    );
}

#[test]
fn a_name_only_the_audited_rules_deny_passes_naming_them_once() {
    // The audit verdict's rules: one origin listed twice (two rules of one
    // selector path, as the model may list them) is named once.
    let mut audited = side_policy("dns-audit", &["a.test", "a.test"]);
    audited.origins[1] = audited.origins[0].clone();
    let enforced = SidePolicy {
        allow_all: true,
        audit: Some(Arc::new(audited)),
        ..side_policy("dns", &[])
    };
    let rules = side_rules(enforced, false);
    assert_eq!(
        rules.judge(["A.Test."]),
        DnsJudgement::Allowed {
            rules: vec!["ns1/a egress: allow-all".to_string()]
        }
    );
    assert_eq!(
        audit_reason(&rules.judge(["a.test.", "evil.test."])),
        "ns1/a egress: audit: no DNS rule of the audited policies matches evil.test.; \
         CiliumNetworkPolicy ns1/dns-audit spec.egress[0].toPorts[0].rules.dns[0]"
    );
    let broken = SidePolicy {
        allow_all: true,
        audit: Some(Arc::new(SidePolicy {
            set: Err("a bad pattern".to_string()),
            ..side_policy("dns-audit", &["a.test"])
        })),
        ..side_policy("dns", &[])
    };
    assert_eq!(
        audit_reason(&side_rules(broken, false).judge(["a.test."])),
        "ns1/a egress: audit: DNS rules of the audited policies do not compile: a bad pattern; \
         CiliumNetworkPolicy ns1/dns-audit spec.egress[0].toPorts[0].rules.dns[0]"
    );
}

#[test]
fn audit_mode_keeps_refusals_and_empty_queries_denied() {
    let refused = DnsRules {
        side: Err(Refusal::NotLocal),
        ..side_rules(side_policy("dns", &[]), true)
    };
    assert_eq!(
        denial_reason(&refused.judge(["a.test."])),
        "the client is not a local endpoint"
    );
    let audited = side_rules(side_policy("dns", &["a.test"]), true);
    assert_eq!(
        denial_reason(&audited.judge([])),
        "the query has no question"
    );
}

#[test]
fn the_access_log_writes_the_audit_verdict_as_audit() {
    // `AccessRecord::Dns` records the verdict with `?`: its Debug text,
    // which the agent maps to Hubble's AUDIT as it maps `Allowed`.
    assert_eq!(format!("{:?}", DnsVerdict::Audit), "Audit");
    assert_eq!(format!("{:?}", DnsVerdict::Allowed), "Allowed");
}
