//! `sigmabench compare OLD.json NEW.json`: row-by-row ratios between two runs of one suite, with
//! the rows that regressed past a threshold flagged (and a non-zero exit), so that a change to a
//! hot path can be checked against the run before it.
//!
//! Per (case, system) present in both runs it compares the median latency (or, for throughput
//! rows, operations per second), the p99 and the CPU per operation. A row regressed when its
//! median (or throughput) or its CPU per operation got worse by more than the threshold, or
//! when it measured before and fails now. The p99 is shown but never judged: on shared machines
//! it moves more than any change under test.

use std::fmt::Write as _;

use crate::report::{fmt_ratio, ratio, Doc, Row};

/// Default threshold: 10% worse.
pub const THRESHOLD_DEFAULT: f64 = 0.10;

/// What happened to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within the threshold, or better.
    Same,
    /// Worse by more than the threshold; says which figures.
    Regressed(Vec<&'static str>),
    /// Measured before, an error row now.
    NowFails,
    /// An error row before (nothing to compare).
    WasFailing,
    /// Only in the old run.
    Gone,
    /// Only in the new run.
    New,
}

/// One compared row.
#[derive(Debug, Clone)]
pub struct Line {
    /// Case name.
    pub case: String,
    /// System name.
    pub system: String,
    /// new / old of the median latency (latency rows) or of ops/s (throughput rows).
    pub main_ratio: Option<f64>,
    /// Whether `main_ratio` is a throughput ratio (higher is better).
    pub throughput: bool,
    /// new / old of the p99.
    pub p99_ratio: Option<f64>,
    /// new / old of the CPU per operation.
    pub cpu_ratio: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

fn compare_row(old: &Row, new: &Row, threshold: f64) -> Line {
    let throughput = old.ops_per_s.is_some() && new.ops_per_s.is_some();
    let main_ratio = if throughput {
        ratio(new.ops_per_s, old.ops_per_s)
    } else {
        ratio(new.p50_us, old.p50_us)
    };
    let cpu_ratio = ratio(new.cpu_us_per_op, old.cpu_us_per_op);
    let verdict = match (&old.error, &new.error) {
        (Some(_), _) => Verdict::WasFailing,
        (None, Some(_)) => Verdict::NowFails,
        (None, None) => {
            let mut worse = Vec::new();
            match main_ratio {
                Some(r) if throughput && r < 1.0 / (1.0 + threshold) => worse.push("ops/s"),
                Some(r) if !throughput && r > 1.0 + threshold => worse.push("p50"),
                _ => {}
            }
            if cpu_ratio.is_some_and(|r| r > 1.0 + threshold) {
                worse.push("CPU/op");
            }
            if worse.is_empty() {
                Verdict::Same
            } else {
                Verdict::Regressed(worse)
            }
        }
    };
    Line {
        case: new.case.clone(),
        system: new.system.clone(),
        main_ratio,
        throughput,
        p99_ratio: ratio(new.p99_us, old.p99_us),
        cpu_ratio,
        verdict,
    }
}

/// Compares every row of `new` with the same (case, system) of `old`, in `new`'s order, then
/// the rows only `old` has.
pub fn compare(old: &Doc, new: &Doc, threshold: f64) -> Vec<Line> {
    let key = |r: &Row| (r.case.clone(), r.system.clone());
    let mut lines = Vec::new();
    for n in &new.rows {
        match old.rows.iter().find(|o| key(o) == key(n)) {
            Some(o) => lines.push(compare_row(o, n, threshold)),
            None => lines.push(Line {
                case: n.case.clone(),
                system: n.system.clone(),
                main_ratio: None,
                throughput: n.ops_per_s.is_some(),
                p99_ratio: None,
                cpu_ratio: None,
                verdict: Verdict::New,
            }),
        }
    }
    for o in &old.rows {
        if !new.rows.iter().any(|n| key(n) == key(o)) {
            lines.push(Line {
                case: o.case.clone(),
                system: o.system.clone(),
                main_ratio: None,
                throughput: o.ops_per_s.is_some(),
                p99_ratio: None,
                cpu_ratio: None,
                verdict: Verdict::Gone,
            });
        }
    }
    lines
}

/// Whether any line is a regression (worse past the threshold, or failing now).
pub fn any_regression(lines: &[Line]) -> bool {
    lines
        .iter()
        .any(|l| matches!(l.verdict, Verdict::Regressed(_) | Verdict::NowFails))
}

/// The comparison as a Markdown table with a header line naming both runs.
pub fn markdown(old: &Doc, new: &Doc, lines: &[Line], threshold: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**{}**: {} ({}) → {} ({}); new ÷ old, regression past {:.0}% worse\n",
        new.suite,
        old.started_at,
        if old.quick { "quick" } else { "full" },
        new.started_at,
        if new.quick { "quick" } else { "full" },
        threshold * 100.0
    );
    let _ = writeln!(out, "| case | system | p50 (or ops/s) | p99 | CPU/op | verdict |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
    for l in lines {
        let main = match (l.main_ratio, l.throughput) {
            (Some(r), true) => format!("{r:.2}× ops/s"),
            (r, _) => fmt_ratio(r),
        };
        let verdict = match &l.verdict {
            Verdict::Same => "ok".to_string(),
            Verdict::Regressed(what) => format!("**REGRESSED**: {}", what.join(", ")),
            Verdict::NowFails => "**REGRESSED**: fails now".to_string(),
            Verdict::WasFailing => "failed before".to_string(),
            Verdict::Gone => "only in OLD".to_string(),
            Verdict::New => "only in NEW".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            l.case,
            l.system,
            main,
            fmt_ratio(l.p99_ratio),
            fmt_ratio(l.cpu_ratio),
            verdict
        );
    }
    let n = lines
        .iter()
        .filter(|l| matches!(l.verdict, Verdict::Regressed(_) | Verdict::NowFails))
        .count();
    let _ = writeln!(out, "\n{n} row(s) regressed.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Host;

    fn row(case: &str, system: &str, p50: f64, ops: Option<f64>, cpu: Option<f64>) -> Row {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        h.record((p50 * 1000.0) as u64).unwrap();
        let mut r = Row::measured(case, system, &h, ops, String::new());
        r.cpu_us_per_op = cpu;
        r
    }

    fn doc(rows: Vec<Row>) -> Doc {
        Doc {
            suite: "peers".into(),
            schema: 1,
            quick: true,
            host: Host::detect(),
            started_at: "2026-11-26T00:00:00Z".into(),
            rounds: 1,
            elapsed_s: 1.0,
            rows,
        }
    }

    #[test]
    fn slower_medians_less_throughput_and_more_cpu_are_regressions() {
        let old = doc(vec![
            row("pp", "a", 10.0, None, Some(20.0)),
            row("pp", "b", 10.0, None, Some(20.0)),
            row("pl", "a", 300.0, Some(1_000_000.0), Some(1.0)),
            row("pp", "c", 10.0, None, None),
            row("pp", "gone", 10.0, None, None),
        ]);
        let mut failing = row("pp", "c", 0.0, None, None);
        failing.error = Some("boom".into());
        let new = doc(vec![
            row("pp", "a", 10.5, None, Some(20.5)),            // 5% worse: fine
            row("pp", "b", 12.0, None, Some(25.0)),            // 20% and 25% worse
            row("pl", "a", 300.0, Some(800_000.0), Some(1.0)), // 20% less throughput
            failing,
            row("pp", "new", 10.0, None, None),
        ]);
        let lines = compare(&old, &new, THRESHOLD_DEFAULT);
        let verdict = |s: &str, c: &str| {
            lines
                .iter()
                .find(|l| l.system == s && l.case == c)
                .unwrap()
                .verdict
                .clone()
        };
        assert_eq!(verdict("a", "pp"), Verdict::Same);
        assert_eq!(verdict("b", "pp"), Verdict::Regressed(vec!["p50", "CPU/op"]));
        assert_eq!(verdict("a", "pl"), Verdict::Regressed(vec!["ops/s"]));
        assert_eq!(verdict("c", "pp"), Verdict::NowFails);
        assert_eq!(verdict("new", "pp"), Verdict::New);
        assert_eq!(verdict("gone", "pp"), Verdict::Gone);
        assert!(any_regression(&lines));
        let md = markdown(&old, &new, &lines, THRESHOLD_DEFAULT);
        assert!(
            md.contains("| pp | b | 1.20× | 1.20× | 1.25× | **REGRESSED**: p50, CPU/op |"),
            "{md}"
        );
        assert!(md.contains("0.80× ops/s"), "{md}");
        assert!(md.contains("3 row(s) regressed."), "{md}");
    }

    #[test]
    fn faster_runs_and_identical_runs_pass() {
        let old = doc(vec![row("pp", "a", 10.0, None, Some(20.0))]);
        let new = doc(vec![row("pp", "a", 5.0, None, Some(10.0))]);
        assert!(!any_regression(&compare(&old, &new, THRESHOLD_DEFAULT)));
        assert!(!any_regression(&compare(&old, &old, 0.0)));
    }
}
