use super::*;
use crate::rules::testing::*;

#[test]
fn policy_ref_display_names_kind_namespace_and_name() {
    assert_eq!(
        origin(PolicyKind::CiliumNetworkPolicy, Some("ns1")).to_string(),
        "CiliumNetworkPolicy ns1/p"
    );
    assert_eq!(
        origin(PolicyKind::CiliumClusterwideNetworkPolicy, None).to_string(),
        "CiliumClusterwideNetworkPolicy p"
    );
}
