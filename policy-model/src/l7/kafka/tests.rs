use super::*;

fn rule(role: &str, api_key: &str, version: &str, client: &str, topic: &str) -> KafkaRule {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    KafkaRule {
        role: opt(role),
        api_key: opt(api_key),
        api_version: opt(version),
        client_id: opt(client),
        topic: opt(topic),
    }
}

fn set(rules: &[KafkaRule]) -> KafkaRuleSet {
    KafkaRuleSet::compile(rules).expect("valid rules")
}

fn req<'a>(key: i16, topics: &'a [&'a str]) -> KafkaRequest<'a> {
    KafkaRequest {
        api_key: key,
        api_version: 0,
        client_id: None,
        topics,
    }
}

fn key(name: &str) -> i16 {
    api_key_by_name(name).expect("known key")
}

#[test]
fn api_key_table_is_dense_and_unique() {
    for (i, (number, name)) in API_KEYS.iter().enumerate() {
        assert_eq!(*number as usize, i, "{name}");
        assert_eq!(api_key_by_name(name), Some(*number));
        assert_eq!(api_key_name(*number), Some(*name));
    }
    assert_eq!(API_KEYS.len(), 93);
    assert_eq!(api_key_name(93), None);
    assert_eq!(api_key_name(-1), None);
}

#[test]
fn api_key_names_are_case_insensitive_with_cilium_spellings() {
    assert_eq!(api_key_by_name("produce"), Some(0));
    assert_eq!(api_key_by_name("FETCH"), Some(1));
    assert_eq!(api_key_by_name("listoffsets"), Some(2));
    assert_eq!(api_key_by_name("offsets"), Some(2));
    assert_eq!(api_key_by_name("Metadata"), Some(3));
    assert_eq!(api_key_by_name("offsetcommit"), Some(8));
    assert_eq!(api_key_by_name("offsetfetch"), Some(9));
    assert_eq!(api_key_by_name("findcoordinator"), Some(10));
    assert_eq!(api_key_by_name("joingroup"), Some(11));
    assert_eq!(api_key_by_name("heartbeat"), Some(12));
    assert_eq!(api_key_by_name("leavegroup"), Some(13));
    assert_eq!(api_key_by_name("syncgroup"), Some(14));
    assert_eq!(api_key_by_name("apiversions"), Some(18));
    assert_eq!(api_key_by_name("createtopics"), Some(19));
    assert_eq!(api_key_by_name("initproducerid"), Some(22));
    assert_eq!(api_key_by_name("alterconfigs"), Some(33));
    assert_eq!(api_key_by_name("electpreferredleaders"), Some(43));
    assert_eq!(api_key_by_name("AlterIsr"), Some(56));
    assert_eq!(api_key_by_name("consumergroupheartbeat"), Some(68));
    assert_eq!(api_key_by_name("listclientmetricsresources"), Some(74));
    assert_eq!(api_key_by_name("listconfigresources"), Some(74));
    assert_eq!(api_key_by_name("sharefetch"), Some(78));
    assert_eq!(api_key_by_name("deletesharegroupoffsets"), Some(92));
    assert_eq!(api_key_by_name("list_offsets"), None);
    assert_eq!(api_key_by_name("createtopic"), None);
    assert_eq!(api_key_by_name(""), None);
}

#[test]
fn empty_rule_matches_everything() {
    let s = set(&[KafkaRule::default()]);
    for k in [0, 1, 3, 18, 42, 92, 500] {
        assert_eq!(
            s.judge(&req(k, &["any"])),
            KafkaVerdict::Allowed { rule: 0 }
        );
        assert_eq!(s.judge(&req(k, &[])), KafkaVerdict::Allowed { rule: 0 });
    }
}

#[test]
fn empty_rule_set_denies() {
    let s = set(&[]);
    assert!(s.is_empty());
    assert_eq!(
        s.judge(&req(0, &["t"])),
        KafkaVerdict::Denied { topic: None }
    );
}

#[test]
fn produce_role_expands_to_produce_metadata_apiversions() {
    let s = set(&[rule("produce", "", "", "", "")]);
    for k in 0..=92 {
        let allowed = s.judge(&req(k, &[])).is_allowed();
        assert_eq!(allowed, [0, 3, 18].contains(&k), "key {k}");
    }
}

#[test]
fn consume_role_expands_to_cilium_set() {
    let s = set(&[rule("Consume", "", "", "", "")]);
    let expected = [1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18];
    for k in 0..=92 {
        assert_eq!(
            s.judge(&req(k, &[])).is_allowed(),
            expected.contains(&k),
            "key {k}"
        );
    }
}

#[test]
fn role_does_not_include_modern_producer_keys() {
    // Cilium's fixed sets: idempotent producers also need InitProducerId.
    let s = set(&[rule("produce", "", "", "", "orders")]);
    assert!(!s.judge(&req(key("initproducerid"), &[])).is_allowed());
}

#[test]
fn api_key_rule_matches_only_that_key() {
    let s = set(&[rule("", "Fetch", "", "", "")]);
    assert!(s.judge(&req(1, &["t"])).is_allowed());
    assert!(!s.judge(&req(0, &["t"])).is_allowed());
}

#[test]
fn api_version_must_be_equal() {
    let s = set(&[rule("", "produce", "3", "", "")]);
    let mut r = req(0, &["t"]);
    r.api_version = 3;
    assert!(s.judge(&r).is_allowed());
    r.api_version = 4;
    assert_eq!(s.judge(&r), KafkaVerdict::Denied { topic: None });
}

#[test]
fn client_id_must_be_equal() {
    let s = set(&[rule("", "", "", "billing", "")]);
    let mut r = req(0, &["t"]);
    assert!(!s.judge(&r).is_allowed(), "null client id");
    r.client_id = Some("billing");
    assert!(s.judge(&r).is_allowed());
    r.client_id = Some("Billing");
    assert!(!s.judge(&r).is_allowed(), "client id is case-sensitive");
}

#[test]
fn client_id_also_checked_for_topicless_requests() {
    let s = set(&[rule("consume", "", "", "c1", "t")]);
    let mut r = req(key("heartbeat"), &[]);
    assert!(!s.judge(&r).is_allowed());
    r.client_id = Some("c1");
    assert!(s.judge(&r).is_allowed());
}

#[test]
fn topic_rule_allows_only_its_topic() {
    let s = set(&[rule("produce", "", "", "", "orders")]);
    assert_eq!(
        s.judge(&req(0, &["orders"])),
        KafkaVerdict::Allowed { rule: 0 }
    );
    assert_eq!(
        s.judge(&req(0, &["payments"])),
        KafkaVerdict::Denied {
            topic: Some("payments")
        }
    );
}

#[test]
fn topic_is_case_sensitive_and_exact() {
    let s = set(&[rule("produce", "", "", "", "orders")]);
    for t in ["Orders", "orders2", "order", "orders."] {
        assert!(!s.judge(&req(0, &[t])).is_allowed(), "{t}");
    }
}

#[test]
fn multi_topic_request_with_one_disallowed_topic_is_denied() {
    let s = set(&[
        rule("produce", "", "", "", "orders"),
        rule("produce", "", "", "", "audit"),
    ]);
    assert_eq!(
        s.judge(&req(0, &["orders", "audit"])),
        KafkaVerdict::Allowed { rule: 1 }
    );
    assert_eq!(
        s.judge(&req(0, &["orders", "secrets", "audit"])),
        KafkaVerdict::Denied {
            topic: Some("secrets")
        }
    );
}

#[test]
fn topics_may_be_allowed_by_different_rules_and_keys_must_match_each() {
    let s = set(&[
        rule("", "produce", "", "", "a"),
        rule("", "fetch", "", "", "b"),
    ]);
    // A produce to a and b: b is only allowed for fetch.
    assert_eq!(
        s.judge(&req(0, &["a", "b"])),
        KafkaVerdict::Denied { topic: Some("b") }
    );
    assert_eq!(s.judge(&req(1, &["b"])), KafkaVerdict::Allowed { rule: 1 });
}

#[test]
fn repeated_topics_are_covered_together() {
    let s = set(&[rule("produce", "", "", "", "t")]);
    assert_eq!(
        s.judge(&req(0, &["t", "t", "t"])),
        KafkaVerdict::Allowed { rule: 0 }
    );
}

#[test]
fn rule_without_topic_allows_the_whole_request() {
    let s = set(&[
        rule("produce", "", "", "", "a"),
        rule("", "produce", "", "", ""),
    ]);
    assert_eq!(
        s.judge(&req(0, &["a", "z"])),
        KafkaVerdict::Allowed { rule: 1 }
    );
}

#[test]
fn topicless_requests_are_not_constrained_by_topic() {
    let s = set(&[rule("consume", "", "", "", "orders")]);
    for name in [
        "apiversions",
        "findcoordinator",
        "heartbeat",
        "joingroup",
        "metadata",
        "fetch",
    ] {
        assert_eq!(
            s.judge(&req(key(name), &[])),
            KafkaVerdict::Allowed { rule: 0 },
            "{name}"
        );
    }
    // ...but still by key.
    assert!(!s.judge(&req(key("produce"), &[])).is_allowed());
    assert!(!s.judge(&req(key("deletetopics"), &[])).is_allowed());
}

#[test]
fn denied_without_any_key_match_names_no_topic() {
    let s = set(&[rule("", "fetch", "", "", "a")]);
    assert_eq!(
        s.judge(&req(0, &["a"])),
        KafkaVerdict::Denied { topic: None }
    );
}

#[test]
fn first_allowing_rule_is_reported() {
    let s = set(&[
        rule("", "fetch", "", "", ""),
        rule("consume", "", "", "", ""),
        KafkaRule::default(),
    ]);
    assert_eq!(s.judge(&req(1, &["x"])), KafkaVerdict::Allowed { rule: 0 });
    assert_eq!(s.judge(&req(2, &["x"])), KafkaVerdict::Allowed { rule: 1 });
    assert_eq!(s.judge(&req(19, &["x"])), KafkaVerdict::Allowed { rule: 2 });
}

#[test]
fn role_and_api_key_together_is_an_error() {
    let err = KafkaRuleSet::compile(&[rule("produce", "produce", "", "", "")]).unwrap_err();
    assert!(
        matches!(err, L7RuleError::ConflictingFields { rule: 0, .. }),
        "{err}"
    );
}

#[test]
fn unknown_role_is_an_error() {
    let err =
        KafkaRuleSet::compile(&[KafkaRule::default(), rule("admin", "", "", "", "")]).unwrap_err();
    assert_eq!(err.rule(), 1);
    assert!(
        err.to_string().contains("\"produce\" or \"consume\""),
        "{err}"
    );
}

#[test]
fn unknown_api_key_is_an_error() {
    let err = KafkaRuleSet::compile(&[rule("", "createtopic", "", "", "")]).unwrap_err();
    assert!(
        matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "apiKey"),
        "{err}"
    );
}

#[test]
fn bad_api_versions_are_errors() {
    for v in ["x", "-1", "1.0", "32768", "99999999999", " 1"] {
        let err = KafkaRuleSet::compile(&[rule("", "", v, "", "")]).unwrap_err();
        assert!(
            matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "apiVersion"),
            "{v}: {err}"
        );
    }
    assert!(KafkaRuleSet::compile(&[rule("", "", "32767", "", "")]).is_ok());
    assert!(KafkaRuleSet::compile(&[rule("", "", "0", "", "")]).is_ok());
}

#[test]
fn bad_topics_are_errors() {
    let long = "t".repeat(256);
    for t in [long.as_str(), "a b", "a/b", "a*", "caf\u{e9}", "a\\b"] {
        let err = KafkaRuleSet::compile(&[rule("", "", "", "", t)]).unwrap_err();
        assert!(
            matches!(err, L7RuleError::InvalidValue { ref field, .. } if field == "topic"),
            "{t}: {err}"
        );
    }
    let max = "t".repeat(255);
    assert!(KafkaRuleSet::compile(&[rule("", "", "", "", &max)]).is_ok());
    assert!(KafkaRuleSet::compile(&[rule("", "", "", "", "A-z_0.9")]).is_ok());
}

#[test]
fn empty_strings_count_as_unset() {
    let r = KafkaRule {
        role: Some(String::new()),
        api_key: Some(String::new()),
        api_version: Some(String::new()),
        client_id: Some(String::new()),
        topic: Some(String::new()),
    };
    let s = set(&[r]);
    assert!(s.judge(&req(42, &["x"])).is_allowed());
}

/// Cilium's `MatchesRule`, transcribed over compiled rules: the allow
/// decision must agree on random requests.
fn reference(rules: &[KafkaRule], req: &KafkaRequest<'_>) -> bool {
    let compiled: Vec<CompiledKafkaRule> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(i, r).unwrap())
        .collect();
    let mut remaining: std::collections::HashSet<&str> = req.topics.iter().copied().collect();
    for rule in &compiled {
        match &rule.topic {
            Some(topic) if !req.topics.is_empty() => {
                if remaining.contains(topic.as_str()) && rule.matches_request(req) {
                    remaining.remove(topic.as_str());
                    if remaining.is_empty() {
                        return true;
                    }
                }
            }
            _ => {
                if rule.matches_request(req) {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn judge_agrees_with_cilium_transcription_on_random_inputs() {
    let mut state = 0x1234_5678_9ABC_DEF1_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let roles = ["", "", "produce", "consume"];
    let keys = ["", "", "produce", "fetch", "metadata", "heartbeat"];
    let versions = ["", "", "1", "2"];
    let clients = ["", "", "c1"];
    let topics = ["", "a", "b", "c"];
    for _ in 0..2000 {
        let rules: Vec<KafkaRule> = (0..1 + next(4))
            .map(|_| {
                let role = roles[next(roles.len())];
                let key = if role.is_empty() {
                    keys[next(keys.len())]
                } else {
                    ""
                };
                rule(
                    role,
                    key,
                    versions[next(versions.len())],
                    clients[next(clients.len())],
                    topics[next(topics.len())],
                )
            })
            .collect();
        let s = set(&rules);
        let req_topics: Vec<&str> = (0..next(4)).map(|_| topics[1 + next(3)]).collect();
        let req = KafkaRequest {
            api_key: [0, 1, 3, 12, 19][next(5)],
            api_version: [1, 2][next(2)],
            client_id: [None, Some("c1"), Some("c2")][next(3)],
            topics: &req_topics,
        };
        assert_eq!(
            s.judge(&req).is_allowed(),
            reference(&rules, &req),
            "{req:?} {rules:?}"
        );
    }
}
