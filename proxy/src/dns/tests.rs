use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use policy_model::load::load_str;
use policy_model::{Cluster, FqdnCache, Topology};

use super::deny::{self, ProxyRcode};
use super::judge::{Transport, decide};
use super::learn::{LearnLimits, addresses};
use super::metrics::DnsVerdict;
use super::parse::{DnsAnswer, ParseError, parse_query};
use crate::policy::ProxyPolicy;
use crate::policy::{Refusal, SideFault};

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("literal DNS name")
}

pub(super) fn query_bytes(id: u16, names: &[(&str, RecordType)]) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    for (n, t) in names {
        m.add_query(Query::query(name(n), *t));
    }
    m.to_vec().expect("query encodes")
}

// ---- parse ----

#[test]
fn parse_keeps_case_and_normalizes() {
    let q = parse_query(&query_bytes(7, &[("WwW.ExAmple.COM.", RecordType::A)])).expect("parses");
    assert_eq!(q.id, 7);
    assert_eq!(q.questions.len(), 1);
    assert_eq!(q.questions[0].name, "WwW.ExAmple.COM.");
    assert_eq!(q.questions[0].normalized, "www.example.com.");
    assert_eq!(q.questions[0].qtype, RecordType::A);
    assert_eq!(q.qtypes(), "A");
}

#[test]
fn parse_reads_every_question() {
    let bytes = query_bytes(
        1,
        &[
            ("a.example.com.", RecordType::A),
            ("b.test.", RecordType::AAAA),
        ],
    );
    let q = parse_query(&bytes).expect("parses");
    assert_eq!(q.names(), "a.example.com.,b.test.");
    assert_eq!(q.qtypes(), "A,AAAA");
    assert_eq!(q.question_bytes, bytes[12..].to_vec());
}

#[test]
fn parse_rejects_what_it_cannot_judge() {
    assert_eq!(parse_query(&[0; 5]), Err(ParseError::TooShort { len: 5 }));
    let mut response = query_bytes(1, &[("a.test.", RecordType::A)]);
    response[2] |= 0x80;
    assert_eq!(parse_query(&response), Err(ParseError::NotAQuery));
    let mut notify = query_bytes(1, &[("a.test.", RecordType::A)]);
    notify[2] |= 4 << 3;
    assert_eq!(parse_query(&notify), Err(ParseError::OpCode(4)));
    assert_eq!(
        parse_query(&query_bytes(1, &[])),
        Err(ParseError::NoQuestion)
    );
    let full = query_bytes(1, &[("abc.test.", RecordType::A)]);
    let truncated = &full[..full.len() - 6];
    assert!(matches!(
        parse_query(truncated),
        Err(ParseError::Malformed(_))
    ));
    // A question count larger than the questions sent.
    let mut lying = full.clone();
    lying[5] = 3;
    assert!(matches!(parse_query(&lying), Err(ParseError::Malformed(_))));
}

#[test]
fn escaped_bytes_in_a_label_are_kept_escaped() {
    // One label "a.b" (with a dot inside) under "test": never "a.b.test.".
    let mut bytes = query_bytes(1, &[("x.test.", RecordType::A)]);
    bytes.truncate(12);
    bytes.extend_from_slice(b"\x03a.b\x04test\x00\x00\x01\x00\x01");
    let q = parse_query(&bytes).expect("parses");
    assert_ne!(q.questions[0].normalized, "a.b.test.");
}

// ---- deny ----

#[test]
fn refusal_echoes_the_question_bytes() {
    let bytes = query_bytes(
        0xbeef,
        &[
            ("MiXeD.Example.COM.", RecordType::A),
            ("b.test.", RecordType::TXT),
        ],
    );
    let q = parse_query(&bytes).expect("parses");
    for (rcode, code) in [
        (ProxyRcode::Refused, ResponseCode::Refused),
        (ProxyRcode::NxDomain, ResponseCode::NXDomain),
        (ProxyRcode::ServFail, ResponseCode::ServFail),
    ] {
        let out = deny::respond(&q, rcode);
        assert_eq!(&out[12..], &bytes[12..], "questions byte for byte");
        let m = Message::from_vec(&out).expect("response parses");
        assert_eq!(m.metadata.id, 0xbeef);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, code);
        assert!(m.metadata.recursion_desired);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 2);
        assert_eq!(m.queries[0].name().to_ascii(), "MiXeD.Example.COM.");
    }
}

#[test]
fn format_error_needs_a_header() {
    assert_eq!(deny::format_error(&[1, 2, 3]), None);
    let mut bytes = query_bytes(0x1234, &[("a.test.", RecordType::A)]);
    bytes.truncate(14);
    let out = deny::format_error(&bytes).expect("has a header");
    let m = Message::from_vec(&out).expect("parses");
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty());
}

// ---- learn ----

fn answer(question: &str, records: Vec<Record>) -> Message {
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(name(question), RecordType::A));
    m.add_answers(records);
    m
}

fn a(owner: &str, ttl: u32, ip: &str) -> Record {
    let ip: IpAddr = ip.parse().expect("literal address");
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name(owner), ttl, data)
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

const NO_LIMITS: LearnLimits = LearnLimits {
    min_ttl: Duration::ZERO,
    max_ips_per_name: 50,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn cname_chain_ttl_is_the_minimum() {
    let m = answer(
        "www.example.com.",
        vec![
            cname("WWW.example.com.", 300, "edge.cdn.test."),
            cname("edge.cdn.test.", 30, "node.cdn.test."),
            a("node.cdn.test.", 600, "10.201.0.7"),
            a("node.cdn.test.", 10, "10.201.0.8"),
            a("node.cdn.test.", 600, "fd00:201::7"),
            a("unrelated.test.", 600, "10.9.9.9"),
        ],
    );
    let ips = addresses(&m, &name("www.example.com."), NO_LIMITS);
    assert_eq!(
        ips,
        vec![
            ("10.201.0.7".parse().unwrap(), secs(30)),
            ("10.201.0.8".parse().unwrap(), secs(10)),
            ("fd00:201::7".parse().unwrap(), secs(30)),
        ]
    );
}

#[test]
fn min_ttl_raises_and_cap_limits() {
    let records = (0..10)
        .map(|i| a("many.test.", 5, &format!("10.201.1.{i}")))
        .chain([a("many.test.", 5, "10.201.1.0")])
        .collect();
    let m = answer("many.test.", records);
    let limits = LearnLimits {
        min_ttl: secs(60),
        max_ips_per_name: 3,
    };
    let ips = addresses(&m, &name("many.test."), limits);
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|(_, ttl)| *ttl == secs(60)));
    assert_eq!(ips[0].0, "10.201.1.0".parse::<IpAddr>().unwrap());
    let uncapped = addresses(&m, &name("many.test."), NO_LIMITS);
    assert_eq!(uncapped.len(), 10, "duplicates are dropped");
}

#[test]
fn cname_loops_end() {
    let m = answer(
        "a.test.",
        vec![
            cname("a.test.", 60, "b.test."),
            cname("b.test.", 60, "a.test."),
            a("b.test.", 60, "10.0.0.1"),
        ],
    );
    let ips = addresses(&m, &name("a.test."), NO_LIMITS);
    assert_eq!(ips, vec![("10.0.0.1".parse().unwrap(), secs(60))]);
    assert!(addresses(&m, &name("other.test."), NO_LIMITS).is_empty());
}

#[test]
fn answer_summary_and_rcode() {
    let mut m = answer(
        "www.example.com.",
        vec![
            cname("www.example.com.", 60, "x.test."),
            a("x.test.", 60, "10.0.0.1"),
        ],
    );
    m.metadata.response_code = ResponseCode::NoError;
    let parsed = DnsAnswer::parse(&m.to_vec().unwrap()).expect("parses");
    assert_eq!(parsed.summary(), "x.test.,10.0.0.1");
    assert_eq!(parsed.rcode(), "NOERROR");
}

// ---- judge ----

const TOPO: &str = "
namespaces:
- {name: ns1}
pods:
- {namespace: ns1, name: a, labels: {app: a}, ip: 10.0.1.1}
- {namespace: ns1, name: b, labels: {app: b}, ip: 10.0.1.2}
";

const DNS_POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns, namespace: ns1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: '53', protocol: ANY}]
      rules: {dns: [{matchPattern: '*.example.com'}, {matchName: exact.test}]}
    - ports: [{port: '80', protocol: TCP}]
";

fn policy(yaml: &str) -> ProxyPolicy {
    let set = load_str(yaml, "p.yaml").expect("test policies load");
    let topo = Topology::from_yaml(TOPO, "t.yaml").expect("test topology is valid");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    ProxyPolicy::new(&cluster)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal socket address")
}

const CLIENT_A: &str = "10.0.1.1:40000";
const SERVER: &str = "10.201.0.53:53";

fn judge(p: &ProxyPolicy, client: &str, server: &str, t: Transport, names: &[&str]) -> bool {
    let q: Vec<_> = names.iter().map(|n| (*n, RecordType::A)).collect();
    decide(p, addr(client), addr(server), t, &query_bytes(1, &q))
        .judgement
        .is_allowed()
}

#[test]
fn names_are_judged_case_insensitively() {
    let p = policy(DNS_POLICY);
    for t in [Transport::Udp, Transport::Tcp] {
        assert!(judge(&p, CLIENT_A, SERVER, t, &["www.example.com."]));
        assert!(judge(&p, CLIENT_A, SERVER, t, &["WWW.Example.COM."]));
        assert!(judge(&p, CLIENT_A, SERVER, t, &["Exact.Test."]));
        assert!(!judge(&p, CLIENT_A, SERVER, t, &["example.com."]));
        assert!(!judge(&p, CLIENT_A, SERVER, t, &["a.b.example.com."]));
        assert!(!judge(&p, CLIENT_A, SERVER, t, &["evil.test."]));
    }
}

#[test]
fn every_question_must_be_allowed() {
    let p = policy(DNS_POLICY);
    assert!(judge(
        &p,
        CLIENT_A,
        SERVER,
        Transport::Udp,
        &["a.example.com.", "exact.test."]
    ));
    assert!(!judge(
        &p,
        CLIENT_A,
        SERVER,
        Transport::Udp,
        &["a.example.com.", "evil.test."]
    ));
    assert!(!judge(
        &p,
        CLIENT_A,
        SERVER,
        Transport::Udp,
        &["evil.test.", "a.example.com."]
    ));
}

#[test]
fn allowed_names_say_which_rule() {
    let p = policy(DNS_POLICY);
    let d = decide(
        &p,
        addr(CLIENT_A),
        addr(SERVER),
        Transport::Udp,
        &query_bytes(1, &[("exact.test.", RecordType::A)]),
    );
    let reason = d.judgement.reason();
    assert!(
        reason.contains("spec.egress[0]") && reason.contains("rules.dns[1]"),
        "{reason}"
    );
}

#[test]
fn fails_closed_outside_a_dns_redirect() {
    let p = policy(DNS_POLICY);
    let refusal = |client: &str, server: &str| {
        p.dns_rules(addr(client), addr(server), Transport::Udp)
            .side
            .err()
    };
    assert_eq!(refusal("10.9.9.9:1000", SERVER), Some(Refusal::NotLocal));
    assert!(matches!(
        refusal(CLIENT_A, "10.201.0.53:5353"),
        Some(Refusal::Side {
            fault: SideFault::NoEntry,
            ..
        })
    ));
    assert!(matches!(
        refusal(CLIENT_A, "10.202.0.53:53"),
        Some(Refusal::Side {
            fault: SideFault::NoEntry,
            ..
        })
    ));
    assert!(matches!(
        refusal("10.0.1.2:1000", SERVER),
        Some(Refusal::Side {
            fault: SideFault::NotRedirected(_),
            ..
        })
    ));
    let http_port = p
        .dns_rules(addr(CLIENT_A), addr("10.201.0.53:80"), Transport::Tcp)
        .side
        .err();
    assert!(
        matches!(
            http_port,
            Some(Refusal::Side {
                fault: SideFault::NotRedirected(_),
                ..
            })
        ),
        "{http_port:?}"
    );
    assert!(!judge(
        &p,
        "10.0.1.2:1000",
        SERVER,
        Transport::Udp,
        &["www.example.com."]
    ));
    let empty = ProxyPolicy::empty();
    assert!(!judge(
        &empty,
        CLIENT_A,
        SERVER,
        Transport::Udp,
        &["www.example.com."]
    ));
}

#[test]
fn an_l4_allow_of_the_same_port_allows_every_name() {
    let p = policy(&format!(
        "{DNS_POLICY}  - toCIDR: [10.201.0.0/16]\n    toPorts: [{{ports: [{{port: '53', protocol: UDP}}]}}]\n"
    ));
    assert!(judge(&p, CLIENT_A, SERVER, Transport::Udp, &["evil.test."]));
}

#[test]
fn unparseable_queries_are_denied() {
    let p = policy(DNS_POLICY);
    let d = decide(
        &p,
        addr(CLIENT_A),
        addr(SERVER),
        Transport::Udp,
        b"\x00\x01garbage",
    );
    assert!(!d.judgement.is_allowed());
    assert!(d.query.is_err());
}

// ---- audit mode ----

/// An audited policy: its DNS rules are judged for the audit verdict only.
const DNS_AUDIT: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: dns-audit
  namespace: ns1
  annotations: {policy.cilium.io/audit-mode: 'true'}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: '53', protocol: ANY}]
      rules: {dns: [{matchPattern: '*.example.com'}, {matchName: evil.test}]}
";

/// The verdict and reason of a one-name query from `ns1/a` to the server.
fn logged(p: &ProxyPolicy, t: Transport, name: &str) -> (DnsVerdict, String) {
    decide(
        p,
        addr(CLIENT_A),
        addr(SERVER),
        t,
        &query_bytes(1, &[(name, RecordType::A)]),
    )
    .judgement
    .logged()
}

#[test]
fn a_name_only_an_audited_policy_denies_passes_as_audit() {
    let p = policy(&DNS_AUDIT.replace(", {matchName: evil.test}", ""));
    for t in [Transport::Udp, Transport::Tcp] {
        assert_eq!(
            logged(&p, t, "www.example.com."),
            (DnsVerdict::Allowed, "ns1/a egress: allow-all".to_string())
        );
        assert_eq!(
            logged(&p, t, "evil.test."),
            (
                DnsVerdict::Audit,
                "ns1/a egress: audit: no DNS rule of the audited policies matches evil.test.; \
                 CiliumNetworkPolicy ns1/dns-audit spec.egress[0].rules.dns[0]"
                    .to_string()
            )
        );
    }
}

#[test]
fn an_audited_client_passes_what_its_enforced_rules_deny() {
    let mut p = policy(DNS_POLICY);
    p.set_audited(|name| name == "ns1/a");
    assert!(judge(
        &p,
        CLIENT_A,
        SERVER,
        Transport::Udp,
        &["www.example.com."]
    ));
    assert_eq!(
        logged(&p, Transport::Udp, "evil.test."),
        (
            DnsVerdict::Audit,
            "ns1/a egress: audit: no DNS rule matches evil.test.; \
             CiliumNetworkPolicy ns1/dns spec.egress[0].rules.dns[0]; \
             CiliumNetworkPolicy ns1/dns spec.egress[0].rules.dns[1]"
                .to_string()
        )
    );
    // Refusals stay denials: a port without a DNS redirect, a client that
    // is not in audit mode.
    let (verdict, _) = decide(
        &p,
        addr(CLIENT_A),
        addr("10.201.0.53:5353"),
        Transport::Udp,
        &query_bytes(1, &[("evil.test.", RecordType::A)]),
    )
    .judgement
    .logged();
    assert_eq!(verdict, DnsVerdict::Denied);
    assert!(!judge(
        &p,
        "10.0.1.2:1000",
        SERVER,
        Transport::Udp,
        &["evil.test."]
    ));
    p.set_audited(|_| false);
    assert_eq!(
        logged(&p, Transport::Udp, "evil.test.").0,
        DnsVerdict::Denied
    );
}

#[test]
fn an_audited_policy_beside_an_enforced_one_changes_no_verdict() {
    // The audit verdict ORs the audited rules with the enforced ones: a
    // name the enforced rules allow passes, one they deny is denied, even
    // where the audited policy names it.
    let p = policy(&format!("{DNS_POLICY}---\n{DNS_AUDIT}"));
    assert_eq!(
        logged(&p, Transport::Udp, "www.example.com.").0,
        DnsVerdict::Allowed
    );
    assert_eq!(
        logged(&p, Transport::Udp, "exact.test.").0,
        DnsVerdict::Allowed
    );
    assert_eq!(
        logged(&p, Transport::Udp, "evil.test."),
        (
            DnsVerdict::Denied,
            "ns1/a egress: no DNS rule matches evil.test.".to_string()
        )
    );
}
