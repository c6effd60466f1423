//! The seccomp policy matches what the example procs do: every syscall it
//! allows is made by one of them, and every syscall they make is allowed.
//! The procs run under `strace -f` (outside the sandbox: tracing needs
//! ptrace, which the policy refuses), with clone3 answered ENOSYS as the
//! filter does so that glibc takes the same fallback path; then each runs
//! in the sandbox too and must succeed there.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{probe, run, RunOpts, TestSandbox};
use sigma_sandbox::policy::{Verdict, PROC_POLICY};
use sigma_sandbox::ExitStatus;

/// The example procs: (probe, args). `escape` is left out on purpose: it
/// makes forbidden syscalls to see them refused.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("trivial", &["3"]),
    ("probe", &["info"]),
    ("probe", &["workload"]),
    ("probe", &["forkbomb", "3", "10"]),
    ("probe", &["membomb", "4"]),
];

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Plays sigmad's side of the workload's control-socket exchange.
fn serve_workload(ctl: &OwnedFd) {
    let mut hello = [0u8; 16];
    // SAFETY: recv into a live buffer.
    unsafe { libc::recv(ctl.as_raw_fd(), hello.as_mut_ptr().cast(), hello.len(), 0) };
    let (mut r, w) = common::pipe();
    let data = b"through";
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
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), w.as_raw_fd());
        assert!(libc::sendmsg(ctl.as_raw_fd(), &msg, 0) >= 0, "sendmsg");
    }
    drop(w);
    let mut got = String::new();
    let _ = r.read_to_string(&mut got);
    // SAFETY: send from a live buffer.
    unsafe { libc::send(ctl.as_raw_fd(), b"bye".as_ptr().cast(), 3, 0) };
}

fn traced_syscalls(bin: &std::path::Path, args: &[&str], out: &std::path::Path) -> BTreeSet<String> {
    let (ours, theirs) = common::seqpacket_pair();
    let theirs_raw = theirs.as_raw_fd();
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "--inject=clone3:error=ENOSYS", "-o"])
        .arg(out)
        .arg("--")
        .arg(bin)
        .args(args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd.spawn().expect("spawn strace");
    drop(theirs);
    if args.first() == Some(&"workload") {
        serve_workload(&ours);
    }
    let output = child.wait_with_output().expect("strace");
    let want = if args == ["3"] { 3 } else { 0 };
    assert_eq!(
        output.status.code(),
        Some(want),
        "{} {args:?} under strace failed: {}",
        bin.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let trace = std::fs::read_to_string(out).expect("trace");
    let mut names = BTreeSet::new();
    for line in trace.lines() {
        // "PID name(args..." or "PID <... name resumed>..."
        let rest = line.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let next = rest[name.len()..].chars().next();
        if !name.is_empty()
            && matches!(next, Some('(') | Some(' '))
            && !rest.starts_with("+++")
            && !rest.starts_with("---")
        {
            names.insert(name);
        }
    }
    names
}

#[test]
fn policy_allows_exactly_what_the_example_procs_use() {
    if !strace_available() {
        println!("SKIP policy_allows_exactly_what_the_example_procs_use: strace is not installed");
        return;
    }
    let dir = common::scratch_dir("traces");
    let mut used = BTreeSet::new();
    for (i, (name, args)) in EXAMPLES.iter().enumerate() {
        let names = traced_syscalls(&probe(name), args, &dir.join(format!("{i}.trace")));
        println!("{name} {args:?}: {names:?}");
        used.extend(names);
    }
    std::fs::remove_dir_all(&dir).expect("remove traces");
    let allowed: BTreeSet<String> = PROC_POLICY.iter().map(|e| e.name.to_string()).collect();
    let denied_but_used: Vec<_> = used.difference(&allowed).collect();
    let allowed_but_unused: Vec<_> = allowed.difference(&used).collect();
    assert!(
        denied_but_used.is_empty(),
        "the example procs make syscalls the policy refuses: {denied_but_used:?}"
    );
    assert!(
        allowed_but_unused.is_empty(),
        "the policy allows syscalls no example proc makes: {allowed_but_unused:?}"
    );
    assert!(PROC_POLICY
        .iter()
        .any(|e| e.name == "clone3" && e.verdict == Verdict::Enosys));

    // And under the real filter, each example succeeds.
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    for (name, args) in EXAMPLES {
        if args.first() == Some(&"workload") {
            continue; // needs the control exchange: covered by tests/security.rs
        }
        let o = run(t.sb(), &realm, &probe(name), args, &RunOpts::default());
        let want = if *name == "trivial" { 3 } else { 0 };
        assert_eq!(
            o.status,
            ExitStatus::Exited(want),
            "{name} {args:?} in the sandbox: {}",
            o.stderr
        );
    }
    drop(realm);
    t.finish();
}
