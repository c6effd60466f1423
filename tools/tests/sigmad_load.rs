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
use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10_000;
/// sigmactl waits this long at most for a namespace call (sigmad's call
/// deadline plus the client's margin).
const CALL_DEADLINE: Duration = Duration::from_secs(12);

struct Daemon {
    child: Child,
    sock: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let sock = data.join("sigmad.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigmad"));
        cmd.arg("--data").arg(data).args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let daemon = Daemon {
            child,
            sock,
            log: log.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sigmad serving the namespace") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("sigmad did not start: {:?}", daemon.log.lock().unwrap()));
        daemon
    }

    fn ctl(&self, args: &[&str]) -> (Output, Duration) {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_sigmactl"))
            .arg("--sock")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        (out, start.elapsed())
    }

    fn ok(&self, args: &[&str]) -> Duration {
        let (out, took) = self.ctl(args);
        assert!(
            out.status.success(),
            "sigmactl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(want);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
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
    let quiet = d.ok(&["ns", "-r", "load", "put", "/load/x", "--data", "1"]);
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
    // Every connection is accepted and every watch is armed before the call.
    std::thread::sleep(Duration::from_secs(1));
    let loaded = d.ok(&["ns", "-r", "load", "put", "/load/y", "--data", "2"]);
    assert!(
        loaded < CALL_DEADLINE,
        "{what}: a call with {CONNECTIONS} connections open took {loaded:?}"
    );
    let ls = d.ok(&["realm", "ls"]);
    let again = d.ok(&["ns", "-r", "load", "put", "/load/y", "--data", "3"]);
    eprintln!("{what}: with {CONNECTIONS} connections open (half watching): put {loaded:?}, realm ls {ls:?}, put again {again:?}; before: put {quiet:?}");
    // The watches: all answered once the file appears.
    let started = Instant::now();
    d.ok(&["ns", "-r", "load", "put", "/load/ready", "--data", "go"]);
    for (i, s) in watching.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut header = [0u8; FRAME_HEADER_BYTES];
        s.read_exact(&mut header)
            .unwrap_or_else(|e| panic!("{what}: watch {i} never answered: {e}"));
        let h = Header::decode(&header).unwrap();
        assert_eq!(h.kind, Kind::Response, "{what}: watch {i} answered {h:?}");
        let mut rest = vec![0u8; h.len as usize];
        s.read_exact(&mut rest).unwrap();
    }
    eprintln!(
        "{what}: {} watches answered within {:?} of the put",
        watching.len(),
        started.elapsed()
    );
    drop(idle);
}

fn need_fds() -> bool {
    let have = raise_nofile(2 * CONNECTIONS as u64 + 1000);
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
    if !need_fds() {
        return;
    }
    for io in ["uring", "epoll"] {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path(), &[], &[("SIGMA_IO", io)]);
        ten_thousand_connections(&d, &format!("embedded, SIGMA_IO={io}"));
    }
}

#[test]
fn ten_thousand_connections_on_etcd() {
    if !need_fds() {
        return;
    }
    let server = sigma_tests::etcd::EtcdServer::start_or_panic();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("/load-{}/", std::process::id());
    let d = Daemon::start(dir.path(), &["--etcd", &server.endpoint, "--etcd-prefix", &prefix], &[]);
    ten_thousand_connections(&d, "etcd");
}

#[test]
fn past_the_connection_limit_a_client_is_told_why_and_sigmad_logs_once() {
    for io in ["uring", "epoll"] {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(dir.path(), &["--max-connections", "20"], &[("SIGMA_IO", io)]);
        let held: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&d.sock).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..3 {
            let (out, took) = d.ctl(&["realm", "ls"]);
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
        let lines = d
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("refusing admin connections"))
            .count();
        assert_eq!(lines, 1, "{io}: {lines} log lines about refused connections");
        // A freed slot serves again.
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        d.ok(&["realm", "ls"]);
    }
}
