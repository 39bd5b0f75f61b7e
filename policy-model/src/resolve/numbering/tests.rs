use super::*;
use crate::identity::IdentityAllocator;
use crate::labels::LabelSet;

fn labels(v: &str) -> LabelSet {
    LabelSet::new().with("k8s", "app", v)
}

#[test]
fn a_seeded_allocator_keeps_given_numbers_and_allocates_above_them() {
    let given = BTreeMap::from([
        (labels("a"), NumericIdentity(300)),
        (
            labels("cidr"),
            NumericIdentity(NumericIdentity::FIRST_LOCAL + 4),
        ),
    ]);
    let mut a = IdentityAllocator::seeded(&given, 0, 0);
    assert_eq!(a.endpoint(&labels("a")), NumericIdentity(300));
    assert_eq!(a.endpoint(&labels("b")), NumericIdentity(301));
    assert_eq!(
        a.local(&labels("fqdn")),
        NumericIdentity(NumericIdentity::FIRST_LOCAL + 5)
    );
}

#[test]
fn the_floors_keep_released_numbers_from_coming_back() {
    let mut a = IdentityAllocator::seeded(&BTreeMap::new(), 400, 0);
    assert_eq!(a.endpoint(&labels("a")), NumericIdentity(400));
    assert_eq!(a.next_numbers().0, 401);
}

#[test]
fn endpoint_ids_are_positions_without_a_numbering() {
    let mut ids = EndpointIds::new(None);
    assert_eq!(ids.id(0, "ns/a"), 1);
    assert_eq!(ids.id(4, "ns/b"), 5);
}

#[test]
fn endpoint_ids_are_kept_and_new_pods_get_the_lowest_free_one() {
    let n = Numbering {
        endpoints: BTreeMap::from([("ns/a".to_string(), 2), ("ns/b".to_string(), 1)]),
        ..Numbering::default()
    };
    let mut ids = EndpointIds::new(Some(&n));
    assert_eq!(ids.id(0, "ns/a"), 2);
    assert_eq!(ids.id(1, "ns/new"), 3);
    assert_eq!(ids.id(2, "ns/b"), 1);
    assert_eq!(ids.id(3, "ns/new2"), 4);
}
