use super::*;

const NP: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np1, namespace: ns1}
spec: {podSelector: {}}
";

const CNP: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cnp1, namespace: ns2}
spec:
  endpointSelector: {}
  ingress: [{fromEntities: [world]}]
";

const CCNP: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: ccnp1}
specs:
- {endpointSelector: {}}
- {endpointSelector: {}}
";

fn ok(text: &str) -> PolicySet {
    load_str(text, "f.yaml").expect("input loads")
}

fn errs(text: &str) -> Vec<LoadError> {
    load_str(text, "f.yaml").expect_err("input must be rejected")
}

fn one_invalid(text: &str) -> (Location, String, String) {
    let mut e = errs(text);
    assert_eq!(e.len(), 1, "{e:?}");
    match e.remove(0) {
        LoadError::Invalid {
            location,
            path,
            reason,
        } => (location, path, reason),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn network_policy_loads_with_its_origin() {
    let s = ok(NP);
    assert_eq!(s.policies.len(), 1);
    assert!(s.warnings.is_empty());
    let o = &s.policies[0].origin;
    assert_eq!(o.kind, PolicyKind::NetworkPolicy);
    assert_eq!(o.namespace.as_deref(), Some("ns1"));
    assert_eq!(o.name, "np1");
    assert_eq!(o.file.as_deref(), Some("f.yaml"));
    assert_eq!(o.document, Some(0));
    assert_eq!(s.policies[0].rules.len(), 1);
    assert_eq!(s.policies[0].rules[0].origin, *o);
}

#[test]
fn missing_namespace_defaults_to_default() {
    let s = ok("apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np1}
spec: {podSelector: {}}
");
    assert_eq!(s.policies[0].origin.namespace.as_deref(), Some("default"));
    let s = ok("apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c}
spec: {endpointSelector: {}}
");
    assert_eq!(s.policies[0].origin.namespace.as_deref(), Some("default"));
}

#[test]
fn cnp_and_ccnp_load() {
    let s = ok(&format!("{CNP}---\n{CCNP}"));
    assert_eq!(s.policies.len(), 2);
    assert_eq!(s.policies[0].origin.kind, PolicyKind::CiliumNetworkPolicy);
    assert_eq!(s.policies[0].origin.namespace.as_deref(), Some("ns2"));
    let c = &s.policies[1];
    assert_eq!(c.origin.kind, PolicyKind::CiliumClusterwideNetworkPolicy);
    assert_eq!(c.origin.namespace, None);
    assert_eq!(c.rules.len(), 2, "one rule per entry of specs");
    assert_eq!(s.rules().count(), 3);
}

#[test]
fn authentication_required_is_warned_about_with_its_path() {
    let s = ok("apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: mtls, namespace: ns1}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
  - fromEndpoints: [{}]
    authentication: {mode: required}
");
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    let m = &s.warnings[0].message;
    assert!(m.contains("spec.ingress[1].authentication"), "{m}");
    assert!(m.contains("allows nothing"), "{m}");
}

#[test]
fn namespace_on_a_ccnp_is_ignored_with_a_warning() {
    let s = ok("apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c, namespace: ns1}
spec:
  endpointSelector: {}
  ingress: [{fromEndpoints: [{}]}]
");
    assert_eq!(s.policies[0].origin.namespace, None);
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0].message.contains("namespace"),
        "{:?}",
        s.warnings
    );
    // The peer is not scoped to ns1: a cluster-wide peer selects all namespaces.
    let peer = &s.policies[0].rules[0].ingress.entries[0].peers[0];
    assert!(!peer.to_string().contains("ns1"), "{peer}");
}

#[test]
fn multi_document_files_keep_document_indices() {
    let s = ok(&format!("{NP}---\n{CNP}---\n{CCNP}---\n"));
    let docs: Vec<Option<usize>> = s.policies.iter().map(|p| p.origin.document).collect();
    assert_eq!(docs, [Some(0), Some(1), Some(2)]);
}

#[test]
fn empty_documents_are_skipped() {
    let s = ok(&format!("---\n{NP}---\n---\n"));
    assert_eq!(s.policies.len(), 1);
    assert!(ok("").policies.is_empty());
}

#[test]
fn list_kind_loads_its_items() {
    let s = ok("apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: a, namespace: ns1}
  spec: {podSelector: {}}
- apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: b, namespace: ns1}
  spec: {endpointSelector: {}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
");
    let names: Vec<&str> = s.policies.iter().map(|p| p.origin.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(s.warnings.len(), 1, "the ConfigMap item is skipped");
}

#[test]
fn errors_inside_a_list_item_carry_the_item_path() {
    let (_, path, _) = one_invalid(
        "apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: a}
  spec: {podSelector: {}}
- apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: b}
  spec: {endpointSelector: {}, ingress: [{fromEntities: [bogus]}]}
",
    );
    assert_eq!(path, "items[1].spec.ingress[0].fromEntities[0]");
    let (_, path, _) = one_invalid("apiVersion: v1\nkind: List\n");
    assert_eq!(path, "items");
}

#[test]
fn unknown_kind_is_skipped_with_a_warning() {
    let s = ok(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm, namespace: x}}\ndata: {{a: b}}\n---\n{NP}"
    ));
    assert_eq!(s.policies.len(), 1);
    assert_eq!(s.warnings.len(), 1);
    let w = &s.warnings[0];
    assert_eq!(w.location.document, 0);
    assert_eq!(w.location.object.as_deref(), Some("ConfigMap/x/cm"));
    assert!(w.message.contains("ConfigMap"), "{}", w.message);
    assert!(w.to_string().starts_with("f.yaml: document 0"), "{w}");
}

#[test]
fn known_kind_with_wrong_api_version_is_an_error() {
    let (loc, path, reason) = one_invalid(
        "apiVersion: cilium.io/v1
kind: CiliumNetworkPolicy
metadata: {name: c}
spec: {endpointSelector: {}}
",
    );
    assert_eq!(path, "apiVersion");
    assert!(reason.contains("cilium.io/v1"), "{reason}");
    assert_eq!(loc.object.as_deref(), Some("CiliumNetworkPolicy/c"));
}

#[test]
fn missing_kind_or_api_version_and_non_objects_are_root_errors() {
    let (_, path, _) = one_invalid("kind: NetworkPolicy\nmetadata: {name: a}\n");
    assert_eq!(path, "(root)");
    let (_, path, _) = one_invalid("apiVersion: networking.k8s.io/v1\n");
    assert_eq!(path, "(root)");
    let (_, path, reason) = one_invalid("- a\n- b\n");
    assert_eq!(path, "(root)");
    assert!(reason.contains("mapping"), "{reason}");
}

#[test]
fn unknown_field_typo_is_reported_with_its_path() {
    let (loc, path, reason) = one_invalid(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: ns1}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
    toPort: [{ports: [{port: '80'}]}]
",
    );
    assert!(path.starts_with("spec.ingress[0]"), "{path}");
    assert!(reason.contains("toPort"), "{reason}");
    assert_eq!(loc.object.as_deref(), Some("CiliumNetworkPolicy/ns1/c"));
    let (_, path, reason) = one_invalid(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabel: {a: b}}
",
    );
    assert!(
        path.starts_with("spec.ingress[0].from[0].podSelector"),
        "{path}"
    );
    assert!(reason.contains("matchLabel"), "{reason}");
}

#[test]
fn wrong_value_type_is_reported_with_its_path() {
    let (_, path, _) = one_invalid(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c}
spec:
  endpointSelector: {}
  egress: [{toPorts: [{ports: [{port: '80', endPort: many}]}]}]
",
    );
    assert!(
        path.starts_with("spec.egress[0].toPorts[0].ports[0]"),
        "{path}"
    );
}

#[test]
fn rule_errors_carry_location_and_path() {
    let e = errs(&format!(
        "{NP}---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: bad, namespace: ns1}}
spec:
  endpointSelector: {{}}
  egress: [{{toCIDR: [10.0.0.0/99]}}]
"
    ));
    assert_eq!(e.len(), 1);
    let LoadError::Invalid {
        location,
        path,
        reason,
    } = &e[0]
    else {
        panic!("{e:?}")
    };
    assert_eq!(location.file, "f.yaml");
    assert_eq!(location.document, 1);
    assert_eq!(
        location.object.as_deref(),
        Some("CiliumNetworkPolicy/ns1/bad")
    );
    assert_eq!(path, "spec.egress[0].toCIDR[0]");
    assert!(reason.contains("10.0.0.0/99"), "{reason}");
    assert_eq!(
        e[0].to_string(),
        format!(
            "f.yaml: document 1 (CiliumNetworkPolicy/ns1/bad): spec.egress[0].toCIDR[0]: {reason}"
        )
    );
}

#[test]
fn extended_protocol_errors_name_file_document_path_and_reason() {
    let doc = |ports: &str| {
        format!(
            "{NP}---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: tunnels, namespace: ns1}}
spec:
  endpointSelector: {{}}
  ingress: [{{toPorts: [{{ports: [{ports}]}}]}}]
"
        )
    };
    let e = errs(&doc("{protocol: GRE, port: 80}"));
    assert_eq!(
        e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        [
            "f.yaml: document 1 (CiliumNetworkPolicy/ns1/tunnels): spec.ingress[0].toPorts[0].ports[0].port: GRE has no ports: the port must be 0 or absent, not 80"
        ]
    );
    let e = errs(&doc("{protocol: OSPF}"));
    assert_eq!(
        e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        [
            "f.yaml: document 1 (CiliumNetworkPolicy/ns1/tunnels): spec.ingress[0].toPorts[0].ports[0].protocol: \"OSPF\" is not TCP, UDP, SCTP, ANY or an extended protocol (VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH); use `icmps` for ICMP"
        ]
    );
    assert!(load_str(&doc("{protocol: gre}"), "f.yaml").is_ok());
}

#[test]
fn every_invalid_document_is_reported() {
    let bad = |name: &str| {
        format!(
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}}}
spec: {{endpointSelector: {{}}, nodeSelector: {{}}}}
"
        )
    };
    let e = errs(&format!("{}---\n{NP}---\n{}", bad("x"), bad("y")));
    assert_eq!(e.len(), 2, "{e:?}");
    let docs: Vec<usize> = e
        .iter()
        .map(|e| match e {
            LoadError::Invalid { location, .. } => location.document,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(docs, [0, 2]);
}

#[test]
fn yaml_syntax_error_is_a_syntax_error_naming_file_and_document() {
    let e = errs(&format!("{NP}---\nkind: [unclosed\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    match &e[0] {
        LoadError::Syntax { file, reason } => {
            assert_eq!(file, "f.yaml");
            assert!(reason.contains("document 1"), "{reason}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(e[0].to_string().contains("YAML syntax error"));
}

#[test]
fn json_input_is_accepted() {
    let s = ok(
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "j", "namespace": "ns1"}, "spec": {"podSelector": {}}}"#,
    );
    assert_eq!(s.policies[0].origin.name, "j");
}

#[test]
fn missing_name_is_an_error() {
    let (_, path, _) = one_invalid(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: ns1}
spec: {podSelector: {}}
",
    );
    assert_eq!(path, "metadata.name");
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("portcullis-load-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        ScratchDir(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_paths_walks_directories_in_name_order_and_skips_other_files() {
    let d = ScratchDir::new("walk");
    let sub = d.0.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(d.0.join("b.yaml"), CNP).expect("write");
    std::fs::write(d.0.join("a.yml"), NP).expect("write");
    std::fs::write(sub.join("c.json"), CCNP).expect("write");
    std::fs::write(d.0.join("README.md"), "not: [yaml").expect("write");
    let s = PolicySet::load_paths(&[&d.0]).expect("loads");
    let names: Vec<&str> = s.policies.iter().map(|p| p.origin.name.as_str()).collect();
    assert_eq!(names, ["np1", "cnp1", "ccnp1"]);
    let file = s.policies[1].origin.file.clone().expect("file");
    assert!(file.ends_with("b.yaml"), "{file}");
}

#[test]
fn load_paths_reports_missing_paths_and_bad_files_together() {
    let d = ScratchDir::new("errors");
    std::fs::write(d.0.join("bad.yaml"), "kind: [").expect("write");
    let missing = d.0.join("nope.yaml");
    let e = PolicySet::load_paths(&[d.0.clone(), missing]).expect_err("must fail");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .any(|e| matches!(e, LoadError::Read { file, .. } if file.ends_with("nope.yaml")))
    );
    assert!(
        e.iter()
            .any(|e| matches!(e, LoadError::Syntax { file, .. } if file.ends_with("bad.yaml")))
    );
}

#[test]
fn extend_appends_policies_and_warnings() {
    let mut a = ok(NP);
    let b = ok(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n---\n{CNP}"
    ));
    a.extend(b);
    assert_eq!(a.policies.len(), 2);
    assert_eq!(a.warnings.len(), 1);
    assert_eq!(a.policies[1].origin.name, "cnp1");
}

#[test]
fn policy_files_lists_what_the_loader_reads_in_load_order() {
    let d = ScratchDir::new("files");
    let sub = d.0.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(d.0.join("b.yaml"), CNP).expect("write");
    std::fs::write(d.0.join("a.yml"), NP).expect("write");
    std::fs::write(sub.join("c.json"), CCNP).expect("write");
    std::fs::write(d.0.join("README.md"), "notes").expect("write");
    std::fs::write(d.0.join(".b.yaml.swp"), "swap").expect("write");
    // A file named as an input counts whatever its extension.
    let named = d.0.join("policy.txt");
    std::fs::write(&named, NP).expect("write");
    let missing = d.0.join("nope");
    let found = policy_files(&[named.clone(), d.0.clone(), missing]);
    assert_eq!(
        found.files,
        [
            named.clone(),
            d.0.join("a.yml"),
            d.0.join("b.yaml"),
            sub.join("c.json")
        ]
    );
    assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    assert!(
        matches!(&found.errors[0], LoadError::Read { file, .. } if file.ends_with("nope")),
        "{:?}",
        found.errors
    );
}

/// FNV-1a over each file's own FNV-1a (8 bytes, little-endian) with a 0xff
/// separator after each, written out independently of `content_hash` (the
/// bench scripts compute the same in Python).
fn fnv1a_files(contents: &[&[u8]]) -> u64 {
    fn fnv1a(h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes
            .into_iter()
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }
    const START: u64 = 0xcbf2_9ce4_8422_2325;
    contents.iter().fold(START, |h, c| {
        let file = fnv1a(START, c.iter().copied());
        fnv1a(h, file.to_le_bytes().into_iter().chain([0xff]))
    })
}

#[test]
fn content_hash_of_one_file_is_fnv1a_of_its_hash_and_a_separator() {
    let d = ScratchDir::new("hash-one");
    let f = d.0.join("policy.yaml");
    std::fs::write(&f, NP).expect("write");
    assert_eq!(
        content_hash(std::slice::from_ref(&f)),
        fnv1a_files(&[NP.as_bytes()])
    );
    std::fs::write(&f, "").expect("write");
    assert_eq!(content_hash(&[f]), fnv1a_files(&[b""]));
}

#[test]
fn content_hash_follows_the_loaded_files_only() {
    let d = ScratchDir::new("hash-dir");
    let dir = [d.0.clone()];
    std::fs::write(d.0.join("a.yaml"), NP).expect("write");
    // A directory holding one policy file (and anything else) hashes as
    // that file: the wire runner hashes the file it wrote.
    std::fs::write(d.0.join("README.md"), "notes").expect("write");
    let one = content_hash(&dir);
    assert_eq!(one, content_hash(&[d.0.join("a.yaml")]));
    std::fs::write(d.0.join("README.md"), "other notes").expect("write");
    std::fs::write(d.0.join("a.yaml.tmp"), CNP).expect("write");
    assert_eq!(content_hash(&dir), one, "files the loader skips");
    std::fs::write(d.0.join("b.json"), CCNP).expect("write");
    let two = content_hash(&dir);
    assert_eq!(two, fnv1a_files(&[NP.as_bytes(), CCNP.as_bytes()]));
    std::fs::write(d.0.join("a.yaml"), CNP).expect("write");
    assert_ne!(content_hash(&dir), two, "a loaded file changed");
    std::fs::remove_file(d.0.join("b.json")).expect("rm");
    assert_ne!(content_hash(&dir), two, "a loaded file went away");
}

#[test]
fn a_large_set_loads_in_file_order_with_every_error() {
    let dir = std::env::temp_dir().join(format!("pc-load-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for i in 0..200 {
        let body = if i == 77 || i == 150 {
            // Invalid: a port out of range.
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i:03}, namespace: ns}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{port: 70000}}]}}]\n"
            )
        } else {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i:03}, namespace: ns}}\nspec:\n  podSelector: {{}}\n"
            )
        };
        std::fs::write(dir.join(format!("p{i:03}.yaml")), body).expect("write");
    }
    let errors = PolicySet::load_paths(&[&dir]).expect_err("two files are invalid");
    let files: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].contains("p077.yaml") && files[1].contains("p150.yaml"),
        "{files:?}"
    );
    for bad in [77, 150] {
        std::fs::remove_file(dir.join(format!("p{bad:03}.yaml"))).expect("remove");
    }
    let set = PolicySet::load_paths(&[&dir]).expect("the rest loads");
    let names: Vec<&str> = set
        .policies
        .iter()
        .map(|p| p.origin.name.as_str())
        .collect();
    let expected: Vec<String> = (0..200)
        .filter(|i| *i != 77 && *i != 150)
        .map(|i| format!("p{i:03}"))
        .collect();
    assert_eq!(names, expected, "the files' order, whatever the threads");
    let _ = std::fs::remove_dir_all(&dir);
}

const GROUP: &str = "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: partners, labels: {team: a}}
spec:
  externalCIDRs: [10.201.1.0/24, 'fd00:201::1', 10.201.1.0/24]
";

#[test]
fn cidr_groups_load_beside_the_policies() {
    let set = ok(&format!("{GROUP}---\n{CNP}"));
    assert_eq!(set.policies.len(), 1);
    assert_eq!(set.cidr_groups.len(), 1);
    let g = &set.cidr_groups[0];
    assert_eq!(g.name, "partners");
    assert_eq!(g.labels.get("team").map(String::as_str), Some("a"));
    let cidrs: Vec<String> = g.cidrs.iter().map(|c| c.to_string()).collect();
    assert_eq!(cidrs, ["10.201.1.0/24", "fd00:201::1/128"]);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn a_bad_cidr_group_names_file_document_and_field() {
    let (loc, path, reason) = one_invalid(&format!(
        "{CNP}---
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {{name: g}}
spec:
  externalCIDRs: [10.0.0.0/8, 'fd00::/64', 10.300.0.0/16]
"
    ));
    assert_eq!(loc.file, "f.yaml");
    assert_eq!(loc.document, 1);
    assert_eq!(loc.object.as_deref(), Some("CiliumCIDRGroup/g"));
    assert_eq!(path, "spec.externalCIDRs[2]");
    assert!(reason.contains("10.300.0.0/16"), "{reason}");

    let (_, path, _) = one_invalid(
        "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {name: g}
spec: {externalCIDR: [10.0.0.0/8]}
",
    );
    assert!(path.starts_with("spec"), "{path}");
    let (_, path, _) = one_invalid(
        "apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata: {labels: {a: b}}
spec: {externalCIDRs: []}
",
    );
    assert_eq!(path, "metadata.name");
    let (_, path, reason) = one_invalid(
        "apiVersion: cilium.io/v1
kind: CiliumCIDRGroup
metadata: {name: g}
spec: {externalCIDRs: []}
",
    );
    assert_eq!(path, "apiVersion");
    assert!(reason.contains("CiliumCIDRGroup"), "{reason}");
}
