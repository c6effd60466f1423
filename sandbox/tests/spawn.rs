//! A proc starts, sees only its jail, and its exit status comes back.

mod common;

use common::{probe, run, RunOpts, TestSandbox};
use sigma_sandbox::{Error, ExitStatus};

#[test]
fn trivial_proc_exit_codes_and_crash() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("trivial");
    for code in [0, 3, 42] {
        let o = run(t.sb(), &realm, &bin, &[&code.to_string()], &RunOpts::default());
        assert_eq!(o.status, ExitStatus::Exited(code), "stderr: {}", o.stderr);
    }
    let o = run(t.sb(), &realm, &bin, &["crash"], &RunOpts::default());
    assert_eq!(o.status, ExitStatus::Signaled(libc::SIGSEGV));
    drop(realm);
    t.finish();
}

#[test]
fn proc_sees_only_its_jail_and_runs_unprivileged() {
    // The parent blocks a signal and ignores another: neither may reach
    // the proc.
    common::block_and_ignore_signals();
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let opts = RunOpts {
        env: vec![("GIVEN".into(), "yes".into())],
        ..RunOpts::default()
    };
    let o = run(t.sb(), &realm, &probe("probe"), &["info", "a b"], &opts);
    assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    assert!(!o.warm, "no warm sandbox was prepared");
    println!("{}", o.stdout);
    common::assert_jailed(&o.stdout, &realm);
    drop(realm);
    t.finish();
}

#[test]
fn failures_before_exec_name_their_step() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let missing = std::path::Path::new("/nonexistent/sigma-probe");
    match common::start(t.sb(), &realm, missing, &[], &RunOpts::default()) {
        Err(Error::OpenBinary { proc, source }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source}");
            assert_eq!(proc.pid, 0, "nothing was cloned");
        }
        other => panic!("expected OpenBinary, got {other:?}"),
    }
    // A file without exec permission for the realm's uid.
    let dir = common::scratch_dir("noexec");
    let noexec = dir.join("noexec");
    std::fs::copy(probe("trivial"), &noexec).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    match common::start(t.sb(), &realm, &noexec, &[], &RunOpts::default()) {
        Err(Error::ChildExec { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EACCES), "{source}"),
        other => panic!("expected ChildExec, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
    // Checked before anything is made.
    let reserved = RunOpts {
        env: vec![("SIGMA_PID".into(), "x".into())],
        ..RunOpts::default()
    };
    assert!(matches!(
        common::start(t.sb(), &realm, &probe("trivial"), &[], &reserved),
        Err(Error::InvalidSpec { .. })
    ));
    let tiny = RunOpts {
        mem_mib: 1,
        ..RunOpts::default()
    };
    assert!(matches!(
        common::start(t.sb(), &realm, &probe("trivial"), &[], &tiny),
        Err(Error::InvalidSpec { .. })
    ));
    drop(realm);
    t.finish();
}

#[test]
fn realm_is_shared_by_name_and_undone_when_unused() {
    let t = TestSandbox::new();
    let name = common::unique("r");
    let a = t.sb().realm(&name).expect("realm");
    let b = t.sb().realm(&name).expect("same realm");
    assert_eq!(a.uid(), b.uid());
    let other = t.sb().realm(&common::unique("r")).expect("other realm");
    assert_ne!(a.uid(), other.uid());
    let ino = |fd: std::os::fd::BorrowedFd<'_>| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
            .expect("stat")
            .ino()
    };
    assert_eq!(ino(a.netns()), ino(b.netns()), "one netns per realm");
    assert_ne!(ino(a.netns()), ino(other.netns()));
    drop((a, b, other));
    t.finish();
}

#[test]
fn warm_cgroups_are_reused_and_removed_with_the_realm() {
    let t = TestSandbox::with(|c| c.warm_cgroups = 1);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("trivial");
    let opts = RunOpts {
        mem_mib: 48,
        ..RunOpts::default()
    };
    let (mut a, _o, _e, _c) = common::start(t.sb(), &realm, &bin, &["0"], &opts).expect("spawn");
    let first = a.cgroup_dirs();
    assert!(first
        .iter()
        .all(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("w+"))));
    a.wait_timeout(std::time::Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    drop(a);
    assert!(first.iter().all(|d| d.exists()), "warm cgroups kept for reuse");
    let opts = RunOpts {
        mem_mib: 64,
        ..RunOpts::default()
    };
    let (mut b, _o, _e, _c) = common::start(t.sb(), &realm, &bin, &["0"], &opts).expect("spawn");
    assert_eq!(b.cgroup_dirs(), first, "the pooled set is reused");
    for d in &first {
        if d.join("memory.limit_in_bytes").exists() {
            let limit = std::fs::read_to_string(d.join("memory.limit_in_bytes")).expect("limit");
            assert_eq!(limit.trim(), (64u64 << 20).to_string(), "limits rewritten");
        }
    }
    // A second live proc of the class gets a set of its own.
    let (mut c, _o, _e, _c) = common::start(t.sb(), &realm, &bin, &["0"], &opts).expect("spawn");
    assert_ne!(c.cgroup_dirs(), first);
    let second = c.cgroup_dirs();
    for child in [&mut b, &mut c] {
        assert_eq!(
            child.wait_timeout(std::time::Duration::from_secs(10)).expect("wait"),
            Some(ExitStatus::Exited(0))
        );
    }
    drop((b, c));
    // The pool holds one: the other set is removed.
    assert_eq!(first.iter().chain(&second).filter(|d| d.exists()).count(), first.len());
    drop(realm);
    assert!(
        first.iter().chain(&second).all(|d| !d.exists()),
        "pooled cgroups removed with the realm"
    );
    t.finish();
}

#[test]
fn the_cgroup_keep_warm_thread_moves_between_its_own_cgroups_and_leaves_nothing() {
    let t = TestSandbox::with(|c| c.cgroup_keep_warm = Some(std::time::Duration::from_millis(5)));
    let v1 = common::cgroup_v1(t.sb(), false);
    if !v1 {
        eprintln!("skipping: no cgroup v1 hierarchy here (keep-warm is v1 only)");
        assert!(!t.sb().cgroup_keep_warm());
        t.finish();
        return;
    }
    assert!(t.sb().cgroup_keep_warm(), "the keep-warm thread runs");
    // Its two cgroups are under the sandbox's parent in one hierarchy, and
    // the thread is in one of them, then the other.
    let dirs: Vec<std::path::PathBuf> = t
        .sb()
        .cgroup_parents()
        .iter()
        .flat_map(|p| [p.join("keep-warm-a"), p.join("keep-warm-b")])
        .filter(|d| d.exists())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let mut seen = [false, false];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen != [true, true] && std::time::Instant::now() < deadline {
        for (i, d) in dirs.iter().enumerate() {
            let tasks = std::fs::read_to_string(d.join("tasks")).unwrap();
            seen[i] |= !tasks.trim().is_empty();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(seen, [true, true], "the thread moved between both");
    // Procs still start and join their own cgroups beside it.
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let (mut c, _o, _e, _c) =
        common::start(t.sb(), &realm, &probe("trivial"), &["0"], &RunOpts::default()).expect("spawn");
    assert_eq!(
        c.wait_timeout(std::time::Duration::from_secs(10)).expect("wait"),
        Some(ExitStatus::Exited(0))
    );
    drop(c);
    drop(realm);
    // finish() checks that the parents (and so these two) are gone.
    t.finish();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn realms_take_network_namespaces_made_ahead_and_the_pool_refills() {
    use std::os::fd::AsRawFd;
    let t = TestSandbox::with(|c| {
        c.netns_pool = 2;
        c.warm_cgroups = 4;
    });
    let ns_of = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let ten_s = std::time::Duration::from_secs(10);
    let wait_ready = |n: usize| common::wait_until(ten_s, "the pool did not fill", || t.sb().netns_ready() >= n);
    wait_ready(2);
    // On cgroup v1 (every hierarchy), the realms' cgroups are made ahead too.
    let v1 = common::cgroup_v1(t.sb(), true);
    let wait_dirs = |n: usize| {
        common::wait_until(ten_s, "the cgroup sets were not made", || {
            !v1 || t.sb().realm_cgroups_ready() >= n
        })
    };
    wait_dirs(2);
    let ahead_names = || -> Vec<String> {
        let mut names = Vec::new();
        for parent in t.sb().cgroup_parents() {
            for class in ["lc", "be"] {
                for e in std::fs::read_dir(parent.join(class)).unwrap() {
                    let n = e.unwrap().file_name().to_string_lossy().into_owned();
                    if n.starts_with(".ahead-") {
                        names.push(n);
                    }
                }
            }
        }
        names.sort();
        names
    };
    let before = ahead_names();
    if v1 {
        assert_eq!(before.len(), 2 * 2 * t.sb().hierarchies().len(), "{before:?}");
    } else {
        assert!(before.is_empty(), "{before:?}");
    }
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let a = t.sb().realm(&common::unique("r")).expect("realm a");
    let b = t.sb().realm(&common::unique("r")).expect("realm b");
    let (na, nb) = (ns_of(a.netns().as_raw_fd()), ns_of(b.netns().as_raw_fd()));
    assert!(na.to_string_lossy().starts_with("net:["), "{na:?}");
    assert!(na != nb && na != host && nb != host, "{na:?} {nb:?} {host:?}");
    // Taken: the thread makes the next ones.
    wait_ready(2);
    wait_dirs(2);
    if v1 {
        let after = ahead_names();
        assert_eq!(after.len(), before.len(), "{after:?}");
        assert!(
            after.iter().all(|n| !before.contains(n)),
            "the taken sets were renamed: {before:?} {after:?}"
        );
    }
    // A proc of the realm runs in the realm's namespace.
    let (mut c, _o, _e, _c) = common::start(t.sb(), &a, &probe("trivial"), &["0"], &RunOpts::default()).expect("spawn");
    assert_eq!(
        c.wait_timeout(std::time::Duration::from_secs(10)).expect("wait"),
        Some(ExitStatus::Exited(0))
    );
    // Its cgroups are under the realm's own, named after the realm; on v1
    // they are the warm set made ahead with the realm's (`w+0`).
    for dir in c.cgroup_dirs() {
        let realm_dir = dir.parent().unwrap();
        assert_eq!(realm_dir.file_name().unwrap().to_string_lossy(), a.name(), "{dir:?}");
        if v1 {
            assert_eq!(dir.file_name().unwrap().to_string_lossy(), "w+0", "{dir:?}");
        }
    }
    drop(c);
    drop((a, b));
    t.finish();
}

/// A held mount namespace outlives the proc's exit: the held fd names the
/// proc's namespace (close-on-exec), the proc is reaped while it is held,
/// the namespace can still be entered and still holds the jail (its root
/// with the binary), and releasing closes the fd (on the sandbox's release
/// thread).
#[test]
fn a_held_mount_namespace_outlives_the_exit_until_released() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let (mut child, _out, _err, ctl) =
        common::start(t.sb(), &realm, &probe("probe"), &["wait"], &RunOpts::default()).expect("spawn");
    let ns = std::fs::metadata(format!("/proc/{}/ns/mnt", child.pid())).expect("the proc's mnt ns");
    let ours = std::fs::metadata("/proc/self/ns/mnt").expect("our mnt ns");
    assert_ne!(ns.ino(), ours.ino(), "the proc has a mount namespace of its own");
    assert!(child.held_mount_namespace().is_none());
    assert!(child.hold_mount_namespace(), "the running proc's namespace is held");
    let held = child.held_mount_namespace().expect("held").as_raw_fd();
    let fd_path = format!("/proc/self/fd/{held}");
    assert_eq!(
        std::fs::metadata(&fd_path).expect("the held fd").ino(),
        ns.ino(),
        "the held fd names the proc's namespace"
    );
    // SAFETY: F_GETFD on an fd this test holds open.
    let flags = unsafe { libc::fcntl(held, libc::F_GETFD) };
    assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "close-on-exec: {flags}");

    drop(ctl); // the proc reads EOF on fd 3 and exits
    let status = child
        .wait_timeout(std::time::Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(
        !std::path::Path::new(&format!("/proc/{}", child.pid())).exists(),
        "reaped"
    );

    // Reaped, and the namespace is still whole: a thread of ours enters it
    // and finds the jail's root with the binary in it.
    assert_holds_a_jail(held);

    // Released: the sandbox's release thread closes the fd (soon).
    child.release_mount_namespace();
    assert!(child.held_mount_namespace().is_none());
    common::wait_until(
        std::time::Duration::from_secs(5),
        "the held fd was never closed",
        || !std::fs::metadata(&fd_path).is_ok_and(|m| m.ino() == ns.ino()),
    );
    drop(child);
    drop(realm);
    t.finish();
}

/// A thread of ours enters the mount namespace `held` and finds a jail's
/// root there: `proc` and the binary.
fn assert_holds_a_jail(held: std::os::fd::RawFd) {
    let root: Vec<String> = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare of this thread's fs attributes (so that it may
            // change mount namespace alone), then setns into the held fd;
            // the thread ends right after.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_FS), 0, "unshare(CLONE_FS)");
                assert_eq!(libc::setns(held, libc::CLONE_NEWNS), 0, "setns into the held namespace");
            }
            std::fs::read_dir("/")
                .expect("the jail's root")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .join()
        .expect("the thread in the held namespace")
    });
    assert!(root.iter().any(|n| n == "proc"), "the jail's root: {root:?}");
    assert!(root.len() >= 2, "the jail's root holds the binary too: {root:?}");
}

/// A spawn asked to hold the proc's mount namespace
/// (`SpawnSpec::hold_mount_namespace`) holds it when it returns: from a
/// warm sandbox before the proc runs, so that even a proc that exits at
/// once has its jail still whole after it is reaped; cold as soon as the
/// exec lets the spawn go on (the test's proc waits, so it is alive then).
/// Without the flag nothing is held.
#[test]
fn a_spawn_holds_the_mount_namespace_before_the_proc_runs() {
    use std::os::fd::AsRawFd;
    let t = TestSandbox::with(|c| c.warm_sandboxes = 2);
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("trivial");
    let hold = RunOpts {
        hold_mount_namespace: true,
        ..RunOpts::default()
    };
    for warm in [false, true] {
        // Warm: the trivial proc, which exits at once. Cold: the probe,
        // which waits for EOF on fd 3 (a cold hold comes after the exec).
        let (binary, args) = if warm {
            assert!(t.sb().prepare(&realm, hold.class, &bin).expect("prepare"));
            (bin.clone(), ["0"])
        } else {
            (probe("probe"), ["wait"])
        };
        let (mut child, _out, _err, ctl) = common::start(t.sb(), &realm, &binary, &args, &hold).expect("spawn");
        assert_eq!(child.spawn_times().warm, warm);
        let held = child.held_mount_namespace().expect("held by the spawn").as_raw_fd();
        drop(ctl);
        let status = child
            .wait_timeout(std::time::Duration::from_secs(10))
            .expect("wait")
            .expect("exited");
        assert_eq!(status, ExitStatus::Exited(0), "warm {warm}");
        assert_holds_a_jail(held);
        child.release_mount_namespace();
        assert!(child.held_mount_namespace().is_none());
    }
    let (mut child, _out, _err, _ctl) =
        common::start(t.sb(), &realm, &bin, &["0"], &RunOpts::default()).expect("spawn");
    assert!(child.held_mount_namespace().is_none(), "not asked to hold");
    let status = child
        .wait_timeout(std::time::Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert_eq!(status, ExitStatus::Exited(0));
    drop(child);
    drop(realm);
    t.finish();
}

/// On cgroup v1, the warm proc sets of realms made ahead come with the
/// limits the last start of their class asked for: after a start with
/// some limits, the next realm's `w+0` already holds them before any start
/// in it (and a start asking for the same writes nothing); a start asking
/// for other limits still gets its own.
#[test]
fn realms_made_ahead_hold_the_last_starts_limits() {
    let t = TestSandbox::with(|c| {
        c.netns_pool = 1;
        c.warm_cgroups = 4;
    });
    let v1 = common::cgroup_v1(t.sb(), true);
    if !v1 {
        eprintln!("skipping: realms' cgroups are made ahead on cgroup v1 only");
        return;
    }
    let memory_limit = |dir: &std::path::Path| -> Option<u64> {
        std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .ok()
            .map(|s| s.trim().parse().unwrap())
    };
    let pids_max = |dir: &std::path::Path| -> Option<String> {
        std::fs::read_to_string(dir.join("pids.max"))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let asked = RunOpts {
        mem_mib: 48,
        pids_max: 17,
        ..RunOpts::default()
    };
    let class = if matches!(asked.class, sigma_sandbox::Class::Lc { .. }) {
        "lc"
    } else {
        "be"
    };
    let run_in = |realm: &sigma_sandbox::RealmHandle, opts: &RunOpts| {
        let o = common::run(t.sb(), realm, &probe("trivial"), &["0"], opts);
        assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    };
    let wait_set = || {
        common::wait_until(
            std::time::Duration::from_secs(10),
            "the pool did not make a set",
            || t.sb().realm_cgroups_ready() >= 1,
        )
    };
    // A first start with these limits. The pool (of one) ran out when its
    // realm took the set, and made the next at once, before the start.
    wait_set();
    let a = t.sb().realm(&common::unique("r")).expect("realm a");
    run_in(&a, &asked);
    wait_set();
    let z = t.sb().realm(&common::unique("r")).expect("realm z");
    // The set made after the start: the next realm takes it, and its warm
    // set holds the limits already.
    wait_set();
    let b = t.sb().realm(&common::unique("r")).expect("realm b");
    let mut checked = 0;
    for parent in t.sb().cgroup_parents() {
        let warm = parent.join(class).join(b.name()).join("w+0");
        if let Some(bytes) = memory_limit(&warm) {
            assert_eq!(bytes, 48 << 20, "{warm:?}");
            checked += 1;
        }
        if let Some(max) = pids_max(&warm) {
            assert_eq!(max, "17", "{warm:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "the memory and pids hierarchies were found");
    run_in(&b, &asked);
    // Other limits are still written by the start that asks for them.
    let other = RunOpts {
        mem_mib: 40,
        pids_max: 19,
        ..RunOpts::default()
    };
    let (mut c, _o, _e, _c) = common::start(t.sb(), &b, &probe("trivial"), &["0"], &other).expect("spawn");
    for dir in c.cgroup_dirs() {
        if let Some(bytes) = memory_limit(&dir) {
            assert_eq!(bytes, 40 << 20, "{dir:?}");
        }
        if let Some(max) = pids_max(&dir) {
            assert_eq!(max, "19", "{dir:?}");
        }
    }
    assert_eq!(
        c.wait_timeout(std::time::Duration::from_secs(10)).expect("wait"),
        Some(ExitStatus::Exited(0))
    );
    drop(c);
    drop((a, b, z));
    t.finish();
}
