//! Shared by the sandbox's integration tests: probe builds (cached in the
//! target directory), unique names, a sandbox guard that checks it left
//! nothing behind, and a helper that runs one proc to completion.

#![allow(dead_code)]

use std::ffi::c_int;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sigma_sandbox::{Child, Class, Config, ExitStatus, RealmHandle, Sandbox, SpawnSpec};

/// Polls `done` every millisecond until it holds; fails the test with
/// `what` if it does not within `within`.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Builds `tests/probes/<name>.rs` into a static binary, once: reused while
/// it is newer than its source. Concurrent builders each build in a
/// private directory and rename the binary into place.
pub fn probe(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/probes")
        .join(format!("{name}.rs"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-probes");
    std::fs::create_dir_all(&dir).expect("probe dir");
    let out = dir.join(name);
    let fresh = |out: &Path| -> bool {
        let (Ok(o), Ok(s)) = (std::fs::metadata(out), std::fs::metadata(&src)) else {
            return false;
        };
        o.modified().ok() >= s.modified().ok()
    };
    if fresh(&out) {
        return out;
    }
    // A directory of its own: rustc names its intermediate files after
    // the crate, in the output's directory, so two builders of one probe
    // in one directory delete each other's objects ("undefined symbol:
    // main", seen once).
    let build = dir.join(format!(
        "{name}.{}.{:?}.build",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&build).expect("probe build dir");
    let tmp = build.join(name);
    let status = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["-O", "-C", "target-feature=+crt-static", "--edition", "2021"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .expect("run rustc");
    assert!(status.success(), "building probe {name} failed");
    std::fs::rename(&tmp, &out).expect("rename probe");
    let _ = std::fs::remove_dir_all(&build);
    out
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new directory `<prefix>-<pid>-<n>` under the test target's scratch
/// directory (the caller removes it).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Whether every (`all`) or some (`!all`) cgroup hierarchy of `sb` is v1.
pub fn cgroup_v1(sb: &Sandbox, all: bool) -> bool {
    let hierarchies = sb.hierarchies();
    let mut v1 = hierarchies
        .iter()
        .map(|h| h.version == sigma_sandbox::cgroup::Version::V1);
    if all {
        v1.all(|b| b)
    } else {
        v1.any(|b| b)
    }
}

/// A sandbox with unique cgroup and jail names; [`TestSandbox::finish`]
/// drops it and checks that its cgroups, jail directory and jail mounts
/// are gone. Without `finish` (a failed test) the drop still cleans up.
pub struct TestSandbox {
    pub sb: Option<Sandbox>,
    parents: Vec<PathBuf>,
    jail: PathBuf,
}

impl TestSandbox {
    pub fn new() -> TestSandbox {
        TestSandbox::with(|_| {})
    }

    /// A sandbox whose config `tweak` adjusts first.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestSandbox {
        let name = unique("sigma-test");
        let mut config = Config::new(&name);
        tweak(&mut config);
        let jail = config.jail_dir.clone();
        let sb = Sandbox::new(config).expect("sandbox");
        let parents = sb.cgroup_parents();
        TestSandbox {
            sb: Some(sb),
            parents,
            jail,
        }
    }

    pub fn sb(&self) -> &Sandbox {
        self.sb.as_ref().expect("sandbox alive")
    }

    pub fn finish(mut self) {
        drop(self.sb.take());
        for p in &self.parents {
            assert!(!p.exists(), "cgroup {} left behind", p.display());
        }
        assert!(!self.jail.exists(), "jail dir {} left behind", self.jail.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            !mountinfo.contains(self.jail.to_str().unwrap_or("?")),
            "a mount on the jail dir is visible on the host"
        );
    }
}

/// A close-on-exec pipe: (read end, write end). (std::io::pipe needs Rust
/// 1.87; the workspace's MSRV is 1.85.)
pub fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two fds into a live array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: two fresh fds owned by nobody else.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
}

/// A Unix SEQPACKET pair, close-on-exec: (ours, the proc's fd 3).
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: socketpair writes two fds into a live array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair");
    // SAFETY: two fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// A warm sandbox started it.
    pub warm: bool,
}

/// Options of [`run`] beyond the binary and its arguments.
pub struct RunOpts {
    pub class: Class,
    pub mem_mib: u64,
    pub pids_max: u64,
    pub env: Vec<(String, String)>,
    /// [`sigma_sandbox::SpawnSpec::hold_mount_namespace`].
    pub hold_mount_namespace: bool,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            class: Class::Lc { mcpu: 500 },
            mem_mib: 64,
            pids_max: 32,
            env: Vec::new(),
            hold_mount_namespace: false,
        }
    }
}

/// Spawns and returns the child with its stdout/stderr read ends and our
/// end of its control socket.
pub fn start(
    sb: &Sandbox,
    realm: &RealmHandle,
    binary: &Path,
    args: &[&str],
    opts: &RunOpts,
) -> sigma_sandbox::Result<(Child, std::fs::File, std::fs::File, OwnedFd)> {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let (ctl_ours, ctl_theirs) = seqpacket_pair();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let proc_id = unique("p");
    let spec = SpawnSpec {
        argv0: None,
        realm,
        proc_id: &proc_id,
        binary,
        args: &args,
        env: &opts.env,
        class: opts.class,
        mem_mib: opts.mem_mib,
        pids_max: opts.pids_max,
        ctl_fd: ctl_theirs.as_fd(),
        stdout: out_w.as_fd(),
        stderr: err_w.as_fd(),
        hold_mount_namespace: opts.hold_mount_namespace,
    };
    let child = sb.spawn(&spec)?;
    Ok((child, out_r, err_r, ctl_ours))
}

/// Runs a proc to completion (at most 30 s) and collects its output.
pub fn run(sb: &Sandbox, realm: &RealmHandle, binary: &Path, args: &[&str], opts: &RunOpts) -> Outcome {
    let (mut child, mut out_r, mut err_r, _ctl) = start(sb, realm, binary, args, opts).expect("spawn");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_r.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let _ = out_r.read_to_string(&mut stdout);
    let stderr = err_thread.join().unwrap_or_default();
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("wait")
        .expect("proc exited within 30 s");
    let pid = child.pid();
    let warm = child.spawn_times().warm;
    let dirs = child.cgroup_dirs();
    drop(child);
    for d in dirs {
        assert!(!d.exists(), "proc cgroup {} left behind", d.display());
    }
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still exists");
    Outcome {
        status,
        stdout,
        stderr,
        warm,
    }
}

/// The value of the line of `out` starting with `prefix`.
pub fn field<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"))
        .trim()
}

/// `SIGMA_PID` as the probe's `info` printed it.
pub fn sigma_pid(out: &str) -> String {
    field(out, "env")
        .split(';')
        .find_map(|kv| kv.strip_prefix("SIGMA_PID="))
        .unwrap_or("")
        .to_string()
}

/// Checks what the probe's `info` printed, run with args `info`, `a b` and
/// env `GIVEN=yes` in `realm` by a thread that blocked SIGUSR1 and ignored
/// SIGUSR2: the proc sees only its jail and runs unprivileged.
pub fn assert_jailed(out: &str, realm: &RealmHandle) {
    let uid = realm.uid().to_string();
    let gid = realm.gid().to_string();
    assert_eq!(field(out, "status Uid:"), format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(field(out, "status Gid:"), format!("{gid} {gid} {gid} {gid}"));
    assert_eq!(field(out, "status Groups:"), "");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(out, &format!("status {caps}")), "0000000000000000", "{caps}");
    }
    assert_eq!(field(out, "status NoNewPrivs:"), "1");
    assert_eq!(field(out, "status Seccomp:"), "2");
    assert_eq!(
        field(out, "status SigBlk:"),
        "0000000000000000",
        "the parent's blocked SIGUSR1 leaked"
    );
    // Rust's runtime ignores SIGPIPE (bit 12) itself; SIGUSR2 (bit 11)
    // must not be ignored.
    assert_eq!(field(out, "status SigIgn:"), "0000000000001000");
    assert_eq!(field(out, "status NSpid:"), "1", "not pid 1 of its own pid namespace");
    assert_eq!(field(out, "limit Max core file size"), "0 0 bytes");
    assert_eq!(field(out, "limit Max open files"), "1024 1024 files");
    assert_eq!(field(out, "root"), "init,proc");
    assert_eq!(field(out, "pids"), "1");
    let fds: Vec<&str> = field(out, "fds").split(',').collect();
    // 0-3, plus the directory fd read_dir holds while listing.
    assert_eq!(fds.len(), 5, "fds: {fds:?}");
    assert_eq!(&fds[..4], ["0", "1", "2", "3"]);
    let pid = sigma_pid(out);
    assert!(pid.starts_with("p-"), "SIGMA_PID {pid:?}");
    assert_eq!(
        field(out, "env"),
        format!("GIVEN=yes;SIGMA_CTL_FD=3;SIGMA_PID={pid};SIGMA_REALM={}", realm.name())
    );
    assert_eq!(field(out, "args"), "probe;info;a b");
    assert_eq!(field(out, "cwd"), "/");
}

/// Blocks SIGUSR1 and ignores SIGUSR2 on the calling thread: neither may
/// reach a proc it starts or prepares a warm sandbox for.
pub fn block_and_ignore_signals() {
    // SAFETY: plain signal-mask and disposition calls on live locals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
    }
}

/// Raw fd number of an fd-like value (for messages).
pub fn raw(fd: &impl AsRawFd) -> i32 {
    fd.as_raw_fd()
}
