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
    match route("/api/v1/namespaces/x/pods/a/status") {
        Some(Route::Status { kind, name, .. }) => {
            assert_eq!((kind.kind, name.as_str()), ("Pod", "a"))
        }
        other => panic!("{other:?}"),
    }
    for nothing in [
        "/api/v1/pods/a",
        "/api/v1/namespaces/x/pods/a/log",
        "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies/a/status",
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

/// A raw request to a fresh fake: status, headers and the body as JSON
/// (or `Null`).
async fn call(
    fake: &crate::fake::FakeHandle,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("a request");
    let resp = fake
        .client()
        .send(req.map(kube::client::Body::from))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_http_surface_answers_as_the_api_server() {
    let (_url, fake) = crate::fake::FakeApiServer::start().await.expect("starts");
    let json_ct = [("content-type", "application/json")];
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "a", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "x"}], "foo": 1}});
    // Warn (the default) answers with a Warning header.
    let (code, headers, body) = call(
        &fake,
        "POST",
        "/api/v1/namespaces/default/pods",
        &json_ct,
        pod.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let warning = headers
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or("");
    assert_eq!(warning, r#"299 - "unknown field \"spec.foo\"""#);
    // Malformed bodies, unknown patch types, huge bodies.
    let (code, _, body) = call(
        &fake,
        "POST",
        "/api/v1/namespaces/default/pods",
        &json_ct,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, _, body) = call(
        &fake,
        "PATCH",
        "/api/v1/namespaces/default/pods/a",
        &[("content-type", "text/plain")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, _, _) = call(
        &fake,
        "POST",
        "/api/v1/namespaces/default/pods",
        &json_ct,
        vec![b' '; MAX_BODY + 1],
    )
    .await;
    assert_eq!(code, 413);
    let (code, _, body) = call(
        &fake,
        "PATCH",
        "/api/v1/namespaces/default/pods/a",
        &[("content-type", "application/json-patch+json")],
        br#"[{"op": "remove", "path": "/metadata/labels/nope"}]"#.to_vec(),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
    // Reads: a Table, a selector error, a missing object.
    let (code, _, body) = call(
        &fake,
        "GET",
        "/api/v1/pods?labelSelector=app%3Da",
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "Table");
    assert_eq!(body["rows"][0]["cells"][0], "a");
    assert_eq!(body["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let (code, _, _) = call(
        &fake,
        "GET",
        "/api/v1/pods?labelSelector=a%20in%20(b",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _, body) = call(
        &fake,
        "GET",
        "/api/v1/namespaces/default/pods/zz",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["message"], "pods \"zz\" not found");
    assert_eq!(body["details"], json!({"name": "zz", "kind": "pods"}));
    // Aggregated discovery when asked, legacy otherwise.
    let (code, headers, body) = call(
        &fake,
        "GET",
        "/apis",
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "APIGroupDiscoveryList");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .contains("v=v2")
    );
    let cilium = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["metadata"]["name"] == "cilium.io")
        .expect("cilium.io");
    let cnp = &cilium["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "ciliumnetworkpolicies")
        .cloned()
        .expect("cnp");
    assert_eq!(cnp["shortNames"], json!(["cnp", "ciliumnp"]));
    let (_, _, body) = call(&fake, "GET", "/apis", &[], Vec::new()).await;
    assert_eq!(body["kind"], "APIGroupList");
    // OpenAPI v3: PATCH lists fieldValidation; a CRD takes no strategic merge.
    let (_, _, index) = call(&fake, "GET", "/openapi/v3", &[], Vec::new()).await;
    let url = index["paths"]["apis/cilium.io/v2"]["serverRelativeURL"]
        .as_str()
        .expect("a URL")
        .to_string();
    let (_, _, doc) = call(&fake, "GET", &url, &[], Vec::new()).await;
    let patch = &doc["paths"]["/apis/cilium.io/v2/namespaces/{namespace}/ciliumnetworkpolicies/{name}"]
        ["patch"];
    assert!(
        patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
    assert!(
        patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_none()
    );
    // Delete a collection by selector.
    let (code, _, body) = call(
        &fake,
        "DELETE",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Da",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["items"][0]["metadata"]["name"], "a");
    assert_eq!(fake.resource_version(), 2);
}
