use super::*;
use crate::fake::kinds::KINDS;
use crate::fake::schema::from_openapi;

#[test]
fn every_crd_file_is_compiled_in_loads_and_converts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/crds");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes/crds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut compiled: Vec<String> = FILES.iter().map(|(f, _)| f.to_string()).collect();
    compiled.sort();
    assert_eq!(
        on_disk, compiled,
        "crd::FILES lists every file of the directory"
    );
    for (file, text) in FILES {
        let crd = load(file, text).unwrap_or_else(|e| panic!("{e}"));
        from_openapi(&crd.schema, "openAPIV3Schema").unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(crd.object["status"]["conditions"][1]["type"], "Established");
    }
    assert_eq!(all().len(), FILES.len());
}

#[test]
fn every_custom_kind_has_its_crd_with_the_same_names() {
    for k in KINDS.iter().filter(|k| k.custom) {
        let crd = of_kind(k.kind).unwrap_or_else(|| panic!("{}: no CRD", k.kind));
        let spec = &crd.object["spec"];
        let names = &spec["names"];
        assert_eq!(spec["group"], k.group, "{}", k.kind);
        assert_eq!(names["plural"], k.plural, "{}", k.kind);
        assert_eq!(names["singular"], k.singular, "{}", k.kind);
        let scope = if k.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(spec["scope"], scope, "{}", k.kind);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(strings(&names["shortNames"]), k.short_names, "{}", k.kind);
        assert_eq!(strings(&names["categories"]), k.categories, "{}", k.kind);
        let version = spec["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["storage"] == true))
            .expect("a storage version");
        assert_eq!(version["name"], k.version, "{}", k.kind);
        assert_eq!(
            version.pointer("/subresources/status").is_some(),
            k.has_status,
            "{}",
            k.kind
        );
    }
    for c in all() {
        assert!(
            KINDS.iter().any(|k| k.custom && k.kind == c.kind),
            "{}: the fake does not serve its kind",
            c.file
        );
    }
}

#[test]
fn cnp_and_ccnp_share_one_rule_schema_with_kafka_rules() {
    let cnp = &of_kind("CiliumNetworkPolicy").expect("a CRD").schema;
    let ccnp = &of_kind("CiliumClusterwideNetworkPolicy")
        .expect("a CRD")
        .schema;
    let without_description = |s: &Value| {
        let mut s = s.clone();
        s.as_object_mut().map(|m| m.remove("description"));
        s
    };
    assert_eq!(without_description(cnp), without_description(ccnp));
    let rules = "/properties/spec/properties/ingress/items/properties/toPorts/items/properties/rules/properties";
    let kafka = cnp
        .pointer(&format!("{rules}/kafka/items/properties"))
        .and_then(Value::as_object)
        .expect("rules.kafka");
    let fields: Vec<&str> = kafka.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        ["apiKey", "apiVersion", "clientID", "role", "topic"]
    );
    // specs, egress and the deny sections reuse the same schemas.
    assert_eq!(
        cnp["properties"]["specs"]["items"],
        cnp["properties"]["spec"]
    );
    let spec = &cnp["properties"]["spec"]["properties"];
    assert_eq!(spec["ingress"]["items"], spec["ingressDeny"]["items"]);
    assert_eq!(spec["egress"]["items"], spec["egressDeny"]["items"]);
    assert_eq!(
        spec["egress"]["items"]["properties"]["toPorts"],
        spec["ingress"]["items"]["properties"]["toPorts"]
    );
}

/// A minimal CRD file around `schema` (indented for `openAPIV3Schema:`).
fn crd_with(schema: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: things.example.com}}
spec:
  group: example.com
  scope: Cluster
  names: {{kind: Thing, plural: things, singular: thing}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
{schema}"
    )
}

#[test]
fn schemas_that_are_not_structural_or_have_typos_are_refused() {
    let ok = "        type: object
        properties:
          spec:
            type: object
            oneOf:
            - required: [a]
            - required: [b]
            properties:
              a: {type: string, maxLength: 3, pattern: '^[a-z]+$'}
              b: {x-kubernetes-int-or-string: true}
              c: {type: object, x-kubernetes-preserve-unknown-fields: true}
";
    load("things.example.com.yaml", &crd_with(ok)).expect("structural");
    let cases = [
        (
            "maxLength: 3",
            "maxLenght: 3",
            "unknown keyword \"maxLenght\"",
        ),
        ("a: {type: string,", "a: {", "spec.properties.a: no type"),
        (
            "- required: [b]",
            "- type: object",
            "\"type\" is not a value check",
        ),
        ("'^[a-z]+$'", "'^[a-z+$'", "spec.properties.a.pattern"),
        (
            "c: {type: object, x-kubernetes-preserve-unknown-fields: true}",
            "c: {type: object, properties: {d: {type: string}}, additionalProperties: {type: string}}",
            "mutually exclusive",
        ),
        (
            "b: {x-kubernetes-int-or-string: true}",
            "b: {type: string, x-kubernetes-int-or-string: true}",
            "takes no type",
        ),
    ];
    for (from, to, want) in cases {
        let text = crd_with(&ok.replace(from, to));
        let err = load("things.example.com.yaml", &text)
            .expect_err(to)
            .to_string();
        assert!(err.contains(want), "{to}: {err}");
    }
    let meta = "        type: object
        properties:
          metadata:
            type: object
            properties:
              labels: {type: object}
";
    let err = load("things.example.com.yaml", &crd_with(meta)).expect_err("metadata");
    assert!(
        err.to_string().contains("only name and generateName"),
        "{err}"
    );
    let err = load("other.yaml", &crd_with(ok)).expect_err("file name");
    assert!(err.to_string().contains("PLURAL.GROUP"), "{err}");
}
