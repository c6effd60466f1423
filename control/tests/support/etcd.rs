//! A throwaway single-member etcd for tests: Debian's `etcd` binary on
//! 127.0.0.1 with free client and peer ports and a temporary data dir,
//! killed and removed when the [`EtcdServer`] drops.
//!
//! Tests need the real etcd: without the binary they fail and say how to get
//! it (`scripts/setup.sh`). `SIGMA_ETCD_BIN` names another binary.

#![allow(dead_code)] // Each test file uses its own part of this.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to become healthy (it takes about 0.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports, in case another process took a port between
/// choosing it and etcd binding it.
const START_ATTEMPTS: usize = 3;

/// A running etcd; killed, and its data removed, on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The etcd binary tests run (`SIGMA_ETCD_BIN`, else `etcd`).
pub fn etcd_bin() -> String {
    std::env::var("SIGMA_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

fn healthy(client_port: u16) -> bool {
    healthy_at(([127, 0, 0, 1], client_port).into())
}

/// The body of an HTTP/1.0 `GET path` to `addr` (etcd's client URL serves
/// `/health` and `/metrics`), or `None` if there is no answer within about a second.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = Vec::new();
    let _ = s.take(4 << 20).read_to_end(&mut reply);
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether the etcd whose client URL is at `addr` reports itself healthy
/// (a member of a cluster with a leader).
pub fn healthy_at(addr: SocketAddr) -> bool {
    http_get(addr, "/health").is_some_and(|reply| reply.contains("\"health\":\"true\""))
}

/// Panics, saying how to get it, unless the etcd binary runs.
pub fn require_etcd() {
    match Command::new(etcd_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{}` not found: the etcd tests need a real etcd; run scripts/setup.sh (installs Debian's etcd-server)",
            etcd_bin()
        ),
        Err(e) => panic!("cannot run `{} --version`: {e}", etcd_bin()),
    }
}

impl EtcdServer {
    /// Starts etcd and waits until it reports healthy. Panics (failing the
    /// test) if the binary is missing or etcd does not come up in time.
    pub fn start() -> EtcdServer {
        require_etcd();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match EtcdServer::try_start() {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    fn try_start() -> Result<EtcdServer, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("create etcd log");
        let mut command = Command::new(etcd_bin());
        // SAFETY: prctl is async-signal-safe; the closure touches no memory
        // of the parent. etcd gets SIGKILL when the thread that started it
        // ends, so an aborted run (where no Drop runs) leaves no etcd behind.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .arg("--name=s1")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=s1={peer}"))
            .arg("--initial-cluster-state=new")
            // Short raft timings: etcd's minimum lease TTL is 1.5 election
            // timeouts (2 s by default); here 1 s leases stay 1 s.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{}`: {e}", etcd_bin()));
        let mut server = EtcdServer {
            child: Some(child),
            dir,
            endpoint: client,
        };
        let started = Instant::now();
        loop {
            if healthy(client_port) {
                return Ok(server);
            }
            let exited = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let why = match exited {
                    Some(status) => format!("etcd exited with {status}"),
                    None => format!("etcd not healthy after {START_TIMEOUT:?}"),
                };
                server.kill();
                return Err(format!(
                    "{why}\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The endpoints to give a client.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills etcd now (SIGKILL) and waits for it; its data dir stays until drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
