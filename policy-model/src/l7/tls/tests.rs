use super::*;
use crate::api::HttpRule;
use crate::origin::{PolicyKind, PolicyRef};

fn origin(ns: Option<&str>) -> Arc<PolicyRef> {
    Arc::new(PolicyRef {
        kind: PolicyKind::CiliumNetworkPolicy,
        namespace: ns.map(str::to_string),
        name: "p".into(),
        file: None,
        document: None,
    })
}

fn ctx(name: &str) -> Option<TlsContextRef> {
    Some(TlsContextRef {
        namespace: None,
        name: name.into(),
        trusted_ca: None,
        certificate: None,
        private_key: None,
    })
}

fn rule(
    names: &[&str],
    term: Option<TlsContextRef>,
    orig: Option<TlsContextRef>,
    paths: Option<&[&str]>,
    at: &str,
) -> TlsRule {
    TlsRule {
        tls: Arc::new(PortTls {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            terminating: term,
            originating: orig,
        }),
        http: paths.map(|ps| {
            Arc::new(L7Rules::Http(
                ps.iter()
                    .map(|p| HttpRule {
                        path: Some(p.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ))
        }),
        origin: origin(Some("x")),
        rule: at.into(),
    }
}

#[test]
fn server_names_match_exactly_or_by_wildcard() {
    let t = PortTls {
        server_names: vec!["api.example.com".into(), "*.svc.test".into()],
        terminating: None,
        originating: None,
    };
    assert!(t.sni_matches(Some("API.example.com")));
    assert!(t.sni_matches(Some("api.example.com.")));
    assert!(t.sni_matches(Some("a.svc.test")));
    assert!(t.sni_matches(Some("a.b.svc.test")));
    assert!(!t.sni_matches(Some("svc.test")));
    assert!(!t.sni_matches(Some("xsvc.test")));
    assert!(!t.sni_matches(Some("example.com")));
    assert!(!t.sni_matches(None));
    let any = PortTls {
        server_names: vec![],
        terminating: ctx("s"),
        originating: None,
    };
    assert!(any.sni_matches(None));
}

#[test]
fn server_name_validation() {
    assert_eq!(
        validate_server_name("A.Example.com.").unwrap(),
        "a.example.com"
    );
    assert!(validate_server_name("*.example.com").is_ok());
    assert!(validate_server_name("").is_err());
    assert!(validate_server_name("a.*.com").is_err());
    assert!(validate_server_name("a..com").is_err());
    assert!(validate_server_name("a b.com").is_err());
}

#[test]
fn sni_only_rule_splices_and_mismatch_closes() {
    let rules = [rule(&["a.test"], None, None, None, "spec.egress[0]")];
    let plan = plan_side(
        false,
        &[],
        &rules,
        ClientStart::Tls {
            sni: Some("a.test"),
        },
    );
    assert!(matches!(plan, Ok(SidePlan::Splice { .. })), "{plan:?}");
    let plan = plan_side(
        false,
        &[],
        &rules,
        ClientStart::Tls {
            sni: Some("b.test"),
        },
    );
    assert!(plan.unwrap_err().contains("not in serverNames"));
    let plan = plan_side(false, &[], &rules, ClientStart::Tls { sni: None });
    assert!(plan.is_err());
    // Plaintext on an SNI-only port: no rule applies, every request denied.
    match plan_side(false, &[], &rules, ClientStart::Plaintext) {
        Ok(SidePlan::Inspect {
            http, allow_all, ..
        }) => {
            assert!(http.is_empty());
            assert!(!allow_all);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn terminating_rule_inspects_with_its_contexts() {
    let rules = [rule(
        &["a.test"],
        ctx("term"),
        ctx("orig"),
        Some(&["/public.*"]),
        "spec.egress[0]",
    )];
    match plan_side(
        false,
        &[],
        &rules,
        ClientStart::Tls {
            sni: Some("a.test"),
        },
    ) {
        Ok(SidePlan::Inspect {
            terminate,
            originate,
            http,
            allow_all,
        }) => {
            let t = terminate.expect("terminates");
            assert_eq!((t.namespace.as_str(), t.name.as_str()), ("x", "term"));
            assert_eq!(originate.expect("originates").name, "orig");
            assert_eq!(http.len(), 1);
            assert!(!allow_all);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_rules_without_termination_cannot_judge_tls() {
    let rules = [rule(
        &["a.test"],
        None,
        None,
        Some(&["/x"]),
        "spec.egress[0]",
    )];
    let plan = plan_side(
        false,
        &[],
        &rules,
        ClientStart::Tls {
            sni: Some("a.test"),
        },
    );
    assert!(plan.unwrap_err().contains("no terminatingTLS"));
    // A plain HTTP rule on the port does not admit TLS either.
    let plain = vec![(
        Arc::new(L7Rules::Http(vec![HttpRule::default()])),
        origin(Some("x")),
        "spec.egress[1]".to_string(),
    )];
    assert!(
        plan_side(
            false,
            &plain,
            &[],
            ClientStart::Tls {
                sni: Some("a.test")
            }
        )
        .is_err()
    );
}

#[test]
fn allow_all_splices_tls() {
    let rules = [rule(&["a.test"], ctx("t"), None, Some(&["/x"]), "r")];
    let plan = plan_side(true, &[], &rules, ClientStart::Tls { sni: Some("zzz") });
    assert!(matches!(plan, Ok(SidePlan::Splice { .. })));
}

#[test]
fn conflicting_contexts_deny() {
    let rules = [
        rule(&["a.test"], ctx("t1"), None, Some(&["/x"]), "r0"),
        rule(&["*.test"], ctx("t2"), None, Some(&["/y"]), "r1"),
    ];
    assert!(
        plan_side(
            false,
            &[],
            &rules,
            ClientStart::Tls {
                sni: Some("a.test")
            }
        )
        .is_err()
    );
    // b.test matches only the second rule.
    assert!(
        plan_side(
            false,
            &[],
            &rules,
            ClientStart::Tls {
                sni: Some("b.test")
            }
        )
        .is_ok()
    );
}

#[test]
fn rules_apply_only_to_their_server_names() {
    let rules = [
        rule(&["a.test"], ctx("t"), None, Some(&["/a"]), "r0"),
        rule(&["b.test"], ctx("t"), None, Some(&["/b"]), "r1"),
    ];
    match plan_side(
        false,
        &[],
        &rules,
        ClientStart::Tls {
            sni: Some("b.test"),
        },
    ) {
        Ok(SidePlan::Inspect { http, .. }) => {
            assert_eq!(http.len(), 1);
            assert_eq!(http[0].rule, "r1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn originate_only_applies_to_plaintext() {
    let rules = [rule(&[], None, ctx("o"), Some(&["/a"]), "r0")];
    match plan_side(false, &[], &rules, ClientStart::Plaintext) {
        Ok(SidePlan::Inspect {
            terminate: None,
            originate: Some(o),
            http,
            ..
        }) => {
            assert_eq!(o.name, "o");
            assert_eq!(http.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(plan_side(false, &[], &rules, ClientStart::Tls { sni: Some("a") }).is_err());
}

#[test]
fn sides_combine_or_conflict() {
    let start = ClientStart::Tls {
        sni: Some("a.test"),
    };
    let r1 = [rule(&["a.test"], ctx("t1"), None, None, "r")];
    let r2 = [rule(&["a.test"], ctx("t2"), None, None, "r")];
    let p1 = plan_side(false, &[], &r1, start).unwrap();
    let p2 = plan_side(false, &[], &r2, start).unwrap();
    let splice = SidePlan::Splice { why: String::new() };
    assert!(combine_sides(&[&p1, &p2], start).is_err());
    assert_eq!(
        combine_sides(&[&p1, &splice], start).unwrap(),
        ConnPlan::Inspect {
            terminate: Some(ctx("t1").unwrap().resolve(&origin(Some("x")))),
            originate: None
        }
    );
    assert_eq!(combine_sides(&[&splice], start).unwrap(), ConnPlan::Splice);
}

#[test]
fn secret_namespace_defaults_to_the_policy() {
    let c = ctx("s").unwrap();
    assert_eq!(c.resolve(&origin(Some("x"))).namespace, "x");
    assert_eq!(c.resolve(&origin(None)).namespace, "default");
}

#[test]
fn a_server_names_port_is_redirected_to_the_http_proxy_with_its_tls_rules() {
    use crate::{Cluster, FqdnCache, Topology};
    let topo = Topology::from_yaml(
        "namespaces: [{name: x}]
pods:
- {namespace: x, name: a, labels: {app: a}, ips: [10.200.1.10]}
",
        "t.yaml",
    )
    .expect("topology");
    let set = crate::load::load_str(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.0/16]
    toPorts:
    - ports: [{port: '443', protocol: TCP}]
      serverNames: [a.test]
    - ports: [{port: '8443', protocol: TCP}]
      terminatingTLS: {secret: {name: t}}
      rules:
        http: [{path: /x}]
",
        "p.yaml",
    )
    .expect("policy");
    let cluster = Cluster::new(topo, set.rules().cloned().collect(), &FqdnCache::default());
    let ep = cluster.endpoints().first().expect("endpoint");
    let pol = cluster.endpoint_policy(ep);
    let mut ports: Vec<(u16, &crate::resolve::L7Policy)> = pol
        .l7
        .iter()
        .filter(|(k, _)| k.direction == crate::Direction::Egress)
        .map(|(k, v)| (k.port.port, v))
        .collect();
    ports.sort_by_key(|(p, _)| *p);
    assert_eq!(ports.len(), 2, "{:?}", pol.l7);
    for (_, l7) in &ports {
        assert_eq!(l7.parser, crate::L7Parser::Http);
        assert!(!l7.allow_all);
        assert!(l7.rules.is_empty(), "TLS entries are not plain rules");
        assert_eq!(l7.tls.len(), 1);
    }
    assert!(ports[0].1.tls[0].http.is_none());
    assert!(ports[1].1.tls[0].http.is_some());
    assert!(
        pol.map
            .entries
            .values()
            .any(|v| v.redirect == Some(crate::L7Parser::Http))
    );
}
