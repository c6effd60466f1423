//! sigmad under 10,000 connections (issue #10): half idle, half with a
//! pending watch. A new call still answers within its normal deadline, and
//! every watch is answered when its file appears. On the embedded store
//! with io_uring and with epoll, and on etcd. Past `--max-connections`, a
//! new connection is told why (sigmactl prints it) and sigmad logs it once.

use bytes::BytesMut;
use sigma_ep::frame::Header;
use sigma_ep::limits::FRAME_HEADER_BYTES;
use sigma_ep::ns::NsRequest;
use sigma_ep::Kind;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10_000;
/// sigmactl waits this long at most for a namespace call (sigmad's call
/// deadline plus the client's margin).
const CALL_DEADLINE: Duration = Duration::from_secs(12);

mod common;

use common::Daemon;

/// Runs sigmactl, asserting success; how long it took.
fn timed_ok(d: &Daemon, args: &[&str]) -> Duration {
    let start = Instant::now();
    d.ok(args);
    start.elapsed()
}

fn watch_frame(realm: &str, path: &str) -> Vec<u8> {
    let req = NsRequest::OpenWatch {
        realm: realm.into(),
        path: path.into(),
        timeout_ms: 120_000,
    };
    let mut payload = BytesMut::new();
    req.encode(&mut payload);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    Header::request(1 << 16, req.method(), payload.len() as u32, 0).encode(&mut header);
    let mut frame = header.to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Opens `CONNECTIONS` connections to `d`, half of them with a watch of
/// /load/ready pending; checks a call answers in time and every watch is
/// answered once /load/ready exists.
fn ten_thousand_connections(d: &Daemon, what: &str) {
    d.ok(&["realm", "create", "load"]);
    d.ok(&["ns", "-r", "load", "mkdir", "/load"]);
    let quiet = timed_ok(d, &["ns", "-r", "load", "put", "/load/x", "--data", "1"]);
    let frame = watch_frame("load", "/load/ready");
    let mut idle = Vec::with_capacity(CONNECTIONS / 2);
    let mut watching = Vec::with_capacity(CONNECTIONS / 2);
    for i in 0..CONNECTIONS {
        let mut s = UnixStream::connect(&d.sock).unwrap_or_else(|e| panic!("{what}: connection {i}: {e}"));
        if i % 2 == 0 {
            idle.push(s);
        } else {
            s.write_all(&frame).unwrap();
            watching.push(s);
        }
    }
    // A call right behind the burst (accepts and watch setups still queued), and one after.
    let during = timed_ok(d, &["ns", "-r", "load", "put", "/load/w", "--data", "1"]);
    assert!(
        during < CALL_DEADLINE,
        "{what}: a call right after {CONNECTIONS} connections and {} watches opened took {during:?}",
        CONNECTIONS / 2
    );
    std::thread::sleep(Duration::from_secs(1));
    let loaded = timed_ok(d, &["ns", "-r", "load", "put", "/load/y", "--data", "2"]);
    assert!(
        loaded < CALL_DEADLINE,
        "{what}: a call with {CONNECTIONS} connections open took {loaded:?}"
    );
    let ls = timed_ok(d, &["realm", "ls"]);
    let again = timed_ok(d, &["ns", "-r", "load", "put", "/load/y", "--data", "3"]);
    eprintln!("{what}: with {CONNECTIONS} connections open (half watching): put {loaded:?} (right after they opened, with accepts and watch setups still queued: {during:?}), realm ls {ls:?}, put again {again:?}; before: put {quiet:?}");
    // The watches: all answered once the file appears.
    let started = Instant::now();
    d.ok(&["ns", "-r", "load", "put", "/load/ready", "--data", "go"]);
    for (i, s) in watching.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut header = [0u8; FRAME_HEADER_BYTES];
        s.read_exact(&mut header)
            .unwrap_or_else(|e| panic!("{what}: watch {i} never answered: {e}"));
        let h = Header::decode(&header).unwrap();
        let mut rest = vec![0u8; h.len as usize];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(
            h.kind,
            Kind::Response,
            "{what}: watch {i} answered {h:?}: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    eprintln!(
        "{what}: {} watches answered within {:?} of the put",
        watching.len(),
        started.elapsed()
    );
    drop(idle);
}

/// The 10,000-connection tests run one at a time: together they would need
/// more fds than the hard limit gives this process (and both cores).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn need_fds() -> bool {
    let have = sigma_control::conn_limit::raise_nofile().unwrap();
    if have < CONNECTIONS as u64 + 500 {
        eprintln!(
            "skipping: the hard RLIMIT_NOFILE ({have}) is below the {} fds this test needs",
            CONNECTIONS + 500
        );
        return false;
    }
    true
}

#[test]
fn ten_thousand_connections_on_the_embedded_store() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !need_fds() {
        return;
    }
    for io in ["uring", "epoll"] {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::launch(dir.path(), &dir.path().join("sigmad.sock"), &[], &[("SIGMA_IO", io)]);
        ten_thousand_connections(&d, &format!("embedded, SIGMA_IO={io}"));
    }
}

#[test]
fn ten_thousand_connections_on_etcd() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !need_fds() {
        return;
    }
    let server = sigma_tests::etcd::EtcdServer::start_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("/load-{}/", std::process::id());
    let d = Daemon::start_with(
        dir.path(),
        &dir.path().join("sigmad.sock"),
        &["--etcd", &server.endpoint, "--etcd-prefix", &prefix],
    );
    // On failure, what etcd and sigmad said.
    let logs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ten_thousand_connections(&d, "etcd")));
    if let Err(panic) = logs {
        let etcd_log = server.log();
        let tail: Vec<&str> = etcd_log.lines().rev().take(30).collect();
        eprintln!("etcd's log, last lines first:\n{}", tail.join("\n"));
        let sigmad_log = d.log.lock().unwrap().join("\n");
        eprintln!("sigmad's log:\n{sigmad_log}");
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn past_the_connection_limit_a_client_is_told_why_and_sigmad_logs_once() {
    for io in ["uring", "epoll"] {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::launch(
            dir.path(),
            &dir.path().join("sigmad.sock"),
            &["--max-connections", "20"],
            &[("SIGMA_IO", io)],
        );
        let held: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&d.sock).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..3 {
            let start = Instant::now();
            let out = d.ctl(&["realm", "ls"]);
            let took = start.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{io}: a call past the limit succeeded");
            assert!(
                stderr.contains("serves at most 20 connections"),
                "{io}: sigmactl said {stderr:?}"
            );
            assert!(took < Duration::from_secs(5), "{io}: the refusal took {took:?}");
        }
        // Many more refused: one log line.
        for _ in 0..200 {
            drop(UnixStream::connect(&d.sock).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
        let lines = d.log_lines("refusing admin connections");
        assert_eq!(lines, 1, "{io}: {lines} log lines about refused connections");
        // A freed slot serves again.
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        d.ok(&["realm", "ls"]);
    }
}
