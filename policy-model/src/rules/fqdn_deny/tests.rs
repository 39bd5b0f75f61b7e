use super::*;
use crate::rules::testing::*;

const DNS_ALLOW: &str = "  egress:
  - toEndpoints: [{matchLabels: {k8s-app: kube-dns}}]
    toPorts: [{ports: [{port: '53', protocol: ANY}], rules: {dns: [{matchPattern: '*'}]}}]
";

fn deny_rule(extra: &str) -> PolicyRule {
    cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
{extra}  egressDeny: [{{toFQDNs: [{{matchName: bad.example.com}}]}}]"
    ))
}

#[test]
fn a_deny_without_any_dns_redirect_in_the_set_is_reported_with_its_path() {
    let alone = deny_rule("");
    let found = fqdn_denies_without_dns(&[&alone]);
    let paths: Vec<&str> = found.iter().map(|(_, p)| *p).collect();
    assert_eq!(paths, ["spec.egressDeny[0]"]);
    let msg = fqdn_deny_unseen_message(paths[0]);
    assert!(msg.starts_with("spec.egressDeny[0].toFQDNs: "), "{msg}");
    assert!(msg.contains("rules.dns"), "{msg}");

    // A DNS rule in the same policy or in another one of the set: quiet.
    let with_dns = deny_rule(DNS_ALLOW);
    assert!(fqdn_denies_without_dns(&[&with_dns]).is_empty());
    let other = cnp_ok(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n{DNS_ALLOW}"
    ));
    assert!(fqdn_denies_without_dns(&[&alone, &other]).is_empty());

    // A DNS port without rules.dns is not redirected.
    let l4_dns = cnp_ok(&format!(
        "{CNP_HEAD}spec:
  endpointSelector: {{}}
  egress: [{{toPorts: [{{ports: [{{port: '53', protocol: ANY}}]}}]}}]"
    ));
    assert_eq!(fqdn_denies_without_dns(&[&alone, &l4_dns]).len(), 1);
}

#[test]
fn entries_say_whether_they_deny_fqdns_or_redirect_dns() {
    let r = deny_rule(DNS_ALLOW);
    let entries = &r.egress.entries;
    assert!(entries[0].redirects_dns() && !entries[0].denies_fqdns());
    assert!(entries[1].denies_fqdns() && !entries[1].redirects_dns());
}
