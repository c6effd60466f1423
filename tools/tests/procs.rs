//! Procs through sigmad and sigmactl (issue #11): binaries put in the
//! store and refused when they are not static executables; procs spawned
//! in σcontainers, waited for with their exit status, crash signal, kill or
//! eviction; bounded logs; realms kept apart; the binary cache kept to
//! its bound; bad input refused with a clear error. Against the real kernel: needs root and cgroup controllers,
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
            println!("pid {} realm {} argv0 {}", std::env::var("SIGMA_PID").unwrap_or_default(),
                     std::env::var("SIGMA_REALM").unwrap_or_default(),
                     std::env::args().next().unwrap_or_default());
            std::process::exit(code);
        }"#,
    ),
    (
        "caps",
        r#"fn main() {
            // Its capability sets, no_new_privs and seccomp mode, as the kernel says.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            for line in status.lines() {
                if line.starts_with("Cap") || line.starts_with("NoNewPrivs") || line.starts_with("Seccomp:") {
                    println!("{line}");
                }
            }
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
        "ctl",
        r#"use std::io::{Read, Write};
        use std::os::unix::io::FromRawFd;
        // Sends each argument (a frame, in hex) on fd 3 and prints each reply frame in hex.
        fn main() {
            let mut s = unsafe { std::fs::File::from_raw_fd(3) };
            for hex in std::env::args().skip(1) {
                let bytes: Vec<u8> = (0..hex.len()).step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
                s.write_all(&bytes).unwrap();
                let mut frame = vec![0u8; 32];
                s.read_exact(&mut frame).unwrap();
                let len = u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]) as usize;
                let mut payload = vec![0u8; len];
                s.read_exact(&mut payload).unwrap();
                frame.extend_from_slice(&payload);
                let line: String = frame.iter().map(|b| format!("{b:02x}")).collect();
                println!("{line}");
            }
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
                // Test processes run at once (nextest) and may build the
                // same proc: each builds from and into private files and
                // renames the binary, then the source it was built from,
                // into place (whole files only, never one half-written).
                let private = format!("{}.{:?}", std::process::id(), std::thread::current().id());
                let tmp_src = dir.join(format!("{name}.{private}.rs"));
                let tmp_bin = dir.join(format!("{name}.{private}.tmp"));
                std::fs::write(&tmp_src, src).unwrap();
                let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                    .args(["-O", "-C", "target-feature=+crt-static", "--edition", "2021"])
                    // The crate is named for the proc, not for the private
                    // file name (which holds '.', '(' and ')').
                    .args(["--crate-name", name, "-o"])
                    .arg(&tmp_bin)
                    .arg(&tmp_src)
                    .output()
                    .expect("rustc");
                assert!(
                    out.status.success(),
                    "building {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::rename(&tmp_bin, &bin).unwrap();
                std::fs::rename(&tmp_src, &src_path).unwrap();
            }
            dir
        })
        .clone()
}

/// A sigmad with the test procs in its store, or None (with a message)
/// where this machine cannot run procs.
fn sigmad(dir: &Path) -> Option<Daemon> {
    sigmad_with(dir, &[])
}

/// As [`sigmad`], with `extra` arguments. Its first spawn (the probe) runs
/// `exit`.
fn sigmad_with(dir: &Path, extra: &[&str]) -> Option<Daemon> {
    let args: Vec<&str> = ["--procs"].iter().chain(extra).copied().collect();
    let d = Daemon::launch(dir, &dir.join("sigmad.sock"), &args, &[]);
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
    assert_eq!(logs.trim(), format!("pid {pid} realm blue argv0 exit"));
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

/// A frame of `method` with `payload`, in hex (what the `ctl` proc sends).
fn frame_hex(method: u32, payload: &[u8]) -> String {
    use sigma_ep::limits::FRAME_HEADER_BYTES;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    sigma_ep::Header::request(1, method, payload.len() as u32, 0).encode(&mut header);
    header.iter().chain(payload).map(|b| format!("{b:02x}")).collect()
}

fn ns_hex(req: sigma_ep::ns::NsRequest) -> String {
    let mut payload = bytes::BytesMut::new();
    req.encode(&mut payload);
    frame_hex(req.method(), &payload)
}

/// A reply line of the `ctl` proc: its header and payload.
fn reply(line: &str) -> (sigma_ep::Header, Vec<u8>) {
    let bytes: Vec<u8> = (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
        .collect();
    let header = sigma_ep::Header::decode(&bytes[..32]).unwrap();
    (header, bytes[32..].to_vec())
}

#[test]
fn a_procs_control_connection_acts_only_in_its_own_realm() {
    use sigma_ep::ns::NsRequest;
    use sigma_ep::proc::ProcRequest;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    d.ok(&["realm", "create", "blue"]);
    d.ok(&["ns", "-r", "blue", "put", "/hello", "--data", "from blue"]);
    d.ok(&["ns", "-r", "root", "put", "/secret", "--data", "root's"]);
    let own = ns_hex(NsRequest::Read {
        realm: "blue".into(),
        path: "/hello".into(),
    });
    let other = ns_hex(NsRequest::Read {
        realm: "root".into(),
        path: "/secret".into(),
    });
    let realms = ns_hex(NsRequest::ListRealms);
    let ps = {
        let req = ProcRequest::Ps { realm: "blue".into() };
        let mut payload = bytes::BytesMut::new();
        req.encode(&mut payload);
        frame_hex(req.method(), &payload)
    };
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "ctl", "--", &own, &other, &realms, &ps]));
    let wait = d.ctl(&["wait", "-r", "blue", &pid]);
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "ok",
        "{}",
        d.ok(&["logs", "-r", "blue", &pid])
    );
    let logs = d.ok(&["logs", "-r", "blue", &pid]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 4, "{logs}");
    let (h, body) = reply(lines[0]);
    assert_eq!((h.kind, &body[..]), (sigma_ep::Kind::Response, &b"from blue"[..]));
    for (i, why) in [(1, "acts only in its own realm"), (2, "not open to procs")] {
        let (h, body) = reply(lines[i]);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(h.kind, sigma_ep::Kind::Error, "request {i}: {text}");
        assert!(text.contains("denied") && text.contains(why), "request {i}: {text}");
        assert!(!text.contains("root's"));
    }
    let (h, body) = reply(lines[3]);
    assert_eq!(h.kind, sigma_ep::Kind::Response);
    let procs = sigma_ep::proc::WireProc::decode_list(bytes::Bytes::from(body)).unwrap();
    assert!(
        procs.iter().any(|p| p.pid.to_string() == pid),
        "its own realm's ps lists it: {procs:?}"
    );
}

/// One call on sigmad's admin socket with a raw frame; the reply frame.
fn admin_call(sock: &Path, req: &sigma_ep::proc::ProcRequest) -> (sigma_ep::Header, Vec<u8>) {
    use std::io::{Read, Write};
    let mut payload = bytes::BytesMut::new();
    req.encode(&mut payload);
    let mut header = [0u8; 32];
    sigma_ep::Header::request(7, req.method(), payload.len() as u32, 0).encode(&mut header);
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    s.write_all(&header).unwrap();
    s.write_all(&payload).unwrap();
    let mut h = [0u8; 32];
    s.read_exact(&mut h).unwrap();
    let h = sigma_ep::Header::decode(&h).unwrap();
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).unwrap();
    (h, body)
}

fn proc_hex(req: sigma_ep::proc::ProcRequest) -> String {
    let mut payload = bytes::BytesMut::new();
    req.encode(&mut payload);
    frame_hex(req.method(), &payload)
}

#[test]
fn a_proc_says_it_started_and_declares_its_status_only_for_itself() {
    use sigma_ep::proc::{ProcRequest, WireStatus};
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    d.ok(&["realm", "create", "blue"]);
    // A proc that never says it started: wait_start ends at its deadline.
    let sleeper: u64 = pid_of(&d.ok(&["spawn", "-r", "blue", "sleep", "--", "5000"]))
        .parse()
        .unwrap();
    let (h, body) = admin_call(
        &d.sock,
        &ProcRequest::WaitStart {
            realm: "blue".into(),
            pid: sleeper,
            timeout_ms: 300,
        },
    );
    assert_eq!(h.kind, sigma_ep::Kind::Error);
    assert!(String::from_utf8_lossy(&body).contains("did not say it started"));
    // Nobody but the proc itself may say it started.
    let (h, body) = admin_call(
        &d.sock,
        &ProcRequest::Started {
            realm: "blue".into(),
            pid: sleeper,
        },
    );
    assert_eq!(h.kind, sigma_ep::Kind::Error);
    assert!(String::from_utf8_lossy(&body).contains("only from a proc"));
    d.ok(&["kill", "-r", "blue", &sleeper.to_string()]);
    // σ pids are handed out in order: the next spawn is sleeper + 1.
    let me = sleeper + 1;
    let frames = [
        proc_hex(ProcRequest::Started {
            realm: "blue".into(),
            pid: me,
        }),
        proc_hex(ProcRequest::Exited {
            realm: "blue".into(),
            pid: me,
            status: WireStatus::Error(5),
        }),
        proc_hex(ProcRequest::Started {
            realm: "blue".into(),
            pid: sleeper,
        }),
    ];
    let args: Vec<&str> = ["spawn", "-r", "blue", "ctl", "--"]
        .into_iter()
        .chain(frames.iter().map(String::as_str))
        .collect();
    assert_eq!(pid_of(&d.ok(&args)), me.to_string());
    let wait = d.ctl(&["wait", "-r", "blue", &me.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "error(5)",
        "the declared status is reported"
    );
    assert_eq!(wait.status.code(), Some(5));
    let logs = d.ok(&["logs", "-r", "blue", &me.to_string()]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert_eq!(reply(lines[0]).0.kind, sigma_ep::Kind::Response);
    assert_eq!(reply(lines[1]).0.kind, sigma_ep::Kind::Response);
    let (h, body) = reply(lines[2]);
    assert_eq!(h.kind, sigma_ep::Kind::Error);
    assert!(String::from_utf8_lossy(&body).contains("speaks only for itself"));
    // It said it started: wait_start answers at once with its status now.
    let (h, body) = admin_call(
        &d.sock,
        &ProcRequest::WaitStart {
            realm: "blue".into(),
            pid: me,
            timeout_ms: 300,
        },
    );
    assert_eq!(h.kind, sigma_ep::Kind::Response);
    assert_eq!(
        WireStatus::decode(bytes::Bytes::from(body)).unwrap(),
        WireStatus::Error(5)
    );
}

/// A thousand spawns at once: each either starts (and then runs once, to
/// completion) or is refused with a clear error; none is lost, none runs
/// twice, and sigmad serves on.
#[test]
fn a_thousand_spawns_at_once_start_or_are_refused_and_none_is_lost() {
    use sigma_ep::proc::{ProcRequest, WireClass, WireProc, WireStatus};
    const SPAWNS: usize = 1000;
    // A connection per spawn, all open at once (and the other tests').
    let nofile = sigma_control::conn_limit::raise_nofile().unwrap();
    if nofile < 2 * SPAWNS as u64 {
        eprintln!(
            "skipping: the open-file limit ({nofile}) is below the {} this test needs",
            2 * SPAWNS
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    let sock = d.sock.clone();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(SPAWNS));
    let threads: Vec<_> = (0..SPAWNS)
        .map(|_| {
            let (sock, barrier) = (sock.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                admin_call(
                    &sock,
                    &ProcRequest::Spawn {
                        realm: "root".into(),
                        program: "exit".into(),
                        args: vec![],
                        env: vec![],
                        class: WireClass::Be,
                        mem_mib: 0,
                    },
                )
            })
        })
        .collect();
    let (mut started, mut refused) = (Vec::new(), 0);
    for t in threads {
        let (h, body) = t.join().unwrap();
        match h.kind {
            sigma_ep::Kind::Response => started.push(u64::from_le_bytes(body[..8].try_into().unwrap())),
            _ => {
                let why = String::from_utf8_lossy(&body).to_string();
                assert!(why.starts_with("busy: "), "a refusal says why: {why}");
                refused += 1;
            }
        }
    }
    eprintln!("{SPAWNS} spawns at once: {} started, {refused} refused", started.len());
    assert!(!started.is_empty());
    let mut unique = started.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), started.len(), "a pid handed out twice");
    for &pid in &started {
        let (h, body) = admin_call(
            &sock,
            &ProcRequest::WaitExit {
                realm: "root".into(),
                pid,
                timeout_ms: 60_000,
            },
        );
        assert_eq!(h.kind, sigma_ep::Kind::Response);
        assert_eq!(
            WireStatus::decode(bytes::Bytes::from(body)).unwrap(),
            WireStatus::Ok,
            "proc {pid}"
        );
    }
    // Ran once each: one line of output apiece (checked on a sample).
    for &pid in started.iter().step_by(50) {
        let logs = d.ok(&["logs", &pid.to_string()]);
        assert_eq!(logs.lines().count(), 1, "proc {pid}: {logs:?}");
    }
    // Every spawn is accounted for: the started ones ended ok, the refused
    // ones are listed as denied, and nothing else was started.
    let (h, body) = admin_call(&sock, &ProcRequest::Ps { realm: "root".into() });
    assert_eq!(h.kind, sigma_ep::Kind::Response);
    let procs = WireProc::decode_list(bytes::Bytes::from(body)).unwrap();
    let ok = procs
        .iter()
        .filter(|p| p.program == "exit" && p.status == WireStatus::Ok)
        .count();
    let denied = procs
        .iter()
        .filter(|p| p.program == "exit" && matches!(p.status, WireStatus::Denied(_)))
        .count();
    // One more "exit" ran as sigmad()'s probe.
    assert_eq!((ok, denied), (started.len() + 1, refused), "{procs:?}");
    // sigmad serves on.
    let pid = pid_of(&d.ok(&["spawn", "exit"]));
    assert_eq!(d.ctl(&["wait", &pid]).status.code(), Some(0));
}

/// A sigmad with the test procs and the proc client library's example
/// procs (`spawner`, `evictee`) in its store.
fn sigmad_with_client_examples(dir: &Path) -> Option<Daemon> {
    let d = sigmad(dir)?;
    let examples = sigma_tests::procs::client_examples().unwrap_or_else(|e| panic!("{e}"));
    for name in ["spawner", "evictee"] {
        d.ok(&["bin", "put", name, examples.join(name).to_str().unwrap()]);
    }
    Some(d)
}

#[test]
fn a_proc_spawns_and_waits_for_children_in_its_realm_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad_with_client_examples(dir.path()) else {
        return;
    };
    d.ok(&["realm", "create", "blue"]);
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "spawner", "--", "3", "exit", "0"]));
    let wait = d.ctl(&["wait", "-r", "blue", "--timeout", "60", &pid]);
    let logs = d.ok(&["logs", "-r", "blue", &pid]);
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "ok",
        "the spawner's log: {logs}"
    );
    let children: Vec<&str> = logs.lines().filter(|l| l.starts_with("child ")).collect();
    assert_eq!(children.len(), 3, "{logs}");
    assert!(children.iter().all(|l| l.contains("of realm blue: ok")), "{logs}");
    // The children ran in blue: blue's ps lists them, root's does not.
    let ps = d.ok(&["ps", "-r", "blue"]);
    assert_eq!(ps.lines().filter(|l| l.contains(" exit ")).count(), 3, "{ps}");
    let root_ps = d.ok(&["ps"]);
    for child in &children {
        let pid = child.split_whitespace().nth(1).unwrap();
        assert!(
            !root_ps.lines().any(|l| l.split_whitespace().next() == Some(pid)),
            "root's ps lists blue's child {pid}: {root_ps}"
        );
    }
    // A child's failure is the spawner's to report: it exits 1.
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "spawner", "--", "2", "exit", "5"]));
    let wait = d.ctl(&["wait", "-r", "blue", "--timeout", "60", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "error(1)");
    assert_eq!(d.ok(&["logs", "-r", "blue", &pid]).matches(": error(5)").count(), 2);
    // A program that is not in the store: the spawner's spawn fails with
    // sigmad's reason.
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "spawner", "--", "1", "nosuch"]));
    d.ctl(&["wait", "-r", "blue", "--timeout", "60", &pid]);
    let logs = d.ok(&["logs", "-r", "blue", &pid]);
    assert!(logs.contains("spawn failed") && logs.contains("nosuch"), "{logs}");
}

#[test]
fn an_evicted_proc_that_waits_leaves_on_its_own_and_one_that_does_not_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad_with_client_examples(dir.path()) else {
        return;
    };
    d.ok(&["realm", "create", "green"]);
    let evictee = |args: &[&str]| {
        let mut cmd = vec!["spawn", "-r", "green", "evictee"];
        if !args.is_empty() {
            cmd.push("--");
            cmd.extend_from_slice(args);
        }
        let pid = pid_of(&d.ok(&cmd));
        // Started: its ephemeral entry is published.
        let wait = d.ctl(&["wait", "-r", "green", "--start", "--timeout", "30", &pid]);
        assert!(
            wait.status.success(),
            "{} {}; log: {}",
            String::from_utf8_lossy(&wait.stdout),
            String::from_utf8_lossy(&wait.stderr),
            d.ok(&["logs", "-r", "green", &pid])
        );
        let entry = format!("/evictee-{pid}");
        assert_eq!(d.ok(&["ns", "-r", "green", "cat", &entry]), "here");
        (pid, entry)
    };

    // One that waits for eviction: told, it leaves on its own (its output
    // says so), well within the grace period, and ends evicted.
    let (pid, entry) = evictee(&[]);
    let began = std::time::Instant::now();
    d.ok(&["evict", "-r", "green", &pid]);
    let wait = d.ctl(&["wait", "-r", "green", "--timeout", "30", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "evicted");
    assert!(
        began.elapsed() < sigma_control::procs::EVICT_GRACE,
        "it left on its own within the grace period, not at the kill ({:?})",
        began.elapsed()
    );
    let logs = d.ok(&["logs", "-r", "green", &pid]);
    assert!(logs.contains("evicted: leaving"), "{logs}");
    // Its lease went with it, and the entry with the lease.
    gone(&d, &entry);

    // One that never waits for eviction is killed at once, and ends evicted.
    let (pid, entry) = evictee(&["ignore"]);
    d.ok(&["evict", "-r", "green", &pid]);
    let wait = d.ctl(&["wait", "-r", "green", "--timeout", "30", &pid]);
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "evicted");
    assert!(!d.ok(&["logs", "-r", "green", &pid]).contains("leaving"));
    gone(&d, &entry);

    // A proc cannot wait for another's eviction, from outside or inside.
    let (pid, _) = evictee(&["ignore"]);
    let req = sigma_ep::proc::ProcRequest::WaitEvict {
        realm: "green".into(),
        pid: pid.parse().unwrap(),
        timeout_ms: 0,
    };
    let (header, payload) = admin_call(&d.sock, &req);
    assert_eq!(header.kind, sigma_ep::Kind::Error);
    assert!(
        String::from_utf8_lossy(&payload).contains("come only from a proc"),
        "{}",
        String::from_utf8_lossy(&payload)
    );
    d.ok(&["kill", "-r", "green", &pid]);
}

/// Waits (a few seconds at most) until `entry` of realm green is gone: a
/// proc's leases are revoked when its connection ends, just after it exits.
fn gone(d: &Daemon, entry: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let get = d.ctl(&["ns", "-r", "green", "cat", entry]);
        if !get.status.success() {
            assert!(
                String::from_utf8_lossy(&get.stderr).contains("not found"),
                "{}",
                String::from_utf8_lossy(&get.stderr)
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{entry} outlived its proc's lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The processes on this machine whose environment names σ pid `pid` of
/// `realm` (procs get `SIGMA_PID` and `SIGMA_REALM` from sigmad).
fn host_processes_of(pid: &str, realm: &str) -> Vec<u32> {
    let (want_pid, want_realm) = (format!("SIGMA_PID={pid}"), format!("SIGMA_REALM={realm}"));
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(host_pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if vars.contains(&want_pid.as_bytes()) && vars.contains(&want_realm.as_bytes()) {
            found.push(host_pid);
        }
    }
    found
}

/// Children of `parent` that are not procs: warm sandboxes (a proc has
/// `SIGMA_PID` in its environment; a warm sandbox reads as its parent's).
fn warm_sandboxes_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if !env.split(|&b| b == 0).any(|v| v.starts_with(b"SIGMA_PID=")) {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
        .unwrap_or(false)
}

#[test]
fn procs_of_a_sigmad_killed_with_kill_9_are_reported_lost_and_killed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut d) = sigmad(dir.path()) else { return };
    d.ok(&["realm", "create", "blue"]);
    // Two short sleepers first: from a binary's second start in a realm on
    // (per spawner thread), sigmad makes a warm sandbox for the next.
    for _ in 0..2 {
        let short = pid_of(&d.ok(&["spawn", "-r", "blue", "sleep", "--", "1"]));
        assert_eq!(d.ok(&["wait", "-r", "blue", &short]).trim(), "ok");
    }
    let pid = pid_of(&d.ok(&["spawn", "-r", "blue", "sleep", "--", "600000"]));
    assert_eq!(host_processes_of(&pid, "blue").len(), 1, "the proc runs");
    // sigmad made a warm sandbox for the next sleeper: a child of sigmad's
    // that is not a proc (it shares sigmad's memory, environment included,
    // until it execs).
    // It is made after the spawn's reply: wait for it a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let warm = loop {
        let warm = warm_sandboxes_of(d.child.id());
        if !warm.is_empty() {
            break warm;
        }
        assert!(std::time::Instant::now() < deadline, "no warm sandbox was made");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // A caller waiting on it when sigmad dies is told, not left hanging.
    let waiter = Command::new(env!("CARGO_BIN_EXE_sigmactl"))
        .args(["--sock", d.sock.to_str().unwrap(), "wait", "-r", "blue", &pid])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.signal(libc::SIGKILL);
    let _ = d.child.wait();
    let began = std::time::Instant::now();
    let waited = waiter.wait_with_output().unwrap();
    assert!(began.elapsed() < std::time::Duration::from_secs(10), "the waiter hung");
    assert!(!waited.status.success());
    assert!(
        !String::from_utf8_lossy(&waited.stderr).is_empty(),
        "the waiter says why it stopped waiting"
    );
    // The proc outlives the killed sigmad until the next one starts; its
    // warm sandboxes see their channel close and exit at once.
    assert_eq!(host_processes_of(&pid, "blue").len(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while warm.iter().any(|p| running(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "warm sandboxes {warm:?} outlived the killed sigmad"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let d = Daemon::start_procs(dir.path());
    assert!(
        host_processes_of(&pid, "blue").is_empty(),
        "the next sigmad killed the proc the dead one left"
    );
    let wait = d.ctl(&["wait", "-r", "blue", "--timeout", "5", &pid]);
    let said = String::from_utf8_lossy(&wait.stdout).to_string();
    assert!(said.starts_with("lost: "), "{said}");
    assert_eq!(wait.status.code(), Some(1));
    let ps = d.ok(&["ps", "-r", "blue"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(pid.as_str()) && l.contains("lost")),
        "{ps}"
    );
    // Another realm does not see it; new procs get new pids.
    assert!(!d.ctl(&["wait", "--timeout", "1", &pid]).status.success());
    let next = pid_of(&d.ok(&["spawn", "-r", "blue", "exit"]));
    assert!(next.parse::<u64>().unwrap() > pid.parse::<u64>().unwrap());
    assert_eq!(d.ok(&["wait", "-r", "blue", &next]).trim(), "ok");
    // A clean stop leaves no record behind: the next start reports nothing lost.
    drop(d);
    let d = Daemon::start_procs(dir.path());
    let ps = d.ok(&["ps", "-r", "blue"]);
    assert!(!ps.contains("lost"), "{ps}");
}

#[test]
fn a_start_says_where_its_time_went() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    let times =
        |pid: &str| -> serde_json::Value { serde_json::from_str(d.ok(&["--json", "times", pid]).trim()).unwrap() };
    let steps = [
        "fetch_us",
        "schedule_us",
        "namespaces_us",
        "cgroups_us",
        "jail_us",
        "seccomp_us",
        "exec_us",
        "reply_us",
    ];
    // The steps fit in the whole.
    let adds_up = |v: &serde_json::Value| {
        let f = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        let parts: u64 = steps.iter().map(|k| f(k)).sum();
        assert!(
            parts <= f("total_us") + 8 && parts + 100 >= f("total_us"),
            "the steps ({parts} µs) do not add up to the whole: {v}"
        );
    };
    // The first start of `sleep` (sigmad's probe ran `exit`) fetches it
    // into the cache, and its sandbox is made while the file is checked:
    // the spawn takes it, so the sandbox steps read 0.
    let pid = pid_of(&d.ok(&["spawn", "sleep", "--", "1"]));
    let v = times(&pid);
    adds_up(&v);
    assert_eq!(v["warm"], true, "the sandbox made during the fetch was not taken: {v}");
    for k in ["namespaces_us", "jail_us", "seccomp_us"] {
        assert_eq!(v[k].as_u64(), Some(0), "{k} of a start made during its fetch: {v}");
    }
    assert!(v["fetch_us"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(d.ok(&["wait", &pid]).trim(), "ok");
    // In another realm the binary is in the cache, nothing is fetched and
    // no sandbox is there: every sandbox step runs.
    d.ok(&["realm", "create", "other"]);
    let pid = pid_of(&d.ok(&["spawn", "-r", "other", "sleep", "--", "1"]));
    let v: serde_json::Value = serde_json::from_str(d.ok(&["--json", "times", "-r", "other", &pid]).trim()).unwrap();
    let f = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    for k in ["namespaces_us", "cgroups_us", "jail_us", "exec_us"] {
        assert!(f(k) > 0, "{k} is 0: {v}");
    }
    adds_up(&v);
    assert_eq!(
        v["warm"], false,
        "the first start of a cached binary in a realm is cold: {v}"
    );
    let text = d.ok(&["times", "-r", "other", &pid]);
    assert!(text.lines().any(|l| l.starts_with("total_us")), "{text}");
    // A later start of the same binary takes a warm sandbox, made while
    // an earlier one ran (from the binary's second start on each spawner
    // thread): the sandbox steps done ahead read 0.
    assert_eq!(d.ok(&["wait", "-r", "other", &pid]).trim(), "ok");
    let mut warm = None;
    for _ in 0..6 {
        let pid = pid_of(&d.ok(&["spawn", "sleep", "--", "1"]));
        let v: serde_json::Value = serde_json::from_str(d.ok(&["--json", "times", &pid]).trim()).unwrap();
        assert_eq!(d.ok(&["wait", &pid]).trim(), "ok");
        if v["warm"] == true {
            warm = Some(v);
            break;
        }
    }
    let v = warm.expect("no start of six was warm");
    adds_up(&v);
    let f = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    for k in ["namespaces_us", "jail_us", "seccomp_us"] {
        assert_eq!(f(k), 0, "{k} of a warm start: {v}");
    }
    assert!(f("exec_us") > 0, "{v}");
    // A proc that never started has no times, and says why.
    let out = d.ctl(&["spawn", "nosuch"]);
    assert!(!out.status.success());
    let out = d.ctl(&["times", "999999"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no proc 999999"));
}

/// Changes the object of the one version under `versions` (a store's
/// `NAME` directory) in place, at the same size: the exit proc's " realm "
/// becomes " REALM ", so a run of the changed bytes shows in its log.
fn tamper(versions: &Path) {
    use std::os::unix::fs::FileExt;
    let version = std::fs::read_dir(versions).unwrap().next().unwrap().unwrap().path();
    let object = version.join("elf");
    let bytes = std::fs::read(&object).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b" realm ")
        .expect("the exit proc's format string");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap()
        .write_all_at(b" REALM ", at as u64)
        .unwrap();
}

#[test]
fn a_binary_that_fails_its_check_never_runs_though_its_sandbox_was_made_during_its_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    // The exit proc with bytes of its own: a digest the cache has never
    // held.
    let exit = dir.path().join("exit-own");
    let mut own = std::fs::read(procs().join("exit")).unwrap();
    own.extend_from_slice(b"tampered");
    std::fs::write(&exit, &own).unwrap();
    d.ok(&["bin", "put", "tampered", exit.to_str().unwrap()]);
    // Changed in the store after the put, in place and at the same size:
    // the fetch links the file and tells the spawner of it (which makes
    // the proc's sandbox from it) before the digest check fails.
    tamper(&dir.path().join("bins/store/tampered"));
    let out = d.ctl(&["spawn", "tampered", "--", "4"]);
    assert!(!out.status.success(), "a binary that fails its check started");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("tampered"), "{why}");
    // Put back whole (the same digest): the next spawn runs the checked
    // file, not the sandbox made from the changed one.
    d.ok(&["bin", "put", "tampered", exit.to_str().unwrap()]);
    let pid = pid_of(&d.ok(&["spawn", "tampered", "--", "4"]));
    let wait = d.ctl(&["wait", &pid]);
    assert_eq!(wait.status.code(), Some(4), "{wait:?}");
    let logs = d.ok(&["logs", &pid]);
    assert_eq!(
        logs.trim(),
        format!("pid {pid} realm root argv0 tampered"),
        "the changed binary ran"
    );
}

#[test]
fn a_proc_starts_from_an_s3_store_in_a_sandbox_made_while_it_downloads_and_a_tampered_object_never_runs() {
    use sigma_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start_or_panic(&["bins"]);
    let store = "s3://bins/p".to_string();
    let args = [
        "--procs",
        "--store",
        &store,
        "--s3-endpoint",
        &server.endpoint,
        "--s3-region",
        REGION,
        "--s3-allow-http",
    ];
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let d = Daemon::launch(dir.path(), &dir.path().join("sigmad.sock"), &args, &env);
    let exit = procs().join("exit");
    d.ok(&["bin", "put", "exit", exit.to_str().unwrap()]);
    // The first spawn downloads the binary into an empty cache.
    let spawn = d.ctl(&["spawn", "exit", "--", "3"]);
    if !spawn.status.success() {
        let why = String::from_utf8_lossy(&spawn.stderr);
        if why.contains("cannot start procs") {
            eprintln!("skipping: this sigmad cannot start procs here: {why}");
            return;
        }
        panic!("the first spawn failed: {why}");
    }
    let pid = pid_of(&String::from_utf8_lossy(&spawn.stdout));
    let v: serde_json::Value = serde_json::from_str(d.ok(&["--json", "times", &pid]).trim()).unwrap();
    assert_eq!(
        v["warm"], true,
        "the sandbox made during the download was not taken: {v}"
    );
    assert!(v["fetch_us"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(d.ctl(&["wait", &pid]).status.code(), Some(3));
    assert_eq!(d.ok(&["logs", &pid]).trim(), format!("pid {pid} realm root argv0 exit"));
    // A binary whose object is changed on the server after its put, at the
    // same size: downloaded, told of to the spawner (which makes its
    // sandbox), refused by the digest check, never run.
    let own = dir.path().join("exit-own");
    let mut bytes = std::fs::read(&exit).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&own, &bytes).unwrap();
    d.ok(&["bin", "put", "tampered", own.to_str().unwrap()]);
    tamper(&server.bucket_dir("bins").join("p/tampered"));
    let out = d.ctl(&["spawn", "tampered", "--", "4"]);
    assert!(!out.status.success(), "a tampered object started");
    d.ok(&["bin", "put", "tampered", own.to_str().unwrap()]);
    let pid = pid_of(&d.ok(&["spawn", "tampered", "--", "4"]));
    assert_eq!(d.ctl(&["wait", &pid]).status.code(), Some(4));
    assert_eq!(
        d.ok(&["logs", &pid]).trim(),
        format!("pid {pid} realm root argv0 tampered"),
        "the tampered object ran"
    );
}

/// The names of a process's threads, without their index (`sigma-spawner-0`
/// is `sigma-spawner`).
fn thread_kinds(pid: u32) -> std::collections::BTreeSet<String> {
    let mut kinds = std::collections::BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        kinds.insert(
            comm.trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                .to_string(),
        );
    }
    kinds
}

/// sigmad keeps realms set up while none of their procs runs, up to
/// `REALMS_KEPT_MAX` per spawner thread, and undoes the least recently used
/// past it (once its queue is drained, off the starts' path): after starts
/// in many more realms than that, the realms' cgroup directories beside a
/// running proc's are bounded, the realms last used are still there, and
/// the first ones are gone.
#[test]
fn idle_realms_past_the_bound_are_undone() {
    use sigma_control::procs::{REALMS_KEPT_MAX, SPAWNERS_MAX};
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    // More realms than every spawner thread (one per CPU) together keeps.
    let spawners = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SPAWNERS_MAX);
    let bound = spawners * REALMS_KEPT_MAX;
    let realms = bound + 8;
    for i in 0..realms {
        let realm = format!("kept{i}");
        d.ok(&["realm", "create", &realm]);
        let pid = pid_of(&d.ok(&["spawn", "-r", &realm, "exit"]));
        assert_eq!(d.ctl(&["wait", "-r", &realm, &pid]).status.code(), Some(0), "{realm}");
    }
    // A running proc shows where the realms' cgroups are: its v1 memory
    // cgroup is <parent>/<class>/<realm>/<proc>.
    d.ok(&["realm", "create", "last"]);
    let pid = pid_of(&d.ok(&["spawn", "-r", "last", "sleep", "--", "30000"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let host = loop {
        if let Some(&h) = host_processes_of(&pid, "last").first() {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "the sleeper never showed up");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{host}/cgroup")).unwrap();
    let Some(memory) = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
    else {
        eprintln!("skipping: no v1 memory cgroup here: {cgroups}");
        return;
    };
    let proc_dir = std::path::Path::new("/sys/fs/cgroup/memory").join(memory.trim_start_matches('/'));
    let class_dir = proc_dir
        .parent()
        .and_then(|realm| realm.parent())
        .unwrap()
        .to_path_buf();
    let kept: Vec<String> = std::fs::read_dir(&class_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kept"))
        .collect();
    assert!(
        kept.len() >= REALMS_KEPT_MAX && kept.len() <= bound,
        "{} realms kept set up under {}, expected {REALMS_KEPT_MAX}..={bound}",
        kept.len(),
        class_dir.display()
    );
    assert!(
        kept.contains(&format!("kept{}", realms - 1)),
        "the last realm used is kept"
    );
    assert!(!kept.contains(&"kept0".to_string()), "the first realm used is undone");
    d.ok(&["kill", "-r", "last", &pid]);
}

/// A capability set line (`CapBnd` ...) of a task's status, as a number.
fn caps_of(status: &str, set: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// sigmad's spawner threads empty their own capability bounding set when
/// they start (so that no child drops it one capability at a time) and keep
/// their effective capabilities; sigmad's other threads keep their bounding
/// set; and every proc, cold or from a warm sandbox, runs with no
/// capability in any set, no_new_privs and its filter.
#[test]
fn spawner_threads_hold_an_empty_bounding_set_and_procs_get_no_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = sigmad(dir.path()) else { return };
    d.ok(&["realm", "create", "caps"]);
    for round in 0..3 {
        let pid = pid_of(&d.ok(&["spawn", "-r", "caps", "caps"]));
        let wait = d.ctl(&["wait", "-r", "caps", &pid]);
        assert_eq!(wait.status.code(), Some(0), "round {round}");
        let logs = d.ok(&["logs", "-r", "caps", &pid]);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(caps_of(&logs, set), 0, "round {round}: {set} of the proc:\n{logs}");
        }
        assert!(logs.contains("NoNewPrivs:\t1"), "round {round}: {logs}");
        assert!(logs.contains("Seccomp:\t2"), "round {round}: {logs}");
    }
    let (mut spawners, mut others) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{}/task", d.child.id())).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        if comm.starts_with("sigma-spawner") {
            spawners += 1;
            assert_eq!(caps_of(&status, "CapBnd"), 0, "{comm}");
            assert_ne!(caps_of(&status, "CapEff"), 0, "{comm} keeps its capabilities");
        } else {
            others += 1;
            assert_ne!(caps_of(&status, "CapBnd"), 0, "{comm} keeps its bounding set");
        }
    }
    assert!(
        spawners > 0 && others > 0,
        "{spawners} spawner and {others} other threads"
    );
}

/// Issue #11, "one sigmad": on etcd as on the embedded store, sigmad has
/// the same shape — the data-plane core (on its main thread) serving the
/// admin socket, the control thread (which on etcd also runs the etcd
/// client: no thread of its own), the spawners — and starts procs.
#[test]
fn sigmad_has_one_shape_on_the_embedded_store_and_on_etcd() {
    let server = sigma_tests::etcd::EtcdServer::start_or_panic();
    let bins = procs();
    let mut shapes = Vec::new();
    for etcd in [None, Some(server.endpoint.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--procs"];
        if let Some(endpoint) = etcd {
            extra.extend(["--etcd", endpoint]);
        }
        let d = Daemon::launch(dir.path(), &dir.path().join("sigmad.sock"), &extra, &[]);
        assert_eq!(d.log_lines("data-plane core started"), 1, "store {etcd:?}");
        d.ok(&["bin", "put", "exit", bins.join("exit").to_str().unwrap()]);
        d.ok(&["realm", "create", "shape"]);
        let spawned = d.ctl(&["spawn", "-r", "shape", "exit", "--", "3"]);
        let why = String::from_utf8_lossy(&spawned.stderr);
        if why.contains("cannot start procs") {
            eprintln!("skipping: this sigmad cannot start procs here: {why}");
            return;
        }
        let pid = pid_of(&String::from_utf8_lossy(&spawned.stdout));
        let wait = d.ctl(&["wait", "-r", "shape", &pid]);
        assert_eq!(wait.status.code(), Some(3), "store {etcd:?}");
        let mut kinds = thread_kinds(d.child.id());
        // The embedded store's own commit thread is the store's, not the shape's.
        kinds.remove("sigma-ns-writer");
        shapes.push(kinds);
    }
    for want in ["sigmad", "sigma-control", "sigma-spawner", "sigma-signals"] {
        assert!(shapes[1].contains(want), "no {want} thread on etcd: {:?}", shapes[1]);
    }
    assert_eq!(shapes[0], shapes[1], "threads on the embedded store, then on etcd");
}

/// A sigmad whose binary cache holds two of the test procs (each about
/// 5 MB) but not three: spawns past it evict the least recently used
/// binary (never one a spawn is between fetching and the sandbox's bind
/// mount of: a pin left held would make the next spawn `busy`); a proc
/// whose binary was evicted runs on, since its bind mount holds the inode;
/// an evicted binary is fetched again when next spawned; and one larger
/// than the whole bound is refused with both sizes.
#[test]
fn the_binary_cache_keeps_to_its_bound_and_a_proc_outlives_its_evicted_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bins = procs();
    let content = |name: &str| std::fs::read(bins.join(name)).unwrap();
    let names = ["exit", "sleep", "crash"];
    let sizes: Vec<u64> = names.iter().map(|n| content(n).len() as u64).collect();
    let pair_max = sizes.iter().sum::<u64>() - sizes.iter().min().unwrap();
    let bound_mib = pair_max.div_ceil(1 << 20);
    assert!(
        sizes.iter().sum::<u64>() > bound_mib << 20,
        "the test procs ({sizes:?} bytes) are too small for a bound of {bound_mib} MiB to hold two and not three"
    );
    let Some(d) = sigmad_with(dir.path(), &["--bin-cache-mib", &bound_mib.to_string()]) else {
        return;
    };
    let cache_dir = dir.path().join("bins").join("cache");
    // Which test procs the cache holds, told by their bytes, once the
    // evicted files set aside are gone (sigmad unlinks them in the
    // background, off the fetch's path).
    let cached = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_dir(&cache_dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".evicted"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut held: Vec<&str> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                *names
                    .iter()
                    .find(|n| content(n) == bytes)
                    .expect("a cache file of a test proc")
            })
            .collect();
        held.sort();
        held
    };
    let status = |pid: &str| {
        let wait = d.ctl(&["wait", "--timeout", "30", pid]);
        String::from_utf8_lossy(&wait.stdout).trim().to_string()
    };

    // The probe spawned exit; sleep joins it, and runs on.
    let sleeper = pid_of(&d.ok(&["spawn", "sleep", "--", "5000"]));
    assert_eq!(cached(), ["exit", "sleep"]);
    // crash needs room: exit, the least recently used, goes.
    let crasher = pid_of(&d.ok(&["spawn", "crash"]));
    assert_eq!(cached(), ["crash", "sleep"]);
    // exit again: fetched again, and sleep's binary goes while it runs.
    let exiter = pid_of(&d.ok(&["spawn", "exit"]));
    assert_eq!(cached(), ["crash", "exit"]);
    let ps = d.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(sleeper.as_str()) && l.contains("running")),
        "sleep runs on after its binary was evicted: {ps}"
    );
    assert_eq!(status(&exiter), "ok");
    assert_eq!(status(&crasher), "crashed(signal 11)");
    assert_eq!(status(&sleeper), "ok", "sleep ran to its end");
    assert!(d.log_lines("evicted a cached binary") >= 2);

    // Larger than the whole bound (trailing bytes keep an ELF valid).
    let huge = dir.path().join("huge");
    let mut bytes = content("sleep");
    bytes.resize(((bound_mib + 1) << 20) as usize, 0);
    std::fs::write(&huge, &bytes).unwrap();
    d.ok(&["bin", "put", "huge", huge.to_str().unwrap()]);
    let out = d.ctl(&["spawn", "huge"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a binary larger than the cache spawned");
    assert!(
        err.contains(&bytes.len().to_string())
            && err.contains(&(bound_mib << 20).to_string())
            && err.contains("--bin-cache-mib"),
        "{err}"
    );
    assert_eq!(cached(), ["crash", "exit"], "nothing was evicted for it");
}
