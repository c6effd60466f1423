//! The probe proc of the sandbox tests. Built at test time, statically,
//! with no dependencies: it calls the kernel through static glibc's
//! `syscall`. One mode per run, named by the first argument:
//!
//! - `info`: prints what the proc can see of itself (credentials,
//!   capabilities, signal mask, rlimits, root directory, pids, fds, env).
//! - `escape HOST_PID`: tries each thing a proc must not do and prints one
//!   `check NAME ret=R errno=E` line per attempt.
//! - `workload`: does what a well-behaved proc does (threads, locks,
//!   allocation, messages on its control fd, an fd received by SCM_RIGHTS,
//!   sleeping, reading /proc); exits 0 when everything worked.
//! - `forkbomb N [MS]`: forks up to N children that sleep MS ms (default
//!   30 s), prints how many forks succeeded and the errno of the first
//!   failure.
//! - `membomb MIB`: allocates and touches MIB MiB, one MiB at a time.
//! - `wait`: reads its control socket (fd 3) until it is closed, then exits 0.

use std::ffi::{c_char, c_int, c_long, c_void};
use std::io::{Read, Write};

extern "C" {
    fn syscall(n: c_long, ...) -> c_long;
    fn __errno_location() -> *mut c_int;
    fn fork() -> c_int;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
}

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

const SYS_SOCKET: c_long = 41;
const SYS_CONNECT: c_long = 42;
const SYS_BIND: c_long = 49;
const SYS_LISTEN: c_long = 50;
const SYS_SOCKETPAIR: c_long = 53;
const SYS_CLONE: c_long = 56;
const SYS_KILL: c_long = 62;
const SYS_PTRACE: c_long = 101;
const SYS_SETUID: c_long = 105;
const SYS_PIVOT_ROOT: c_long = 155;
const SYS_MOUNT: c_long = 165;
const SYS_UMOUNT2: c_long = 166;
const SYS_EXIT_GROUP: c_long = 231;
const SYS_KEYCTL: c_long = 250;
const SYS_OPENAT: c_long = 257;
const SYS_UNSHARE: c_long = 272;
const SYS_PERF_EVENT_OPEN: c_long = 298;
const SYS_PRLIMIT64: c_long = 302;
const SYS_SETNS: c_long = 308;
const SYS_PROCESS_VM_READV: c_long = 310;
const SYS_PROCESS_VM_WRITEV: c_long = 311;
const SYS_BPF: c_long = 321;
const SYS_USERFAULTFD: c_long = 323;
const SYS_IO_URING_SETUP: c_long = 425;
const SYS_CLONE3: c_long = 435;

const CLONE_NEWNS: c_long = 0x0002_0000;
const CLONE_NEWUSER: c_long = 0x1000_0000;
const CLONE_NEWNET: c_long = 0x4000_0000;
const SIGCHLD: c_long = 17;
const AT_FDCWD: c_long = -100;
const O_RDONLY: c_long = 0;
const O_WRONLY: c_long = 1;
const O_CREAT: c_long = 0o100;

fn errno() -> c_int {
    // SAFETY: glibc's errno location is valid for the calling thread.
    unsafe { *__errno_location() }
}

fn report(name: &str, ret: c_long) {
    let err = if ret < 0 { errno() } else { 0 };
    println!("check {name} ret={ret} errno={err}");
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn open_raw(path: &str, flags: c_long) -> c_long {
    let p = cstr(path);
    // SAFETY: openat with a NUL-terminated path; the mode argument is read
    // only with O_CREAT.
    unsafe { syscall(SYS_OPENAT, AT_FDCWD, p.as_ptr() as c_long, flags, 0o644 as c_long) }
}

/// A clone(2) that must be refused; if the kernel ever runs it, the child
/// leaves at once so that the probe reports `ret=0` only once.
fn clone_flags(name: &str, flags: c_long) {
    // SAFETY: a fork-like clone without CLONE_VM: the child has its own
    // copy of memory and exits at once.
    let ret = unsafe { syscall(SYS_CLONE, flags, 0 as c_long, 0 as c_long, 0 as c_long, 0 as c_long) };
    if ret == 0 {
        // SAFETY: the child leaves without running anything of the parent.
        unsafe { syscall(SYS_EXIT_GROUP, 0 as c_long) };
    }
    report(name, ret);
}

fn escape(host_pid: c_long) {
    // SAFETY (for every call below): each syscall is made with arguments
    // that are either null, small integers, or pointers to live locals;
    // a refusal is what the probe expects.
    unsafe {
        report("socket_inet", syscall(SYS_SOCKET, 2 as c_long, 1 as c_long, 0 as c_long));
        report("socket_unix", syscall(SYS_SOCKET, 1 as c_long, 1 as c_long, 0 as c_long));
        let mut pair = [0 as c_int; 2];
        report(
            "socketpair",
            syscall(SYS_SOCKETPAIR, 1 as c_long, 1 as c_long, 0 as c_long, pair.as_mut_ptr()),
        );
        let addr = [0u8; 16];
        report("bind", syscall(SYS_BIND, 3 as c_long, addr.as_ptr(), 16 as c_long));
        report("listen", syscall(SYS_LISTEN, 3 as c_long, 1 as c_long));
        report("connect", syscall(SYS_CONNECT, 3 as c_long, addr.as_ptr(), 16 as c_long));
        let mut params = [0u8; 120];
        report("io_uring_setup", syscall(SYS_IO_URING_SETUP, 1 as c_long, params.as_mut_ptr()));
        let none = cstr("none");
        let proc_ = cstr("/proc");
        let tmpfs = cstr("tmpfs");
        report(
            "mount",
            syscall(SYS_MOUNT, none.as_ptr(), proc_.as_ptr(), tmpfs.as_ptr(), 0 as c_long, 0 as c_long),
        );
        report("umount2", syscall(SYS_UMOUNT2, proc_.as_ptr(), 2 as c_long));
        let dot = cstr(".");
        report("pivot_root", syscall(SYS_PIVOT_ROOT, dot.as_ptr(), dot.as_ptr()));
        report("ptrace_traceme", syscall(SYS_PTRACE, 0 as c_long, 0 as c_long, 0 as c_long, 0 as c_long));
        report("ptrace_attach", syscall(SYS_PTRACE, 16 as c_long, host_pid, 0 as c_long, 0 as c_long));
        report("unshare_ns", syscall(SYS_UNSHARE, CLONE_NEWNS));
        report("unshare_user", syscall(SYS_UNSHARE, CLONE_NEWUSER));
        let nsfd = open_raw("/proc/self/ns/net", O_RDONLY);
        report("setns", syscall(SYS_SETNS, nsfd, 0 as c_long));
        report("bpf", syscall(SYS_BPF, 0 as c_long, 0 as c_long, 0 as c_long));
        report(
            "perf_event_open",
            syscall(SYS_PERF_EVENT_OPEN, 0 as c_long, 0 as c_long, -1 as c_long, -1 as c_long, 0 as c_long),
        );
        report("keyctl", syscall(SYS_KEYCTL, 0 as c_long, 0 as c_long, 0 as c_long));
        report("userfaultfd", syscall(SYS_USERFAULTFD, 0 as c_long));
        let mut buf = [0u8; 8];
        let local = IoVec { base: buf.as_mut_ptr().cast(), len: 8 };
        let remote = IoVec { base: 0x1000 as *mut c_void, len: 8 };
        report(
            "process_vm_readv",
            syscall(SYS_PROCESS_VM_READV, 1 as c_long, &local, 1 as c_long, &remote, 1 as c_long, 0 as c_long),
        );
        report(
            "process_vm_writev",
            syscall(SYS_PROCESS_VM_WRITEV, 1 as c_long, &local, 1 as c_long, &remote, 1 as c_long, 0 as c_long),
        );
        let mut clone3_args = [0u64; 11];
        clone3_args[4] = SIGCHLD as u64;
        let ret = syscall(SYS_CLONE3, clone3_args.as_mut_ptr(), 88 as c_long);
        if ret == 0 {
            syscall(SYS_EXIT_GROUP, 0 as c_long);
        }
        report("clone3", ret);
        // 1 << 20 files: above any hard limit the sandbox sets.
        let raise = [1u64 << 20, 1u64 << 20];
        report("raise_nofile", syscall(SYS_PRLIMIT64, 0 as c_long, 7 as c_long, raise.as_ptr(), 0 as c_long));
        report("setuid_root", syscall(SYS_SETUID, 0 as c_long));
        report("kill_host_pid", syscall(SYS_KILL, host_pid, 0 as c_long));
    }
    clone_flags("clone_newuser", CLONE_NEWUSER | SIGCHLD);
    clone_flags("clone_newnet", CLONE_NEWNET | SIGCHLD);
    clone_flags("clone_newns", CLONE_NEWNS | SIGCHLD);
    report("open_host_file", open_raw("/etc/hostname", O_RDONLY));
    report("open_cgroup", open_raw("/sys/fs/cgroup/pids/cgroup.procs", O_WRONLY));
    report("write_binary", open_raw("/init", O_WRONLY));
    report("create_in_root", open_raw("/newfile", O_WRONLY | O_CREAT));
    report("create_in_proc", open_raw("/proc/newfile", O_WRONLY | O_CREAT));
}

fn list(dir: &str) -> String {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => return format!("error:{e}"),
    };
    names.sort();
    names.join(",")
}

fn info() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        let key = line.split(':').next().unwrap_or("");
        if matches!(
            key,
            "Uid" | "Gid" | "Groups" | "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb" | "NoNewPrivs"
                | "Seccomp" | "SigBlk" | "SigIgn" | "NSpid"
        ) {
            println!("status {}", line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    for line in limits.lines() {
        if line.starts_with("Max core file size") || line.starts_with("Max open files") {
            println!("limit {}", line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    println!("root {}", list("/"));
    let pids: Vec<String> =
        list("/proc").split(',').filter(|n| n.bytes().all(|b| b.is_ascii_digit())).map(String::from).collect();
    println!("pids {}", pids.join(","));
    println!("fds {}", list("/proc/self/fd"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    println!("hostname {}", hostname.trim());
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    println!("env {}", env.join(";"));
    println!("args {}", std::env::args().collect::<Vec<_>>().join(";"));
    println!("cwd {}", std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default());
}

/// Receives one fd by SCM_RIGHTS on `fd`, with the message bytes.
fn recv_fd(fd: c_int) -> Result<(Vec<u8>, c_int), String> {
    let mut data = [0u8; 64];
    let mut iov = IoVec { base: data.as_mut_ptr().cast(), len: data.len() };
    // cmsghdr (len: usize, level: i32, type: i32) + one int, aligned to 8.
    let mut control = [0u64; 4];
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: 24,
        flags: 0,
    };
    // SAFETY: msg points to live buffers of the stated sizes.
    let n = unsafe { recvmsg(fd, &mut msg, 0x4000_0000 /* MSG_CMSG_CLOEXEC */) };
    if n < 0 {
        return Err(format!("recvmsg errno {}", errno()));
    }
    let level = (control[1] & 0xffff_ffff) as i32;
    let kind = (control[1] >> 32) as i32;
    if msg.controllen < 20 || level != 1 || kind != 1 {
        return Err(format!("no SCM_RIGHTS (controllen {}, level {level}, type {kind})", msg.controllen));
    }
    let passed = (control[2] & 0xffff_ffff) as c_int;
    Ok((data[..n as usize].to_vec(), passed))
}

fn workload() -> Result<(), String> {
    use std::os::fd::FromRawFd;
    use std::sync::{Arc, Condvar, Mutex};
    // Threads and locks: a counter shared by four threads.
    let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *shared.0.lock().unwrap() += 1;
                }
                shared.1.notify_all();
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked".to_string())?;
    }
    if *shared.0.lock().unwrap() != 4000 {
        return Err("lost updates".into());
    }
    // Allocation big enough to be mmapped, then freed.
    let mut big = vec![0u8; 8 << 20];
    big[4 << 20] = 1;
    drop(big);
    // A hash map: std seeds it from getrandom.
    let mut map = std::collections::HashMap::new();
    map.insert("k", 1);
    // Sleep.
    std::thread::sleep(std::time::Duration::from_millis(1));
    // Its own /proc.
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    if !status.contains("Pid:") {
        return Err("no Pid in /proc/self/status".into());
    }
    // The control fd: say hello, receive an fd, write through it.
    // SAFETY: fd 3 is the control socket the sandbox gives every proc; the
    // probe owns it from here on.
    let mut ctl = unsafe { std::fs::File::from_raw_fd(3) };
    ctl.write_all(b"hello").map_err(|e| format!("write ctl: {e}"))?;
    let (msg, passed) = recv_fd(3)?;
    // SAFETY: the fd just arrived by SCM_RIGHTS and is owned by nobody else.
    let mut passed = unsafe { std::fs::File::from_raw_fd(passed) };
    passed.write_all(&msg).map_err(|e| format!("write passed fd: {e}"))?;
    drop(passed);
    let mut reply = [0u8; 16];
    let n = ctl.read(&mut reply).map_err(|e| format!("read ctl: {e}"))?;
    if &reply[..n] != b"bye" {
        return Err(format!("unexpected reply {:?}", &reply[..n]));
    }
    std::io::stderr().write_all(b"workload ok\n").map_err(|e| e.to_string())?;
    Ok(())
}

fn forkbomb(n: u32, sleep_ms: u64) {
    let mut forks = 0;
    let mut err = 0;
    for _ in 0..n {
        // SAFETY: the probe is single-threaded here; the child only sleeps
        // and exits.
        let pid = unsafe { fork() };
        if pid == 0 {
            std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { syscall(SYS_EXIT_GROUP, 0 as c_long) };
        }
        if pid < 0 {
            err = errno();
            break;
        }
        forks += 1;
    }
    println!("forks {forks} errno={err}");
}

fn membomb(mib: usize) {
    let mut chunks = Vec::new();
    for i in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.iter_mut().step_by(4096) {
            *page = i as u8 | 1;
        }
        chunks.push(chunk);
    }
    println!("allocated {} MiB", chunks.len());
}

/// Reads its control socket (fd 3) until the other end closes it.
fn wait_for_eof() {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 3 is the control socket the sandbox gave this proc; it is
    // owned here alone.
    let mut ctl = unsafe { std::fs::File::from_raw_fd(3) };
    let mut buf = [0u8; 64];
    while matches!(ctl.read(&mut buf), Ok(n) if n > 0) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let n: c_long = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    match mode {
        "info" => info(),
        "escape" => escape(n),
        "workload" => {
            if let Err(e) = workload() {
                eprintln!("workload failed: {e}");
                std::process::exit(1);
            }
        }
        "forkbomb" => forkbomb(n as u32, args.get(3).and_then(|a| a.parse().ok()).unwrap_or(30_000)),
        "membomb" => membomb(n as usize),
        "wait" => wait_for_eof(),
        _ => {
            eprintln!("unknown mode {mode:?}");
            std::process::exit(2);
        }
    }
    let _ = std::io::stdout().flush();
    let _: *const c_char = std::ptr::null();
}
