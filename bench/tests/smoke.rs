//! The sigmabench binary behaves: it writes schema-1 JSON with a row per
//! (case, system), refuses unknown names, and serves a working echo.
//! (Figures are not judged here: performance is shown by sigmabench runs.)

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::sigmad;

fn sigmabench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sigmabench"))
}

/// Runs the quick `ns` suite on `systems` and returns its JSON rows.
fn quick_ns(systems: &str, cases: Option<&str>) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ns.json");
    let mut cmd = sigmabench();
    cmd.args(["run", "ns", "--quick", "--systems", systems])
        .arg("--json")
        .arg(&json)
        .env("SIGMA_SIGMAD", sigmad());
    if let Some(cases) = cases {
        cmd.args(["--cases", cases]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["suite"], "ns");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    let rows = doc["rows"].as_array().unwrap().clone();
    for row in &rows {
        assert!(row.get("error").is_none_or(|e| e.is_null()), "error row: {row}");
        let p50 = row["p50_us"].as_f64().unwrap();
        let p99 = row["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
        assert!(row["samples"].as_u64().unwrap() > 0, "{row}");
        if row["case"] == "watch-notify" {
            assert!(row["ops_per_s"].is_null(), "watch latency has no throughput: {row}");
            assert!(row["note"].as_str().unwrap().contains("the write's own reply"), "{row}");
        } else {
            assert!(row["ops_per_s"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
    rows
}

fn cases_and_systems(rows: &[serde_json::Value]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|r| (r["case"].as_str().unwrap(), r["system"].as_str().unwrap()))
        .collect()
}

#[test]
fn quick_ns_run_measures_a_real_sigmad() {
    let rows = quick_ns("sigma-embedded", None);
    let got = cases_and_systems(&rows);
    let want: Vec<(&str, &str)> = [
        "stat",
        "read-4KiB",
        "write-4KiB",
        "create-remove",
        "watch-notify",
        "read-during-writes",
    ]
    .into_iter()
    .map(|c| (c, "sigma-embedded"))
    .collect();
    assert_eq!(got, want);
    assert!(rows.iter().all(|r| r["note"].as_str().unwrap().contains("sigmad")));
}

#[test]
fn quick_ns_run_on_etcd() {
    let rows = quick_ns("etcd-raw,sigma-etcd", Some("read-4KiB,watch-notify"));
    assert_eq!(
        cases_and_systems(&rows),
        [
            ("read-4KiB", "etcd-raw"),
            ("read-4KiB", "sigma-etcd"),
            ("watch-notify", "etcd-raw"),
            ("watch-notify", "sigma-etcd"),
        ]
    );
    assert!(
        rows[1]["note"].as_str().unwrap().contains("sigmad --etcd"),
        "{}",
        rows[1]
    );
}

#[test]
fn quick_run_writes_a_row_per_case_and_system() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("peers.json");
    let md = dir.path().join("peers.md");
    let plots = dir.path().join("plots");
    let out = sigmabench()
        .args([
            "run",
            "peers",
            "--quick",
            "--systems",
            "sigma,sigma-nospin,spin-floor",
            "--cases",
            "pingpong-64B-unix,pingpong-64B,paced-64B",
            "--rate",
            "2000",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--md")
        .arg(&md)
        .arg("--plot")
        .arg(&plots)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["suite"], "peers");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    assert!(doc["host"]["cores"].as_u64().unwrap() >= 1);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for row in rows {
        assert!(row.get("error").is_none_or(|e| e.is_null()), "error row: {row}");
        let p50 = row["p50_us"].as_f64().unwrap();
        let p99 = row["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
        assert!(
            row["ops_per_s"].is_null(),
            "ping-pong and paced rows have no throughput: {row}"
        );
        assert!(row["samples"].as_u64().unwrap() > 0);
        // Every row says what its operations cost in CPU, split by side.
        let cpu = row["cpu_us_per_op"]
            .as_f64()
            .unwrap_or_else(|| panic!("no cpu_us_per_op: {row}"));
        let (c, s) = (
            row["client_cpu_us_per_op"].as_f64().unwrap(),
            row["server_cpu_us_per_op"].as_f64().unwrap(),
        );
        assert!(c > 0.0 && s > 0.0 && (c + s - cpu).abs() < 0.01, "{row}");
        let busy = row["cores_busy"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 2.2, "{row}");
        let waits = row["waits"].as_str().unwrap();
        let want = match row["system"].as_str().unwrap() {
            "sigma" => "spin",
            "sigma-nospin" => "park",
            _ => "floor",
        };
        assert_eq!(waits, want, "{row}");
    }
    // The paced case: 2,000 requests/s for 0.5 s, each recorded from its intended send time.
    let paced: Vec<_> = rows.iter().filter(|r| r["case"] == "paced-64B").collect();
    assert_eq!(paced.len(), 3);
    for row in paced {
        assert_eq!(row["samples"], 1000, "{row}");
        assert!(
            row["p999_us"].as_f64().unwrap() >= row["p99_us"].as_f64().unwrap(),
            "{row}"
        );
        assert!(
            row["note"].as_str().unwrap().contains("2000 requests/s open-loop"),
            "{row}"
        );
    }
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.contains("| pingpong-64B-unix | sigma |"), "{table}");
    assert!(table.contains("CPU µs/op (client + server)"), "{table}");
    let svg = std::fs::read_to_string(plots.join("peers.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("sigma-nospin") && svg.contains("paced-64B"));
}

/// Runs `sigmabench ARGS` and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = sigmabench().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small peers result document, as `run --json` writes it.
fn peers_doc(sigma_p50: f64) -> serde_json::Value {
    let row = |case: &str, system: &str, waits: &str, p50: f64, ops: Option<f64>| {
        serde_json::json!({
            "case": case, "system": system, "samples": 100, "mean_us": p50, "sd_us": null,
            "p50_us": p50, "p99_us": p50 * 2.0, "p999_us": p50 * 3.0, "max_us": p50 * 4.0,
            "ops_per_s": ops, "cpu_us_per_op": p50 * 2.0, "cores_busy": 1.0,
            "client_cpu_us_per_op": p50, "server_cpu_us_per_op": p50, "waits": waits, "note": "n"
        })
    };
    serde_json::json!({
        "suite": "peers", "schema": 1, "quick": false,
        "host": {"cores": 2, "kernel": "6.18", "io_uring": true, "cgroup": "v1", "loadavg_1m": 0.5},
        "started_at": "2026-11-26T00:00:00Z", "rounds": 3, "elapsed_s": 10.0,
        "rows": [
            row("pingpong-64B", "sigma", "spin", sigma_p50, None),
            row("pingpong-64B", "tokio-spin", "spin", 10.0, None),
            row("pingpong-64B", "sigma-nospin", "park", 60.0, None),
            row("pingpong-64B", "tokio", "park", 50.0, None),
            row("pingpong-64B", "spin-floor", "floor", 6.0, None),
            row("pipelined-64B", "sigma", "spin", 250.0, Some(3.0e6)),
            row("pipelined-64B", "tokio", "park", 250.0, Some(3.1e6)),
        ]
    })
}

#[test]
fn report_rebuilds_the_readme_tables_results_and_plots_from_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    std::fs::write(results.join("peers.json"), peers_doc(8.0).to_string()).unwrap();
    let readme = dir.path().join("README.md");
    std::fs::write(
        &readme,
        "# x\n<!-- sigmabench:begin peers-targets -->\nstale\n<!-- sigmabench:end peers-targets -->\nprose\n",
    )
    .unwrap();
    let (r, p) = (results.to_str().unwrap(), readme.to_str().unwrap());
    let (code, _, err) = run(&["report", "--results", r, "--readme", p, "--check"]);
    assert_eq!(code, 1, "a stale README must fail the check: {err}");
    assert!(err.contains("README.md") && err.contains("peers.md"), "{err}");
    let (code, _, err) = run(&["report", "--results", r, "--readme", p]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(!text.contains("stale") && text.ends_with("prose\n"), "{text}");
    assert!(
        text.contains("| pingpong-64B: sigma p50 ÷ best spinning peer | 0.80× |"),
        "{text}"
    );
    assert!(results.join("peers.md").is_file() && results.join("plots/peers.svg").is_file());
    let (code, _, err) = run(&["report", "--results", r, "--readme", p, "--check"]);
    assert_eq!(code, 0, "{err}");
    // A block with no results behind it is an error, not an empty table.
    std::fs::write(&readme, "<!-- sigmabench:begin rpc -->\n<!-- sigmabench:end rpc -->\n").unwrap();
    let (code, _, err) = run(&["report", "--results", r, "--readme", p]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no results behind it"), "{err}");
}

#[test]
fn the_readme_figures_match_the_committed_results() {
    // Every table and plot the README shows is what `sigmabench report` makes of results/*.json.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (code, _, err) = run(&[
        "report",
        "--results",
        root.join("results").to_str().unwrap(),
        "--readme",
        root.join("README.md").to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn compare_flags_regressions_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (old, same, slower) = (
        dir.path().join("old.json"),
        dir.path().join("same.json"),
        dir.path().join("slow.json"),
    );
    std::fs::write(&old, peers_doc(8.0).to_string()).unwrap();
    std::fs::write(&same, peers_doc(8.2).to_string()).unwrap();
    std::fs::write(&slower, peers_doc(12.0).to_string()).unwrap();
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();
    let (code, out, err) = run(&["compare", &p(&old), &p(&same)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 row(s) regressed."), "{out}");
    let (code, out, _) = run(&["compare", &p(&old), &p(&slower)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("| pingpong-64B | sigma | 1.50× | 1.50× | 1.50× | **REGRESSED**: p50, CPU/op |"),
        "{out}"
    );
    let (code, _, _) = run(&["compare", &p(&old), &p(&slower), "--threshold", "0.6"]);
    assert_eq!(code, 0, "50% worse is within a 60% threshold");
    let (code, _, err) = run(&["compare", &p(&old), "/nonexistent.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.json"), "{err}");
}

#[test]
fn quick_rpc_run_writes_a_row_per_case_and_system() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rpc.json");
    let out = sigmabench()
        .args(["run", "rpc", "--quick", "--systems", "tonic,sigma-pingpong"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["suite"], "rpc");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    let rows = doc["rows"].as_array().unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["case"].as_str().unwrap(), r["system"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("rpc-seq-64B", "tonic"),
            ("rpc-seq-64B", "sigma-pingpong"),
            ("rpc-pipelined-64B", "tonic"),
            ("rpc-pipelined-64B", "sigma-pingpong"),
            ("rpc-seq-work-300us", "tonic"),
            ("rpc-seq-work-300us", "sigma-pingpong"),
            // Only systems with a paced client run the paced case.
            ("rpc-paced-64B", "tonic"),
        ]
    );
    for row in rows {
        assert!(row.get("error").is_none_or(|e| e.is_null()), "error row: {row}");
        let p50 = row["p50_us"].as_f64().unwrap();
        let p99 = row["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
        assert!(row["samples"].as_u64().unwrap() > 0, "{row}");
        if row["case"] == "rpc-seq-work-300us" {
            // The handler works 300 µs before every reply.
            assert!(p50 >= 300.0, "{row}");
        }
        assert!(row["cpu_us_per_op"].as_f64().unwrap() > 0.0, "{row}");
        if row["case"] == "rpc-paced-64B" {
            assert!(row["ops_per_s"].is_null() && row["sd_us"].is_null(), "{row}");
            assert!(row["note"].as_str().unwrap().contains("5000 calls/s"), "{row}");
        } else if row["case"] != "rpc-pipelined-64B" {
            let sd = row["sd_us"].as_f64().unwrap_or_else(|| panic!("no sd_us: {row}"));
            assert!(sd >= 0.0, "{row}");
            assert!(row["ops_per_s"].is_null(), "sequential calls have no throughput: {row}");
        } else {
            assert!(row["ops_per_s"].as_f64().unwrap() > 0.0, "{row}");
            assert!(row["sd_us"].is_null(), "{row}");
        }
    }
}

#[test]
fn unknown_names_are_refused_with_the_known_ones() {
    let out = sigmabench()
        .args(["run", "peers", "--systems", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown system 'nope'") && err.contains("spin-floor"),
        "{err}"
    );
    let out = sigmabench().args(["run", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = sigmabench().args(["run", "peers", "--cases", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The rpc suite has its own systems and cases.
    let out = sigmabench()
        .args(["run", "rpc", "--systems", "tokio"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown system 'tokio'") && err.contains("sigma-pingpong") && err.contains("tonic"),
        "{err}"
    );
    let out = sigmabench()
        .args(["run", "rpc", "--cases", "pingpong-64B"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rpc-pipelined-64B"), "{err}");
    // So has the ns suite; names are checked before any etcd or sigmad starts.
    let out = sigmabench().args(["run", "ns", "--systems", "sigma"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown system 'sigma'") && err.contains("sigma-embedded") && err.contains("etcd-raw"),
        "{err}"
    );
    let out = sigmabench()
        .args(["run", "ns", "--cases", "rpc-seq-64B"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watch-notify") && !err.contains("starting etcd"), "{err}");
}

#[test]
fn serve_echo_serves_outside_clients() {
    for system in ["sigma", "sigma-epoll", "tokio"] {
        let mut child = sigmabench()
            .args([
                "serve",
                "echo",
                "--system",
                system,
                "--addr",
                "127.0.0.1:0",
                "--core",
                "0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{system}: {line:?}"))
            .to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"hello sigma").unwrap();
        let mut back = [0u8; 11];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello sigma", "{system}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
