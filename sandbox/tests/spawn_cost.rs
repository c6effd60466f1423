//! Spawn-to-exit cost of the trivial proc through the sandbox against a
//! bare vfork+exec (`std::process::Command`), interleaved, with the
//! sandbox's step breakdown. Prints figures; asserts only behaviour (every
//! run exits 0), never time.

mod common;

use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{probe, TestSandbox};
use sigma_sandbox::{Class, ExitStatus, SpawnSpec};

const ITERATIONS: usize = 200;

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn line(name: &str, mut ns: Vec<u64>) -> String {
    ns.sort_unstable();
    let us = |v: u64| v as f64 / 1000.0;
    format!(
        "{name:<34} p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
        us(pct(&ns, 0.5)),
        us(pct(&ns, 0.99)),
        us(*ns.last().unwrap_or(&0))
    )
}

#[test]
fn spawn_to_exit_against_bare_vfork_exec() {
    let bin = probe("trivial");
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let tw = TestSandbox::with(|c| c.warm_cgroups = 4);
    let realm_w = tw.sb().realm(&common::unique("r")).expect("realm");
    let mut warm = Vec::with_capacity(ITERATIONS);
    let mut warm_parent = Vec::with_capacity(ITERATIONS);
    let mut warm_to_exec = Vec::with_capacity(ITERATIONS);
    let mut cold_to_exec = Vec::with_capacity(ITERATIONS);
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let (_ctl_ours, ctl) = common::seqpacket_pair();
    let args = vec!["0".to_string()];

    let mut bare = Vec::with_capacity(ITERATIONS);
    let mut sandboxed = Vec::with_capacity(ITERATIONS);
    let mut steps: Vec<Vec<u64>> = (0..9).map(|_| Vec::with_capacity(ITERATIONS)).collect();
    for i in 0..ITERATIONS + 10 {
        let t0 = Instant::now();
        let status = Command::new(&bin)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("bare");
        let bare_ns = t0.elapsed().as_nanos() as u64;
        assert!(status.success());

        let proc_id = format!("bench-{i}");
        let spec = SpawnSpec {
            argv0: None,
            realm: &realm,
            proc_id: &proc_id,
            binary: &bin,
            args: &args,
            env: &[],
            class: Class::Lc { mcpu: 100 },
            mem_mib: 32,
            pids_max: 8,
            ctl_fd: ctl.as_fd(),
            stdout: devnull.as_fd(),
            stderr: devnull.as_fd(),
            hold_mount_namespace: false,
        };
        let t0 = Instant::now();
        let mut child = t.sb().spawn(&spec).expect("spawn");
        let status = child
            .wait_timeout(Duration::from_secs(10))
            .expect("wait")
            .expect("exited");
        let sandboxed_ns = t0.elapsed().as_nanos() as u64;
        let exit_seen = sigma_sandbox_now_ns();
        assert_eq!(status, ExitStatus::Exited(0));
        let times = child.spawn_times();
        drop(child);

        let spec = SpawnSpec {
            argv0: None,
            realm: &realm_w,
            ..spec
        };
        let t0 = Instant::now();
        let mut child = tw.sb().spawn(&spec).expect("spawn");
        let status = child
            .wait_timeout(Duration::from_secs(10))
            .expect("wait")
            .expect("exited");
        let warm_ns = t0.elapsed().as_nanos() as u64;
        assert_eq!(status, ExitStatus::Exited(0));
        let warm_times = child.spawn_times();
        drop(child);
        if i < 10 {
            continue; // warm-up
        }
        bare.push(bare_ns);
        sandboxed.push(sandboxed_ns);
        warm.push(warm_ns);
        warm_parent.push(warm_times.clone_ns.saturating_sub(warm_times.start_ns));
        warm_to_exec.push(warm_times.exec_seen_ns.saturating_sub(warm_times.start_ns));
        cold_to_exec.push(times.exec_seen_ns.saturating_sub(times.start_ns));
        let c = times.child;
        let d = |a: u64, b: u64| b.saturating_sub(a);
        steps[0].push(d(times.start_ns, times.clone_ns));
        steps[1].push(d(times.clone_ns, c[0]));
        steps[2].push(d(c[0], c[1]));
        steps[3].push(d(c[1], c[2]));
        steps[4].push(d(c[2], c[3]));
        steps[5].push(d(c[3], c[4]));
        steps[6].push(d(c[4], c[5]));
        steps[7].push(d(c[5], times.exec_seen_ns));
        steps[8].push(d(times.exec_seen_ns, exit_seen));
    }
    let mut report = vec![
        format!("spawn-to-exit of the trivial static proc, {ITERATIONS} iterations, interleaved"),
        line("bare Command::status (vfork+exec)", bare.clone()),
        line("sandbox spawn + wait + cleanup", sandboxed.clone()),
        line("same, warm cgroups (pooled)", warm.clone()),
    ];
    let (mut b, mut s) = (bare, sandboxed);
    b.sort_unstable();
    s.sort_unstable();
    report.push(format!(
        "ratio sandbox/bare: p50 {:.2}x, p99 {:.2}x",
        pct(&s, 0.5) as f64 / pct(&b, 0.5) as f64,
        pct(&s, 0.99) as f64 / pct(&b, 0.99) as f64
    ));
    let mut w = warm;
    w.sort_unstable();
    report.push(format!(
        "ratio warm-cgroup sandbox/bare: p50 {:.2}x, p99 {:.2}x",
        pct(&w, 0.5) as f64 / pct(&b, 0.5) as f64,
        pct(&w, 0.99) as f64 / pct(&b, 0.99) as f64
    ));
    report.push(line("spawn call (until exec), cold cgroups", cold_to_exec));
    report.push(line("spawn call (until exec), warm cgroups", warm_to_exec));
    report.push(line("parent step, warm cgroups", warm_parent));
    report.push("sandbox steps (cold cgroups):".into());
    let names = [
        "parent: cgroups, argv, open_tree, pipe",
        "clone (until the child runs)",
        "signals reset + join cgroups",
        "join netns + hostname",
        "jail (template copy, binary, proc)",
        "fds, rlimits, caps, uid, nnp, mask",
        "seccomp install",
        "execve (until the parent resumes)",
        "run + exit + reap + rmdir cgroups",
    ];
    for (name, v) in names.iter().zip(steps) {
        report.push(line(&format!("  {name}"), v));
    }
    report.push(format!("seccomp program: {} BPF instructions", t.sb().seccomp_len()));
    let text = report.join("\n");
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-spawn-cost.txt");
    let _ = std::fs::write(&out, format!("{text}\n"));
    drop((realm, realm_w));
    t.finish();
    tw.finish();
}

fn sigma_sandbox_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
