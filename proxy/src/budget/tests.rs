use super::*;

fn pod(last: u8) -> SourceKey {
    SourceKey::of(
        IpAddr::from([10, 200, 0, last]),
        NumericIdentity(NumericIdentity::FIRST_ENDPOINT + 1),
    )
}

#[test]
fn pods_are_counted_by_address_and_the_world_as_one() {
    assert_eq!(pod(1), SourceKey::Endpoint(IpAddr::from([10, 200, 0, 1])));
    let a = SourceKey::of(IpAddr::from([10, 201, 0, 1]), NumericIdentity::WORLD);
    let b = SourceKey::of(IpAddr::from([10, 201, 0, 2]), NumericIdentity::WORLD);
    assert_eq!(a, b);
    let cidr = SourceKey::of(
        IpAddr::from([10, 201, 0, 3]),
        NumericIdentity(NumericIdentity::FIRST_LOCAL + 5),
    );
    assert_eq!(cidr, SourceKey::Identity(NumericIdentity::FIRST_LOCAL + 5));
    let mapped: IpAddr = "::ffff:10.200.0.1".parse().unwrap();
    assert_eq!(
        SourceKey::of(mapped, NumericIdentity(NumericIdentity::FIRST_ENDPOINT + 1)),
        pod(1)
    );
}

#[test]
fn one_source_cannot_take_another_sources_share() {
    let budget = SourceBudget::new(10, 4);
    let mut grants = Vec::new();
    for _ in 0..4 {
        grants.push(budget.try_take(pod(1), 1).expect("within the share"));
    }
    assert_eq!(
        budget.try_take(pod(1), 1).unwrap_err(),
        BudgetRefusal::PerSource
    );
    let other = budget
        .try_take(pod(2), 1)
        .expect("another pod's share is free");
    assert_eq!(budget.held(), 5);
    assert_eq!(budget.held_by(&pod(1)), 4);
    drop(other);
    grants.pop();
    assert_eq!(budget.held(), 3);
    budget
        .try_take(pod(1), 1)
        .expect("a slot given back is free again");
}

#[test]
fn the_total_is_enforced_across_sources_and_given_back() {
    let budget = SourceBudget::new(5, 3);
    let a = budget.try_take(pod(1), 3).unwrap();
    let _b = budget.try_take(pod(2), 2).unwrap();
    assert_eq!(
        budget.try_take(pod(3), 1).unwrap_err(),
        BudgetRefusal::Total
    );
    drop(a);
    assert_eq!(budget.held_by(&pod(1)), 0);
    budget
        .try_take(pod(3), 3)
        .expect("room after a grant dropped");
}

#[test]
fn the_rate_is_per_source_with_a_burst_and_refills() {
    let rate = SourceRate::new(10, 5);
    let t0 = std::time::Instant::now();
    let allowed = (0..20).filter(|_| rate.allow(pod(1), t0)).count();
    assert_eq!(allowed, 5, "the burst, then nothing at the same instant");
    assert!(rate.allow(pod(2), t0), "another source has its own bucket");
    let t1 = t0 + std::time::Duration::from_millis(300);
    let allowed = (0..20).filter(|_| rate.allow(pod(1), t1)).count();
    assert_eq!(allowed, 3, "10 a second refill 3 in 300 ms");
    let unlimited = SourceRate::new(0, 0);
    assert!((0..1000).all(|_| unlimited.allow(pod(1), t0)));
}

#[test]
fn an_amount_over_the_share_is_refused_whole() {
    let budget = SourceBudget::new(100, 10);
    assert_eq!(
        budget.try_take(pod(1), 11).unwrap_err(),
        BudgetRefusal::PerSource
    );
    assert_eq!(budget.held(), 0);
    assert_eq!(
        budget.try_take(pod(1), u64::MAX).unwrap_err(),
        BudgetRefusal::PerSource
    );
}
