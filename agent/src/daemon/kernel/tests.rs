use super::plan::{KernelOp, KernelPlan, phase_of};
use super::state::{kernel_entry, proxy_port};
use super::write::KernelMaps;
use super::*;
use anyhow::Result;
use ipnet::IpNet;
use policy_model::incremental::IncrementalCluster;
use policy_model::{
    Direction, FqdnCache, L7Parser, MapChange, MapKey, MapState, MapValue, MapVerdict,
    NumericIdentity, PolicySet, PortKey, Topology,
};
use redirect_ebpf::{PolicyChange, PolicyKey};
use std::collections::{BTreeMap, BTreeSet};

const TOPOLOGY: &str = r#"
namespaces:
  - {name: t1, labels: {tenant: one}}
pods:
  - {namespace: t1, name: a, labels: {app: a}, ips: [10.200.1.10]}
  - {namespace: t1, name: b, labels: {app: b}, ips: [10.200.1.11]}
world: {ips: [10.201.0.53]}
"#;

/// b admits a on TCP 80 through the HTTP proxy.
const B_FROM_A_HTTP: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-from-a, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/"}]
"#;

/// a reaches the world range except one address.
const A_WORLD_BUT_ONE: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-world, namespace: t1}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDR: [10.201.0.0/16]
  egressDeny:
  - toCIDR: [10.201.0.53/32]
"#;

fn cluster(policies: &[&str]) -> IncrementalCluster {
    let topology = Topology::from_yaml(TOPOLOGY, "topology.yaml").expect("topology");
    let mut set = PolicySet::default();
    for (n, text) in policies.iter().enumerate() {
        set.extend(policy_model::load::load_str(text, &format!("p{n}.yaml")).expect("policy"));
    }
    IncrementalCluster::new(
        topology,
        set.policies
            .into_iter()
            .map(|p| (policy_model::incremental::PolicyKey::of(&p.origin), p.rules)),
        FqdnCache::default(),
        "lab-node",
    )
}

fn endpoint<'a>(
    cluster: &'a IncrementalCluster,
    name: &str,
) -> &'a policy_model::resolve::Endpoint {
    cluster
        .endpoints()
        .find(|e| e.full_name() == name)
        .expect("endpoint")
}

/// The plan comparing every endpoint and the whole ipcache.
fn plan_all(state: &KernelState, cluster: &IncrementalCluster, limits: &MapLimits) -> KernelPlan {
    plan(state, cluster, &LocalPods::all(), limits, None, None)
}

const ROOMY: MapLimits = MapLimits {
    ipcache: 1000,
    policy: 1000,
    policy_per_endpoint: 1000,
};

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn allow_key(id: u32) -> (MapKey, MapValue) {
    (
        MapKey {
            direction: Direction::Egress,
            identity: NumericIdentity(id),
            port: PortKey::ANY,
        },
        MapValue {
            verdict: MapVerdict::Allow,
            redirect: None,
            cookie: 0,
            audit: false,
        },
    )
}

/// Kernel maps in memory; policy batches with an upsert for `fail_upserts_of`
/// fail, as do writes of the prefixes in `fail_prefixes`.
#[derive(Default)]
struct FakeMaps {
    policy: std::collections::HashSet<PolicyKey>,
    ipcache: BTreeMap<IpNet, u32>,
    fail_upserts_of: Option<u16>,
    fail_prefixes: BTreeSet<IpNet>,
}

impl KernelMaps for FakeMaps {
    fn apply_policy(&mut self, changes: &[PolicyChange]) -> Result<()> {
        for c in changes {
            match c {
                PolicyChange::Upsert(k, _)
                    if Some(u16::from_be(k.endpoint_id)) == self.fail_upserts_of =>
                {
                    anyhow::bail!("map full")
                }
                PolicyChange::Upsert(k, _) => {
                    self.policy.insert(*k);
                }
                PolicyChange::Delete(k) => {
                    self.policy.remove(k);
                }
            }
        }
        Ok(())
    }
    fn set_ipcache(&mut self, prefix: IpNet, identity: u32) -> Result<()> {
        if self.fail_prefixes.contains(&prefix) {
            anyhow::bail!("map full");
        }
        self.ipcache.insert(prefix, identity);
        Ok(())
    }
    fn remove_ipcache(&mut self, prefix: IpNet) -> Result<()> {
        self.ipcache.remove(&prefix);
        Ok(())
    }
}

#[test]
fn revocations_are_written_before_anything_that_widens() {
    let key = |id: u32| MapKey {
        direction: Direction::Egress,
        identity: NumericIdentity(id),
        port: PortKey::ANY,
    };
    let value = |verdict| MapValue {
        verdict,
        redirect: None,
        cookie: 0,
        audit: false,
    };
    let old = MapState {
        entries: [
            (key(300), value(MapVerdict::Allow)),
            (key(301), value(MapVerdict::Deny)),
        ]
        .into_iter()
        .collect(),
    };
    // Deleting an allow and adding a deny narrow: first phase.
    assert!(phase_of(&old, &MapChange::Delete(key(300))));
    assert!(phase_of(
        &old,
        &MapChange::Upsert(key(302), value(MapVerdict::Deny))
    ));
    // Deleting a deny and adding an allow widen: last phase.
    assert!(!phase_of(&old, &MapChange::Delete(key(301))));
    assert!(!phase_of(
        &old,
        &MapChange::Upsert(key(303), value(MapVerdict::Allow))
    ));
}

#[test]
fn a_pods_address_with_another_identity_replaces_its_ipcache_entry() {
    let cluster = cluster(&[]);
    let a = endpoint(&cluster, "t1/a");
    let state = KernelState {
        policies: BTreeMap::new(),
        ipcache: [(net("10.200.1.10/32"), 99_999), (net("10.9.9.9/32"), 300)].into(),
    };
    let plan = plan_all(&state, &cluster, &ROOMY);
    let delete = plan
        .ops
        .iter()
        .position(|op| *op == KernelOp::IpcacheDelete(net("10.9.9.9/32")))
        .expect("the stale prefix is deleted");
    let upsert = plan
        .ops
        .iter()
        .position(|op| {
            *op == KernelOp::IpcacheUpsert {
                prefix: net("10.200.1.10/32"),
                identity: a.identity.0,
                learned: false,
            }
        })
        .expect("the pod's prefix is rewritten");
    assert!(delete < upsert, "deletes go first: {:?}", plan.ops);
    // Once written, the state says what the map holds.
    let mut maps = FakeMaps::default();
    let mut state = state;
    let written = write(&mut maps, &plan, &mut state);
    assert!(written.errors.is_empty(), "{written:?}");
    assert_eq!(
        state.ipcache.get(&net("10.200.1.10/32")),
        Some(&a.identity.0)
    );
    assert!(!state.ipcache.contains_key(&net("10.9.9.9/32")));
    assert_eq!(
        maps.ipcache.get(&net("10.200.1.10/32")),
        Some(&a.identity.0)
    );
}

#[test]
fn an_endpoint_that_is_gone_has_its_entries_deleted_and_forgotten() {
    let cluster = cluster(&[]);
    let (key, value) = allow_key(300);
    let mut state = KernelState {
        policies: [(999, vec![(key, value)])].into_iter().collect(),
        ipcache: BTreeMap::new(),
    };
    let plan = plan_all(&state, &cluster, &ROOMY);
    let gone = plan
        .endpoints
        .iter()
        .find(|e| e.id == 999)
        .expect("planned");
    assert_eq!(gone.identity, None);
    assert_eq!(gone.name, "endpoint 999 (removed)");
    assert!(plan.ops.contains(&KernelOp::Policy {
        endpoint: 999,
        narrowing: true,
        changes: vec![MapChange::Delete(key)],
    }));
    write(&mut FakeMaps::default(), &plan, &mut state);
    assert!(!state.policies.contains_key(&999));
}

#[test]
fn an_l7_rule_redirects_to_its_proxys_port() {
    let cluster = cluster(&[B_FROM_A_HTTP]);
    let a = endpoint(&cluster, "t1/a");
    let b = endpoint(&cluster, "t1/b");
    let plan = plan_all(&KernelState::default(), &cluster, &ROOMY);
    let redirect = plan
        .ops
        .iter()
        .find_map(|op| match op {
            KernelOp::Policy {
                endpoint,
                narrowing: false,
                changes,
            } if *endpoint == b.id => changes.iter().find_map(|c| match c {
                MapChange::Upsert(k, v) if k.identity == a.identity => Some((*k, *v)),
                _ => None,
            }),
            _ => None,
        })
        .expect("b admits a");
    assert_eq!(redirect.1.redirect, Some(L7Parser::Http));
    let (_, value) = kernel_entry(b.id, &redirect.0, Some(&redirect.1)).expect("kernel entry");
    assert_eq!(
        value.expect("a value").proxy_port,
        proxy_port(L7Parser::Http)
    );
    assert_eq!(proxy_port(L7Parser::Http), 15001);
}

#[test]
fn a_deny_is_written_first_and_the_allow_after_the_ipcache() {
    let cluster = cluster(&[A_WORLD_BUT_ONE]);
    let a = endpoint(&cluster, "t1/a");
    let plan = plan_all(&KernelState::default(), &cluster, &ROOMY);
    let position = |narrowing: bool| {
        plan.ops.iter().position(|op| {
            matches!(op, KernelOp::Policy { endpoint, narrowing: n, .. } if *endpoint == a.id && *n == narrowing)
        })
    };
    let (deny, allow) = (
        position(true).expect("a deny"),
        position(false).expect("an allow"),
    );
    let ipcache = plan
        .ops
        .iter()
        .position(|op| matches!(op, KernelOp::IpcacheUpsert { .. }))
        .expect("ipcache writes");
    assert!(deny < ipcache && ipcache < allow, "{:?}", plan.ops);
    let KernelOp::Policy { changes, .. } = &plan.ops[deny] else {
        unreachable!()
    };
    assert!(
        changes
            .iter()
            .all(|c| matches!(c, MapChange::Upsert(_, v) if v.verdict == MapVerdict::Deny))
    );
}

#[test]
fn an_endpoint_over_its_budget_fails_closed_before_anything_is_written() {
    let cluster = cluster(&[A_WORLD_BUT_ONE]);
    let a = endpoint(&cluster, "t1/a");
    let (key, value) = allow_key(300);
    let mut state = KernelState {
        policies: [(a.id, vec![(key, value)])].into_iter().collect(),
        ipcache: BTreeMap::new(),
    };
    let limits = MapLimits {
        policy_per_endpoint: 1,
        ..ROOMY
    };
    let plan = plan_all(&state, &cluster, &limits);
    let reason = plan.failed.get(&a.id).expect("a fails closed");
    assert!(reason.contains("per-endpoint budget of 1"), "{reason}");
    // Its old allow goes in the first phase; nothing of it widens.
    assert_eq!(
        plan.ops[0],
        KernelOp::Policy {
            endpoint: a.id,
            narrowing: true,
            changes: vec![MapChange::Delete(key)],
        }
    );
    assert!(!plan.ops.iter().any(
        |op| matches!(op, KernelOp::Policy { endpoint, narrowing: false, .. } if *endpoint == a.id)
    ));
    let written = write(&mut FakeMaps::default(), &plan, &mut state);
    assert_eq!(written.failed.get(&a.id), Some(reason));
    assert_eq!(state.policies.get(&a.id), Some(&Vec::new()));
}

#[test]
fn an_endpoint_whose_write_fails_has_every_entry_removed_and_the_others_go_on() {
    let cluster = cluster(&[A_WORLD_BUT_ONE, B_FROM_A_HTTP]);
    let (a, b) = (endpoint(&cluster, "t1/a"), endpoint(&cluster, "t1/b"));
    let mut state = KernelState::default();
    let plan = plan_all(&state, &cluster, &ROOMY);
    assert!(plan.failed.is_empty());
    let mut maps = FakeMaps {
        fail_upserts_of: Some(a.id),
        ..FakeMaps::default()
    };
    let outcome = apply(
        &mut maps,
        &cluster,
        &mut state,
        &LocalPods::all(),
        &ROOMY,
        (None, None),
    );
    assert!(
        outcome.failed["t1/a"].starts_with("writing its policy failed: map full"),
        "{outcome:?}"
    );
    assert_eq!(
        outcome
            .failed_policies
            .keys()
            .map(|k| k.2.as_str())
            .collect::<Vec<_>>(),
        ["a-world"]
    );
    assert_eq!(state.policies.get(&a.id), Some(&Vec::new()));
    assert!(
        !maps
            .policy
            .iter()
            .any(|k| u16::from_be(k.endpoint_id) == a.id),
        "a holds no entry: all its traffic is dropped"
    );
    // b's policy is in whole.
    assert!(!state.policies[&b.id].is_empty());
    assert!(!outcome.failed.contains_key("t1/b"));
}

#[test]
fn a_learned_address_that_does_not_fit_is_left_out_not_an_error() {
    let mut maps = FakeMaps {
        fail_prefixes: [net("10.201.7.7/32")].into_iter().collect(),
        ..FakeMaps::default()
    };
    let plan = KernelPlan {
        ops: vec![KernelOp::IpcacheUpsert {
            prefix: net("10.201.7.7/32"),
            identity: 16_777_300,
            learned: true,
        }],
        ..KernelPlan::default()
    };
    let mut state = KernelState::default();
    let written = write(&mut maps, &plan, &mut state);
    assert_eq!(written.ipcache_refused, 1);
    assert!(written.errors.is_empty());
    assert!(state.ipcache.is_empty());
}

#[test]
fn the_proxy_and_the_datapath_agree_on_the_from_proxy_mark() {
    assert_eq!(
        proxy::ports::FROM_PROXY_MARK,
        redirect_ebpf::DEFAULT_FROM_PROXY_MARK
    );
}

#[test]
fn a_change_compares_only_what_it_touched() {
    let cluster = cluster(&[A_WORLD_BUT_ONE]);
    let (a, b) = (endpoint(&cluster, "t1/a"), endpoint(&cluster, "t1/b"));
    // Everything written once.
    let mut state = KernelState::default();
    let mut maps = FakeMaps::default();
    let all = plan_all(&state, &cluster, &ROOMY);
    write(&mut maps, &all, &mut state);
    // The maps change behind the planner's back for b and one prefix; a
    // plan touching a and another prefix leaves them alone.
    let stray = net("10.9.9.9/32");
    state.ipcache.insert(stray, 300);
    state.policies.entry(b.id).or_default().push(allow_key(300));
    let pod = net("10.200.1.10/32");
    state.ipcache.insert(pod, 99_999);
    let touched: BTreeSet<u16> = [a.id].into();
    let prefixes: BTreeSet<IpNet> = [pod].into();
    let some = plan(
        &state,
        &cluster,
        &LocalPods::all(),
        &ROOMY,
        Some(&touched),
        Some(&prefixes),
    );
    assert_eq!(
        some.ops,
        vec![KernelOp::IpcacheUpsert {
            prefix: pod,
            identity: a.identity.0,
            learned: false,
        }],
        "only a's unchanged map and the touched prefix are compared"
    );
    assert!(some.endpoints.iter().all(|e| e.id == a.id));
    // Over the ipcache's capacity the whole ipcache is planned again.
    let tight = MapLimits {
        ipcache: 3,
        ..ROOMY
    };
    let whole = plan(
        &state,
        &cluster,
        &LocalPods::all(),
        &tight,
        Some(&touched),
        Some(&prefixes),
    );
    assert!(
        whole.ops.contains(&KernelOp::IpcacheDelete(stray)),
        "{:?}",
        whole.ops
    );
}

#[test]
fn audited_allows_and_no_rule_denies_carry_their_flags() {
    let key = MapKey {
        direction: Direction::Ingress,
        identity: NumericIdentity(300),
        port: PortKey::exact(6, 80),
    };
    let value = |verdict, cookie, audit| MapValue {
        verdict,
        redirect: None,
        cookie,
        audit,
    };
    let (_, v) = kernel_entry(1, &key, Some(&value(MapVerdict::Allow, 7, true))).unwrap();
    let v = v.unwrap();
    assert_eq!(
        v.flags & redirect_ebpf::POLICY_FLAG_AUDIT,
        redirect_ebpf::POLICY_FLAG_AUDIT
    );
    assert_eq!(v.rule_cookie, 7);
    let (_, v) = kernel_entry(1, &key, Some(&value(MapVerdict::Deny, 0, false))).unwrap();
    assert_eq!(v.unwrap().flags, redirect_ebpf::POLICY_FLAG_NO_RULE);
    let (_, v) = kernel_entry(1, &key, Some(&value(MapVerdict::Deny, 9, false))).unwrap();
    assert_eq!(v.unwrap().flags, 0, "an explicit deny rule is no 'no rule'");
    let (_, v) = kernel_entry(1, &key, Some(&value(MapVerdict::Allow, 7, false))).unwrap();
    assert_eq!(v.unwrap().flags, 0);
}
