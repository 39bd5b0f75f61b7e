use super::*;
use crate::fake::kinds::kind_named;

#[test]
fn durations_read_as_kubectl_prints_them() {
    let cases = [
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (180, "3m"),
        (11 * 60 + 5, "11m"),
        (3 * 3600 + 120, "3h2m"),
        (9 * 3600, "9h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (10 * 365 * 86400, "10y"),
        (-5, "<invalid>"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(secs), want, "{secs}");
    }
}

#[test]
fn tables_have_the_kinds_columns_and_metadata_rows() {
    assert!(wanted(
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    ));
    assert!(!wanted("application/json"));
    let pod = json!({"metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}, {"name": "d"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1",
                   "containerStatuses": [{"ready": true, "restartCount": 3}]}});
    let t = table(&kind_named("Pod").expect("served"), &[&pod], "7", "");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!(["a", "1/2", "Running", "3", "<unknown>", "10.0.0.1", "n1"])
    );
    assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "x");
    let np = json!({"metadata": {"name": "p"}, "spec": {"podSelector": {
        "matchLabels": {"app": "a"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}});
    let t = table(
        &kind_named("NetworkPolicy").expect("served"),
        &[&np],
        "1",
        "None",
    );
    assert_eq!(t["rows"][0]["cells"][1], "app=a,tier notin (db)");
    assert!(t["rows"][0].get("object").is_none());
}
