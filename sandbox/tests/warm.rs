//! Warm sandboxes (`Sandbox::prepare`): a proc started from one is as
//! jailed as one spawned cold; one is taken only by a spawn of its binary,
//! realm and class; a broken one is skipped; they go with their realm and
//! leave nothing behind.

mod common;

use common::{probe, run, RunOpts, TestSandbox};
use sigma_sandbox::{Class, Error, ExitStatus, WarmStats};
use std::path::Path;

fn lc() -> Class {
    RunOpts::default().class
}

fn alive(pid: i32) -> bool {
    // Not reaped and not a zombie: its status says so.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains("Z")))
        .unwrap_or(false)
}

#[test]
fn a_proc_from_a_warm_sandbox_is_as_jailed_as_a_cold_one() {
    // The thread that prepares blocks a signal and ignores another:
    // neither may reach the proc.
    common::block_and_ignore_signals();
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("probe");
    assert!(t.sb().prepare(&realm, lc(), &bin).expect("prepare"));
    assert!(
        !t.sb().prepare(&realm, lc(), &bin).expect("prepare again"),
        "one per binary and class"
    );
    assert_eq!(realm.warm_sandboxes(), 1);
    let pids = realm.warm_sandbox_pids();
    assert_eq!(pids.len(), 1);
    let opts = RunOpts {
        env: vec![("GIVEN".into(), "yes".into())],
        ..RunOpts::default()
    };
    let o = run(t.sb(), &realm, &bin, &["info", "a b"], &opts);
    assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    assert!(o.warm, "the warm sandbox was not taken");
    println!("{}", o.stdout);
    common::assert_jailed(&o.stdout, &realm);
    assert_eq!(realm.warm_sandboxes(), 0, "taken once");
    assert_eq!(
        t.sb().warm_stats(),
        WarmStats {
            made: 1,
            taken: 1,
            unusable: 0,
            dropped: 0
        }
    );
    // The next spawn, with nothing prepared, is cold and sees the same.
    let o = run(t.sb(), &realm, &bin, &["info", "a b"], &opts);
    assert!(!o.warm);
    common::assert_jailed(&o.stdout, &realm);
    drop(realm);
    t.finish();
}

#[test]
fn a_warm_sandbox_is_taken_only_by_its_binary_and_class_and_keeps_exit_statuses() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 4);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let trivial = probe("trivial");
    assert!(t.sb().prepare(&realm, lc(), &trivial).expect("prepare"));
    // Another binary, and the same binary as BE, go cold.
    let o = run(t.sb(), &realm, &probe("probe"), &["info"], &RunOpts::default());
    assert!(!o.warm, "a warm sandbox of another binary was taken");
    let be = RunOpts {
        class: Class::Be,
        ..RunOpts::default()
    };
    let o = run(t.sb(), &realm, &trivial, &["7"], &be);
    assert_eq!(o.status, ExitStatus::Exited(7));
    assert!(!o.warm, "an LC warm sandbox was taken by a BE proc");
    assert_eq!(realm.warm_sandboxes(), 1);
    // The right one takes it: exit codes and crashes come back as from a
    // cold start.
    for args in [&["42"][..], &["crash"][..], &["0"][..]] {
        assert!(t.sb().prepare(&realm, lc(), &trivial).expect("prepare") || realm.warm_sandboxes() == 1);
        let o = run(t.sb(), &realm, &trivial, args, &RunOpts::default());
        assert!(o.warm, "{args:?} did not start warm");
        let want = match args[0] {
            "crash" => ExitStatus::Signaled(libc::SIGSEGV),
            code => ExitStatus::Exited(code.parse().unwrap()),
        };
        assert_eq!(o.status, want, "{args:?}, stderr: {}", o.stderr);
    }
    // A BE one for BE procs.
    assert!(t.sb().prepare(&realm, Class::Be, &trivial).expect("prepare BE"));
    let o = run(t.sb(), &realm, &trivial, &["9"], &be);
    assert!(o.warm);
    assert_eq!(o.status, ExitStatus::Exited(9));
    drop(realm);
    t.finish();
}

#[test]
fn warm_sandboxes_are_bounded_per_realm_and_go_with_it() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let dir = common::scratch_dir("warm-bins");
    let mut bins = Vec::new();
    for i in 0..3 {
        let b = dir.join(format!("trivial-{i}"));
        std::fs::copy(probe("trivial"), &b).expect("copy");
        bins.push(b);
    }
    let mut pids = Vec::new();
    for b in &bins {
        assert!(t.sb().prepare(&realm, lc(), b).expect("prepare"));
        pids.extend(realm.warm_sandbox_pids());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "three children made: {pids:?}");
    assert_eq!(realm.warm_sandboxes(), 2, "the oldest went past the bound");
    assert!(!alive(pids[0]) || realm.warm_sandbox_pids().contains(&pids[0]));
    let held = realm.warm_sandbox_pids();
    assert_eq!(held.len(), 2);
    for pid in &held {
        assert!(alive(*pid), "warm sandbox {pid} is not running");
    }
    for pid in pids.iter().filter(|p| !held.contains(p)) {
        assert!(!alive(*pid), "the evicted warm sandbox {pid} still runs");
    }
    // The first binary's went: its spawn is cold; the last's is warm.
    let o = run(t.sb(), &realm, &bins[0], &["0"], &RunOpts::default());
    assert!(!o.warm);
    let o = run(t.sb(), &realm, &bins[2], &["0"], &RunOpts::default());
    assert!(o.warm);
    let s = t.sb().warm_stats();
    assert_eq!((s.made, s.taken, s.dropped), (3, 1, 1), "{s:?}");
    // The realm's last handle goes: so do its warm sandboxes (killed and
    // reaped), then its cgroups (checked by finish).
    let left = realm.warm_sandbox_pids();
    assert_eq!(left.len(), 1);
    drop(realm);
    for pid in &left {
        assert!(!alive(*pid), "warm sandbox {pid} outlived its realm");
    }
    assert_eq!(t.sb().warm_stats().dropped, 2);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    t.finish();
}

/// `Sandbox::prepare_file` in `realm` of an LC sandbox for `binary` from
/// the file at `file` (opened for the call).
fn prepare_from(t: &TestSandbox, realm: &sigma_sandbox::RealmHandle, binary: &Path, file: &Path) -> bool {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(file).expect("open");
    t.sb()
        .prepare_file(realm, lc(), binary, file.as_fd())
        .expect("prepare_file")
}

#[test]
fn a_warm_sandbox_made_from_a_file_is_taken_only_once_its_path_names_that_file() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 4);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let dir = common::scratch_dir("warm-files");
    let copy = |from: &str, name: &str| {
        let to = dir.join(name);
        std::fs::copy(probe(from), &to).expect("copy");
        to
    };
    let start = |binary: &Path, code: i32| {
        let o = run(t.sb(), &realm, binary, &[&code.to_string()], &RunOpts::default());
        assert_eq!(o.status, ExitStatus::Exited(code), "stderr: {}", o.stderr);
        o.warm
    };
    // Made while the file is still under its temporary name (a cache's
    // check), taken once it was renamed to the path the spawn names.
    let pending = copy("trivial", "pending");
    let bin = dir.join("trivial");
    assert!(prepare_from(&t, &realm, &bin, &pending));
    std::fs::rename(&pending, &bin).expect("rename");
    assert!(start(&bin, 5), "the sandbox made from the file was not taken");
    // Made from a file that never got to its path (its check failed):
    // another file is there, and the spawn runs that one, cold.
    let failed = copy("probe", "failed");
    let bin2 = dir.join("trivial-2");
    assert!(prepare_from(&t, &realm, &bin2, &failed));
    copy("trivial", "trivial-2");
    assert!(
        !start(&bin2, 6),
        "a sandbox holding another inode than the path's was taken"
    );
    assert_eq!(realm.warm_sandboxes(), 0, "the stale one is dropped");
    // A stale one makes way for one made from the next fetch's file of
    // the same path, which is then taken.
    assert!(prepare_from(&t, &realm, &bin2, &failed));
    let again = copy("trivial", "again");
    assert!(
        prepare_from(&t, &realm, &bin2, &again),
        "the stale sandbox did not make way"
    );
    assert!(
        !prepare_from(&t, &realm, &bin2, &again),
        "one per binary, class and inode"
    );
    assert_eq!(realm.warm_sandboxes(), 1);
    std::fs::rename(&again, &bin2).expect("rename");
    assert!(start(&bin2, 8), "the sandbox made from the new file was not taken");
    // The same for one made from a path whose file was replaced since.
    assert!(t.sb().prepare(&realm, lc(), &bin2).expect("prepare"));
    let replacement = copy("trivial", "replacement");
    std::fs::rename(&replacement, &bin2).expect("rename over");
    assert!(!start(&bin2, 7));
    let s = t.sb().warm_stats();
    assert_eq!((s.made, s.taken, s.unusable, s.dropped), (5, 2, 2, 1), "{s:?}");
    drop(realm);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    t.finish();
}

#[test]
fn a_dead_warm_sandbox_is_skipped_and_the_spawn_goes_cold() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let trivial = probe("trivial");
    assert!(t.sb().prepare(&realm, lc(), &trivial).expect("prepare"));
    let pid = realm.warm_sandbox_pids()[0];
    // SAFETY: kill on a child of ours that is not reaped (so its pid is
    // its own).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let o = run(t.sb(), &realm, &trivial, &["3"], &RunOpts::default());
    assert_eq!(o.status, ExitStatus::Exited(3));
    assert!(!o.warm);
    let s = t.sb().warm_stats();
    assert_eq!((s.made, s.taken, s.unusable), (1, 0, 1), "{s:?}");
    assert!(!alive(pid));
    drop(realm);
    t.finish();
}

#[test]
fn a_failed_exec_from_a_warm_sandbox_names_its_step() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    // A file the realm's uid may not execute: the jail binds it, the exec
    // after the request fails.
    let dir = common::scratch_dir("noexec");
    let noexec = dir.join("noexec");
    std::fs::copy(probe("trivial"), &noexec).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(t.sb().prepare(&realm, lc(), &noexec).expect("prepare"));
    let pid = realm.warm_sandbox_pids()[0];
    match common::start(t.sb(), &realm, &noexec, &[], &RunOpts::default()) {
        Err(Error::ChildExec { source, proc }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EACCES), "{source}");
            assert_eq!(proc.pid, pid);
        }
        other => panic!("expected ChildExec, got {other:?}"),
    }
    assert!(!alive(pid), "the failed child was not reaped");
    assert_eq!(t.sb().warm_stats().taken, 1);
    // A missing binary is refused by prepare itself.
    let missing = Path::new("/nonexistent/sigma-probe");
    assert!(matches!(
        t.sb().prepare(&realm, lc(), missing),
        Err(Error::OpenBinary { .. })
    ));
    std::fs::remove_dir_all(&dir).expect("cleanup");
    drop(realm);
    t.finish();
}

#[test]
fn warm_sandboxes_off_make_nothing() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    assert!(!t.sb().prepare(&realm, lc(), &probe("trivial")).expect("prepare"));
    assert_eq!(realm.warm_sandboxes(), 0);
    drop(realm);
    t.finish();
}

#[test]
fn a_warm_sandbox_takes_the_spawns_limits() {
    let t = TestSandbox::with(|c| {
        c.warm_sandboxes = 2;
        c.warm_cgroups = 2;
    });
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("trivial");
    for (mem_mib, pids_max) in [(40u64, 17u64), (40, 17), (24, 9)] {
        assert!(t.sb().prepare(&realm, lc(), &bin).expect("prepare"));
        let opts = RunOpts {
            mem_mib,
            pids_max,
            ..RunOpts::default()
        };
        let (mut child, _o, _e, _c) = common::start(t.sb(), &realm, &bin, &["0"], &opts).expect("spawn");
        assert!(child.spawn_times().warm);
        let dirs = child.cgroup_dirs();
        assert!(!dirs.is_empty());
        for d in &dirs {
            for (file, want) in [
                ("memory.limit_in_bytes", (mem_mib << 20).to_string()),
                ("memory.max", (mem_mib << 20).to_string()),
                ("pids.max", pids_max.to_string()),
            ] {
                if let Ok(v) = std::fs::read_to_string(d.join(file)) {
                    assert_eq!(v.trim(), want, "{}/{file}", d.display());
                }
            }
        }
        assert_eq!(
            child.wait_timeout(std::time::Duration::from_secs(10)).expect("wait"),
            Some(ExitStatus::Exited(0))
        );
    }
    drop(realm);
    t.finish();
}

/// A capability set line of this thread's status, as a number.
fn thread_caps(line: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("thread status");
    let hex = common::field(&status, &format!("{line}:"));
    u64::from_str_radix(hex, 16).expect("hex capability set")
}

#[test]
fn a_thread_that_emptied_its_bounding_set_starts_procs_as_jailed_and_keeps_its_capabilities() {
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let main_bounding = thread_caps("CapBnd");
    assert_ne!(main_bounding, 0, "the test runs with capabilities");
    let bin = probe("probe");
    std::thread::scope(|s| {
        s.spawn(|| {
            let effective = thread_caps("CapEff");
            t.sb().empty_thread_bounding_set().expect("empty the bounding set");
            assert_eq!(thread_caps("CapBnd"), 0, "this thread's bounding set");
            assert_eq!(thread_caps("CapEff"), effective, "the thread keeps its capabilities");
            let opts = RunOpts {
                env: vec![("GIVEN".into(), "yes".into())],
                ..RunOpts::default()
            };
            // Cold: the child skips its own drops.
            let o = run(t.sb(), &realm, &bin, &["info", "a b"], &opts);
            assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
            assert!(!o.warm);
            common::assert_jailed(&o.stdout, &realm);
            // Warm: prepared, then taken, on this thread.
            assert!(t.sb().prepare(&realm, lc(), &bin).expect("prepare"));
            let o = run(t.sb(), &realm, &bin, &["info", "a b"], &opts);
            assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
            assert!(o.warm, "the warm sandbox was not taken");
            common::assert_jailed(&o.stdout, &realm);
        });
    });
    assert_eq!(
        thread_caps("CapBnd"),
        main_bounding,
        "other threads keep their bounding set"
    );
    // This thread never emptied its set: its children drop it themselves.
    let o = run(t.sb(), &realm, &bin, &["info", "a b"], &RunOpts::default());
    assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    assert_eq!(common::field(&o.stdout, "status CapBnd:"), "0000000000000000");
    drop(realm);
    t.finish();
}
