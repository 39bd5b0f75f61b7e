//! `conformance`: runs every case against the model and prints a table.

use conformance::case::{default_root, load_cases};
use conformance::model::run_case;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(default_root);
    let cases = match load_cases(&root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some();
    let (mut pass, mut fail) = (0usize, 0usize);
    println!("{:<52} {:>7} {:>7}", "case", "probes", "failed");
    for case in &cases {
        let out = run_case(case);
        let f = out.iter().filter(|o| !o.pass).count();
        pass += out.len() - f;
        fail += f;
        println!("{:<52} {:>7} {:>7}", case.name, out.len(), f);
        for o in out.iter().filter(|o| !o.pass || verbose) {
            println!(
                "    {} {:<60} expected {:?}{} got {}",
                if o.pass { "ok  " } else { "FAIL" },
                o.probe.describe(),
                o.probe.expect,
                o.probe
                    .layer
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default(),
                o.got_text()
            );
        }
    }
    println!("{pass} passed, {fail} failed");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
