//! A proc tries what it must not do: every attempt is refused or
//! contained.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{probe, run, start, RunOpts, TestSandbox};
use sigma_sandbox::{Class, ExitStatus};

fn check(out: &str, name: &str) -> (i64, i32) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("check {name} ")))
        .unwrap_or_else(|| panic!("no check {name} in:\n{out}"));
    let mut ret = None;
    let mut errno = None;
    for part in line.split_whitespace() {
        if let Some(v) = part.strip_prefix("ret=") {
            ret = v.parse().ok();
        }
        if let Some(v) = part.strip_prefix("errno=") {
            errno = v.parse().ok();
        }
    }
    (ret.expect("ret"), errno.expect("errno"))
}

#[test]
fn forbidden_syscalls_and_escapes_are_refused() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let host_pid = std::process::id().to_string();
    let o = run(
        t.sb(),
        &realm,
        &probe("probe"),
        &["escape", &host_pid],
        &RunOpts::default(),
    );
    assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    println!("{}", o.stdout);
    // Refused by the seccomp policy: EPERM.
    for name in [
        "socket_inet",
        "socket_unix",
        "socketpair",
        "bind",
        "listen",
        "connect",
        "io_uring_setup",
        "mount",
        "umount2",
        "pivot_root",
        "ptrace_traceme",
        "ptrace_attach",
        "unshare_ns",
        "unshare_user",
        "setns",
        "bpf",
        "perf_event_open",
        "keyctl",
        "userfaultfd",
        "process_vm_readv",
        "process_vm_writev",
        "raise_nofile",
        "setuid_root",
        "kill_host_pid",
        "clone_newuser",
        "clone_newnet",
        "clone_newns",
    ] {
        assert_eq!(check(&o.stdout, name), (-1, libc::EPERM), "{name}");
    }
    // clone3 cannot be argument-filtered: ENOSYS, so libc falls back.
    assert_eq!(check(&o.stdout, "clone3"), (-1, libc::ENOSYS));
    // The host's files and cgroupfs are not in the jail.
    assert_eq!(check(&o.stdout, "open_host_file"), (-1, libc::ENOENT));
    assert_eq!(check(&o.stdout, "open_cgroup"), (-1, libc::ENOENT));
    // The jail is read-only (the binary is root's, mode 0755: EACCES
    // comes first for it; the root is a read-only mount).
    let (ret, errno) = check(&o.stdout, "write_binary");
    assert!(
        ret == -1 && (errno == libc::EACCES || errno == libc::EROFS),
        "write_binary errno {errno}"
    );
    let (ret, errno) = check(&o.stdout, "create_in_root");
    assert!(
        ret == -1 && (errno == libc::EACCES || errno == libc::EROFS),
        "create_in_root errno {errno}"
    );
    let (ret, _) = check(&o.stdout, "create_in_proc");
    assert_eq!(ret, -1);
    drop(realm);
    t.finish();
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let opts = RunOpts {
        pids_max: 16,
        ..RunOpts::default()
    };
    let o = run(t.sb(), &realm, &probe("probe"), &["forkbomb", "1000"], &opts);
    assert_eq!(o.status, ExitStatus::Exited(0), "stderr: {}", o.stderr);
    let line = o.stdout.lines().find(|l| l.starts_with("forks ")).expect("forks line");
    let forks: u32 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(forks < 16, "{line}");
    assert!(line.ends_with(&format!("errno={}", libc::EAGAIN)), "{line}");
    drop(realm);
    t.finish();
}

#[test]
fn allocation_past_the_memory_limit_is_killed() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let opts = RunOpts {
        mem_mib: 32,
        ..RunOpts::default()
    };
    let o = run(t.sb(), &realm, &probe("probe"), &["membomb", "256"], &opts);
    assert_eq!(o.status, ExitStatus::Signaled(libc::SIGKILL), "stdout: {}", o.stdout);
    // Under the limit it completes.
    let o = run(t.sb(), &realm, &probe("probe"), &["membomb", "8"], &opts);
    assert_eq!(o.status, ExitStatus::Exited(0));
    drop(realm);
    t.finish();
}

/// The workload proc waits on its control fd; meanwhile its cgroups,
/// namespaces and limits are checked from outside.
#[test]
fn running_proc_is_in_its_cgroups_and_the_realm_netns() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    for class in [Class::Lc { mcpu: 250 }, Class::Be] {
        let opts = RunOpts {
            class,
            mem_mib: 48,
            pids_max: 20,
            ..RunOpts::default()
        };
        let (mut child, mut out_r, mut err_r, ctl) =
            start(t.sb(), &realm, &probe("probe"), &["workload"], &opts).expect("spawn");
        let mut hello = [0u8; 16];
        // SAFETY: recv into a live buffer on our end of the socket.
        let n = unsafe { libc::recv(ctl.as_raw_fd(), hello.as_mut_ptr().cast(), hello.len(), 0) };
        assert_eq!(&hello[..n.max(0) as usize], b"hello");
        let pid = child.pid().to_string();
        for dir in child.cgroup_dirs() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("cgroup.procs");
            assert!(procs.lines().any(|l| l == pid), "{pid} not in {}", dir.display());
            let s = dir.display().to_string();
            let class_dir = match class {
                Class::Lc { .. } => "/lc/",
                Class::Be => "/be/",
            };
            assert!(s.contains(class_dir), "{s}");
            if dir.join("memory.limit_in_bytes").exists() {
                assert_eq!(
                    std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                        .unwrap()
                        .trim(),
                    (48u64 << 20).to_string()
                );
            }
            if dir.join("pids.max").exists() {
                assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap().trim(), "20");
            }
            if dir.join("cpu.shares").exists() {
                let shares = std::fs::read_to_string(dir.join("cpu.shares")).unwrap();
                match class {
                    Class::Lc { .. } => assert_eq!(shares.trim(), "256"),
                    Class::Be => {
                        let be = dir.parent().and_then(|p| p.parent()).expect("be dir");
                        assert_eq!(std::fs::read_to_string(be.join("cpu.idle")).unwrap().trim(), "1");
                    }
                }
            }
        }
        // Namespaces: the realm's netns; its own pid, mnt, uts, ipc.
        use std::os::unix::fs::MetadataExt;
        let ns = |pid: &str, kind: &str| std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).expect("ns").ino();
        let realm_net = std::fs::metadata(format!("/proc/self/fd/{}", realm.netns().as_raw_fd()))
            .unwrap()
            .ino();
        assert_eq!(ns(&pid, "net"), realm_net);
        for kind in ["pid", "mnt", "uts", "ipc"] {
            assert_ne!(ns(&pid, kind), ns("self", kind), "{kind}");
        }
        // Hand it an fd; it writes the message through it; say bye.
        let (mut pipe_r, pipe_w) = common::pipe();
        send_fd(&ctl, b"through", pipe_w.as_raw_fd());
        drop(pipe_w);
        let mut got = String::new();
        pipe_r.read_to_string(&mut got).expect("read passed pipe");
        assert_eq!(got, "through");
        // SAFETY: send from a live buffer on our socket.
        unsafe { libc::send(ctl.as_raw_fd(), b"bye".as_ptr().cast(), 3, 0) };
        let status = child
            .wait_timeout(Duration::from_secs(30))
            .expect("wait")
            .expect("exited");
        let mut err = String::new();
        let _ = err_r.read_to_string(&mut err);
        let mut out = String::new();
        let _ = out_r.read_to_string(&mut out);
        assert_eq!(status, ExitStatus::Exited(0), "stderr: {err}");
        let dirs = child.cgroup_dirs();
        drop(child);
        assert!(dirs.iter().all(|d| !d.exists()));
    }
    drop(realm);
    t.finish();
}

#[test]
fn a_killed_proc_takes_its_pid_namespace_with_it() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    // The workload proc blocks on its control fd until killed.
    let opts = RunOpts {
        pids_max: 8,
        ..RunOpts::default()
    };
    let (mut child, _out, _err, _ctl) = start(t.sb(), &realm, &probe("probe"), &["workload"], &opts).expect("spawn");
    assert_eq!(child.try_wait().expect("try_wait"), None, "still running");
    child.kill().expect("kill");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("exited");
    assert_eq!(status, ExitStatus::Signaled(libc::SIGKILL));
    let pid = child.pid();
    drop(child);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Dropping a running child kills and reaps it.
    let (child, _out, _err, _ctl) = start(t.sb(), &realm, &probe("probe"), &["workload"], &opts).expect("spawn");
    let pid = child.pid();
    let dirs = child.cgroup_dirs();
    drop(child);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(dirs.iter().all(|d| !d.exists()));
    drop(realm);
    t.finish();
}

fn send_fd(sock: &std::os::fd::OwnedFd, data: &[u8], fd: i32) {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: the cmsg macros walk a live, large-enough control buffer.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        assert!(libc::sendmsg(sock.as_raw_fd(), &msg, 0) >= 0, "sendmsg");
    }
}
