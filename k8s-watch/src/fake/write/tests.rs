use super::*;
use crate::fake::{State, ValidatorSlot};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

fn shared() -> Shared {
    Shared {
        state: Mutex::new(State::default()),
        live: broadcast::channel(64).0,
        drop_watches: watch::channel(0).0,
        hold: watch::channel(false).0,
        requests: Mutex::new(Vec::new()),
        validator: ValidatorSlot::default(),
    }
}

fn target<'a>(kind: &str, namespace: Option<&'a str>, name: Option<&'a str>) -> Target<'a> {
    Target {
        kind: kind_named(kind).expect("served"),
        namespace,
        name,
        dry_run: false,
        field_validation: FieldValidation::Strict,
        validator: None,
        status_only: false,
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn cnp(port: &str) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "p", "namespace": "default"},
           "spec": {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": port}]}]}]}})
}

#[test]
fn create_sets_system_fields_and_refuses_duplicates() {
    let sh = shared();
    let mut st = State::default();
    let t = target("Pod", Some("default"), None);
    let w = create(&sh, &mut st, &t, pod("a")).expect("created");
    assert!(w.created);
    let meta = &w.object["metadata"];
    assert_eq!(meta["resourceVersion"], "1");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["namespace"], "default");
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(w.object["status"], json!({"phase": "Pending"}));
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].event_type, "ADDED");
    let e = create(&sh, &mut st, &t, pod("a")).expect_err("exists");
    assert_eq!(e.code(), 409);
    assert_eq!(e.to_string(), "pods \"a\" already exists");
    assert_eq!(e.status()["details"], json!({"name": "a", "kind": "pods"}));
}

#[test]
fn create_checks_the_body_against_the_url() {
    let sh = shared();
    let mut st = State::default();
    let e = create(&sh, &mut st, &target("Pod", Some("nope"), None), pod("a")).expect_err("no ns");
    assert_eq!(
        (e.code(), e.to_string()),
        (404, "namespaces \"nope\" not found".into())
    );
    let mut wrong = pod("a");
    wrong["metadata"]["namespace"] = "other".into();
    let e = create(&sh, &mut st, &target("Pod", Some("default"), None), wrong).expect_err("ns");
    assert_eq!(e.code(), 400);
    let mut wrong = pod("a");
    wrong["apiVersion"] = "v2".into();
    let e = create(&sh, &mut st, &target("Pod", Some("default"), None), wrong).expect_err("v2");
    assert_eq!(e.code(), 400);
    let e = create(
        &sh,
        &mut st,
        &target("Pod", Some("default"), None),
        cnp("80"),
    )
    .expect_err("kind");
    assert_eq!(e.code(), 400);
    let e = create(
        &sh,
        &mut st,
        &target("Pod", Some("default"), None),
        pod("A_b"),
    )
    .expect_err("name");
    assert_eq!(e.code(), 422);
    assert!(
        e.to_string()
            .starts_with("Pod \"A_b\" is invalid: metadata.name: Invalid value: \"A_b\""),
        "{e}"
    );
    let mut nameless = pod("x");
    nameless["metadata"]
        .as_object_mut()
        .map(|m| m.remove("name"));
    let e = create(
        &sh,
        &mut st,
        &target("Pod", Some("default"), None),
        nameless,
    )
    .expect_err("no name");
    assert_eq!(
        e.status()["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );
    let mut typed = pod("a");
    typed["spec"]["containers"] = "nope".into();
    let e = create(&sh, &mut st, &target("Pod", Some("default"), None), typed).expect_err("type");
    assert_eq!(e.code(), 400);
    assert!(st.objects.is_empty() && st.history.is_empty());
}

#[test]
fn field_validation_strict_warn_ignore() {
    let sh = shared();
    let mut st = State::default();
    let mut body = pod("a");
    body["spec"]["foo"] = 1.into();
    let mut t = target("Pod", Some("default"), None);
    let e = create(&sh, &mut st, &t, body.clone()).expect_err("strict");
    assert!(
        e.to_string()
            .ends_with("strict decoding error: unknown field \"spec.foo\""),
        "{e}"
    );
    t.field_validation = FieldValidation::Warn;
    let w = create(&sh, &mut st, &t, body.clone()).expect("warn");
    assert_eq!(w.warnings, vec!["unknown field \"spec.foo\"".to_string()]);
    assert!(
        w.object["spec"].get("foo").is_none(),
        "unknown fields are dropped"
    );
    t.field_validation = FieldValidation::Ignore;
    body["metadata"]["name"] = "b".into();
    let w = create(&sh, &mut st, &t, body).expect("ignore");
    assert!(w.warnings.is_empty());
}

#[test]
fn dry_run_stores_nothing() {
    let sh = shared();
    let mut st = State::default();
    let mut t = target("Pod", Some("default"), None);
    t.dry_run = true;
    create(&sh, &mut st, &t, pod("a")).expect("validates");
    assert!(st.objects.is_empty() && st.history.is_empty() && st.rv == 0);
}

#[test]
fn updates_conflict_bump_generation_and_skip_no_ops() {
    let sh = shared();
    let mut st = State::default();
    let t = target("Pod", Some("default"), None);
    let created = create(&sh, &mut st, &t, pod("a")).expect("created").object;
    let t = target("Pod", Some("default"), Some("a"));
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = "99".into();
    let e = replace(&sh, &mut st, &t, stale).expect_err("stale");
    assert_eq!(e.code(), 409);
    assert!(
        e.to_string().contains("the object has been modified"),
        "{e}"
    );
    // Labels only: same generation.
    let mut relabelled = created.clone();
    relabelled["metadata"]["labels"]["team"] = "x".into();
    let w = replace(&sh, &mut st, &t, relabelled).expect("replaced");
    assert_eq!(w.object["metadata"]["generation"], 1);
    assert_eq!(w.object["metadata"]["resourceVersion"], "2");
    // Spec: next generation.
    let w = apply_patch(
        &sh,
        &mut st,
        &t,
        PatchType::Merge,
        json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}),
        None,
    )
    .expect("patched");
    assert_eq!(w.object["metadata"]["generation"], 2);
    // Nothing changes: nothing stored, no event.
    let events = st.history.len();
    let w = apply_patch(
        &sh,
        &mut st,
        &t,
        PatchType::Merge,
        json!({"metadata": {}}),
        None,
    )
    .expect("no-op");
    assert_eq!(w.object["metadata"]["resourceVersion"], "3");
    assert_eq!(st.history.len(), events);
    // Status is not writable through the object.
    let w = apply_patch(
        &sh,
        &mut st,
        &t,
        PatchType::Json,
        json!([{"op": "add", "path": "/status/podIP", "value": "10.0.0.1"}]),
        None,
    )
    .expect("patched");
    assert_eq!(w.object["status"], json!({"phase": "Pending"}));
}

#[test]
fn the_validator_refuses_with_invalid_and_stores_nothing() {
    let sh = shared();
    let mut st = State::default();
    let mut t = target("CiliumNetworkPolicy", Some("default"), None);
    t.validator = Some(Arc::new(|o: &Value| {
        match o
            .pointer("/spec/ingress/0/toPorts/0/ports/0/port")
            .and_then(Value::as_str)
        {
            Some("9999") => Err("port 9999 is not for you".into()),
            _ => Ok(()),
        }
    }));
    let e = create(&sh, &mut st, &t, cnp("9999")).expect_err("refused");
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.to_string(),
        "CiliumNetworkPolicy.cilium.io \"p\" is invalid: port 9999 is not for you"
    );
    let s = e.status();
    assert_eq!(s["reason"], "Invalid");
    assert_eq!(s["details"]["group"], "cilium.io");
    assert_eq!(s["details"]["kind"], "CiliumNetworkPolicy");
    assert_eq!(s["details"]["causes"][0]["field"], "spec");
    assert!(st.objects.is_empty() && st.history.is_empty());
    create(&sh, &mut st, &t, cnp("80")).expect("valid");
    let mut t = target("CiliumNetworkPolicy", Some("default"), Some("p"));
    t.validator = Some(Arc::new(|_: &Value| Err("no".into())));
    for (kind, patch) in [
        (PatchType::Merge, json!({"spec": {"description": "x"}})),
        (
            PatchType::Json,
            json!([{"op": "add", "path": "/spec/description", "value": "x"}]),
        ),
    ] {
        let e = apply_patch(&sh, &mut st, &t, kind, patch, None).expect_err("refused");
        assert_eq!(e.code(), 422);
    }
    assert_eq!(st.history.len(), 1);
}

#[test]
fn patch_types_by_kind() {
    let sh = shared();
    let mut st = State::default();
    create(
        &sh,
        &mut st,
        &target("CiliumNetworkPolicy", Some("default"), None),
        cnp("80"),
    )
    .expect("created");
    let t = target("CiliumNetworkPolicy", Some("default"), Some("p"));
    let e = apply_patch(&sh, &mut st, &t, PatchType::Strategic, json!({}), None).expect_err("415");
    assert_eq!(e.code(), 415);
    let e = apply_patch(&sh, &mut st, &t, PatchType::Apply, cnp("81"), None).expect_err("manager");
    assert_eq!(e.code(), 422);
    let w =
        apply_patch(&sh, &mut st, &t, PatchType::Apply, cnp("81"), Some("me")).expect("applied");
    assert_eq!(
        w.object["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
        "81"
    );
    // Server-side apply creates a missing object.
    let mut other = cnp("82");
    other["metadata"]["name"] = "q".into();
    let t = target("CiliumNetworkPolicy", Some("default"), Some("q"));
    let w = apply_patch(&sh, &mut st, &t, PatchType::Apply, other, Some("me")).expect("created");
    assert!(w.created);
    let t = target("CiliumNetworkPolicy", Some("default"), Some("missing"));
    let e = apply_patch(&sh, &mut st, &t, PatchType::Merge, json!({}), None).expect_err("404");
    assert_eq!(e.code(), 404);
}

#[test]
fn delete_returns_the_object_and_a_namespace_takes_its_objects() {
    let sh = shared();
    let mut st = State::default();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}});
    create(&sh, &mut st, &target("Namespace", None, None), ns).expect("ns");
    create(&sh, &mut st, &target("Pod", Some("x"), None), pod("a")).expect("pod");
    let t = target("Pod", Some("x"), Some("a"));
    let e = delete(
        &sh,
        &mut st,
        &t,
        &json!({"preconditions": {"resourceVersion": "1"}}),
    )
    .expect_err("stale");
    assert_eq!(e.code(), 409);
    let t = target("Namespace", None, Some("x"));
    let gone = delete(&sh, &mut st, &t, &json!({})).expect("deleted");
    assert_eq!(gone["metadata"]["name"], "x");
    assert!(st.objects.is_empty());
    let types: Vec<&str> = st.history.iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["ADDED", "ADDED", "DELETED", "DELETED"]);
    let e = delete(&sh, &mut st, &t, &json!({})).expect_err("gone");
    assert_eq!(e.to_string(), "namespaces \"x\" not found");
}

#[test]
fn the_status_subresource_changes_only_the_status() {
    let sh = shared();
    let mut st = State::default();
    create(
        &sh,
        &mut st,
        &target("Pod", Some("default"), None),
        pod("a"),
    )
    .expect("created");
    let mut t = target("Pod", Some("default"), Some("a"));
    t.status_only = true;
    let w = apply_patch(
        &sh,
        &mut st,
        &t,
        PatchType::Merge,
        json!({"metadata": {"labels": {"ignored": "x"}},
               "status": {"phase": "Running", "podIP": "10.0.0.9"}}),
        None,
    )
    .expect("patched");
    assert_eq!(w.object["status"]["podIP"], "10.0.0.9");
    assert!(w.object["metadata"]["labels"].get("ignored").is_none());
    assert_eq!(w.object["metadata"]["generation"], 1);
    assert_eq!(st.history.last().map(|e| e.event_type), Some("MODIFIED"));
    let mut t = target("Pod", Some("default"), Some("zz"));
    t.status_only = true;
    let e = apply_patch(&sh, &mut st, &t, PatchType::Merge, json!({}), None).expect_err("404");
    assert_eq!(e.code(), 404);
}

#[test]
fn custom_resources_pass_their_crds_value_checks() {
    let sh = shared();
    let mut st = State::default();
    let t = target("CiliumNetworkPolicy", Some("default"), None);
    let e = create(&sh, &mut st, &t, cnp("99999")).expect_err("out of range");
    assert_eq!(e.code(), 422);
    let s = e.status();
    assert_eq!(
        s["details"]["causes"][0]["field"],
        "spec.ingress[0].toPorts[0].ports[0].port"
    );
    let t = target("ClusterNetworkPolicy", None, None);
    let anp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy", "metadata": {"name": "a"},
        "spec": {"tier": "Admin", "priority": 1001, "subject": {}}});
    let e = create(&sh, &mut st, &t, anp).expect_err("priority and subject");
    let status = e.status();
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["spec.priority", "spec.subject"], "{e}");
    assert!(st.objects.is_empty() && st.history.is_empty());
}
