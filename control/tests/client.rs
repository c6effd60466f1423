//! The realm-bound namespace client against sigmad's admin service, in one
//! process on one data-plane core: the fd API, RPC through a file to a
//! mounted server, watches on their own connections, realm isolation, and
//! sigmad's per-call deadline.

use bytes::{Bytes, BytesMut};
use sigma_control::admin::{AdminClient, AdminService};
use sigma_control::client::{FileService, Mode, NsClient, RpcFile};
use sigma_control::ns::embedded::EmbeddedStore;
use sigma_control::ns::store::{Change, Compare, LeaseId, Record, Store, WatchReceiver};
use sigma_control::ns::{Namespace, NsError};
use sigma_dataplane::net::{TcpListener, UnixListener};
use sigma_dataplane::rpc::Status;
use sigma_ep::ns::{Endpoint, NsRequest};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Serves `service` on a Unix socket in `dir` from the current core.
fn serve_admin<S: Store + 'static>(service: AdminService<S>, dir: &Path) -> PathBuf {
    let sock = dir.join("sigmad.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let service = Rc::new(service);
    sigma_dataplane::spawn(async move {
        loop {
            let stream = listener.accept().await.unwrap();
            let service = service.clone();
            sigma_dataplane::spawn(async move {
                let _ = sigma_dataplane::rpc::serve(&stream, &*service).await;
            });
        }
    });
    sock
}

async fn embedded(dir: &Path) -> Namespace<EmbeddedStore> {
    let store = EmbeddedStore::open(&dir.join("ns.redb")).unwrap();
    let ns = Namespace::new(store, "m0").await.unwrap();
    ns.create_realm("a").await.unwrap();
    ns.create_realm("b").await.unwrap();
    ns
}

/// An RPC file that answers `"{rest joined by /}:{request}"`, counting calls.
struct Echo {
    calls: std::cell::Cell<u64>,
}

impl RpcFile for Echo {
    async fn write_read(&self, rest: &[String], request: Bytes, out: &mut BytesMut) -> Result<(), Status> {
        self.calls.set(self.calls.get() + 1);
        if &request[..] == b"fail" {
            return Err(Status::handler("asked to fail"));
        }
        out.extend_from_slice(rest.join("/").as_bytes());
        out.extend_from_slice(b":");
        out.extend_from_slice(&request);
        Ok(())
    }
}

/// Serves `Echo` on a TCP listener on 127.0.0.1 from the current core.
fn serve_echo_tcp() -> (Endpoint, Rc<FileService<Echo>>) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = Endpoint::Tcp(listener.local_addr().unwrap());
    let service = Rc::new(FileService(Echo {
        calls: std::cell::Cell::new(0),
    }));
    let s = service.clone();
    sigma_dataplane::spawn(async move {
        loop {
            let stream = listener.accept().await.unwrap();
            let s = s.clone();
            sigma_dataplane::spawn(async move {
                let _ = sigma_dataplane::rpc::serve(&stream, &*s).await;
            });
        }
    });
    (endpoint, service)
}

fn core() -> sigma_dataplane::Core {
    sigma_dataplane::Core::builder().build().expect("a data-plane core")
}

#[test]
fn fds_read_write_and_enforce_their_mode() {
    let dir = tempfile::tempdir().unwrap();
    core().block_on(async {
        let sock = serve_admin(AdminService::new(embedded(dir.path()).await), dir.path());
        let c = NsClient::connect(&sock, "a").await.unwrap();
        assert_eq!(c.realm(), "a");
        c.mkdir("/etc", 0o755).await.unwrap();

        let fd = c.create("/etc/conf", 0o644, Mode::ReadWrite).await.unwrap();
        assert_eq!(c.read(fd).await.unwrap(), Bytes::new());
        let st = c.write(fd, Bytes::from_static(b"v1")).await.unwrap();
        assert_eq!((st.len, st.name.as_str()), (2, "conf"));
        assert_eq!(c.read(fd).await.unwrap(), Bytes::from_static(b"v1"));
        assert!(c.create("/etc/conf", 0o644, Mode::Read).await.unwrap_err().kind == "exists");

        // A read-only fd cannot write, a write-only fd cannot read.
        let ro = c.open("/etc/conf", Mode::Read).await.unwrap();
        assert_eq!(c.write(ro, Bytes::from_static(b"x")).await.unwrap_err().kind, "denied");
        let wo = c.open("/etc/conf", Mode::Write).await.unwrap();
        assert_eq!(c.read(wo).await.unwrap_err().kind, "denied");
        assert_eq!(c.path_of(wo).unwrap(), "/etc/conf");

        // Compare-and-swap against what the fd last saw.
        c.write(wo, Bytes::from_static(b"v2")).await.unwrap();
        assert_eq!(
            c.write_if_unchanged(fd, Bytes::from_static(b"v3"))
                .await
                .unwrap_err()
                .kind,
            "conflict",
            "fd last saw v1; wo wrote v2 since"
        );
        assert_eq!(c.read(ro).await.unwrap(), Bytes::from_static(b"v2"));
        c.write_if_unchanged(wo, Bytes::from_static(b"v3")).await.unwrap();
        assert_eq!(c.get("/etc/conf").await.unwrap(), Bytes::from_static(b"v3"));

        // Directories open for reading only, and are listed, not read.
        assert_eq!(c.open("/etc", Mode::Write).await.unwrap_err().kind, "is-dir");
        let d = c.open("/etc", Mode::Read).await.unwrap();
        assert_eq!(c.read(d).await.unwrap_err().kind, "is-dir");
        assert_eq!(c.readdir("/etc").await.unwrap()[0].name, "conf");

        // close, then the fd is gone; fds are reused.
        assert_eq!(c.open_fds(), 4);
        for f in [fd, ro, wo, d] {
            c.close(f).unwrap();
        }
        assert_eq!(c.read(fd).await.unwrap_err().kind, "bad-fd");
        assert_eq!(c.close(fd).unwrap_err().kind, "bad-fd");
        assert_eq!(c.open_fds(), 0);
        let again = c.open("/etc/conf", Mode::Read).await.unwrap();
        assert_eq!(again, fd, "the lowest free fd is reused");

        // The file goes away under an open fd: the fd reads what is there now.
        c.rename("/etc/conf", "/etc/conf.old").await.unwrap();
        assert_eq!(c.read(again).await.unwrap_err().kind, "not-found");
        c.remove("/etc/conf.old").await.unwrap();
        assert_eq!(c.open("/etc/nope", Mode::Read).await.unwrap_err().kind, "not-found");
        assert_eq!(c.open("/a/../b", Mode::Read).await.unwrap_err().kind, "invalid-path");

        // Binding to a realm that is not there fails at connect.
        assert_eq!(
            NsClient::connect(&sock, "nosuch").await.unwrap_err().kind,
            "unknown-realm"
        );
        assert_eq!(
            NsClient::connect(&sock, "Bad Realm").await.unwrap_err().kind,
            "invalid-realm"
        );
    });
}

#[test]
fn write_read_reaches_the_mounted_server_and_nothing_of_another_realm() {
    let dir = tempfile::tempdir().unwrap();
    core().block_on(async {
        let sock = serve_admin(AdminService::new(embedded(dir.path()).await), dir.path());
        let (endpoint, echo) = serve_echo_tcp();
        let a = NsClient::connect(&sock, "a").await.unwrap();
        a.mkdir("/svc", 0o755).await.unwrap();
        let lease = a.lease_grant(Duration::from_secs(30)).await.unwrap();
        a.mount("/svc/echo", &endpoint, Some(lease)).await.unwrap();

        let fd = a.open("/svc/echo/rpc", Mode::ReadWrite).await.unwrap();
        assert_eq!(
            a.write_read(fd, b"hello").await.unwrap(),
            Bytes::from_static(b"rpc:hello")
        );
        for i in 0..200u32 {
            let req = format!("call {i}");
            let reply = a.write_read(fd, req.as_bytes()).await.unwrap();
            assert_eq!(reply, Bytes::from(format!("rpc:{req}")));
        }
        // The mount itself, and a deeper path, reach the same server.
        let at_mount = a.open("/svc/echo", Mode::Read).await.unwrap();
        assert_eq!(a.write_read(at_mount, b"x").await.unwrap(), Bytes::from_static(b":x"));
        let deep = a.open("/svc/echo/t/1", Mode::Read).await.unwrap();
        assert_eq!(a.write_read(deep, b"y").await.unwrap(), Bytes::from_static(b"t/1:y"));
        assert_eq!(echo.0.calls.get(), 203);

        // The server's error reaches the caller as the handler's status.
        let e = a.write_read(fd, b"fail").await.unwrap_err();
        assert!(
            e.message.contains("asked to fail") && e.message.contains("/svc/echo"),
            "{e}"
        );
        // read/write and write_read each refuse the other kind of fd.
        assert_eq!(a.read(fd).await.unwrap_err().kind, "denied");
        a.put("/plain", 0o644, Bytes::from_static(b"p"), None).await.unwrap();
        let plain = a.open("/plain", Mode::Read).await.unwrap();
        assert_eq!(a.write_read(plain, b"q").await.unwrap_err().kind, "denied");

        // Realm B sees none of it: no name, no resolution, no endpoint.
        let b = NsClient::connect(&sock, "b").await.unwrap();
        assert_eq!(b.open("/svc/echo/rpc", Mode::Read).await.unwrap_err().kind, "not-found");
        assert_eq!(b.resolve("/svc/echo").await.unwrap_err().kind, "not-found");
        assert_eq!(b.lease_revoke(lease).await.unwrap_err().kind, "lease-expired");

        // When the lease ends, the name goes; an open fd keeps its connection.
        a.lease_revoke(lease).await.unwrap();
        assert_eq!(a.open("/svc/echo/rpc", Mode::Read).await.unwrap_err().kind, "not-found");
        assert_eq!(
            a.write_read(fd, b"still").await.unwrap(),
            Bytes::from_static(b"rpc:still")
        );

        // Mounts that point nowhere usable fail at open, with the mount named.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_ep = Endpoint::Tcp(dead.local_addr().unwrap());
        drop(dead);
        a.mount("/svc/dead", &dead_ep, None).await.unwrap();
        let e = a.open("/svc/dead/rpc", Mode::Read).await.unwrap_err();
        assert_eq!(e.kind, "mount-unavailable");
        assert!(e.message.contains("/svc/dead"), "{e}");
        a.mkdir("/odd", 0o755).await.unwrap();
        // The client mounts only well-formed endpoints; the protocol takes any bytes.
        let raw = sigma_control::admin::AdminClient::connect(&sock).await.unwrap();
        raw.call(
            &sigma_ep::ns::NsRequest::Mount {
                realm: "a".into(),
                path: "/odd/m".into(),
                endpoint: Bytes::from_static(b"carrier-pigeon"),
                lease: 0,
            },
            None,
        )
        .await
        .unwrap();
        assert_eq!(a.open("/odd/m", Mode::Read).await.unwrap_err().kind, "unresolvable");
    });
}

#[test]
fn watches_wait_on_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    core().block_on(async {
        let sock = serve_admin(AdminService::new(embedded(dir.path()).await), dir.path());
        let c = Rc::new(NsClient::connect(&sock, "a").await.unwrap());
        c.mkdir("/jobs", 0o755).await.unwrap();
        let writer = c.clone();
        sigma_dataplane::spawn(async move {
            sigma_dataplane::sleep(Duration::from_millis(100)).await;
            // The main connection stays usable while the watch below waits.
            writer.stat("/jobs").await.unwrap();
            writer
                .put("/jobs/j1", 0o644, Bytes::from_static(b"go"), None)
                .await
                .unwrap();
        });
        let started = Instant::now();
        let fd = c
            .open_watch("/jobs/j1", Mode::Read, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(c.read(fd).await.unwrap(), Bytes::from_static(b"go"));

        let e = c.watch_dir("/jobs", Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(e.kind, "timed-out", "{e}");
        let remover = c.clone();
        sigma_dataplane::spawn(async move {
            sigma_dataplane::sleep(Duration::from_millis(50)).await;
            remover.remove("/jobs/j1").await.unwrap();
        });
        c.watch_remove("/jobs/j1", Duration::from_secs(10)).await.unwrap();
        assert_eq!(c.stat("/jobs/j1").await.unwrap_err().kind, "not-found");
    });
}

/// A store whose every call first sleeps: a slow (not dead) etcd; and
/// whose transactions, once committed, wait `after_txn` before they answer
/// (a store that applied a change and then hung).
#[derive(Clone)]
struct Slow {
    inner: EmbeddedStore,
    delay: Duration,
    after_txn: Duration,
}

impl Store for Slow {
    async fn get(&self, key: &str) -> Result<Option<Record>, NsError> {
        sigma_dataplane::sleep(self.delay).await;
        self.inner.get(key).await
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, NsError> {
        sigma_dataplane::sleep(self.delay).await;
        self.inner.scan(prefix).await
    }
    async fn any_under(&self, prefix: &str) -> Result<bool, NsError> {
        sigma_dataplane::sleep(self.delay).await;
        self.inner.any_under(prefix).await
    }
    async fn txn_revision(&self, compares: &[Compare], changes: &[Change]) -> Result<Option<u64>, NsError> {
        sigma_dataplane::sleep(self.delay).await;
        let result = self.inner.txn_revision(compares, changes).await;
        if !self.after_txn.is_zero() {
            sigma_dataplane::sleep(self.after_txn).await;
        }
        result
    }
    async fn watch(&self, prefix: &str) -> Result<WatchReceiver, NsError> {
        self.inner.watch(prefix).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError> {
        self.inner.lease_revoke(lease).await
    }
}

#[test]
fn a_call_slower_than_sigmads_deadline_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    core().block_on(async {
        let inner = EmbeddedStore::open(&dir.path().join("ns.redb")).unwrap();
        let fast = Namespace::new(inner.clone(), "m0").await.unwrap();
        fast.create_realm("a").await.unwrap();
        let slow = Slow {
            inner,
            delay: Duration::from_millis(150),
            after_txn: Duration::ZERO,
        };
        let ns = Namespace::new(slow, "m0").await.unwrap();
        // Each store call takes 150 ms; the deadline allows a call 400 ms.
        let sock = serve_admin(
            AdminService::with_call_timeout(ns, Duration::from_millis(400)),
            dir.path(),
        );
        let c = NsClient::connect(&sock, "a").await.unwrap(); // stat: one store call
        c.mkdir("/d", 0o755).await.unwrap(); // load parent + txn: two calls, 300 ms
        c.mkdir("/d/e", 0o755).await.unwrap();
        // rename: load from, any_under, load parent, txn: 600 ms.
        let started = Instant::now();
        let e = c.rename("/d/e", "/d/f").await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.kind, "outcome-unknown", "{e}");
        assert!(e.message.contains("may or may not have been applied"), "{e}");
        assert!(
            took >= Duration::from_millis(390) && took < Duration::from_millis(1500),
            "failed after {took:?}"
        );
        // A read says nothing about changes.
        let e = c.stat("/d/e").await;
        assert!(e.is_ok() || e.unwrap_err().kind != "deadline-exceeded");
    });
}

/// Waits until `path` holds `want` (at most 2 s): a change that timed out
/// was committed, though the commit may still be under way when the
/// caller hears of the timeout (an fsync slower than the deadline, as when
/// the whole test suite runs at once).
async fn applied(truth: &sigma_control::ns::service::RealmNs<'_, EmbeddedStore>, path: &str, want: &'static [u8]) {
    let started = Instant::now();
    loop {
        match truth.read(path).await {
            Ok(got) if got == Bytes::from_static(want) => return,
            Ok(_) | Err(NsError::NotFound { .. }) => {}
            Err(e) => panic!("reading {path}: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the write to {path} never applied"
        );
        sigma_dataplane::sleep(Duration::from_millis(10)).await;
    }
}

/// A change whose answer comes too late — sigmad's call deadline, or the
/// client's own — is `outcome-unknown`, and truly so: the store had
/// committed it. A read that times out is `deadline-exceeded`.
#[test]
fn a_change_that_times_out_after_its_commit_is_outcome_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (hangs_dir, slow_dir) = (dir.path().join("hangs"), dir.path().join("slow"));
    std::fs::create_dir_all(&hangs_dir).unwrap();
    std::fs::create_dir_all(&slow_dir).unwrap();
    core().block_on(async {
        let inner = EmbeddedStore::open(&dir.path().join("ns.redb")).unwrap();
        let fast = Namespace::new(inner.clone(), "m0").await.unwrap();
        fast.create_realm("a").await.unwrap();
        let truth = fast.realm("a").await.unwrap();
        let hangs = Slow {
            inner: inner.clone(),
            delay: Duration::ZERO,
            after_txn: Duration::from_secs(2),
        };
        let sock = serve_admin(
            AdminService::with_call_timeout(Namespace::new(hangs, "m0").await.unwrap(), Duration::from_millis(300)),
            &hangs_dir,
        );
        let c = NsClient::connect(&sock, "a").await.unwrap();
        // sigmad's deadline passes after the commit.
        let e = c.put("/f", 0o644, Bytes::from_static(b"v1"), None).await.unwrap_err();
        assert_eq!(e.kind, "outcome-unknown", "{e}");
        assert!(e.message.contains("may or may not have been applied"), "{e}");
        applied(&truth, "/f", b"v1").await;
        // The client's deadline passes after the commit (sigmad's is longer).
        let admin = AdminClient::connect(&sock).await.unwrap();
        let write = NsRequest::Write {
            realm: "a".into(),
            path: "/f".into(),
            data: Bytes::from_static(b"v2"),
            if_version: 0,
        };
        let e = admin.call(&write, Some(Duration::from_millis(100))).await.unwrap_err();
        assert_eq!(e.kind, "outcome-unknown", "{e}");
        assert!(e.message.contains("read before retrying"), "{e}");
        applied(&truth, "/f", b"v2").await;

        // Reads that time out, in sigmad or in the client, are just late.
        let slow = Slow {
            inner,
            delay: Duration::from_secs(1),
            after_txn: Duration::ZERO,
        };
        let sock = serve_admin(
            AdminService::with_call_timeout(Namespace::new(slow, "m0").await.unwrap(), Duration::from_millis(300)),
            &slow_dir,
        );
        let admin = AdminClient::connect(&sock).await.unwrap();
        let stat = NsRequest::Stat {
            realm: "a".into(),
            path: "/f".into(),
        };
        let e = admin.call(&stat, None).await.unwrap_err();
        assert_eq!(e.kind, "deadline-exceeded", "{e}");
        let e = admin.call(&stat, Some(Duration::from_millis(100))).await.unwrap_err();
        assert_eq!(e.kind, "deadline-exceeded", "{e}");
    });
}

/// Runs `Echo` on a core of its own thread until `stop` fires; the core's
/// end closes the listener and every connection, as a crashed server's would.
fn echo_on_its_own_core() -> (Endpoint, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        core().block_on(async move {
            let (endpoint, _service) = serve_echo_tcp();
            addr_tx.send(endpoint).unwrap();
            while stop_rx.try_recv().is_err() {
                sigma_dataplane::sleep(Duration::from_millis(5)).await;
            }
        });
    });
    (addr_rx.recv().unwrap(), stop_tx, thread)
}

#[test]
fn a_crashed_server_fails_write_read_clearly_and_a_new_one_is_found_by_name() {
    let dir = tempfile::tempdir().unwrap();
    core().block_on(async {
        let sock = serve_admin(AdminService::new(embedded(dir.path()).await), dir.path());
        let c = NsClient::connect(&sock, "a").await.unwrap();
        c.mkdir("/svc", 0o755).await.unwrap();

        let (first, stop, thread) = echo_on_its_own_core();
        let lease = c.lease_grant(Duration::from_secs(30)).await.unwrap();
        c.mount("/svc/echo", &first, Some(lease)).await.unwrap();
        let fd = c.open("/svc/echo/rpc", Mode::ReadWrite).await.unwrap();
        assert_eq!(c.write_read(fd, b"1").await.unwrap(), Bytes::from_static(b"rpc:1"));

        // The server dies: the call fails at once with a status naming the mount.
        stop.send(()).unwrap();
        thread.join().unwrap();
        let started = Instant::now();
        let e = c.write_read(fd, b"2").await.unwrap_err();
        assert_eq!(e.kind, "mount-unavailable", "{e}");
        assert!(e.message.contains("/svc/echo"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        // Its name still points at the dead address until its lease goes.
        assert_eq!(
            c.open("/svc/echo/rpc", Mode::Read).await.unwrap_err().kind,
            "mount-unavailable"
        );
        c.lease_revoke(lease).await.unwrap();

        // A new instance mounts itself at the same name; a fresh open finds it.
        let (second, stop2, thread2) = echo_on_its_own_core();
        assert_ne!(first, second);
        c.mount("/svc/echo", &second, None).await.unwrap();
        let fd2 = c.open("/svc/echo/rpc", Mode::ReadWrite).await.unwrap();
        assert_eq!(c.write_read(fd2, b"3").await.unwrap(), Bytes::from_static(b"rpc:3"));
        // The old fd stays bound to the dead server.
        assert_eq!(c.write_read(fd, b"4").await.unwrap_err().kind, "mount-unavailable");
        stop2.send(()).unwrap();
        thread2.join().unwrap();
    });
}

/// Runs an admin service over the embedded store in `dir` on a core of its
/// own thread until `stop` fires (then the core ends: socket removed, store closed).
fn sigmad_thread(dir: &Path) -> (PathBuf, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (sock_tx, sock_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let d = dir.to_path_buf();
    let thread = std::thread::spawn(move || {
        core().block_on(async move {
            let store = EmbeddedStore::open(&d.join("ns.redb")).unwrap();
            let ns = Namespace::new(store, "m0").await.unwrap();
            let _ = ns.create_realm("a").await;
            let sock = serve_admin(AdminService::new(ns), &d);
            sock_tx.send(sock).unwrap();
            while stop_rx.try_recv().is_err() {
                sigma_dataplane::sleep(Duration::from_millis(5)).await;
            }
        });
    });
    (sock_rx.recv().unwrap(), stop_tx, thread)
}

#[test]
fn a_stopped_sigmad_fails_calls_clearly_and_a_restarted_one_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, stop, sigmad) = sigmad_thread(dir.path());
    core().block_on(async {
        let c = NsClient::connect(&sock, "a").await.unwrap();
        c.put("/f", 0o644, Bytes::from_static(b"x"), None).await.unwrap();
        stop.send(()).unwrap();
        sigmad.join().unwrap();
        let started = Instant::now();
        let e = c.get("/f").await.unwrap_err();
        assert_eq!(e.kind, "unavailable", "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = NsClient::connect(&sock, "a").await.unwrap_err();
        assert_eq!(e.kind, "unavailable", "{e}");
        assert!(e.message.contains("is sigmad running"), "{e}");

        // sigmad comes back on the same socket and data: a read just works ...
        let (sock2, stop2, sigmad2) = sigmad_thread(dir.path());
        assert_eq!(sock2, sock);
        assert_eq!(c.get("/f").await.unwrap(), Bytes::from_static(b"x"));
        c.put("/g", 0o644, Bytes::from_static(b"y"), None).await.unwrap();
        // ... and after another restart a change says its fate is unknown,
        // and the next call works.
        stop2.send(()).unwrap();
        sigmad2.join().unwrap();
        let (_, stop3, sigmad3) = sigmad_thread(dir.path());
        let e = c.put("/h", 0o644, Bytes::new(), None).await.unwrap_err();
        assert_eq!(e.kind, "outcome-unknown", "{e}");
        assert!(e.message.contains("read before retrying"), "{e}");
        assert_eq!(c.get("/g").await.unwrap(), Bytes::from_static(b"y"));
        stop3.send(()).unwrap();
        sigmad3.join().unwrap();
    });
}
