use super::*;

#[test]
fn revocations_are_written_before_anything_that_widens() {
    use policy_model::{MapKey, MapValue, NumericIdentity, PortKey};
    let key = |id: u32| MapKey {
        direction: Direction::Egress,
        identity: NumericIdentity(id),
        port: PortKey::ANY,
    };
    let value = |verdict| MapValue {
        verdict,
        redirect: None,
        cookie: 0,
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
