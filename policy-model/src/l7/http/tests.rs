use super::fields::literal_alternatives;
use super::*;
use crate::api::{HeaderMatch, MismatchAction};
use regex::Regex;

fn rule() -> HttpRule {
    HttpRule::default()
}

fn method(m: &str) -> HttpRule {
    HttpRule {
        method: Some(m.into()),
        ..rule()
    }
}

fn path(p: &str) -> HttpRule {
    HttpRule {
        path: Some(p.into()),
        ..rule()
    }
}

fn host(h: &str) -> HttpRule {
    HttpRule {
        host: Some(h.into()),
        ..rule()
    }
}

fn headers(h: &[&str]) -> HttpRule {
    HttpRule {
        headers: h.iter().map(|s| s.to_string()).collect(),
        ..rule()
    }
}

fn header_match(name: &str, value: Option<&str>, mismatch: Option<MismatchAction>) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: value.map(str::to_string),
        mismatch,
        secret: None,
    }
}

fn with_matches(matches: Vec<HeaderMatch>) -> HttpRule {
    HttpRule {
        header_matches: matches,
        ..rule()
    }
}

fn set(rules: &[HttpRule]) -> HttpRuleSet {
    HttpRuleSet::compile(rules).expect("valid rules")
}

fn get(p: &str) -> HttpRequest<'_> {
    HttpRequest {
        method: "GET",
        path: p,
        authority: Some("example.com"),
        headers: &[],
    }
}

/// The index of the allowing rule, or `None` when denied.
fn allowed_by(s: &HttpRuleSet, req: &HttpRequest<'_>) -> Option<usize> {
    match s.judge(req) {
        HttpVerdict::Allowed { rule, .. } => Some(rule),
        HttpVerdict::Denied => None,
    }
}

fn actions<'s>(s: &'s HttpRuleSet, req: &HttpRequest<'_>) -> Vec<HeaderAction<'s>> {
    match s.judge(req) {
        HttpVerdict::Allowed { actions, .. } => actions,
        HttpVerdict::Denied => panic!("expected the request to be allowed"),
    }
}

#[test]
fn empty_rule_matches_everything() {
    let s = set(&[rule()]);
    let req = HttpRequest {
        method: "BREW",
        path: "/whatever?x=1",
        authority: None,
        headers: &[("a", "b")],
    };
    assert_eq!(allowed_by(&s, &req), Some(0));
}

#[test]
fn empty_rule_set_denies() {
    let s = set(&[]);
    assert!(s.is_empty());
    assert_eq!(s.judge(&get("/")), HttpVerdict::Denied);
}

#[test]
fn empty_strings_are_unset() {
    let s = set(&[HttpRule {
        method: Some(String::new()),
        path: Some(String::new()),
        host: Some(String::new()),
        ..rule()
    }]);
    assert_eq!(allowed_by(&s, &get("/anything")), Some(0));
}

#[test]
fn path_is_anchored_at_both_ends() {
    let s = set(&[path("/public")]);
    assert_eq!(allowed_by(&s, &get("/public")), Some(0));
    for p in [
        "/publicity",
        "/x/public",
        "/public/",
        "public",
        "//public",
        "/public\n",
    ] {
        assert_eq!(allowed_by(&s, &get(p)), None, "{p:?}");
    }
}

#[test]
fn regex_path_is_anchored_too() {
    let s = set(&[path("/api/v[0-9]+/users")]);
    assert_eq!(allowed_by(&s, &get("/api/v12/users")), Some(0));
    assert_eq!(allowed_by(&s, &get("/api/v12/users/1")), None);
    assert_eq!(allowed_by(&s, &get("/x/api/v1/users")), None);
}

#[test]
fn alternation_is_anchored_as_a_whole() {
    let s = set(&[path("/a|/b"), method("GET|HEAD")]);
    assert_eq!(allowed_by(&s, &get("/a")), Some(0));
    assert_eq!(allowed_by(&s, &get("/b")), Some(0));
    // `^/a|/b$` would match these.
    let mut post = get("/a/c");
    post.method = "POST";
    assert_eq!(allowed_by(&s, &post), None);
    post.path = "/c/b";
    assert_eq!(allowed_by(&s, &post), None);
    let mut getx = get("/x");
    getx.method = "GETX";
    assert_eq!(allowed_by(&s, &getx), None);
}

#[test]
fn path_includes_the_query_string() {
    let s = set(&[path("/public"), path("/search\\?q=[a-z]+")]);
    assert_eq!(allowed_by(&s, &get("/public?debug=1")), None);
    assert_eq!(allowed_by(&s, &get("/search?q=cats")), Some(1));
    assert_eq!(allowed_by(&s, &get("/search?q=cats&admin=1")), None);
    let s = set(&[path("/public.*")]);
    assert_eq!(allowed_by(&s, &get("/public?debug=1")), Some(0));
}

#[test]
fn query_matching_is_case_sensitive() {
    let s = set(&[path("/search\\?Q=1")]);
    assert_eq!(allowed_by(&s, &get("/search?Q=1")), Some(0));
    assert_eq!(allowed_by(&s, &get("/search?q=1")), None);
    assert_eq!(allowed_by(&s, &get("/SEARCH?Q=1")), None);
}

#[test]
fn path_is_not_normalised() {
    let s = set(&[path("/public/.*"), path("/admin")]);
    assert_eq!(allowed_by(&s, &get("/public/../admin")), Some(0));
    assert_eq!(allowed_by(&s, &get("/public/%2e%2e/admin")), Some(0));
    let admin_only = set(&[path("/admin")]);
    assert_eq!(allowed_by(&admin_only, &get("/public/../admin")), None);
    assert_eq!(allowed_by(&admin_only, &get("/%61dmin")), None);
    assert_eq!(allowed_by(&admin_only, &get("/admin/")), None);
}

#[test]
fn method_is_anchored_and_case_sensitive() {
    let s = set(&[method("GET")]);
    for m in ["GETX", "XGET", "get", "Get", ""] {
        let mut req = get("/");
        req.method = m;
        assert_eq!(allowed_by(&s, &req), None, "{m:?}");
    }
    assert_eq!(allowed_by(&s, &get("/")), Some(0));
}

#[test]
fn regex_flags_work() {
    let s = set(&[method("(?i)get")]);
    let mut req = get("/");
    req.method = "gEt";
    assert_eq!(allowed_by(&s, &req), Some(0));
}

#[test]
fn escaped_literals_match_themselves() {
    let s = set(&[path("/a\\.b"), path("/c\\-d")]);
    assert_eq!(allowed_by(&s, &get("/a.b")), Some(0));
    assert_eq!(allowed_by(&s, &get("/axb")), None);
    assert_eq!(allowed_by(&s, &get("/c-d")), Some(1));
}

#[test]
fn host_is_a_whole_match_on_the_authority() {
    let s = set(&[host("api\\.example\\.com(:[0-9]+)?")]);
    let mut req = get("/");
    for (authority, ok) in [
        (Some("api.example.com"), true),
        (Some("api.example.com:8080"), true),
        (Some("api.example.com.evil.net"), false),
        (Some("xapi.example.com"), false),
        (Some("apixexample.com"), false),
        (None, false),
    ] {
        req.authority = authority;
        assert_eq!(allowed_by(&s, &req).is_some(), ok, "{authority:?}");
    }
}

#[test]
fn fields_of_one_rule_are_anded() {
    let s = set(&[HttpRule {
        method: Some("POST".into()),
        path: Some("/upload".into()),
        host: Some("files\\.example\\.com".into()),
        ..rule()
    }]);
    let mut req = HttpRequest {
        method: "POST",
        path: "/upload",
        authority: Some("files.example.com"),
        headers: &[],
    };
    assert_eq!(allowed_by(&s, &req), Some(0));
    req.method = "GET";
    assert_eq!(allowed_by(&s, &req), None);
    req.method = "POST";
    req.authority = Some("example.com");
    assert_eq!(allowed_by(&s, &req), None);
}

#[test]
fn rules_are_ored_and_the_first_match_is_reported() {
    let s = set(&[method("POST"), path("/a"), path("/a|/b"), rule()]);
    assert_eq!(allowed_by(&s, &get("/a")), Some(1));
    assert_eq!(allowed_by(&s, &get("/b")), Some(2));
    assert_eq!(allowed_by(&s, &get("/c")), Some(3));
}

#[test]
fn header_presence_is_case_insensitive_on_names() {
    let s = set(&[headers(&["X-Token"])]);
    let req = |h: &'static [(&'static str, &'static str)]| HttpRequest {
        headers: h,
        ..get("/")
    };
    assert_eq!(allowed_by(&s, &req(&[("x-token", "")])), Some(0));
    assert_eq!(allowed_by(&s, &req(&[("X-TOKEN", "abc")])), Some(0));
    assert_eq!(allowed_by(&s, &req(&[("X-Tokens", "abc")])), None);
    assert_eq!(allowed_by(&s, &req(&[])), None);
}

#[test]
fn header_value_forms_and_case_sensitive_values() {
    for entry in ["X-Role: admin", "X-Role admin", "x-role:: admin"] {
        let s = set(&[headers(&[entry])]);
        let ok = [("x-role", "admin")];
        let upper = [("X-Role", "Admin")];
        let other = [("X-Role", "admins")];
        assert_eq!(
            allowed_by(
                &s,
                &HttpRequest {
                    headers: &ok,
                    ..get("/")
                }
            ),
            Some(0),
            "{entry}"
        );
        assert_eq!(
            allowed_by(
                &s,
                &HttpRequest {
                    headers: &upper,
                    ..get("/")
                }
            ),
            None,
            "{entry}"
        );
        assert_eq!(
            allowed_by(
                &s,
                &HttpRequest {
                    headers: &other,
                    ..get("/")
                }
            ),
            None,
            "{entry}"
        );
    }
}

#[test]
fn header_value_is_everything_after_the_first_space() {
    let s = set(&[headers(&["X-Agent: curl 8.0"])]);
    let h = [("x-agent", "curl 8.0")];
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &h,
                ..get("/")
            }
        ),
        Some(0)
    );
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let s = set(&[headers(&["X-Role: admin"])]);
    let twice = [("X-Role", "admin"), ("x-role", "user")];
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &twice,
                ..get("/")
            }
        ),
        None
    );
    let s = set(&[headers(&["X-Role: admin,user"])]);
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &twice,
                ..get("/")
            }
        ),
        Some(0)
    );
}

#[test]
fn pseudo_headers_and_host_read_the_request_line() {
    let s = set(&[headers(&[":method GET", "Host: example.com", ":path /x"])]);
    assert_eq!(allowed_by(&s, &get("/x")), Some(0));
    assert_eq!(allowed_by(&s, &get("/y")), None);
    let mut no_host = get("/x");
    no_host.authority = None;
    assert_eq!(allowed_by(&s, &no_host), None);
}

#[test]
fn bad_header_syntax_is_an_error() {
    for bad in ["", "X-Token:", "X@Y: v", ":scheme https", "X(y) 1"] {
        let err = HttpRuleSet::compile(&[rule(), headers(&["ok", bad])]).unwrap_err();
        assert_eq!(err.rule(), 1, "{bad:?}");
        assert!(
            matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "headers[1]"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn invalid_regex_error_names_rule_and_field() {
    let err = HttpRuleSet::compile(&[path("/ok"), method("GET"), path("/a(")]).unwrap_err();
    assert!(
        matches!(err, L7RuleError::InvalidRegex { rule: 2, ref field, .. } if field == "path"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("http rule 2, field `path`"),
        "{err}"
    );
    let err = HttpRuleSet::compile(&[method("[")]).unwrap_err();
    assert!(matches!(err, L7RuleError::InvalidRegex { ref field, .. } if field == "method"));
    let err = HttpRuleSet::compile(&[host("a)|(b")]).unwrap_err();
    assert!(matches!(err, L7RuleError::InvalidRegex { ref field, .. } if field == "host"));
}

#[test]
fn header_match_without_mismatch_denies_on_mismatch() {
    let s = set(&[with_matches(vec![header_match(
        "X-Key",
        Some("s3cret"),
        None,
    )])]);
    let good = [("x-key", "s3cret")];
    let bad = [("x-key", "S3CRET")];
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &good,
                ..get("/")
            }
        ),
        Some(0)
    );
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &bad,
                ..get("/")
            }
        ),
        None
    );
    assert_eq!(allowed_by(&s, &get("/")), None);
    // No value: presence only.
    let s = set(&[with_matches(vec![header_match("X-Key", None, None)])]);
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &bad,
                ..get("/")
            }
        ),
        Some(0)
    );
    assert_eq!(allowed_by(&s, &get("/")), None);
}

#[test]
fn mismatch_log_allows_and_reports() {
    let s = set(&[with_matches(vec![header_match(
        "X-Key",
        Some("v"),
        Some(MismatchAction::Log),
    )])]);
    let acts = actions(&s, &get("/"));
    assert_eq!(
        acts,
        vec![HeaderAction {
            rule: 0,
            action: MismatchAction::Log,
            name: "x-key",
            value: "v",
            secret: false
        }]
    );
    let good = [("X-Key", "v")];
    assert!(
        actions(
            &s,
            &HttpRequest {
                headers: &good,
                ..get("/")
            }
        )
        .is_empty()
    );
}

#[test]
fn mismatch_add_and_replace() {
    let s = set(&[with_matches(vec![
        header_match("X-A", Some("1"), Some(MismatchAction::Add)),
        header_match("X-R", Some("2"), Some(MismatchAction::Replace)),
    ])]);
    let wrong = [("x-a", "0"), ("x-r", "0")];
    let acts = actions(
        &s,
        &HttpRequest {
            headers: &wrong,
            ..get("/")
        },
    );
    assert_eq!(acts.len(), 2);
    assert_eq!(
        (acts[0].action, acts[0].name, acts[0].value),
        (MismatchAction::Add, "x-a", "1")
    );
    assert_eq!(
        (acts[1].action, acts[1].name, acts[1].value),
        (MismatchAction::Replace, "x-r", "2")
    );
    // Absent headers: added / set as well.
    assert_eq!(actions(&s, &get("/")).len(), 2);
}

#[test]
fn mismatch_delete_only_removes_a_wrong_value() {
    let s = set(&[with_matches(vec![header_match(
        "X-D",
        Some("ok"),
        Some(MismatchAction::Delete),
    )])]);
    let wrong = [("x-d", "bad")];
    let acts = actions(
        &s,
        &HttpRequest {
            headers: &wrong,
            ..get("/")
        },
    );
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].action, MismatchAction::Delete);
    assert!(
        actions(&s, &get("/")).is_empty(),
        "absent: nothing to delete"
    );
    let right = [("x-d", "ok")];
    assert!(
        actions(
            &s,
            &HttpRequest {
                headers: &right,
                ..get("/")
            }
        )
        .is_empty()
    );
    // Presence-only DELETE never acts.
    let s = set(&[with_matches(vec![header_match(
        "X-D",
        None,
        Some(MismatchAction::Delete),
    )])]);
    assert!(actions(&s, &get("/")).is_empty());
}

#[test]
fn actions_of_every_matching_rule_are_collected() {
    let s = set(&[
        HttpRule {
            path: Some("/a".into()),
            header_matches: vec![header_match("X-1", Some("1"), Some(MismatchAction::Add))],
            ..rule()
        },
        path("/b"),
        with_matches(vec![header_match(
            "X-2",
            Some("2"),
            Some(MismatchAction::Log),
        )]),
    ]);
    match s.judge(&get("/a")) {
        HttpVerdict::Allowed { rule, actions } => {
            assert_eq!(rule, 0);
            let got: Vec<_> = actions.iter().map(|a| (a.rule, a.name)).collect();
            assert_eq!(got, vec![(0, "x-1"), (2, "x-2")]);
        }
        HttpVerdict::Denied => panic!("denied"),
    }
    match s.judge(&get("/b")) {
        HttpVerdict::Allowed { rule, actions } => {
            assert_eq!(rule, 1);
            assert_eq!(actions.len(), 1);
            assert_eq!(actions[0].rule, 2);
        }
        HttpVerdict::Denied => panic!("denied"),
    }
}

#[test]
fn header_match_errors() {
    let err =
        HttpRuleSet::compile(&[with_matches(vec![header_match("", Some("v"), None)])]).unwrap_err();
    assert!(
        matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "headerMatches[0].name"),
        "{err}"
    );
    assert!(HttpRuleSet::compile(&[with_matches(vec![header_match("a b", None, None)])]).is_err());
    assert!(
        HttpRuleSet::compile(&[with_matches(vec![header_match(":path", None, None)])]).is_err()
    );
    let mut hm = header_match("X-S", None, None);
    hm.secret = Some(SecretRef {
        namespace: None,
        name: String::new(),
    });
    assert!(HttpRuleSet::compile(&[with_matches(vec![hm])]).is_err());
}

fn secret_match(value: Option<&str>, mismatch: Option<MismatchAction>) -> HttpRule {
    let mut hm = header_match("X-Api-Key", value, mismatch);
    hm.secret = Some(SecretRef {
        namespace: Some("ns".into()),
        name: "api-key".into(),
    });
    with_matches(vec![hm])
}

#[test]
fn secrets_take_precedence_and_unavailable_secrets_fall_back_or_never_match() {
    let resolve = |s: &SecretRef| (s.name == "api-key").then(|| "from-secret".to_string());
    let s =
        HttpRuleSet::compile_with_secrets(&[secret_match(Some("inline"), None)], resolve).unwrap();
    let from_secret = [("x-api-key", "from-secret")];
    let inline = [("x-api-key", "inline")];
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &from_secret,
                ..get("/")
            }
        ),
        Some(0)
    );
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &inline,
                ..get("/")
            }
        ),
        None
    );

    // No secret available: the inline value is the fallback.
    let s = set(&[secret_match(Some("inline"), None)]);
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &inline,
                ..get("/")
            }
        ),
        Some(0)
    );

    // No secret and no value: the rule matches nothing, whatever the action.
    for mismatch in [
        None,
        Some(MismatchAction::Log),
        Some(MismatchAction::Replace),
    ] {
        let s = set(&[secret_match(None, mismatch)]);
        assert_eq!(
            allowed_by(
                &s,
                &HttpRequest {
                    headers: &inline,
                    ..get("/")
                }
            ),
            None
        );
        assert_eq!(allowed_by(&s, &get("/")), None);
    }
}

#[test]
fn secret_values_are_flagged_in_actions() {
    let s = HttpRuleSet::compile_with_secrets(
        &[secret_match(None, Some(MismatchAction::Replace))],
        |_| Some("tok".to_string()),
    )
    .unwrap();
    let acts = actions(&s, &get("/"));
    assert_eq!(acts.len(), 1);
    assert!(acts[0].secret);
    assert_eq!(acts[0].value, "tok");
}

#[test]
fn non_ascii_values_never_match_a_regex() {
    let s = set(&[path("/user/\\d+"), path("/caf."), path("/caf\u{e9}")]);
    assert_eq!(allowed_by(&s, &get("/user/42")), Some(0));
    // `\d` is Unicode-aware in the regex crate but ASCII in RE2.
    assert_eq!(allowed_by(&s, &get("/user/\u{663}")), None);
    assert_eq!(allowed_by(&s, &get("/cafe")), Some(1));
    // A literal still matches exactly.
    assert_eq!(allowed_by(&s, &get("/caf\u{e9}")), Some(2));
}

#[test]
fn literal_detection() {
    let lit = |p: &str| literal_alternatives(p);
    assert_eq!(lit("GET"), Some(vec!["GET".to_string()]));
    assert_eq!(
        lit("GET|POST"),
        Some(vec!["GET".to_string(), "POST".to_string()])
    );
    assert_eq!(lit("/a\\.b\\-c"), Some(vec!["/a.b-c".to_string()]));
    assert_eq!(lit("a|"), Some(vec!["a".to_string(), String::new()]));
    for not_literal in [
        "(GET)", "GET.*", "a+", "[a]", "^a", "a$", "a{2}", "\\d", "\\<a", "a?",
    ] {
        assert_eq!(lit(not_literal), None, "{not_literal}");
    }
}

#[test]
fn many_rules_are_indexed_correctly() {
    let mut rules = Vec::new();
    for i in 0..1000 {
        rules.push(match i % 4 {
            0 => HttpRule {
                method: Some("GET".into()),
                path: Some(format!("/api/v1/items/{i}")),
                ..rule()
            },
            1 => path(&format!("/svc{i}/.*")),
            2 => HttpRule {
                method: Some("POST|PUT".into()),
                path: Some(format!("/upload/{i}")),
                ..rule()
            },
            _ => HttpRule {
                path: Some(format!("/h/{i}")),
                headers: vec![format!("X-Id: {i}")],
                ..rule()
            },
        });
    }
    let s = set(&rules);
    assert_eq!(s.len(), 1000);
    assert_eq!(allowed_by(&s, &get("/api/v1/items/400")), Some(400));
    assert_eq!(allowed_by(&s, &get("/api/v1/items/401")), None);
    assert_eq!(allowed_by(&s, &get("/svc999/x")), None);
    assert_eq!(allowed_by(&s, &get("/svc997/x?y")), Some(997));
    let mut put = get("/upload/998");
    put.method = "PUT";
    assert_eq!(allowed_by(&s, &put), Some(998));
    let id = [("x-id", "999")];
    assert_eq!(
        allowed_by(
            &s,
            &HttpRequest {
                headers: &id,
                ..get("/h/999")
            }
        ),
        Some(999)
    );
    assert_eq!(allowed_by(&s, &get("/h/999")), None);
}

/// The obviously-correct path: every rule on its own, in order, with its
/// own anchored regexes.
struct Reference<'r> {
    rules: &'r [HttpRule],
    /// Per rule: method, path and host regexes (`None`: unset).
    regexes: Vec<[Option<Regex>; 3]>,
}

impl<'r> Reference<'r> {
    fn new(rules: &'r [HttpRule]) -> Self {
        let compile = |p: &Option<String>| {
            p.as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| Regex::new(&format!("^(?:{p})$")).unwrap())
        };
        let regexes = rules
            .iter()
            .map(|r| [compile(&r.method), compile(&r.path), compile(&r.host)])
            .collect();
        Reference { rules, regexes }
    }

    fn judge(&self, req: &HttpRequest<'_>) -> Option<usize> {
        fn field_ok(re: &Option<Regex>, value: Option<&str>) -> bool {
            let Some(re) = re else {
                return true;
            };
            let Some(v) = value else {
                return false;
            };
            if v.is_ascii() {
                return re.is_match(v);
            }
            // Non-ASCII values only match literal patterns.
            let source = &re.as_str()[4..re.as_str().len() - 2];
            literal_alternatives(source).is_some_and(|l| l.iter().any(|l| l == v))
        }
        fn header(req: &HttpRequest<'_>, name: &str) -> Option<String> {
            match name.to_ascii_lowercase().as_str() {
                ":method" => return Some(req.method.to_string()),
                ":path" => return Some(req.path.to_string()),
                ":authority" | "host" => return req.authority.map(str::to_string),
                _ => {}
            }
            let values: Vec<&str> = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        }
        self.rules
            .iter()
            .zip(&self.regexes)
            .position(|(r, [m, p, h])| {
                field_ok(m, Some(req.method))
                    && field_ok(p, Some(req.path))
                    && field_ok(h, req.authority)
                    && r.headers.iter().all(|e| match e.split_once(' ') {
                        Some((n, v)) => header(req, n.trim_end_matches(':')).as_deref() == Some(v),
                        None => header(req, e).is_some(),
                    })
                    && r.header_matches.iter().all(|m| {
                        m.mismatch.is_some()
                            || match m.value.as_deref().filter(|v| !v.is_empty()) {
                                Some(v) => header(req, &m.name).as_deref() == Some(v),
                                None => header(req, &m.name).is_some(),
                            }
                    })
            })
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn maybe(&mut self, items: &[&str]) -> Option<String> {
        (self.below(3) != 0).then(|| self.pick(items).to_string())
    }
}

#[test]
fn indexed_judge_agrees_with_reference_on_random_inputs() {
    let method_patterns = [
        "GET",
        "GET|POST",
        "(GET|PUT)",
        "P.*",
        "",
        "[A-Z]+",
        "DELETE",
        "(?i)get",
    ];
    let path_patterns = [
        "/public",
        "/public/.*",
        "/api/v1/users",
        "/api/v[0-9]+/.*",
        "/a\\.b",
        "/x|/y",
        "/admin",
        ".*\\?debug=1",
        "/search\\?q=.*",
        "/caf\u{e9}",
        "/\\d+",
        "",
        "/",
    ];
    let host_patterns = [
        "example\\.com",
        ".*\\.example\\.com",
        "api\\.example\\.com(:8080)?",
        "EXAMPLE.com",
    ];
    let header_entries = [
        "X-Token",
        "X-Token: abc",
        "x-token abc",
        "X-Role: admin",
        "Host: example.com",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "get", "PATCH", "GETPOST"];
    let paths = [
        "/public",
        "/publicity",
        "/x/public",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/api/v1/users",
        "/api/v2/users?x=1",
        "/a.b",
        "/axb",
        "/x",
        "/y",
        "/admin?debug=1",
        "/search?q=cat",
        "/",
        "/caf\u{e9}",
        "/42",
        "/\u{663}",
        "/admin",
    ];
    let authorities = [
        "example.com",
        "api.example.com",
        "api.example.com:8080",
        "evil.com",
        "EXAMPLE.com",
    ];
    let header_sets: [&[(&str, &str)]; 6] = [
        &[],
        &[("x-token", "abc")],
        &[("X-TOKEN", "ABC")],
        &[("X-Role", "admin"), ("x-token", "abc")],
        &[("x-role", "admin"), ("x-role", "user")],
        &[("x-token", "")],
    ];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for round in 0..300 {
        let count = 1 + rng.below(if round % 10 == 0 { 150 } else { 8 });
        let rules: Vec<HttpRule> = (0..count)
            .map(|_| HttpRule {
                method: rng.maybe(&method_patterns),
                path: rng.maybe(&path_patterns),
                host: if rng.below(3) == 0 {
                    Some(rng.pick(&host_patterns).to_string())
                } else {
                    None
                },
                headers: (0..rng.below(3))
                    .map(|_| rng.pick(&header_entries).to_string())
                    .collect(),
                header_matches: if rng.below(5) == 0 {
                    vec![header_match("X-Role", Some("admin"), None)]
                } else {
                    Vec::new()
                },
            })
            .collect();
        let s = set(&rules);
        let reference = Reference::new(&rules);
        for _ in 0..50 {
            let req = HttpRequest {
                method: rng.pick(&methods),
                path: rng.pick(&paths),
                authority: if rng.below(6) == 0 {
                    None
                } else {
                    Some(rng.pick(&authorities))
                },
                headers: header_sets[rng.below(header_sets.len())],
            };
            assert_eq!(
                allowed_by(&s, &req),
                reference.judge(&req),
                "{req:?} with {rules:#?}"
            );
        }
    }
}

/// Not a benchmark, a smoke check that 1,000 rules stay cheap; run with
/// `cargo test --release -p policy-model l7::http -- --ignored --nocapture`.
#[test]
#[ignore]
fn thousand_rules_timing() {
    let rules: Vec<HttpRule> = (0..1000)
        .map(|i| match i % 3 {
            0 => HttpRule {
                method: Some("GET".into()),
                path: Some(format!("/api/v1/items/{i}")),
                ..rule()
            },
            1 => HttpRule {
                method: Some("GET|HEAD".into()),
                path: Some(format!("/svc{i}/[a-z0-9]+/.*")),
                ..rule()
            },
            _ => HttpRule {
                path: Some(format!("/h/{i}")),
                headers: vec![format!("X-Id: {i}")],
                ..rule()
            },
        })
        .collect();
    let s = set(&rules);
    let id = [("x-id", "998"), ("user-agent", "curl/8"), ("accept", "*/*")];
    let reqs = [
        get("/api/v1/items/999"),
        get("/svc997/abc/def?x=1"),
        HttpRequest {
            headers: &id,
            ..get("/h/998")
        },
        get("/nothing/matches/this/path"),
    ];
    let all_regex: Vec<HttpRule> = (0..1000)
        .map(|i| path(&format!("/svc{i}/[a-z0-9]+/.*")))
        .collect();
    let all_regex = set(&all_regex);
    let n = 20_000;
    for req in &reqs[1..2] {
        let start = std::time::Instant::now();
        let mut hits = 0;
        for _ in 0..n {
            hits += usize::from(std::hint::black_box(&all_regex).judge(req).is_allowed());
        }
        let per = start.elapsed() / n;
        println!(
            "1000 regexes: {:26} {:?}/request (allowed {hits}/{n})",
            req.path, per
        );
    }
    for req in &reqs {
        let start = std::time::Instant::now();
        let mut hits = 0;
        for _ in 0..n {
            hits += usize::from(std::hint::black_box(&s).judge(req).is_allowed());
        }
        let per = start.elapsed() / n;
        println!("{:40} {:?}/request (allowed {hits}/{n})", req.path, per);
    }
}
