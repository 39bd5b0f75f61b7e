use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

#[test]
fn learning_and_expiry() {
    let mut s = FqdnStore::default();
    assert!(s.learn(
        "API.Example.com",
        &[(ip("10.201.1.1"), Duration::from_secs(0))],
        Duration::ZERO
    ));
    assert!(!s.learn(
        "api.example.com.",
        &[(ip("10.201.1.1"), Duration::from_secs(60))],
        Duration::ZERO
    ));
    assert_eq!(s.len(), 1);
    assert!(s.cache().names.contains_key("api.example.com."));
    // Not expired yet (60 s TTL).
    assert!(s.expire_addresses(&BTreeSet::new()).is_empty());
    // A zero TTL expires at once unless in use.
    s.learn(
        "old.example.com",
        &[(ip("10.201.2.2"), Duration::ZERO)],
        Duration::ZERO,
    );
    let in_use: BTreeSet<IpAddr> = [ip("10.201.2.2")].into();
    assert!(s.expire_addresses(&in_use).is_empty(), "in use: kept");
    assert_eq!(
        s.expire_addresses(&BTreeSet::new()).len(),
        1,
        "idle: dropped"
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn an_address_in_use_lingers_past_its_ttl_until_learned_again() {
    let mut s = FqdnStore::default();
    let a = ip("10.201.2.2");
    s.learn("a.example", &[(a, Duration::ZERO)], Duration::ZERO);
    s.learn(
        "b.example",
        &[(ip("10.201.3.3"), Duration::from_secs(60))],
        Duration::ZERO,
    );
    let in_use: BTreeSet<IpAddr> = [a].into();
    assert!(s.expire_addresses(&in_use).is_empty(), "in use: kept");
    assert_eq!(s.lingering(), [a].into(), "kept, but past its TTL");
    // Learned under a second name with a live TTL: not lingering.
    s.learn("c.example", &[(a, Duration::from_secs(60))], Duration::ZERO);
    assert!(s.lingering().is_empty());
    // Answered again under its first name: not lingering either.
    let mut t = FqdnStore::default();
    t.learn("a.example", &[(a, Duration::ZERO)], Duration::ZERO);
    assert_eq!(t.lingering(), [a].into());
    t.learn("a.example", &[(a, Duration::from_secs(60))], Duration::ZERO);
    assert!(t.lingering().is_empty());
    assert!(t.lingering_at(now_secs() + 61).contains(&a));
}

#[test]
fn names_of_follows_learning_expiry_and_loading() {
    let dir = std::env::temp_dir().join(format!("portcullis-fqdn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("fqdn.json");
    let mut s = FqdnStore::load(&path);
    let shared = ip("10.201.4.4");
    s.learn(
        "a.example",
        &[(shared, Duration::from_secs(60))],
        Duration::ZERO,
    );
    s.learn("b.example", &[(shared, Duration::ZERO)], Duration::ZERO);
    s.learn(
        "c.example",
        &[(ip("10.201.5.5"), Duration::from_secs(60))],
        Duration::ZERO,
    );
    assert_eq!(s.names_of(&shared), ["a.example.", "b.example."]);
    // b's TTL is over: only a still answers for the address.
    s.expire_addresses(&BTreeSet::new());
    assert_eq!(s.names_of(&shared), ["a.example."]);
    assert!(s.names_of(&ip("10.201.6.6")).is_empty());
    s.for_saving().save().expect("save");
    let loaded = FqdnStore::load(&path);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(loaded.names_of(&shared), ["a.example."]);
    assert_eq!(loaded.names_of(&ip("10.201.5.5")), ["c.example."]);
}

#[test]
fn min_ttl_extends_short_answers() {
    let mut s = FqdnStore::default();
    s.learn(
        "a.example",
        &[(ip("10.201.3.3"), Duration::ZERO)],
        Duration::from_secs(3600),
    );
    assert!(s.expire_addresses(&BTreeSet::new()).is_empty());
    assert_eq!(s.len(), 1);
}

#[test]
fn persists() {
    let dir = std::env::temp_dir().join(format!("pc-fqdn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fqdn.json");
    let mut s = FqdnStore::load(&path);
    s.learn(
        "b.example",
        &[(ip("10.201.4.4"), Duration::from_secs(600))],
        Duration::ZERO,
    );
    s.save().expect("save");
    let t = FqdnStore::load(&path);
    assert_eq!(t.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
