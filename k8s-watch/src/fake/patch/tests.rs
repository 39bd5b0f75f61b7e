use super::*;
use crate::fake::kinds::kind_named;
use crate::fake::schema;
use serde_json::json;

fn pod_schema() -> &'static Schema {
    schema::of(&kind_named("Pod").expect("Pod is served"))
}

/// A value nested `depth` levels (`{"a":{"a":...}}`).
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

#[test]
fn merge_patch_follows_rfc_7386() {
    // The RFC's appendix A, as far as objects go.
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (target, patch, want) in cases {
        assert_eq!(merge_patch(&target, &patch), Ok(want), "{target} + {patch}");
    }
}

#[test]
fn merge_patch_refuses_non_objects_and_deep_nesting() {
    for patch in [json!([1]), json!("x"), json!(null), json!(3)] {
        assert!(
            matches!(merge_patch(&json!({}), &patch), Err(Malformed(_))),
            "{patch}"
        );
    }
    assert!(matches!(
        merge_patch(&json!({}), &nested(MAX_DEPTH + 5)),
        Err(Malformed(_))
    ));
}

#[test]
fn json_patch_follows_rfc_6902() {
    let doc = json!({"foo": ["bar", "baz"], "obj": {"k": 1}});
    let patch = json!([
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "add", "path": "/foo/-", "value": "end"},
        {"op": "remove", "path": "/foo/0"},
        {"op": "replace", "path": "/obj/k", "value": 2},
        {"op": "copy", "from": "/obj", "path": "/copy"},
        {"op": "move", "from": "/copy/k", "path": "/moved"},
        {"op": "test", "path": "/moved", "value": 2},
        {"op": "add", "path": "/a~1b", "value": "slash"},
        {"op": "add", "path": "/m~0n", "value": "tilde"},
    ]);
    assert_eq!(
        json_patch(&doc, &patch),
        Ok(
            json!({"foo": ["qux", "baz", "end"], "obj": {"k": 2}, "copy": {},
                  "moved": 2, "a/b": "slash", "m~n": "tilde"})
        )
    );
}

#[test]
fn json_patch_errors_are_4xx_kinds_never_panics() {
    let doc = json!({"list": [0, 1, 2], "m": {"x": 1}});
    let malformed = [
        json!({"op": "add"}),
        json!([1]),
        json!([{"path": "/m"}]),
        json!([{"op": "add", "path": "/m/y"}]),
        json!([{"op": "frobnicate", "path": "/m"}]),
        json!([{"op": "add", "path": "m", "value": 1}]),
        json!([{"op": "add", "path": "/m/~2", "value": 1}]),
        json!([{"op": "add", "path": "/m/~", "value": 1}]),
        json!([{"op": "move", "path": "/m"}]),
    ];
    for p in malformed {
        assert!(matches!(json_patch(&doc, &p), Err(Malformed(_))), "{p}");
    }
    let does_not_apply = [
        json!([{"op": "remove", "path": "/nope"}]),
        json!([{"op": "remove", "path": ""}]),
        json!([{"op": "replace", "path": "/nope", "value": 1}]),
        json!([{"op": "add", "path": "/nope/deeper", "value": 1}]),
        json!([{"op": "add", "path": "/list/4", "value": 1}]),
        json!([{"op": "add", "path": "/list/01", "value": 1}]),
        json!([{"op": "add", "path": "/list/-1", "value": 1}]),
        json!([{"op": "remove", "path": "/list/99999999999999999999999"}]),
        json!([{"op": "add", "path": "/m/x/y", "value": 1}]),
        json!([{"op": "move", "from": "/m", "path": "/m/inner"}]),
        json!([{"op": "test", "path": "/m/x", "value": 2}]),
        json!([{"op": "copy", "from": "/nope", "path": "/x"}]),
    ];
    for p in does_not_apply {
        assert!(matches!(json_patch(&doc, &p), Err(DoesNotApply(_))), "{p}");
    }
}

#[test]
fn json_patch_bounds_operations_copies_and_nesting() {
    let many: Vec<Value> = (0..=MAX_JSON_PATCH_OPS)
        .map(|_| json!({"op": "test", "path": "", "value": {}}))
        .collect();
    assert!(matches!(
        json_patch(&json!({}), &Value::Array(many)),
        Err(Malformed(_))
    ));
    // Each copy of the root into itself doubles the document.
    let doubling: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    let big = json!({"list": vec![0; 1000]});
    assert!(matches!(
        json_patch(&big, &Value::Array(doubling)),
        Err(DoesNotApply(_))
    ));
    // Copying a subtree into its own depth grows nesting one level a time.
    let deepening: Vec<Value> = (0..MAX_DEPTH + 10)
        .map(|_| json!({"op": "copy", "from": "", "path": "/a"}))
        .collect();
    assert!(matches!(
        json_patch(&json!({"a": 1}), &Value::Array(deepening)),
        Err(DoesNotApply(_))
    ));
    assert!(matches!(
        json_patch(
            &json!({}),
            &json!([{"op": "add", "path": "/x", "value": nested(MAX_DEPTH + 1)}])
        ),
        Err(DoesNotApply(_))
    ));
}

#[test]
fn strategic_merge_merges_containers_by_name_and_ports_by_number() {
    let pod = json!({"metadata": {"labels": {"app": "a", "tier": "x"}},
        "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 443}]},
            {"name": "b", "image": "busybox"}]}});
    // What kubectl apply sends after an edit: b removed, c added first,
    // a's image changed and a port added; a label deleted.
    let patch = json!({"metadata": {"labels": {"tier": null, "v": "2"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [
                {"name": "c", "image": "alpine"},
                {"name": "a", "image": "nginx:2",
                 "$setElementOrder/ports": [{"containerPort": 8080}, {"containerPort": 80}, {"containerPort": 443}],
                 "ports": [{"containerPort": 8080}]},
                {"name": "b", "$patch": "delete"}]}});
    let got = strategic_merge(&pod, &patch, Some(pod_schema())).expect("applies");
    assert_eq!(
        got,
        json!({"metadata": {"labels": {"app": "a", "v": "2"}},
            "spec": {"containers": [
                {"name": "c", "image": "alpine"},
                {"name": "a", "image": "nginx:2",
                 "ports": [{"containerPort": 8080}, {"containerPort": 80}, {"containerPort": 443}]}]}})
    );
}

#[test]
fn strategic_merge_directives() {
    let s = Some(pod_schema());
    let pod = json!({"metadata": {"finalizers": ["a", "b", "c"], "labels": {"x": "1"}},
                     "spec": {"nodeSelector": {"k": "v"}, "tolerations": [{"key": "t"}]}});
    // $patch: replace on a map; atomic lists are replaced.
    let got = strategic_merge(
        &pod,
        &json!({"spec": {"nodeSelector": {"$patch": "replace", "n": "m"},
                         "tolerations": [{"key": "u"}]}}),
        s,
    )
    .expect("applies");
    assert_eq!(
        got["spec"],
        json!({"nodeSelector": {"n": "m"}, "tolerations": [{"key": "u"}]})
    );
    // $patch: delete on a map empties it.
    let got = strategic_merge(
        &pod,
        &json!({"metadata": {"labels": {"$patch": "delete"}}}),
        s,
    )
    .expect("applies");
    assert_eq!(got["metadata"]["labels"], json!({}));
    // Primitive merge lists: union, deletion, order.
    let got = strategic_merge(
        &pod,
        &json!({"metadata": {"$setElementOrder/finalizers": ["c", "d", "a"],
                             "finalizers": ["d"],
                             "$deleteFromPrimitiveList/finalizers": ["b"]}}),
        s,
    )
    .expect("applies");
    assert_eq!(got["metadata"]["finalizers"], json!(["c", "d", "a"]));
    // $retainKeys clears the fields it does not name.
    let vol = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    let got = strategic_merge(
        &vol,
        &json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"],
                                       "hostPath": {"path": "/x"}}]}}),
        s,
    )
    .expect("applies");
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/x"}}])
    );
    // $patch: replace in a merged list replaces the list.
    let pods = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let got = strategic_merge(
        &pods,
        &json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
        s,
    )
    .expect("applies");
    assert_eq!(got["spec"]["containers"], json!([{"name": "z"}]));
}

#[test]
fn strategic_merge_refuses_hostile_patches() {
    let s = Some(pod_schema());
    let pod = json!({"spec": {"containers": [{"name": "a"}]}});
    let bad = [
        json!({"spec": {"$patch": "explode"}}),
        json!({"spec": {"containers": [{"image": "no-name"}]}}),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
        json!({"spec": {"containers": [{"name": "a"}, 3]}}),
        json!({"spec": {"$setElementOrder/containers": "nope"}}),
        json!({"spec": {"$setElementOrder/containers": [{"name": "x"}],
                        "containers": [{"name": "y"}]}}),
        json!({"spec": {"$retainKeys": "nope"}}),
        json!({"spec": {"$retainKeys": ["a"], "b": 1}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
        json!(["not", "an", "object"]),
        nested(MAX_DEPTH + 1),
    ];
    for p in bad {
        let r = strategic_merge(&pod, &p, s);
        assert!(r.is_err(), "{p} applied: {r:?}");
    }
}

#[test]
fn strategic_merge_handles_huge_lists_quickly() {
    let s = Some(pod_schema());
    let many: Vec<Value> = (0..200_000).map(|i| json!(format!("f{i}"))).collect();
    let pod = json!({"metadata": {"finalizers": many}});
    let patch = json!({"metadata": {"finalizers": (0..200_000).map(|i| json!(format!("g{i}"))).collect::<Vec<_>>(),
                                    "$deleteFromPrimitiveList/finalizers": ["f1"]}});
    let start = std::time::Instant::now();
    let got = strategic_merge(&pod, &patch, s).expect("applies");
    assert_eq!(
        got["metadata"]["finalizers"].as_array().map(Vec::len),
        Some(399_999)
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let containers: Vec<Value> = (0..20_000)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let pod = json!({"spec": {"containers": containers.clone()}});
    let got =
        strategic_merge(&pod, &json!({"spec": {"containers": containers}}), s).expect("applies");
    assert_eq!(
        got["spec"]["containers"].as_array().map(Vec::len),
        Some(20_000)
    );
}
