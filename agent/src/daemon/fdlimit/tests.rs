use super::*;

#[test]
fn resource_errors_are_told_from_invalid_policies() {
    let emfile = std::io::Error::from_raw_os_error(libc::EMFILE).to_string();
    assert!(is_resource_error(&format!("reading policy.yaml: {emfile}")));
    let enfile = std::io::Error::from_raw_os_error(libc::ENFILE).to_string();
    assert!(is_resource_error(&enfile));
    assert!(!is_resource_error(
        "policy.yaml: document 1: spec.egress[0].toPorts: unknown field"
    ));
    assert!(!is_resource_error(
        "reading policy.yaml: No such file or directory (os error 2)"
    ));
}

#[test]
fn the_reserve_is_let_go_and_taken_back() {
    let mut r = FdReserve::new(8);
    assert_eq!(r.held(), 8);
    let inside = r.released(|| 0);
    assert_eq!(inside, 0);
    assert_eq!(r.held(), 8);
}
