use super::*;
use crate::fake::kinds::{KINDS, kind_named};

#[test]
fn decoding_prunes_unknown_fields_and_nulls_with_their_paths() {
    let pod = kind_named("Pod").expect("served");
    let mut obj = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "a", "labels": null, "bogus": 1},
        "spec": {"containers": [{"name": "c", "image": "x", "extra": true}], "foo": {}},
        "status": {"anything": [1, 2]}});
    let d = decode(of(&pod), &mut obj).expect("types are right");
    assert_eq!(
        d.unknown,
        ["metadata.bogus", "spec.containers[0].extra", "spec.foo"]
    );
    assert_eq!(
        obj,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
               "spec": {"containers": [{"name": "c", "image": "x"}]},
               "status": {"anything": [1, 2]}})
    );
}

#[test]
fn wrong_types_name_the_field() {
    let np = kind_named("NetworkPolicy").expect("served");
    let mut obj = json!({"spec": {"ingress": [{"ports": [{"port": 1.5}]}]}});
    let e = decode(of(&np), &mut obj).expect_err("a float port");
    assert!(e.starts_with("spec.ingress[0].ports[0].port:"), "{e}");
    let mut obj = json!({"spec": {"podSelector": {"matchLabels": {"a": true}}}});
    assert!(decode(of(&np), &mut obj).is_err());
    let mut obj = json!({"spec": {"ingress": [{"ports": [{"port": "http"}, {"port": 80}]}]}});
    assert!(decode(of(&np), &mut obj).is_ok());
}

#[test]
fn every_kind_has_a_definition_with_its_gvk_and_merge_keys() {
    for k in KINDS {
        let d = definition(k);
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], k.kind);
        assert_eq!(d["type"], "object");
    }
    let pod = definition(&kind_named("Pod").expect("served"));
    let containers = &pod["properties"]["spec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        containers["items"]["properties"]["ports"]["x-kubernetes-patch-merge-key"],
        "containerPort"
    );
    assert_eq!(
        definition_name(&kind_named("CiliumNetworkPolicy").expect("served")),
        "io.cilium.v2.CiliumNetworkPolicy"
    );
}
