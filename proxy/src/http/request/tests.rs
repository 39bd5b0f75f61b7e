use super::*;
use http::Request;

fn parts(builder: http::request::Builder) -> Parts {
    builder.body(()).expect("valid test request").into_parts().0
}

fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "svc")
}

#[test]
fn a_plain_request_is_viewed_as_sent() {
    let p = parts(get("/a/b?x=%2e%2e").header("x-one", "1"));
    let v = view(&p).expect("valid");
    assert_eq!(v.method, "GET");
    assert_eq!(v.path, "/a/b?x=%2e%2e", "query included, never decoded");
    assert_eq!(v.authority, Some("svc"));
    assert_eq!(v.headers, vec![("x-one", "1")]);
}

#[test]
fn dot_segments_and_encoded_separators_are_refused() {
    for path in [
        "/public/../admin",
        "/public/./x",
        "/public/..",
        "/public/.",
        "/..",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e/admin",
        "/public/..;x=1/admin",
        "/public%2f..%2fadmin",
        "/public%2Fadmin",
        "/public%5cadmin",
        "/public/%252e%252e/admin",
        "/public/%00",
        "/public/..%3badmin",
        "/public/%2e%2E%3B/admin",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%e0%80%ae./admin",
        "/public/%c0%afadmin",
        "/public/%ef%bc%8e%ef%bc%8e/admin",
        "/public/..%ef%bc%8fadmin",
        "/public/%ef%bc%bcadmin",
        "/public/%ef%b9%92/admin",
        "/public/%e2%80%a4%e2%80%a4/admin",
        "/public/%ff",
    ] {
        let p = parts(get(path));
        assert!(
            matches!(view(&p), Err(Rejection::UnsafePath(_))),
            "{path} must be refused"
        );
    }
}

#[test]
fn ordinary_dots_are_fine() {
    for path in [
        "/",
        "/public/a.b",
        "/public/...",
        "/public/.well-known/x",
        "/a..b/c",
        "/x?next=/../admin",
        "/public/caf%C3%A9/%e2%82%ac",
        "/public/%e3%80%82/x",
        "/public/100%",
        "/public/%zz",
        "/public/..a/%3b",
    ] {
        assert_eq!(unsafe_path(path), None, "{path}");
    }
}

#[test]
fn framing_ambiguities_are_bad_requests() {
    let both = parts(
        get("/")
            .header("content-length", "3")
            .header("transfer-encoding", "chunked"),
    );
    assert!(matches!(view(&both), Err(Rejection::BadRequest(_))));
    let differing = parts(
        get("/")
            .header("content-length", "3")
            .header("content-length", "4"),
    );
    assert!(matches!(view(&differing), Err(Rejection::BadRequest(_))));
    let same = parts(
        get("/")
            .header("content-length", "3")
            .header("content-length", "3"),
    );
    assert!(view(&same).is_ok());
    let signed = parts(get("/").header("content-length", "+3"));
    assert!(matches!(view(&signed), Err(Rejection::BadRequest(_))));
}

#[test]
fn host_must_be_single_and_agree_with_the_target() {
    let none = parts(Request::get("/"));
    assert!(matches!(view(&none), Err(Rejection::BadRequest(_))));
    let http10 = parts(Request::get("/").version(Version::HTTP_10));
    assert_eq!(view(&http10).expect("valid").authority, None);
    let two = parts(get("/").header("host", "other"));
    assert!(matches!(view(&two), Err(Rejection::BadRequest(_))));
    let mismatch = parts(Request::get("http://a.example/x").header("host", "b.example"));
    assert!(matches!(view(&mismatch), Err(Rejection::BadRequest(_))));
    let agree = parts(Request::get("http://a.example/x").header("host", "A.example"));
    let v = view(&agree).expect("valid");
    assert_eq!((v.authority, v.path), (Some("a.example"), "/x"));
    let absolute_only = parts(Request::get("http://a.example/x"));
    assert_eq!(
        view(&absolute_only).expect("valid").authority,
        Some("a.example")
    );
}

#[test]
fn connect_is_refused() {
    let p = parts(Request::connect("a.example:443").header("host", "a.example:443"));
    assert!(matches!(view(&p), Err(Rejection::Refused(_))));
}

#[test]
fn non_ascii_header_values_are_bad_requests() {
    let p = parts(get("/").header(
        "x-a",
        http::HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
    ));
    assert!(matches!(view(&p), Err(Rejection::BadRequest(_))));
}

#[test]
fn hop_by_hop_headers_are_stripped() {
    let mut p = parts(
        get("/")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "5")
            .header("te", "gzip")
            .header("x-kept", "1"),
    );
    strip_hop_by_hop(&mut p.headers, false);
    let names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["host", "x-kept"]);
    let mut p = parts(get("/").header("te", "trailers"));
    strip_hop_by_hop(&mut p.headers, false);
    assert!(p.headers.contains_key("te"));
}

#[test]
fn upgrade_and_grpc_are_recognised() {
    let up = parts(
        get("/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket"),
    );
    assert!(wants_upgrade(up.version, &up.headers));
    let mut kept = up.headers.clone();
    strip_hop_by_hop(&mut kept, true);
    assert!(kept.contains_key("upgrade") && kept.contains_key("connection"));
    let bare = parts(get("/ws").header("upgrade", "websocket"));
    assert!(!wants_upgrade(bare.version, &bare.headers));
    let h2c = parts(
        get("/")
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", "h2c"),
    );
    assert!(
        !wants_upgrade(h2c.version, &h2c.headers),
        "h2c is never passed through"
    );
    assert_eq!(upgrade_ask(h2c.version, &h2c.headers), Ok(UpgradeAsk::None));
    // Every Upgrade header counts: a second one, a list, an unknown one.
    for (first, second) in [
        ("websocket", Some("h2c")),
        ("h2c", Some("websocket")),
        ("websocket, h2c", None),
        ("websocket", Some("websocket")),
        ("foo", None),
        ("h2c/1", Some("x")),
        ("", None),
    ] {
        let mut b = get("/ws")
            .header("connection", "upgrade")
            .header("upgrade", first);
        if let Some(second) = second {
            b = b.header("upgrade", second);
        }
        let p = parts(b);
        assert!(
            matches!(view(&p), Err(Rejection::Upgrade(_))),
            "{first} / {second:?} must be refused"
        );
        assert!(!wants_upgrade(p.version, &p.headers));
    }
    let mut ok = http::HeaderMap::new();
    ok.insert("upgrade", http::HeaderValue::from_static("WebSocket"));
    assert!(switches_to_websocket(&ok));
    ok.append("upgrade", http::HeaderValue::from_static("h2c"));
    assert!(!switches_to_websocket(&ok));
    let mut h2c_101 = http::HeaderMap::new();
    h2c_101.insert("upgrade", http::HeaderValue::from_static("h2c"));
    assert!(!switches_to_websocket(&h2c_101));
    let grpc = parts(get("/s/M").header("content-type", "application/grpc+proto"));
    assert!(is_grpc(&grpc.headers));
    assert!(!is_grpc(
        &parts(get("/").header("content-type", "application/grpcx")).headers
    ));
}
