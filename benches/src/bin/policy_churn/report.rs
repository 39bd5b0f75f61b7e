//! The bench's Markdown: p50/p99/max of each measure for the agent under
//! test and the baseline, next to the targets.

use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Figures of the agent under test (files written by the script).
    #[arg(long)]
    pub under_test: PathBuf,
    /// Figures of the baseline; absent when it was not run.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Free-text Markdown put under the title (machine, load, counts).
    #[arg(long)]
    pub preamble: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and max of `v` (any order), as table text.
pub fn spread(mut v: Vec<f64>, unit: &str) -> String {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match (
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied(),
    ) {
        (Some(a), Some(b), Some(c)) => {
            format!(
                "{} / {} / {} {unit} (n={})",
                fmt(a),
                fmt(b),
                fmt(c),
                v.len()
            )
        }
        _ => "n/a".into(),
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// Numbers of a file, one a line (missing file: none).
fn numbers(dir: &Path, file: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Field `key` of every JSON line of a file that has a number there.
fn field(dir: &Path, file: &str, key: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v[key].as_f64())
        .collect()
}

fn lines_in(dir: &Path, file: &str) -> usize {
    std::fs::read_to_string(dir.join(file))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn text(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// One column of the table.
pub fn column(dir: &Path) -> Vec<String> {
    let edits = lines_in(dir, "edits.jsonl");
    let remote = lines_in(dir, "remote.jsonl");
    let with_total = |s: String, done: usize| {
        if s == "n/a" && done > 0 {
            format!("n/a ({done} done, none measured)")
        } else {
            s
        }
    };
    vec![
        spread(numbers(dir, "cold_ms.txt"), "ms"),
        with_total(
            spread(field(dir, "edits.jsonl", "realization_ms"), "ms"),
            edits,
        ),
        with_total(
            spread(field(dir, "edits.jsonl", "write_to_probe_ms"), "ms"),
            edits,
        ),
        with_total(
            spread(field(dir, "remote.jsonl", "realization_ms"), "ms"),
            remote,
        ),
        with_total(
            spread(field(dir, "remote.jsonl", "write_to_metric_ms"), "ms"),
            remote,
        ),
        spread(numbers(dir, "rss_mib.txt"), "MiB"),
        spread(numbers(dir, "check_ms.txt"), "ms"),
    ]
}

const ROWS: [(&str, &str); 7] = [
    (
        "cold start: agent start to every local endpoint enforced",
        "<= 1 s",
    ),
    (
        "policy edit: realization (agent's histogram)",
        "p99 <= 10 ms",
    ),
    (
        "policy edit: file write to first probe seeing the new verdict",
        "p99 <= 50 ms",
    ),
    (
        "remote pod add/remove/relabel: realization (agent's histogram)",
        "p99 <= 5 ms",
    ),
    (
        "remote pod change: file write to the metric counting it",
        "—",
    ),
    (
        "agent RSS (VmRSS after the churn; VmHWM in the notes)",
        "<= 150 MB",
    ),
    ("`policy check` of the whole set", "<= 0.5 s"),
];

pub fn render(preamble: &str, under_test: &Path, baseline: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Policy churn at cluster scale\n\n{preamble}\n");
    let _ = writeln!(
        out,
        "Each cell: p50 / p99 / max (n = samples). Under test: `{}`. Baseline: `{}`.\n",
        text(under_test, "label.txt"),
        baseline.map_or("not run".into(), |b| text(b, "label.txt"))
    );
    let _ = writeln!(out, "| measure | target | under test | baseline |");
    let _ = writeln!(out, "|---|---|---|---|");
    let a = column(under_test);
    let b = baseline.map(column);
    for (i, (name, target)) in ROWS.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {name} | {target} | {} | {} |",
            a[i],
            b.as_ref().map_or("not run", |b| b[i].as_str())
        );
    }
    for (title, dir) in [("under test", Some(under_test)), ("baseline", baseline)] {
        let Some(dir) = dir else { continue };
        let notes = text(dir, "notes.md");
        if !notes.is_empty() {
            let _ = writeln!(out, "\n## Notes: {title}\n\n{notes}");
        }
    }
    out
}

pub fn write(a: &ReportArgs) -> Result<()> {
    let pre = std::fs::read_to_string(&a.preamble)?;
    let md = render(pre.trim(), &a.under_test, a.baseline.as_deref());
    std::fs::write(&a.out, &md)?;
    print!("{md}");
    Ok(())
}
