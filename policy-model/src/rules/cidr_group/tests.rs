use super::*;

fn group(yaml: &str) -> Result<CidrGroup, RuleError> {
    let g: CiliumCidrGroup = serde_yaml_ng::from_str(yaml).expect("test group parses");
    from_cidr_group(&g)
}

#[test]
fn cidrs_are_parsed_truncated_and_kept_once() {
    let g = group(
        "metadata: {name: g, labels: {env: prod}}
spec: {externalCIDRs: [10.1.2.3/8, 192.0.2.1, 10.0.0.0/8, '2001:db8::/32']}",
    )
    .expect("valid group");
    assert_eq!(g.name, "g");
    let cidrs: Vec<String> = g.cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
}

#[test]
fn errors_name_the_field() {
    let e = group("metadata: {name: g}\nspec: {externalCIDRs: [10.0.0.0/8, nope]}")
        .expect_err("bad CIDR");
    assert_eq!(e.path, "spec.externalCIDRs[1]");
    assert!(e.reason.contains("nope"), "{}", e.reason);
    let e = group("metadata: {}\nspec: {externalCIDRs: []}").expect_err("no name");
    assert_eq!(e.path, "metadata.name");
}
