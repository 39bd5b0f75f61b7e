use super::*;

#[test]
fn routes_name_collections_and_objects() {
    let pods = |ns: Option<&str>| Route::Collection {
        kind: *KINDS.iter().find(|k| k.kind == "Pod").expect("served"),
        namespace: ns.map(str::to_string),
    };
    assert_eq!(route("/api/v1/pods"), Some(pods(None)));
    assert_eq!(route("/api/v1/namespaces/x/pods"), Some(pods(Some("x"))));
    match route("/api/v1/namespaces/x") {
        Some(Route::Object { kind, name, .. }) => {
            assert_eq!((kind.kind, name.as_str()), ("Namespace", "x"))
        }
        other => panic!("{other:?}"),
    }
    match route("/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/all") {
        Some(Route::Object {
            kind,
            namespace,
            name,
        }) => {
            assert_eq!(
                (kind.kind, namespace, name.as_str()),
                ("CiliumClusterwideNetworkPolicy", None, "all")
            );
        }
        other => panic!("{other:?}"),
    }
    for nothing in [
        "/api/v1/pods/a",
        "/api/v1/namespaces/x/pods/a/status",
        "/apis/cilium.io/v2/namespaces/x/ciliumclusterwidenetworkpolicies",
        "/api/v2/pods",
        "/api/v1/namespaces//pods",
    ] {
        assert_eq!(route(nothing), None, "{nothing}");
    }
}

#[test]
fn query_parameters_are_percent_decoded() {
    let uri: http::Uri = "/x?labelSelector=app%20in%20(a%2Cb)&fieldSelector=a%3Db&bad=%zz&end=%4"
        .parse()
        .expect("a URI");
    let q = query(&uri);
    assert_eq!(q["labelSelector"], "app in (a,b)");
    assert_eq!(q["fieldSelector"], "a=b");
    assert_eq!(q["bad"], "%zz");
    assert_eq!(q["end"], "%4");
}

#[test]
fn the_v2_protobuf_decodes_to_the_json_document() {
    let doc = openapi::v2(&|_: &Kind| false);
    let bytes = openapi::proto::encode(&doc);
    let decoded: openapi::proto::Document =
        prost::Message::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded.swagger, "2.0");
    let defs = decoded
        .definitions
        .expect("definitions")
        .additional_properties;
    let pod = defs
        .iter()
        .find(|d| d.name == "io.k8s.api.core.v1.Pod")
        .and_then(|d| d.value.as_ref())
        .expect("a Pod definition");
    assert!(
        pod.vendor_extension
            .iter()
            .any(|e| e.name == "x-kubernetes-group-version-kind")
    );
    assert_eq!(defs.len(), 2 * KINDS.len());
}
