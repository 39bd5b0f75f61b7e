use crate::rules::testing::*;

#[test]
fn authentication_required_allows_nothing_and_keeps_default_deny() {
    // Issue 13, 14: the field used to be parsed and ignored (traffic
    // allowed as if it were absent).
    for dir in ["ingress", "egress"] {
        let peer = if dir == "ingress" {
            "fromEntities"
        } else {
            "toEntities"
        };
        for mode in ["required", "test-always-fail"] {
            let r = cnp_ok(&format!(
                "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  {dir}:\n  - {peer}: [all]\n    authentication: {{mode: {mode}}}"
            ));
            let d = if dir == "ingress" {
                &r.ingress
            } else {
                &r.egress
            };
            assert!(
                d.default_deny,
                "{dir} {mode}: the subject stays default-deny"
            );
            assert!(
                d.entries[0].peers.is_empty(),
                "{dir} {mode}: allows nothing"
            );
        }
        let r = cnp_ok(&format!(
            "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  {dir}:\n  - {peer}: [all]\n    authentication: {{mode: disabled}}"
        ));
        let d = if dir == "ingress" {
            &r.ingress
        } else {
            &r.egress
        };
        assert_eq!(
            d.entries[0].peers.len(),
            1,
            "{dir}: disabled changes nothing"
        );
    }
    let e = cnp_err(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEntities: [all]\n    authentication: {{mode: sometimes}}"
    ));
    assert_eq!(e.path, "spec.ingress[0].authentication.mode");
}

#[test]
fn authentication_required_on_a_deny_rule_still_denies() {
    let r = cnp_ok(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingressDeny:\n  - fromEntities: [world]\n    authentication: {{mode: required}}"
    ));
    assert_eq!(r.ingress.entries[0].peers.len(), 1);
    assert!(r.ingress.entries[0].deny);
}
