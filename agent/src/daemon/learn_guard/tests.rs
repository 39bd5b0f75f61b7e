use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn answer(ips: &[&str]) -> Vec<(IpAddr, Duration)> {
    ips.iter()
        .map(|s| (ip(s), Duration::from_secs(60)))
        .collect()
}

fn guard(per_name: usize, per_endpoint: usize, node: usize) -> LearnGuard {
    let mut g = LearnGuard::new(
        LearnLimits {
            per_name,
            per_endpoint,
            node,
        },
        vec!["10.200.0.0/16".parse().expect("prefix")],
    );
    g.set_node_addresses([ip("10.201.255.254"), ip("fd00:201::fffe")].into());
    let a = [ip("10.200.1.10"), ip("fd00:200::1:10")];
    g.set_endpoints([("t1/a".to_string(), &a[..])].into_iter());
    g
}

#[test]
fn addresses_no_rule_may_select_are_never_learned() {
    let mut g = guard(50, 1000, 10_000);
    let (ok, refused) = g.admit(
        ip("10.200.1.10"),
        "x.allowed.example.",
        &answer(&[
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:10.201.0.1",
            "::10.201.0.1",
            "10.201.255.254",
            "fd00:201::fffe",
            "10.200.9.9",
            "fd00:200::1:10",
            "10.201.0.1",
            "fd00:201::1",
        ]),
        0,
    );
    assert_eq!(
        ok.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [ip("10.201.0.1"), ip("fd00:201::1")]
    );
    assert_eq!(refused.len(), 15);
    assert_eq!(refused[11].1, Refusal::NodeAddress);
    assert_eq!(refused[13].1, Refusal::ClusterAddress);
    assert_eq!(refused[14].1, Refusal::ClusterAddress);
    assert_eq!(g.refused()["node-address"], 2);
    assert_eq!(g.refused()["unlearnable-link-local"], 2);
}

#[test]
fn per_name_and_per_endpoint_budgets_hold_and_free_up_on_expiry() {
    let mut g = guard(2, 3, 10_000);
    let src = ip("10.200.1.10");
    let (ok, refused) = g.admit(
        src,
        "a.example.",
        &answer(&["10.201.0.1", "10.201.0.2", "10.201.0.3"]),
        0,
    );
    assert_eq!(ok.len(), 2);
    assert_eq!(refused, vec![(ip("10.201.0.3"), Refusal::PerName)]);
    // The same addresses again: admitted (a TTL refresh), no charge.
    let (ok, _) = g.admit(src, "a.example.", &answer(&["10.201.0.1"]), 2);
    assert_eq!(ok.len(), 1);
    // The v6 address of the same pod shares its budget.
    let (ok, refused) = g.admit(
        ip("fd00:200::1:10"),
        "b.example.",
        &answer(&["10.201.0.4", "10.201.0.5"]),
        2,
    );
    assert_eq!(ok.len(), 1);
    assert_eq!(refused, vec![(ip("10.201.0.5"), Refusal::PerEndpoint)]);
    // Another endpoint has its own budget.
    let (ok, _) = g.admit(ip("10.200.2.10"), "b.example.", &answer(&["10.201.0.5"]), 3);
    assert_eq!(ok.len(), 1);
    // a.example.'s addresses expired: t1/a may learn again.
    g.prune(|name, _| name != "a.example.");
    let (ok, _) = g.admit(src, "c.example.", &answer(&["10.201.0.6", "10.201.0.7"]), 2);
    assert_eq!(ok.len(), 2);
}

#[test]
fn the_node_budget_counts_what_is_learned_already() {
    let mut g = guard(50, 1000, 10);
    let (ok, refused) = g.admit(
        ip("10.200.1.10"),
        "a.example.",
        &answer(&["10.201.0.1", "10.201.0.2", "10.201.0.3"]),
        8,
    );
    assert_eq!(ok.len(), 2);
    assert_eq!(refused, vec![(ip("10.201.0.3"), Refusal::Node)]);
}

#[test]
fn an_endpoint_update_moves_only_its_own_addresses() {
    // No pod ranges: only the endpoints' own addresses are the cluster's.
    let mut g = LearnGuard::new(
        LearnLimits {
            per_name: 50,
            per_endpoint: 1000,
            node: 10_000,
        },
        Vec::new(),
    );
    let a = [ip("10.201.1.10")];
    let b = [ip("10.201.1.11")];
    g.set_endpoints([("t1/a".to_string(), &a[..]), ("t1/b".to_string(), &b[..])].into_iter());
    assert_eq!(
        g.never_learned(ip("10.201.1.10")),
        Some(Refusal::ClusterAddress)
    );
    // a moves to a new address; b's address is not a's to forget.
    g.update_endpoint(
        "t1/a",
        &[ip("10.201.1.10"), ip("10.201.1.11")],
        &[ip("10.201.1.12")],
    );
    assert_eq!(
        g.never_learned(ip("10.201.1.10")),
        None,
        "a's old address is free"
    );
    assert_eq!(
        g.never_learned(ip("10.201.1.11")),
        Some(Refusal::ClusterAddress),
        "b's"
    );
    assert_eq!(
        g.never_learned(ip("10.201.1.12")),
        Some(Refusal::ClusterAddress)
    );
    // a deleted.
    g.update_endpoint("t1/a", &[ip("10.201.1.12")], &[]);
    assert_eq!(g.never_learned(ip("10.201.1.12")), None);
}
