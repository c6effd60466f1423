//! The README's performance tables, made from result documents, and `sigmabench report`, which
//! rewrites them (and every `results/SUITE.md` and plot) from the JSON files so that no figure in
//! the README lacks a file behind it.
//!
//! The README marks each generated block with a pair of HTML comments,
//! `<!-- sigmabench:begin NAME -->` … `<!-- sigmabench:end NAME -->`; [`blocks`] makes the
//! text of every known NAME from the documents at hand and [`splice`] puts it between the
//! markers. Text outside the markers is hand-written and carries no figures of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::report::{fmt_busy, fmt_cpu, fmt_ratio, fmt_us, ratio, Doc, Row};

/// Cases of the `peers` suite compared in the spinning and parking tables.
const PINGPONG_CASES: [&str; 3] = ["pingpong-64B", "pingpong-4KiB", "pingpong-64B-unix"];

fn is_sigma(system: &str) -> bool {
    system.starts_with("sigma")
}

fn waits(r: &Row) -> &str {
    r.waits.as_deref().unwrap_or("")
}

fn ok(r: &Row) -> bool {
    r.error.is_none() && r.p50_us.is_some()
}

fn row<'a>(doc: &'a Doc, case: &str, system: &str) -> Option<&'a Row> {
    doc.rows.iter().find(|r| r.case == case && r.system == system && ok(r))
}

/// The systems of `doc` in row order (each once).
fn systems(doc: &Doc) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in &doc.rows {
        if !out.contains(&r.system.as_str()) {
            out.push(&r.system);
        }
    }
    out
}

/// The fastest (lowest `key`) measured row of `case` among peers (not σ, not the floor) that
/// pass `keep`.
fn best_peer<'a>(
    doc: &'a Doc,
    case: &str,
    keep: impl Fn(&Row) -> bool,
    key: impl Fn(&Row) -> Option<f64>,
) -> Option<&'a Row> {
    doc.rows
        .iter()
        .filter(|r| r.case == case && ok(r) && !is_sigma(&r.system) && waits(r) != "floor" && keep(r))
        .filter(|r| key(r).is_some())
        .min_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal))
}

fn floor<'a>(doc: &'a Doc, case: &str) -> Option<&'a Row> {
    doc.rows.iter().find(|r| r.case == case && ok(r) && waits(r) == "floor")
}

fn ops(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 1e6 => format!("{:.2} M/s", x / 1e6),
        Some(x) => format!("{:.0} k/s", x / 1e3),
        None => "—".to_string(),
    }
}

/// `p50 / p99 µs · CPU µs/op` of one row.
fn cell(r: Option<&Row>) -> String {
    match r {
        Some(r) => format!(
            "{} / {} · {}",
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            fmt_us(r.cpu_us_per_op)
        ),
        None => "—".to_string(),
    }
}

/// One line saying which run the tables come from.
fn source(doc: &Doc, file: &str) -> String {
    let load = doc
        .host
        .loadavg_1m
        .map_or(String::new(), |l| format!(", load {l:.2} at start"));
    format!(
        "From [`{file}`]({file}): {} run started {}, {} round{}, {} cores, kernel {}{load}.\n",
        if doc.quick { "quick" } else { "full" },
        doc.started_at,
        doc.rounds,
        if doc.rounds == 1 { "" } else { "s" },
        doc.host.cores,
        doc.host.kernel
    )
}

/// The ping-pong table of the systems whose `waits` is `class` (and the floor), with the ratio of
/// `subject` to the best peer of the same class and to the floor.
fn pingpong_table(doc: &Doc, class: &str, subject: &str) -> String {
    let mut out = String::new();
    let cases: Vec<&str> = PINGPONG_CASES
        .iter()
        .copied()
        .filter(|c| doc.rows.iter().any(|r| r.case == *c))
        .collect();
    let _ = write!(out, "| system |");
    for c in &cases {
        let _ = write!(out, " {c}: p50 / p99 µs · CPU µs/op |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &cases {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for sys in systems(doc) {
        let w = doc
            .rows
            .iter()
            .find(|r| r.system == sys)
            .map(|r| waits(r).to_string())
            .unwrap_or_default();
        if w != class && w != "floor" {
            continue;
        }
        let name = if sys == subject {
            format!("**{sys}**")
        } else {
            sys.to_string()
        };
        let _ = write!(out, "| {name}{} |", if w == "floor" { " (floor)" } else { "" });
        for c in &cases {
            let _ = write!(out, " {} |", cell(row(doc, c, sys)));
        }
        out.push('\n');
    }
    let peer_word = if class == "spin" { "spinning" } else { "parking" };
    let _ = write!(out, "| {subject} ÷ best {peer_word} peer (p50) |");
    for c in &cases {
        let s = row(doc, c, subject);
        let best = best_peer(doc, c, |r| waits(r) == class, |r| r.p50_us);
        let text = match (s, best) {
            (Some(s), Some(b)) => format!("{} ({})", fmt_ratio(ratio(s.p50_us, b.p50_us)), b.system),
            _ => "—".to_string(),
        };
        let _ = write!(out, " {text} |");
    }
    let _ = write!(out, "\n| {subject} ÷ floor (p50) |");
    for c in &cases {
        let _ = write!(
            out,
            " {} |",
            fmt_ratio(ratio(
                row(doc, c, subject).and_then(|r| r.p50_us),
                floor(doc, c).and_then(|r| r.p50_us)
            ))
        );
    }
    out.push('\n');
    out
}

/// Every measured system of `case` with p50, p99, p99.9, CPU and cores busy.
fn full_case_table(doc: &Doc, case: &str, with_ops: bool) -> String {
    let mut out = String::new();
    let ops_head = if with_ops { " ops/s |" } else { "" };
    let ops_rule = if with_ops { "---:|" } else { "" };
    let _ = writeln!(
        out,
        "| system | waits |{ops_head} p50 µs | p99 µs | p99.9 µs | CPU µs/op (client + server) | cores busy |"
    );
    let _ = writeln!(out, "|---|---|{ops_rule}---:|---:|---:|---:|---:|");
    for r in doc.rows.iter().filter(|r| r.case == case) {
        let name = if is_sigma(&r.system) {
            format!("**{}**", r.system)
        } else {
            r.system.clone()
        };
        if r.error.is_some() {
            let _ = writeln!(out, "| {name} | {} | error: see results |", waits(r));
            continue;
        }
        let cpu = fmt_cpu(r);
        let o = if with_ops {
            format!(" {} |", ops(r.ops_per_s))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {name} | {} |{o} {} | {} | {} | {cpu} | {} |",
            waits(r),
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            fmt_us(r.p999_us),
            fmt_busy(r.cores_busy)
        );
    }
    out
}

/// A target of the peers suite and how the run measured against it.
struct Target {
    what: String,
    measured: Option<f64>,
    limit: f64,
    /// true: measured must be at most `limit`; false: at least.
    at_most: bool,
    detail: String,
}

fn peers_targets(doc: &Doc) -> Vec<Target> {
    let mut t = Vec::new();
    let p50 = |case: &str, sys: &str| row(doc, case, sys).and_then(|r| r.p50_us);
    if let Some(best) = best_peer(doc, "pingpong-64B", |r| waits(r) == "spin", |r| r.p50_us) {
        t.push(Target {
            what: "pingpong-64B: sigma p50 ÷ best spinning peer".into(),
            measured: ratio(p50("pingpong-64B", "sigma"), best.p50_us),
            limit: 0.6,
            at_most: true,
            detail: format!("{} {} µs", best.system, fmt_us(best.p50_us)),
        });
    }
    if let Some(fl) = floor(doc, "pingpong-64B") {
        t.push(Target {
            what: "pingpong-64B: sigma p50 ÷ spin-floor".into(),
            measured: ratio(p50("pingpong-64B", "sigma"), fl.p50_us),
            limit: 1.2,
            at_most: true,
            detail: format!("floor {} µs", fmt_us(fl.p50_us)),
        });
    }
    for case in ["pingpong-64B", "pingpong-64B-unix"] {
        if let Some(best) = best_peer(doc, case, |r| waits(r) == "park", |r| r.p50_us) {
            t.push(Target {
                what: format!("{case}: sigma-nospin p50 ÷ best parking peer"),
                measured: ratio(p50(case, "sigma-nospin"), best.p50_us),
                limit: 1.0,
                at_most: true,
                detail: format!("{} {} µs", best.system, fmt_us(best.p50_us)),
            });
        }
    }
    if let Some(best) = best_peer(doc, "paced-64B", |_| true, |r| r.p99_us) {
        let s = row(doc, "paced-64B", "sigma");
        t.push(Target {
            what: "paced-64B: sigma p99 ÷ best peer's p99".into(),
            measured: ratio(s.and_then(|r| r.p99_us), best.p99_us),
            limit: 1.0,
            at_most: true,
            detail: format!("{} {} µs", best.system, fmt_us(best.p99_us)),
        });
        t.push(Target {
            what: format!("paced-64B: sigma CPU/op ÷ {}'s", best.system),
            measured: ratio(s.and_then(|r| r.cpu_us_per_op), best.cpu_us_per_op),
            limit: 1.5,
            at_most: true,
            detail: format!(
                "sigma {} µs/op, {} {} µs/op",
                fmt_us(s.and_then(|r| r.cpu_us_per_op)),
                best.system,
                fmt_us(best.cpu_us_per_op)
            ),
        });
    }
    if let Some(best) = best_peer(doc, "pipelined-64B", |_| true, |r| r.ops_per_s.map(|x| -x)) {
        t.push(Target {
            what: "pipelined-64B: sigma ops/s ÷ best peer".into(),
            measured: ratio(
                row(doc, "pipelined-64B", "sigma").and_then(|r| r.ops_per_s),
                best.ops_per_s,
            ),
            limit: 0.95,
            at_most: false,
            detail: format!("{} {}", best.system, ops(best.ops_per_s)),
        });
    }
    t
}

fn targets_table(targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| target | measured | limit | met | against |");
    let _ = writeln!(out, "|---|---:|---:|---|---|");
    for t in targets {
        let met = match t.measured {
            Some(m) if t.at_most => m <= t.limit,
            Some(m) => m >= t.limit,
            None => false,
        };
        // Two decimals, or three where two would round a miss onto the limit.
        let measured = match t.measured {
            Some(m) if !met && format!("{m:.2}") == format!("{:.2}", t.limit) => format!("{m:.3}×"),
            m => fmt_ratio(m),
        };
        let _ = writeln!(
            out,
            "| {} | {measured} | {} {:.2}× | {} | {} |",
            t.what,
            if t.at_most { "≤" } else { "≥" },
            t.limit,
            if t.measured.is_none() {
                "not measured"
            } else if met {
                "yes"
            } else {
                "**no**"
            },
            t.detail
        );
    }
    out
}

fn rpc_table(doc: &Doc) -> String {
    let mut out = String::new();
    let sys = systems(doc);
    let _ = write!(out, "| case |");
    for s in &sys {
        let _ = write!(out, " {s} |");
    }
    let _ = write!(out, " sigma ÷ tonic | sigma ÷ sigma-pingpong |\n|---|");
    for _ in &sys {
        let _ = write!(out, "---:|");
    }
    out.push_str("---:|---:|\n");
    let mut cases: Vec<&str> = Vec::new();
    for r in &doc.rows {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    for c in cases {
        let throughput = doc.rows.iter().any(|r| r.case == c && r.ops_per_s.is_some());
        let _ = write!(out, "| {c} |");
        for s in &sys {
            let text = match row(doc, c, s) {
                Some(r) if throughput => {
                    format!(
                        "{}, p50 {} · {}",
                        ops(r.ops_per_s),
                        fmt_us(r.p50_us),
                        fmt_us(r.cpu_us_per_op)
                    )
                }
                Some(r) => cell(Some(r)),
                None => "—".to_string(),
            };
            let _ = write!(out, " {text} |");
        }
        let key = |s: &str| {
            row(doc, c, s).and_then(|r| {
                if throughput {
                    r.ops_per_s.map(|x| 1.0 / x)
                } else {
                    r.p50_us
                }
            })
        };
        let _ = writeln!(
            out,
            " {} | {} |",
            fmt_ratio(ratio(key("sigma"), key("tonic"))),
            fmt_ratio(ratio(key("sigma"), key("sigma-pingpong")))
        );
    }
    out.push_str(
        "\nCells: p50 / p99 µs · CPU µs per call (client + server threads); throughput rows: calls/s, p50 µs · CPU µs per call. Ratios: p50 (throughput rows: time per call).\n",
    );
    out
}

fn ns_table(doc: &Doc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | sigma-embedded | sigma-etcd | etcd-raw | embedded ÷ raw | sigma-etcd ÷ raw |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let mut cases: Vec<&str> = Vec::new();
    for r in &doc.rows {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    for c in cases {
        let p = |s: &str| row(doc, c, s).and_then(|r| r.p50_us);
        let _ = writeln!(
            out,
            "| {c} | {} | {} | {} | {} | {} |",
            fmt_us(p("sigma-embedded")),
            fmt_us(p("sigma-etcd")),
            fmt_us(p("etcd-raw")),
            fmt_ratio(ratio(p("sigma-embedded"), p("etcd-raw"))),
            fmt_ratio(ratio(p("sigma-etcd"), p("etcd-raw")))
        );
    }
    out.push_str("\np50 µs of sequential operations by one client.\n");
    out
}

/// The text of every README block the documents at hand can fill, by name.
pub fn blocks(docs: &BTreeMap<String, Doc>) -> BTreeMap<&'static str, String> {
    let mut b = BTreeMap::new();
    if let Some(d) = docs.get("peers") {
        let src = source(d, "results/peers.json");
        b.insert("peers-source", src);
        b.insert("peers-targets", targets_table(&peers_targets(d)));
        b.insert("peers-spin", pingpong_table(d, "spin", "sigma"));
        b.insert("peers-park", pingpong_table(d, "park", "sigma-nospin"));
        b.insert("peers-paced", full_case_table(d, "paced-64B", false));
        b.insert("peers-pipelined", full_case_table(d, "pipelined-64B", true));
    }
    if let Some(d) = docs.get("rpc") {
        b.insert("rpc-source", source(d, "results/rpc.json"));
        b.insert("rpc", rpc_table(d));
    }
    if let Some(d) = docs.get("ns") {
        b.insert("ns-source", source(d, "results/ns.json"));
        b.insert("ns", ns_table(d));
    }
    // The spawn suites' blocks are the breakdown, ratio and target tables of their Markdown.
    if let Some(d) = docs.get("spawn") {
        b.insert("spawn-source", source(d, "results/spawn.json"));
        b.insert("spawn", crate::suites::spawn::markdown(d).trim_start().to_string());
    }
    if let Some(d) = docs.get("spawn-rate") {
        b.insert("spawn-rate-source", source(d, "results/spawn-rate.json"));
        b.insert(
            "spawn-rate",
            crate::suites::spawn_rate::markdown(d).trim_start().to_string(),
        );
    }
    b
}

/// `text` with every marked block whose name `blocks` has replaced by that block's text.
/// Unknown names, a begin without its end, or a block the documents cannot fill are errors.
pub fn splice(text: &str, blocks: &BTreeMap<&'static str, String>) -> Result<String> {
    const BEGIN: &str = "<!-- sigmabench:begin ";
    const END: &str = "<!-- sigmabench:end ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(BEGIN) {
        let after = &rest[i + BEGIN.len()..];
        let Some(close) = after.find("-->") else {
            bail!("unterminated begin marker: {}", &rest[i..rest.len().min(i + 60)]);
        };
        let name = after[..close].trim();
        let Some(text) = blocks.get(name) else {
            bail!(
                "README block '{name}' has no results behind it (known with these results: {})",
                blocks.keys().copied().collect::<Vec<_>>().join(", ")
            );
        };
        let end_marker = format!("{END}{name} -->");
        let body_start = i + BEGIN.len() + close + "-->".len();
        let Some(end) = rest[body_start..].find(&end_marker) else {
            bail!("README block '{name}' has no end marker ({end_marker})");
        };
        out.push_str(&rest[..body_start]);
        out.push('\n');
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&end_marker);
        rest = &rest[body_start + end + end_marker.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Host;

    fn r(case: &str, system: &str, waits: &str, p50: f64, p99: f64, cpu: f64, ops: Option<f64>) -> Row {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        h.record((p50 * 1000.0) as u64).unwrap();
        let mut row = Row::measured(case, system, &h, ops, String::new()).with_waits(waits);
        row.p99_us = Some(p99);
        row.cpu_us_per_op = Some(cpu);
        row
    }

    fn doc(rows: Vec<Row>) -> Doc {
        Doc {
            suite: "peers".into(),
            schema: 1,
            quick: false,
            host: Host::detect(),
            started_at: "2026-11-26T00:00:00Z".into(),
            rounds: 3,
            elapsed_s: 1.0,
            rows,
        }
    }

    fn peers() -> Doc {
        doc(vec![
            r("pingpong-64B", "sigma", "spin", 8.0, 12.0, 16.0, None),
            r("pingpong-64B", "sigma-nospin", "park", 60.0, 90.0, 50.0, None),
            r("pingpong-64B", "tokio", "park", 50.0, 80.0, 48.0, None),
            r("pingpong-64B", "tokio-spin", "spin", 10.0, 14.0, 18.0, None),
            r("pingpong-64B", "spin-floor", "floor", 6.0, 9.0, 13.0, None),
            r("paced-64B", "sigma", "spin", 12.0, 20.0, 90.0, None),
            r("paced-64B", "tokio", "park", 50.0, 40.0, 100.0, None),
            r("paced-64B", "spin-floor", "floor", 10.0, 15.0, 250.0, None),
            r("pipelined-64B", "sigma", "spin", 250.0, 500.0, 0.5, Some(3.6e6)),
            r("pipelined-64B", "tokio", "park", 250.0, 500.0, 0.5, Some(4.0e6)),
        ])
    }

    #[test]
    fn targets_compare_sigma_with_the_best_peer_of_its_kind() {
        let t = targets_table(&peers_targets(&peers()));
        // 8 / 10 against tokio-spin (tokio parks, the floor is not a peer).
        assert!(
            t.contains(
                "| pingpong-64B: sigma p50 ÷ best spinning peer | 0.80× | ≤ 0.60× | **no** | tokio-spin 10.0 µs |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| pingpong-64B: sigma p50 ÷ spin-floor | 1.33× | ≤ 1.20× | **no** |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| pingpong-64B: sigma-nospin p50 ÷ best parking peer | 1.20× | ≤ 1.00× | **no** | tokio 50.0 µs |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| paced-64B: sigma p99 ÷ best peer's p99 | 0.50× | ≤ 1.00× | yes | tokio 40.0 µs |"),
            "{t}"
        );
        assert!(
            t.contains("| paced-64B: sigma CPU/op ÷ tokio's | 0.90× | ≤ 1.50× | yes |"),
            "{t}"
        );
        assert!(
            t.contains("| pipelined-64B: sigma ops/s ÷ best peer | 0.90× | ≥ 0.95× | **no** | tokio 4.00 M/s |"),
            "{t}"
        );
    }

    #[test]
    fn pingpong_tables_hold_one_class_and_the_floor() {
        let d = peers();
        let spin = pingpong_table(&d, "spin", "sigma");
        assert!(spin.contains("| **sigma** | 8.0 / 12.0 · 16.0 |"), "{spin}");
        assert!(
            spin.contains("| tokio-spin |") && spin.contains("| spin-floor (floor) |"),
            "{spin}"
        );
        assert!(!spin.contains("| tokio |") && !spin.contains("sigma-nospin"), "{spin}");
        assert!(
            spin.contains("| sigma ÷ best spinning peer (p50) | 0.80× (tokio-spin) |"),
            "{spin}"
        );
        let park = pingpong_table(&d, "park", "sigma-nospin");
        assert!(
            park.contains("| **sigma-nospin** |") && park.contains("| tokio |"),
            "{park}"
        );
        assert!(park.contains("| sigma-nospin ÷ floor (p50) | 10.00× |"), "{park}");
    }

    #[test]
    fn splice_replaces_marked_blocks_and_refuses_unknown_ones() {
        let mut docs = BTreeMap::new();
        docs.insert("peers".to_string(), peers());
        let b = blocks(&docs);
        let readme =
            "intro\n<!-- sigmabench:begin peers-targets -->\nold table\n<!-- sigmabench:end peers-targets -->\nafter\n";
        let out = splice(readme, &b).unwrap();
        assert!(
            out.starts_with("intro\n<!-- sigmabench:begin peers-targets -->\n| target |"),
            "{out}"
        );
        assert!(out.ends_with("<!-- sigmabench:end peers-targets -->\nafter\n"), "{out}");
        assert!(!out.contains("old table"));
        assert_eq!(splice(&out, &b).unwrap(), out, "splicing is idempotent");
        let e = splice("<!-- sigmabench:begin rpc -->\n<!-- sigmabench:end rpc -->", &b).unwrap_err();
        assert!(format!("{e}").contains("no results behind it"), "{e}");
        let e = splice("<!-- sigmabench:begin peers-spin -->\nx", &b).unwrap_err();
        assert!(format!("{e}").contains("no end marker"), "{e}");
        assert_eq!(splice("no markers", &b).unwrap(), "no markers");
    }
}
