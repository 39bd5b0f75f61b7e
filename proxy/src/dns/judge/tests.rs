use std::sync::Arc;

use policy_model::Direction;

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
        DnsJudgement::Allowed { .. } => panic!("expected a denial: {judgement:?}"),
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
