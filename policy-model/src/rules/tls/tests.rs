use crate::rules::testing::*;

/// A CNP with one egress port rule whose body is `port_rule` (indented
/// under `- ports: [...]`).
fn tls_cnp(port: &str, port_rule: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: p, namespace: ns1}}
spec:
  endpointSelector: {{}}
  egress:
  - toPorts:
    - ports: [{port}]
{port_rule}"
    )
}

#[test]
fn tls_settings_parse_into_the_port() {
    let r = cnp_ok(&tls_cnp(
        "{port: '443', protocol: TCP}",
        "      serverNames: [Api.Example.com, '*.cdn.test']
      terminatingTLS: {secret: {name: term}, trustedCA: client-ca.crt}
      originatingTLS: {secret: {name: orig, namespace: other}}
      rules:
        http: [{path: /x}]",
    ));
    let ports = r.egress.entries[0].ports.as_ref().expect("ports");
    let tls = ports[0].tls.as_ref().expect("tls settings");
    assert_eq!(tls.server_names, vec!["api.example.com", "*.cdn.test"]);
    let term = tls.terminating.as_ref().expect("terminating");
    assert_eq!(term.name, "term");
    assert_eq!(term.namespace, None);
    assert_eq!(term.trusted_ca.as_deref(), Some("client-ca.crt"));
    let orig = tls.originating.as_ref().expect("originating");
    assert_eq!(orig.namespace.as_deref(), Some("other"));
    assert!(ports[0].l7.is_some());
}

#[test]
fn tls_settings_are_validated_with_their_path() {
    let cases = [
        (
            tls_cnp("{port: '443'}", "      serverNames: [ok.test, 'a b.test']"),
            "spec.egress[0].toPorts[0].serverNames[1]",
            "not a DNS name",
        ),
        (
            tls_cnp("{port: '443'}", "      terminatingTLS: {trustedCA: ca.crt}"),
            "spec.egress[0].toPorts[0].terminatingTLS.secret",
            "needs `secret",
        ),
        (
            tls_cnp(
                "{port: '443'}",
                "      originatingTLS: {secret: {name: ../x}}",
            ),
            "spec.egress[0].toPorts[0].originatingTLS.secret.name",
            "not a Kubernetes object name",
        ),
        (
            tls_cnp(
                "{port: '9092'}",
                "      serverNames: [k.test]\n      rules:\n        kafka: [{topic: t}]",
            ),
            "spec.egress[0].toPorts[0].rules",
            "not kafka rules",
        ),
        (
            tls_cnp("{port: '443', endPort: 445}", "      serverNames: [a.test]"),
            "spec.egress[0].toPorts[0].ports[0].endPort",
            "serverNames / TLS settings cannot apply to a port range",
        ),
        (
            tls_cnp(
                "{port: '443', protocol: UDP}",
                "      serverNames: [a.test]",
            ),
            "spec.egress[0].toPorts[0].ports[0].protocol",
            "need TCP",
        ),
    ];
    for (yaml, path, reason) in cases {
        let e = cnp_err(&yaml);
        assert_eq!(e.path, path, "{e}");
        assert!(e.reason.contains(reason), "{e}");
    }
    let deny = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: ns1}
spec:
  endpointSelector: {}
  egressDeny:
  - toPorts:
    - ports: [{port: '443'}]
      serverNames: [a.test]";
    assert!(cnp_err(deny).reason.contains("not allowed in a deny rule"));
}
