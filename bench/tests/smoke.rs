//! The sigmabench binary behaves: it writes schema-1 JSON with a row per
//! (case, system), refuses unknown names, and serves a working echo.
//! (Figures are not judged here: performance is shown by sigmabench runs.)

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn sigmabench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sigmabench"))
}

/// The sigmad the `ns` suite runs, built beside this sigmabench (same target dir and profile).
/// Built every time: a no-op when it is fresh, and a stale sigmad would test old code.
fn sigmad() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_sigmabench")).parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "sigma-tools", "--bin", "sigmad"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            build.arg("--release");
        }
        Some("debug") => {}
        other => panic!("sigmabench is not in a debug or release dir: {other:?}"),
    }
    build.arg("--target-dir").arg(dir.parent().unwrap());
    let status = build.status().unwrap();
    assert!(status.success(), "cargo build -p sigma-tools: {status}");
    let sigmad = dir.join("sigmad");
    assert!(sigmad.is_file(), "{} missing after the build", sigmad.display());
    sigmad
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
    let out = sigmabench()
        .args([
            "run",
            "peers",
            "--quick",
            "--systems",
            "sigma,sigma-epoll,spin-floor",
            "--cases",
            "pingpong-64B-unix,pingpong-64B",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--md")
        .arg(&md)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["suite"], "peers");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    assert!(doc["host"]["cores"].as_u64().unwrap() >= 1);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        assert!(row.get("error").is_none_or(|e| e.is_null()), "error row: {row}");
        let p50 = row["p50_us"].as_f64().unwrap();
        let p99 = row["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
        assert!(row["ops_per_s"].is_null(), "ping-pong has no throughput: {row}");
        assert!(row["samples"].as_u64().unwrap() > 0);
    }
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.contains("| pingpong-64B-unix | sigma |"), "{table}");
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
        if row["case"] != "rpc-pipelined-64B" {
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
