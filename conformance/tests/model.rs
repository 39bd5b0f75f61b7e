//! Every conformance case, against the model.

use conformance::case::{default_root, load_cases};
use conformance::model::run_case;

#[test]
fn all_cases_pass_against_the_model() {
    let cases = load_cases(&default_root()).expect("case files load");
    assert!(!cases.is_empty(), "no cases found");
    let mut failures = Vec::new();
    let mut total = 0;
    for case in &cases {
        for o in run_case(case) {
            total += 1;
            if !o.pass {
                failures.push(format!(
                    "{}: {} expected {:?}{} got {}",
                    o.case,
                    o.probe.describe(),
                    o.probe.expect,
                    o.probe
                        .layer
                        .as_ref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default(),
                    o.got_text()
                ));
            }
        }
    }
    println!(
        "{} cases, {total} probes, {} failed",
        cases.len(),
        failures.len()
    );
    assert!(total >= 300, "only {total} probes");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
