//! sigmad and sigmactl as a user runs them: real processes, a real socket.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::Daemon;

#[test]
fn sigmactl_drives_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "alpha"]);
    assert_eq!(d.ok(&["realm", "ls"]), "alpha\nroot\n");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "realm", "ls"])).unwrap();
    assert_eq!(json, serde_json::json!(["alpha", "root"]));
    d.ok(&["ns", "-r", "alpha", "mkdir", "/svc"]);
    d.ok(&["ns", "-r", "alpha", "put", "/svc/cfg", "--data", "v1"]);
    d.ok(&["ns", "-r", "alpha", "put", "/svc/cfg", "--data", "v2"]);
    assert_eq!(d.ok(&["ns", "-r", "alpha", "cat", "/svc/cfg"]), "v2");
    d.ok(&["ns", "-r", "alpha", "mv", "/svc/cfg", "/svc/cfg2"]);
    let ls: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "ns", "-r", "alpha", "ls", "/svc"])).unwrap();
    assert_eq!(ls[0]["name"], "cfg2");
    assert_eq!(ls[0]["kind"], "file");
    assert_eq!(ls[0]["len"], 2);
    // Errors: clear, and the exit status tells usage from refusal.
    let out = d.ctl(&["ns", "-r", "alpha", "cat", "/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/missing: not found"));
    let out = d.ctl(&["ns", "-r", "nosuch", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown realm"));
    let out = d.ctl(&["ns", "-r", "alpha", "cat", "/a/../b"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.ctl(&["--json", "ns", "-r", "alpha", "rm", "/svc"]);
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"], "not-empty");
    // Realm isolation through the socket: beta sees none of alpha's names.
    d.ok(&["realm", "create", "beta"]);
    assert_eq!(d.ok(&["ns", "-r", "beta", "ls", "/"]), "");
    assert_eq!(d.ctl(&["ns", "-r", "beta", "cat", "/svc/cfg2"]).status.code(), Some(1));
}

#[test]
fn watch_returns_when_the_path_appears() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "w"]);
    let sock = d.sock.clone();
    let watcher = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_sigmactl"))
            .arg("--sock")
            .arg(&sock)
            .args(["ns", "-r", "w", "watch", "/ready", "--timeout", "10"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    d.ok(&["ns", "-r", "w", "put", "/ready", "--data", "go"]);
    let out = watcher.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));
    let out = d.ctl(&["ns", "-r", "w", "watch", "/never", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sigterm_stops_cleanly_and_kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "k"]);
    for i in 0..20 {
        d.ok(&[
            "ns",
            "-r",
            "k",
            "put",
            &format!("/f{i}"),
            "--data",
            &format!("value {i}"),
        ]);
    }
    d.signal(libc::SIGKILL);
    let _ = d.child.wait();
    assert!(d.sock.exists(), "a killed sigmad leaves its socket behind");
    let mut d = Daemon::start(dir.path());
    // A second sigmad on the same directory is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another sigmad is running"));
    for i in 0..20 {
        assert_eq!(d.ok(&["ns", "-r", "k", "cat", &format!("/f{i}")]), format!("value {i}"));
    }
    d.signal(libc::SIGTERM);
    let status = d.child.wait().unwrap();
    assert!(status.success(), "sigmad exits 0 on SIGTERM: {status:?}");
    assert!(!d.sock.exists(), "sigmad removes its socket on SIGTERM");
    let out = Command::new(env!("CARGO_BIN_EXE_sigmactl"))
        .arg("--sock")
        .arg(&d.sock)
        .args(["realm", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is sigmad running?"));
}

use sigma_tests::etcd;

#[test]
fn sigmad_on_etcd_serves_the_same_namespace_and_fails_clearly_without_it() {
    let mut server = etcd::EtcdServer::start_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sigmad.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .arg("--data")
        .arg(dir.path())
        .args(["--etcd", &server.endpoint])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let d = Daemon::adopt(child, sock);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("sigmad serving the namespace") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("sigmad --etcd did not start");
    d.ok(&["realm", "create", "e"]);
    d.ok(&["ns", "-r", "e", "put", "/k", "--data", "in etcd"]);
    assert_eq!(d.ok(&["ns", "-r", "e", "cat", "/k"]), "in etcd");
    assert!(d.ok(&["realm", "ls"]).contains("e\n"));
    // etcd goes away: calls fail with a clear error within the store's deadline.
    server.kill();
    let started = Instant::now();
    let out = d.ctl(&["ns", "-r", "e", "cat", "/k"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd"), "the error names etcd: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn sigmad_refuses_an_unreachable_etcd_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .arg("--data")
        .arg(dir.path())
        .args(["--etcd", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to etcd at 127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An RPC file that answers `"{rest}:{request}"`.
struct Echo;

impl sigma_control::client::RpcFile for Echo {
    async fn write_read(
        &self,
        rest: &[String],
        request: bytes::Bytes,
        out: &mut bytes::BytesMut,
    ) -> Result<(), sigma_dataplane::rpc::Status> {
        out.extend_from_slice(format!("{}:", rest.join("/")).as_bytes());
        out.extend_from_slice(&request);
        Ok(())
    }
}

#[test]
fn sigmactl_mounts_a_server_and_calls_it_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "c"]);
    // A server on a data-plane core of this test process.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let core = sigma_dataplane::Core::builder().build().unwrap();
        core.block_on(async move {
            let listener = sigma_dataplane::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let service = std::rc::Rc::new(sigma_control::client::FileService(Echo));
            loop {
                let stream = listener.accept().await.unwrap();
                let service = service.clone();
                sigma_dataplane::spawn(async move {
                    let _ = sigma_dataplane::rpc::serve(&stream, &*service).await;
                });
            }
        });
    });
    let addr = addr_rx.recv().unwrap();
    d.ok(&["ns", "-r", "c", "mount", "/echo", &format!("tcp:{addr}")]);
    assert_eq!(d.ok(&["ns", "-r", "c", "call", "/echo/a/b", "--data", "hi"]), "a/b:hi");
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "ns", "-r", "c", "call", "/echo", "--data", "x"])).unwrap();
    assert_eq!(json["reply"], ":x");
    // A bad endpoint is a usage error; a call on a plain file is refused.
    let out = d.ctl(&["ns", "-r", "c", "mount", "/bad", "carrier-pigeon"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    d.ok(&["ns", "-r", "c", "put", "/plain", "--data", "p"]);
    let out = d.ctl(&["ns", "-r", "c", "call", "/plain", "--data", "q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use read and write"));
    // Another realm cannot reach the server through the name.
    d.ok(&["realm", "create", "other"]);
    let out = d.ctl(&["ns", "-r", "other", "call", "/echo", "--data", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// Runs sigmad with `args` and waits for it to exit (at most `within`);
/// `None` (after killing it) if it was still running then.
fn sigmad_exit(args: &[&std::ffi::OsStr], within: Duration) -> Option<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn os(s: &(impl AsRef<std::ffi::OsStr> + ?Sized)) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn sock_refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, "a week of notes").unwrap();
    let out = sigmad_exit(
        &[os("--data"), os(&data), os("--sock"), os(&precious)],
        Duration::from_secs(10),
    )
    .expect("sigmad kept running over a regular file at --sock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is not a socket") && err.contains("a regular file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "a week of notes");
}

#[test]
fn sock_of_a_live_sigmad_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shared.sock");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let mut d = Daemon::start_with(&first, &sock, &[]);
    d.ok(&["realm", "create", "mine"]);
    // Another sigmad, its own data dir, the same socket.
    let intruder = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .arg("--data")
        .arg(&second)
        .arg("--sock")
        .arg(&sock)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut intruder = Daemon::adopt(intruder, sock.clone());
    // It either gives up, or (the bug) serves: wait for whichever comes first.
    let stderr = intruder.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("sigmad serving the namespace") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let _ = rx.recv_timeout(Duration::from_secs(10));
    assert!(
        d.ok(&["realm", "ls"]).contains("mine"),
        "the first sigmad answers while the intruder runs"
    );
    // The intruder stops (if it has not already).
    intruder.signal(libc::SIGTERM);
    let status = intruder.child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(!status.success(), "the intruder must refuse to start: {log}");
    assert!(
        log.contains("a server answers there") || log.contains("another sigmad serves"),
        "{log}"
    );
    assert!(sock.exists(), "the live socket is still there");
    assert!(
        d.ok(&["realm", "ls"]).contains("mine"),
        "the first sigmad answers after the intruder stopped"
    );
    // The first sigmad's own stop still removes its socket.
    d.signal(libc::SIGTERM);
    assert!(d.child.wait().unwrap().success());
    assert!(!sock.exists());
}

#[test]
fn sock_stale_from_this_data_dir_is_replaced_and_from_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("outside.sock");
    let (data, other) = (dir.path().join("data"), dir.path().join("other"));
    let mut d = Daemon::start_with(&data, &sock, &[]);
    d.ok(&["realm", "create", "kept"]);
    d.signal(libc::SIGKILL);
    let _ = d.child.wait();
    assert!(sock.exists(), "a killed sigmad leaves its socket behind");
    // Another data dir's sigmad does not take a socket it did not make.
    let out = sigmad_exit(
        &[os("--data"), os(&other), os("--sock"), os(&sock)],
        Duration::from_secs(10),
    )
    .expect("sigmad took another data dir's stale socket");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no sigmad of --data"), "{err}");
    assert!(sock.exists());
    // The sigmad of the socket's own data dir replaces it.
    let d = Daemon::start_with(&data, &sock, &[]);
    assert!(d.ok(&["realm", "ls"]).contains("kept"));
}

/// Issue #10's report: etcd frozen during `ns put`. The put's fate is
/// unknown, and sigmactl says so (kind `outcome-unknown`) instead of
/// reporting a failure — the write did apply once etcd woke.
#[test]
fn a_put_to_a_frozen_etcd_reports_its_outcome_as_unknown() {
    let server = etcd::EtcdServer::start_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        dir.path(),
        &dir.path().join("sigmad.sock"),
        &["--etcd", &server.endpoint],
    );
    d.ok(&["realm", "create", "f"]);
    d.ok(&["ns", "-r", "f", "put", "/k", "--data", "v1"]);
    let frozen = server.freeze();
    let out = d.ctl(&["--json", "ns", "-r", "f", "put", "/k", "--data", "v2"]);
    drop(frozen);
    // The exit status of the table in sigmactl --help: 3, outcome unknown.
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(err["error"], "outcome-unknown", "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("may or may not have been applied"), "{message}");
    // Once etcd answers, the write turns out applied.
    let started = Instant::now();
    loop {
        let out = d.ctl(&["ns", "-r", "f", "cat", "/k"]);
        if out.stdout == b"v2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the put reported as outcome-unknown never applied: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to `sock`, sends `bytes`, and waits for sigmad to close the
/// connection (EOF or a reset); how long that took, or a panic after `limit`.
fn closed_after(sock: &Path, bytes: &[u8], limit: Duration) -> Duration {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let started = Instant::now();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("sigmad kept the connection open {:?} ({e})", started.elapsed()),
        }
    }
}

/// Idle and partial-frame timeouts, as sigmad (started with
/// `--idle-timeout 1 --frame-timeout 0.5`) applies them, on either back end.
fn check_connection_timeouts(d: &Daemon) {
    // Half of a frame header, then nothing: closed after the frame timeout.
    let half = [0u8; 16];
    let took = closed_after(&d.sock, &half, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "half a frame closed after {took:?}"
    );
    // Nothing at all: closed after the idle timeout (within two periods).
    let took = closed_after(&d.sock, &[], Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(3500),
        "an idle connection closed after {took:?}"
    );
    // A pending watch is not idle: it runs to its own timeout (2 s) and
    // reports that, not a closed connection.
    d.ok(&["realm", "create", "t"]);
    let started = Instant::now();
    let out = d.ctl(&["ns", "-r", "t", "watch", "/never", "--timeout", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing happened within"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

const TIMEOUTS: &[&str] = &["--idle-timeout", "1", "--frame-timeout", "0.5"];

#[test]
fn half_frames_and_idle_connections_are_closed_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &dir.path().join("sigmad.sock"), TIMEOUTS);
    check_connection_timeouts(&d);
}

#[test]
fn half_frames_and_idle_connections_are_closed_on_etcd() {
    let server = etcd::EtcdServer::start_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--etcd", &server.endpoint];
    args.extend_from_slice(TIMEOUTS);
    let d = Daemon::start_with(dir.path(), &dir.path().join("sigmad.sock"), &args);
    check_connection_timeouts(&d);
}

/// 1,000 connections that send garbage: each is closed, and sigmad's log
/// stays short (at most ten warnings per 10 s and one line summing up the rest).
#[test]
fn a_thousand_bad_connections_log_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sigmad.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigmad"))
        .arg("--no-procs")
        .arg("--data")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut d = Daemon::adopt(child, sock);
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("sigmad serving the namespace") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("sigmad did not start");
    let garbage = [0x5au8; 64];
    for _ in 0..1000 {
        closed_after(&d.sock, &garbage, Duration::from_secs(5));
    }
    d.ok(&["realm", "ls"]);
    d.signal(libc::SIGTERM);
    assert!(d.child.wait().unwrap().success());
    let lines = log.join().unwrap();
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings.len() <= 12,
        "{} WARN lines for 1000 bad connections, the first: {:?}",
        warnings.len(),
        &warnings[..warnings.len().min(3)]
    );
    assert!(
        warnings.iter().any(|l| l.contains("suppressed")),
        "the suppressed lines are counted: {warnings:?}"
    );
}
