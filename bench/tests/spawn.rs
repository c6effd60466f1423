//! The `spawn` and `spawn-rate` suites run against the real kernel (and the real Docker engine,
//! where one answers): every (case, system) has a row, a row without figures says why, the floor
//! is always measured, and nothing is left behind (cgroups, Docker images, temporary files).
//! Figures are not judged here.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::sigmad;

const SPAWN_CASES: [&str; 3] = ["warm-start", "cold-start", "cold-start-s3"];
const SPAWN_SYSTEMS: [&str; 4] = ["sigma", "sigma-sandbox", "vfork-exec", "docker"];
const RATE_CASES: [&str; 3] = ["trivial-c1", "trivial-c8", "trivial-c32"];
const RATE_SYSTEMS: [&str; 3] = ["sigma", "sigma-sandbox", "vfork-exec"];
const BREAKDOWN: [&str; 9] = [
    "schedule_us",
    "fetch_us",
    "verify_us",
    "namespaces_us",
    "cgroups_us",
    "jail_us",
    "seccomp_us",
    "exec_to_started_us",
    "started_to_reaped_us",
];

/// Runs `sigmabench run SUITE --quick` with its temporary files in `tmp`; its pid and rows.
fn quick(suite: &str, tmp: &Path, sigmad: &Path) -> (u32, Vec<serde_json::Value>) {
    let json = tmp.join(format!("{suite}.json"));
    let child = Command::new(env!("CARGO_BIN_EXE_sigmabench"))
        .args(["run", suite, "--quick", "--json"])
        .arg(&json)
        .env("TMPDIR", tmp.join("scratch"))
        .env("SIGMA_SIGMAD", sigmad)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: every row measured; 1: some error rows (each checked below); anything else is a crash.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{suite}: {}\n{stderr}",
        out.status
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["suite"], suite);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["quick"], true);
    let rows = doc["rows"].as_array().unwrap().clone();
    let errors = rows.iter().any(|r| r.get("error").is_some());
    assert_eq!(
        out.status.code() == Some(1),
        errors,
        "exit status and error rows disagree\n{stderr}"
    );
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains(&format!("× {}", "vfork-exec")),
        "no ratios to the floor:\n{md}"
    );
    (pid, rows)
}

/// Each (case, system) exactly once, in order; a row has figures or an error, never both.
fn check_rows(rows: &[serde_json::Value], cases: &[&str], systems: &[&str]) {
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["case"].as_str().unwrap(), r["system"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = cases
        .iter()
        .flat_map(|c| systems.iter().map(move |s| (*c, *s)))
        .collect();
    assert_eq!(got, want);
    for r in rows {
        match r.get("error") {
            Some(e) => {
                assert!(
                    e.as_str().is_some_and(|e| e.len() > 10),
                    "an error row without a reason: {r}"
                );
                for f in [
                    "samples",
                    "p50_us",
                    "p99_us",
                    "p999_us",
                    "max_us",
                    "mean_us",
                    "ops_per_s",
                ] {
                    assert!(r[f].is_null(), "an error row with {f}: {r}");
                }
            }
            None => {
                let p50 = r["p50_us"].as_f64().unwrap();
                assert!(p50 > 0.0 && r["p99_us"].as_f64().unwrap() >= p50, "{r}");
                assert!(r["samples"].as_u64().unwrap() > 0, "{r}");
            }
        }
    }
}

fn row<'a>(rows: &'a [serde_json::Value], case: &str, system: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["case"] == case && r["system"] == system)
        .unwrap()
}

/// Directories under the cgroup hierarchies named `prefix*`, a few levels down.
fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: u32, prefix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p.clone());
            }
            if depth > 0 {
                walk(&p, depth - 1, prefix, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 5, prefix, &mut out);
    out
}

#[test]
fn quick_spawn_suites_have_every_row_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("scratch")).unwrap();

    let sigmad = sigmad();
    let (spawn_pid, rows) = quick("spawn", tmp.path(), &sigmad);
    check_rows(&rows, &SPAWN_CASES, &SPAWN_SYSTEMS);
    // The floor always runs, with a breakdown whose fields are present (null where they do not
    // apply): the copy is its only step, and only when cold.
    for case in ["warm-start", "cold-start"] {
        let r = row(&rows, case, "vfork-exec");
        assert!(r.get("error").is_none(), "{r}");
        for f in BREAKDOWN {
            assert!(r.get(f).is_some(), "{case}: no {f}: {r}");
        }
        assert_eq!(r["fetch_us"].is_null(), case == "warm-start", "{r}");
    }
    // σ through sigmad: measured where sigmad can run procs, else saying why; every start, from
    // the local store or from S3 (an S3 server in sigmabench and a sigmad on it), reports
    // sigmad's own times of its steps (START_TIMES); verify is inside fetch.
    for case in ["warm-start", "cold-start", "cold-start-s3"] {
        let r = row(&rows, case, "sigma");
        match r.get("error") {
            Some(e) => assert!(e.as_str().unwrap().contains("sigmad"), "{r}"),
            None => {
                for f in [
                    "schedule_us",
                    "fetch_us",
                    "namespaces_us",
                    "cgroups_us",
                    "jail_us",
                    "seccomp_us",
                ] {
                    assert!(r[f].as_f64().is_some(), "{case}: no {f}: {r}");
                }
                assert!(r["namespaces_us"].as_f64().unwrap() > 0.0, "{r}");
                assert!(r["verify_us"].is_null() && r["exec_to_started_us"].is_null(), "{r}");
                assert!(r["cpu_us_per_op"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
    }
    if row(&rows, "cold-start", "sigma").get("error").is_none() {
        let r = row(&rows, "cold-start-s3", "sigma");
        assert!(
            r.get("error").is_none(),
            "sigmad runs procs, so the start from S3 is measured: {r}"
        );
        assert!(r["note"].as_str().unwrap().contains("S3"), "{r}");
    }
    // The sandbox: measured as root with cgroups, else an error with the reason; a cold start
    // fetches and verifies.
    let r = row(&rows, "cold-start", "sigma-sandbox");
    match r.get("error") {
        None => {
            for f in [
                "fetch_us",
                "verify_us",
                "namespaces_us",
                "cgroups_us",
                "jail_us",
                "seccomp_us",
            ] {
                assert!(r[f].as_f64().unwrap() > 0.0, "{f}: {r}");
            }
            assert!(r["schedule_us"].is_null(), "no scheduler in the sandbox alone: {r}");
        }
        Some(e) => assert!(e.as_str().unwrap().contains("sandbox"), "{r}"),
    }
    // Docker: a measurement, or why not.
    for case in ["warm-start", "cold-start"] {
        let r = row(&rows, case, "docker");
        if let Some(e) = r.get("error") {
            assert!(e.as_str().unwrap().to_lowercase().contains("docker"), "{r}");
        }
    }
    // The floor fetches from S3 with a bare client: measured, with its fetch.
    let r = row(&rows, "cold-start-s3", "vfork-exec");
    assert!(r.get("error").is_none(), "the floor's start from S3 is measured: {r}");
    assert!(r["fetch_us"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["note"].as_str().unwrap().contains("S3"), "{r}");
    // The sandbox alone and Docker have no binary store to fetch from S3 with; they say why not.
    for system in ["sigma-sandbox", "docker"] {
        let r = row(&rows, "cold-start-s3", system);
        let e = r["error"].as_str().unwrap_or_default();
        assert!(e.starts_with("not measured: ") && e.contains("store"), "{r}");
    }

    let (rate_pid, rows) = quick("spawn-rate", tmp.path(), &sigmad);
    check_rows(&rows, &RATE_CASES, &RATE_SYSTEMS);
    for case in RATE_CASES {
        let r = row(&rows, case, "vfork-exec");
        assert!(r.get("error").is_none(), "{r}");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cpu_us_per_op"].as_f64().unwrap() > 0.0, "{r}");
    }

    for pid in [spawn_pid, rate_pid] {
        let left = cgroups_named(&format!("sigma-bench-{pid}-"));
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("scratch"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    if let Ok(out) = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    {
        let images = String::from_utf8_lossy(&out.stdout);
        let ours: Vec<&str> = images
            .lines()
            .filter(|l| l.starts_with("sigma-bench-spawn") && l.contains(&format!(":{spawn_pid}-")))
            .collect();
        assert!(ours.is_empty(), "Docker images left behind: {ours:?}");
    }
}

#[test]
fn a_killed_runs_cgroups_and_jail_are_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let run = |rounds: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sigmabench"));
        c.args([
            "run",
            "spawn",
            "--quick",
            "--rounds",
            rounds,
            "--cases",
            "warm-start",
            "--systems",
            "sigma-sandbox,vfork-exec",
        ])
        .env("TMPDIR", &scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        c
    };
    // A run killed once its sandbox is set up leaves its cgroups and jail
    // directory (nothing runs its cleanup).
    // Enough rounds to be running when it is killed.
    let mut first = run("500").spawn().unwrap();
    let pid = first.id();
    let prefix = format!("sigma-bench-{pid}-");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cgroups_named(&prefix).is_empty() {
        if let Some(status) = first.try_wait().unwrap() {
            // No sandbox here (not root, no cgroups): its row is an error row
            // and the run exits 1 without making anything.
            let mut err = String::new();
            std::io::Read::read_to_string(&mut first.stderr.take().unwrap(), &mut err).unwrap();
            assert_eq!(
                status.code(),
                Some(1),
                "the run ended before it could be killed: {status}\n{err}"
            );
            eprintln!("skipping: the run set up no sandbox here:\n{err}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no sandbox cgroups after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        !cgroups_named(&prefix).is_empty(),
        "the killed run left nothing to test with"
    );
    let jails = |p: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|e| e.file_name().is_some_and(|n| n.to_string_lossy().starts_with(p)))
            .collect()
    };
    // The next run removes them (and says so; a run of another test at
    // the same time may get there first: only a run's reclaim removes
    // them, the killed run's cleanup never ran).
    let out = run("1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}\n{stderr}", out.status);
    let left = cgroups_named(&prefix);
    assert!(left.is_empty(), "the killed run's cgroups are still there: {left:?}");
    let left = jails(&prefix);
    assert!(
        left.is_empty(),
        "the killed run's jail directory is still there: {left:?}"
    );
}
