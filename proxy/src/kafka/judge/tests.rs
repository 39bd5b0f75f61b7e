use std::net::SocketAddr;
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

// ---- audit mode ----

/// The reason of a request that passes as AUDIT, as the access log
/// writes it.
fn audit_reason(judgement: &KafkaJudgement) -> String {
    let (verdict, reason) = judgement.logged();
    assert_eq!(verdict, KafkaVerdictLabel::Audit, "{judgement:?}");
    assert!(judgement.forwards() && !judgement.is_allowed());
    reason
}

/// A side policy of one `produce` rule for `topic`, from `policy`.
fn produce_rule(policy: &str, topic: &str) -> SidePolicy<KafkaRuleSet> {
    let rule = KafkaRule {
        role: Some("produce".to_string()),
        topic: Some(topic.to_string()),
        ..KafkaRule::default()
    };
    SidePolicy {
        allow_all: false,
        set: KafkaRuleSet::compile(&[rule]).map_err(|e| e.to_string()),
        origins: vec![format!(
            "CiliumNetworkPolicy ns1/{policy} spec.ingress[0].rules.kafka[0]"
        )],
        audit: None,
    }
}

/// One side of `endpoint` with `policy`, in audit mode when `audited`.
fn side(
    endpoint: &str,
    direction: Direction,
    policy: SidePolicy<KafkaRuleSet>,
    audited: bool,
) -> KafkaSide {
    Side {
        endpoint: endpoint.to_string(),
        direction,
        policy: Arc::new(policy),
        audited,
    }
}

#[test]
fn an_audited_side_passes_what_it_denies_and_a_plain_side_still_denies() {
    let audited = FlowRules {
        sides: vec![side(
            "ns1/a",
            Direction::Ingress,
            produce_rule("kafka", "orders"),
            true,
        )],
        ..rules(Err(String::new()))
    };
    assert!(audited.judge(&produce(topic("orders"))).is_allowed());
    assert_eq!(
        audit_reason(&audited.judge(&produce(topic("payments")))),
        "ns1/a ingress: audit: no Kafka rule allows topic payments; \
         CiliumNetworkPolicy ns1/kafka spec.ingress[0].rules.kafka[0]"
    );
    let broken = FlowRules {
        sides: vec![side(
            "ns1/a",
            Direction::Ingress,
            SidePolicy {
                set: Err("a bad rule".to_string()),
                ..produce_rule("kafka", "orders")
            },
            true,
        )],
        ..rules(Err(String::new()))
    };
    assert_eq!(
        audit_reason(&broken.judge(&produce(topic("orders")))),
        "ns1/a ingress: audit: rules do not compile: a bad rule; \
         CiliumNetworkPolicy ns1/kafka spec.ingress[0].rules.kafka[0]"
    );
    // The other end is not in audit mode: its denial stands.
    let both = FlowRules {
        sides: vec![
            side(
                "ns1/c",
                Direction::Egress,
                produce_rule("c-out", "orders"),
                true,
            ),
            side(
                "ns1/a",
                Direction::Ingress,
                produce_rule("kafka", "orders"),
                false,
            ),
        ],
        ..rules(Err(String::new()))
    };
    assert_eq!(
        denial_reason(&both.judge(&produce(topic("payments")))),
        "ns1/a ingress: no Kafka rule allows topic payments"
    );
}

#[test]
fn a_request_only_the_audited_rules_deny_passes_naming_them() {
    let enforced = SidePolicy {
        allow_all: true,
        origins: Vec::new(),
        audit: Some(Arc::new(produce_rule("kafka-audit", "orders"))),
        ..produce_rule("kafka", "orders")
    };
    let flow = FlowRules {
        sides: vec![side("ns1/a", Direction::Ingress, enforced, false)],
        ..rules(Err(String::new()))
    };
    assert_eq!(
        flow.judge(&produce(topic("orders"))),
        KafkaJudgement::Allowed {
            rules: vec!["ns1/a ingress: allow-all".to_string()]
        }
    );
    assert_eq!(
        audit_reason(&flow.judge(&produce(topic("payments")))),
        "ns1/a ingress: audit: no Kafka rule of the audited policies allows topic payments; \
         CiliumNetworkPolicy ns1/kafka-audit spec.ingress[0].rules.kafka[0]"
    );
    let mut fetch = produce(topic("orders"));
    fetch.api_key = ApiKey::Fetch;
    assert_eq!(
        audit_reason(&flow.judge(&fetch)),
        "ns1/a ingress: audit: no Kafka rule of the audited policies matches the request; \
         CiliumNetworkPolicy ns1/kafka-audit spec.ingress[0].rules.kafka[0]"
    );
}

#[test]
fn an_audited_ends_l3_l4_fault_passes_what_the_sides_allow() {
    let fault = Refusal::Side {
        endpoint: "ns1/c".to_string(),
        direction: Direction::Egress,
        fault: crate::policy::SideFault::NoEntry,
    };
    let flow = FlowRules {
        sides: vec![side(
            "ns1/a",
            Direction::Ingress,
            produce_rule("kafka", "orders"),
            false,
        )],
        audit_faults: vec![fault],
        ..rules(Err(String::new()))
    };
    assert_eq!(
        audit_reason(&flow.judge(&produce(topic("orders")))),
        "ns1/c egress: audit: no policy entry allows the flow"
    );
    // The side's own denial stands.
    assert_eq!(
        denial_reason(&flow.judge(&produce(topic("payments")))),
        "ns1/a ingress: no Kafka rule allows topic payments"
    );
    // A refusal stands too, whatever audit mode passes.
    let refused = FlowRules {
        refusal: Some(Refusal::NotRedirected(L7Parser::Kafka)),
        sides: Vec::new(),
        ..flow
    };
    assert_eq!(
        denial_reason(&refused.judge(&produce(topic("orders")))),
        "no policy redirects this flow to the Kafka proxy"
    );
}

#[test]
fn the_access_log_writes_the_audit_verdict_as_audit() {
    // Lower case, as `allowed` and `denied`; the agent maps `audit` to
    // Hubble's AUDIT.
    assert_eq!(KafkaVerdictLabel::Audit.log_text(), "audit");
    assert_eq!(KafkaVerdictLabel::Allowed.log_text(), "allowed");
    assert_eq!(
        KafkaVerdictLabel::UpstreamError.log_text(),
        "upstream_error"
    );
}

// ---- audit mode, with the model's policies ----

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
";

/// `ns1/b` takes Kafka from `ns1/a`: produce to `allowed` only.
const KAFKA_B: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: kafka, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: '9092', protocol: TCP}]
      rules: {kafka: [{role: produce, topic: allowed}]}
";

/// `ns1/a` may only reach `ns1/b` on port 80: nothing allows 9092.
const A_WEB_ONLY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-out, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: '80', protocol: TCP}]}]
";

fn policy(yaml: &str) -> ProxyPolicy {
    let set = policy_model::load::load_str(yaml, "p.yaml").expect("test policies load");
    let topo = policy_model::Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = policy_model::Cluster::new(
        topo,
        set.rules().cloned().collect(),
        &policy_model::FqdnCache::default(),
    );
    ProxyPolicy::new(&cluster)
}

/// The verdict and reason of a Produce to `to` from `ns1/a` to `ns1/b`.
fn produce_from_a(p: &ProxyPolicy, to: &str) -> (KafkaVerdictLabel, String) {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("literal socket address");
    p.kafka_rules(addr("10.0.1.1:40000"), addr("10.0.1.2:9092"))
        .judge(&produce(topic(to)))
        .logged()
}

#[test]
fn a_topic_only_an_audited_policy_denies_passes_as_audit() {
    let audited = KAFKA_B.replace(
        "metadata: {name: kafka, namespace: ns1}",
        "metadata:\n  name: kafka-audit\n  namespace: ns1\n  annotations: {policy.cilium.io/audit-mode: 'true'}",
    );
    let p = policy(&audited);
    assert_eq!(
        produce_from_a(&p, "allowed"),
        (
            KafkaVerdictLabel::Allowed,
            "ns1/b ingress: allow-all".to_string()
        )
    );
    assert_eq!(
        produce_from_a(&p, "secret"),
        (
            KafkaVerdictLabel::Audit,
            "ns1/b ingress: audit: no Kafka rule of the audited policies allows topic secret; \
             CiliumNetworkPolicy ns1/kafka-audit spec.ingress[0].rules.kafka[0]"
                .to_string()
        )
    );
}

#[test]
fn an_audited_broker_passes_what_its_rules_deny_and_only_it() {
    let mut p = policy(KAFKA_B);
    assert_eq!(produce_from_a(&p, "secret").0, KafkaVerdictLabel::Denied);
    p.set_audited(|name| name == "ns1/b");
    assert_eq!(produce_from_a(&p, "allowed").0, KafkaVerdictLabel::Allowed);
    assert_eq!(
        produce_from_a(&p, "secret"),
        (
            KafkaVerdictLabel::Audit,
            "ns1/b ingress: audit: no Kafka rule allows topic secret; \
             CiliumNetworkPolicy ns1/kafka spec.ingress[0].rules.kafka[0]"
                .to_string()
        )
    );
    // The client in audit mode does not pass what the broker denies.
    p.set_audited(|name| name == "ns1/a");
    assert_eq!(
        produce_from_a(&p, "secret"),
        (
            KafkaVerdictLabel::Denied,
            "ns1/b ingress: no Kafka rule allows topic secret".to_string()
        )
    );
}

#[test]
fn an_audited_clients_missing_l4_entry_passes_as_audit() {
    let mut p = policy(&format!("{KAFKA_B}---\n{A_WEB_ONLY}"));
    assert_eq!(
        produce_from_a(&p, "allowed"),
        (
            KafkaVerdictLabel::Denied,
            "ns1/a egress: no policy entry allows the flow".to_string()
        )
    );
    p.set_audited(|name| name == "ns1/a");
    assert_eq!(
        produce_from_a(&p, "allowed"),
        (
            KafkaVerdictLabel::Audit,
            "ns1/a egress: audit: no policy entry allows the flow".to_string()
        )
    );
    assert_eq!(produce_from_a(&p, "secret").0, KafkaVerdictLabel::Denied);
    p.set_audited(|_| true);
    assert_eq!(
        produce_from_a(&p, "secret"),
        (
            KafkaVerdictLabel::Audit,
            "ns1/a egress: audit: no policy entry allows the flow; \
             ns1/b ingress: audit: no Kafka rule allows topic secret; \
             CiliumNetworkPolicy ns1/kafka spec.ingress[0].rules.kafka[0]"
                .to_string()
        )
    );
}

#[test]
fn audit_mode_lists_the_topics_it_passes() {
    let mut p = policy(KAFKA_B);
    let addr = |s: &str| s.parse::<SocketAddr>().expect("literal socket address");
    let mut all = produce(Topics::All);
    all.api_key = ApiKey::Metadata;
    let listed = |p: &ProxyPolicy, t: &str| {
        p.kafka_rules(addr("10.0.1.1:40000"), addr("10.0.1.2:9092"))
            .allows_listing(&all, t)
    };
    assert!(!listed(&p, "secret"));
    p.set_audited(|name| name == "ns1/b");
    assert!(listed(&p, "secret"));
}
