use std::sync::Arc;

use policy_model::api::KafkaRule;
use policy_model::{Direction, NumericIdentity};

use super::*;
use crate::kafka::parse::TopicRef;
use crate::policy::SidePolicy;

/// The rules of `ns1/a`'s ingress side with `set` as its compiled rules.
fn rules(set: Result<KafkaRuleSet, String>) -> KafkaRules {
    FlowRules {
        src_identity: NumericIdentity(1000),
        dst_identity: NumericIdentity(1001),
        sides: vec![Side {
            endpoint: "ns1/a".to_string(),
            direction: Direction::Ingress,
            policy: Arc::new(SidePolicy {
                allow_all: false,
                set,
                origins: Vec::new(),
                audit: None,
            }),
            audited: false,
        }],
        refusal: None,
        audit_faults: Vec::new(),
    }
}

fn produce(topics: Topics) -> KafkaFrame {
    KafkaFrame {
        api_key: ApiKey::Produce,
        api_version: 9,
        correlation_id: 1,
        client_id: None,
        flexible: true,
        topics,
        groups: Vec::new(),
        expects_response: true,
    }
}

fn topic(name: &str) -> Topics {
    Topics::Listed(vec![TopicRef {
        name: Some(name.to_string()),
        id: None,
        partitions: vec![0],
    }])
}

/// The reason a denial carries, as the access log writes it.
fn denial_reason(judgement: &KafkaJudgement) -> String {
    match judgement {
        KafkaJudgement::Denied(denial) => {
            let (verdict, reason) = denial.logged();
            assert_eq!(verdict, KafkaVerdictLabel::Denied);
            reason
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn denial_reasons_keep_their_texts() {
    let none = || Ok(KafkaRuleSet::compile(&[]).expect("no rules compile"));
    let payments = KafkaRule {
        topic: Some("payments".to_string()),
        ..KafkaRule::default()
    };
    let payments = KafkaRuleSet::compile(&[payments]).expect("a topic rule compiles");
    assert_eq!(
        denial_reason(&rules(Ok(payments)).judge(&produce(topic("orders")))),
        "ns1/a ingress: no Kafka rule allows topic orders"
    );
    assert_eq!(
        denial_reason(&rules(none()).judge(&produce(topic("orders")))),
        "ns1/a ingress: no Kafka rule matches the request"
    );
    assert_eq!(
        denial_reason(&rules(Err("a bad rule".to_string())).judge(&produce(topic("orders")))),
        "ns1/a ingress: rules do not compile: a bad rule"
    );
    assert_eq!(
        denial_reason(&rules(none()).judge(&produce(Topics::Unparsed))),
        "the proxy does not read this API's topics"
    );
    let unredirected = FlowRules {
        sides: Vec::new(),
        ..rules(none())
    };
    assert_eq!(
        denial_reason(&unredirected.judge(&produce(topic("orders")))),
        "no policy redirects this flow to the Kafka proxy"
    );
    let refused = FlowRules {
        refusal: Some(Refusal::NotLocal),
        ..rules(none())
    };
    assert_eq!(
        denial_reason(&refused.judge(&produce(topic("orders")))),
        "the client is not a local endpoint"
    );
}
