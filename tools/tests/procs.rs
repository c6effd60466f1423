//! Procs through sigmad and sigmactl (issue #11): binaries put in the
//! store and refused when they are not static executables; procs spawned
//! in σcontainers, waited for with their exit status, crash signal, kill or
//! eviction; bounded logs; realms kept apart; bad input refused with a
//! clear error. Against the real kernel: needs root and cgroup controllers,
//! and skips with a message where sigmad says procs are disabled.

mod common;

use common::Daemon;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The test procs: single-file Rust programs built static with rustc.
const PROCS: &[(&str, &str)] = &[
    (
        "exit",
        r#"fn main() {
            let code: i32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
            println!("pid {} realm {}", std::env::var("SIGMA_PID").unwrap_or_default(),
                     std::env::var("SIGMA_REALM").unwrap_or_default());
            std::process::exit(code);
        }"#,
    ),
    (
        "crash",
        r#"fn main() {
            let p = std::hint::black_box(16usize) as *mut u8;
            unsafe { p.write_volatile(1) };
        }"#,
    ),
    (
        "sleep",
        r#"fn main() {
            let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(60_000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }"#,
    ),
    (
        "flood",
        r#"use std::io::Write;
        fn main() {
            let line = [b'x'; 1023];
            let mut out = std::io::stdout().lock();
            for _ in 0..4096 { let _ = out.write_all(&line); let _ = out.write_all(b"\n"); }
        }"#,
    ),
];

/// Builds the test procs once per test binary run (into the target's temp
/// dir), returning the directory holding them.
fn procs() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigmad-test-procs");
            std::fs::create_dir_all(&dir).unwrap();
            for (name, src) in PROCS {
                let src_path = dir.join(format!("{name}.rs"));
                let bin = dir.join(name);
                let same = std::fs::read_to_string(&src_path).is_ok_and(|s| s == *src);
                if same && bin.exists() {
                    continue;
                }
                std::fs::write(&src_path, src).unwrap();
                let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                    .args(["-O", "-C", "target-feature=+crt-static", "--edition", "2021", "-o"])
                    .arg(&bin)
                    .arg(&src_path)
                    .output()
                    .expect("rustc");
                assert!(
                    out.status.success(),
                    "building {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            dir
        })
        .clone()
}

/// A sigmad with the test procs in its store, or None (with a message)
/// where this machine cannot run procs.
fn sigmad(dir: &Path) -> Option<Daemon> {
    let d = Daemon::start_procs(dir);
    let bins = procs();
    for (name, _) in PROCS {
        d.ok(&["bin", "put", name, bins.join(name).to_str().unwrap()]);
    }
    let probe = d.ctl(&["spawn", "exit"]);
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr);
        if why.contains("cannot start procs") {
            eprintln!("skipping: this sigmad cannot start procs here: {why}");
            return None;
        }
        panic!("the first spawn failed: {why}");
    }
    Some(d)
}

fn pid_of(out: &str) -> String {
    let pid = out.trim().to_string();
    assert!(pid.parse::<u64>().is_ok(), "spawn printed {out:?}, not a pid");
    pid
}

#[test]
fn a_proc_runs_in_its_realm_and_its_status_and_output_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    d.ok(&["realm", "create", "blue"]);
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "exit", "--", "7"]));
    let wait = d.ctl(&["wait", "-r", "blue", &pid]);
    assert_eq!(wait.status.code(), Some(7), "wait exits with the proc's code");
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "error(7)");
    let logs = d.ok(&["logs", "-r", "blue", &pid]);
    assert_eq!(logs.trim(), format!("pid {pid} realm blue"));
    let ps = d.ok(&["ps", "-r", "blue"]);
    assert!(ps.contains(&format!("{pid} ")) && ps.contains("error(7)"), "ps: {ps}");
    // Another realm sees none of it.
    let root_ps = d.ok(&["ps"]);
    assert!(
        !root_ps
            .lines()
            .any(|l| l.split_whitespace().next() == Some(pid.as_str())),
        "root's ps lists blue's proc: {root_ps}"
    );
    let other = d.ctl(&["wait", &pid]);
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains(&format!("no proc {pid} in realm \"root\"")));
    // A clean exit.
    let pid = pid_of(&d.ok(&["spawn", "exit"]));
    let wait = d.ctl(&["wait", &pid]);
    assert_eq!(
        (wait.status.code(), String::from_utf8_lossy(&wait.stdout).trim()),
        (Some(0), "ok")
    );
}

#[test]
fn crashes_kills_and_evictions_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    let pid = pid_of(&d.ok(&["spawn", "crash"]));
    let wait = d.ctl(&["wait", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "crashed(signal 11)");
    assert_eq!(wait.status.code(), Some(128 + 11));

    let pid = pid_of(&d.ok(&["spawn", "sleep"]));
    d.ok(&["kill", &pid]);
    let wait = d.ctl(&["wait", "--timeout", "10", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "crashed(signal 9)");

    let pid = pid_of(&d.ok(&["spawn", "--lc", "500", "--mem", "64", "sleep"]));
    assert!(d.ok(&["ps"]).contains("lc:500"));
    d.ok(&["evict", &pid]);
    let wait = d.ctl(&["wait", "--timeout", "10", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "evicted");
    assert_eq!(wait.status.code(), Some(1));

    // A wait that times out says so and leaves the proc running.
    let pid = pid_of(&d.ok(&["spawn", "sleep", "--", "3000"]));
    let wait = d.ctl(&["wait", "--timeout", "1", &pid]);
    assert_eq!(wait.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wait.stderr).contains("still running"));
    let wait = d.ctl(&["wait", "--timeout", "10", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "ok");
}

#[test]
fn a_proc_that_floods_its_output_keeps_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    let pid = pid_of(&d.ok(&["spawn", "flood"]));
    let wait = d.ctl(&["wait", &pid]);
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "ok",
        "the flood is not killed"
    );
    let logs = d.ctl(&["logs", &pid]);
    let max = sigma_control::procs::LOG_BYTES_MAX as usize;
    assert!(
        logs.stdout.len() > max && logs.stdout.len() < max + 200,
        "log of {} bytes",
        logs.stdout.len()
    );
    let tail = String::from_utf8_lossy(&logs.stdout[max..]).to_string();
    assert!(
        tail.contains("LOG_BYTES_MAX") && tail.contains("more bytes were dropped"),
        "{tail}"
    );
    let file = dir.path().join("procs/logs").join(format!("{pid}.log"));
    assert_eq!(std::fs::metadata(file).unwrap().len() as usize, logs.stdout.len());
}

#[test]
fn bad_binaries_programs_and_realms_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    // Not an ELF, and a dynamic executable: refused at put, saying why.
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let put = d.ctl(&["bin", "put", "script", script.to_str().unwrap()]);
    assert_eq!(put.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&put.stderr).contains("static"),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let put = d.ctl(&["bin", "put", "true", "/bin/true"]);
    assert_eq!(put.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&put.stderr).contains("static"));
    assert!(!d.ok(&["bin", "ls"]).contains("script"));
    // A program not in the store.
    let spawn = d.ctl(&["spawn", "nosuch"]);
    assert_eq!(spawn.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&spawn.stderr).contains("fetch-failed")
            || String::from_utf8_lossy(&spawn.stderr).contains("nosuch")
    );
    // A bad name, a realm that does not exist, bad limits, σ's own variables.
    assert_eq!(d.ctl(&["spawn", "../x"]).status.code(), Some(1));
    let spawn = d.ctl(&["spawn", "-r", "nowhere", "exit"]);
    assert_eq!(spawn.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&spawn.stderr).contains("nowhere"));
    assert_eq!(d.ctl(&["spawn", "--mem", "1", "exit"]).status.code(), Some(1));
    assert_eq!(d.ctl(&["spawn", "--lc", "0", "exit"]).status.code(), Some(1));
    let spawn = d.ctl(&["spawn", "--env", "SIGMA_REALM=blue", "exit"]);
    assert_eq!(spawn.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&spawn.stderr).contains("SIGMA_"));
    assert_eq!(d.ctl(&["spawn", "--env", "novalue", "exit"]).status.code(), Some(2));
    // Removed binaries are gone.
    d.ok(&["bin", "rm", "crash"]);
    assert!(!d.ok(&["bin", "ls"]).contains("crash@"));
    // sigmad lived through all of it.
    let pid = pid_of(&d.ok(&["spawn", "exit"]));
    assert_eq!(d.ctl(&["wait", &pid]).status.code(), Some(0));
}
