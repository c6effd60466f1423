//! A throwaway single-member etcd: Debian's `etcd` binary on 127.0.0.1 with
//! free client and peer ports and a temporary data dir, killed and removed
//! when the [`EtcdServer`] drops.
//!
//! Used by the etcd tests of `sigma-control` and `sigma-tools` (which panic
//! through [`EtcdServer::start_or_panic`] and [`require_etcd`]) and by
//! sigmabench's `ns` suite (which takes the [`EtcdError`] of
//! [`EtcdServer::start`]: a missing etcd makes error rows, not a crash).
//!
//! They need the real etcd: without the binary the error says how to get it
//! (`scripts/setup.sh`). `SIGMA_ETCD_BIN` names another binary.

use std::fmt;
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
/// How many of the last lines of etcd's log an [`EtcdError`] shows.
const LOG_TAIL_LINES: usize = 10;

/// Why etcd could not be run or did not come up.
#[derive(Debug)]
pub struct EtcdError {
    /// What went wrong.
    pub message: String,
    /// etcd's whole log, if it got as far as writing one.
    pub log: Option<String>,
}

impl EtcdError {
    fn new(message: impl Into<String>) -> EtcdError {
        EtcdError {
            message: message.into(),
            log: None,
        }
    }

    fn context(mut self, context: &str) -> EtcdError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// The message and the last lines of etcd's log; the whole log is in
/// [`EtcdError::log`].
impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(log) = &self.log {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            write!(f, "; last lines of its log:\n{}", tail.join("\n"))?;
        }
        Ok(())
    }
}

impl std::error::Error for EtcdError {}

/// A running etcd; killed, and its data removed, on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// What `etcd --version` says first, shortened: `etcd 3.4.23`.
    pub version: String,
}

/// The etcd binary to run (`SIGMA_ETCD_BIN`, else `etcd`).
pub fn etcd_bin() -> String {
    std::env::var("SIGMA_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// The etcd binary's version, shortened (`etcd 3.4.23`), or an error that
/// says how to get etcd if the binary is missing.
pub fn etcd_version() -> Result<String, EtcdError> {
    match Command::new(etcd_bin())
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("etcd, version unknown")
            .trim()
            .replace("etcd Version:", "etcd")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EtcdError::new(format!(
            "`{}` not found: this needs a real etcd; run scripts/setup.sh (installs Debian's etcd-server) \
             or name one in SIGMA_ETCD_BIN",
            etcd_bin()
        ))),
        Err(e) => Err(EtcdError::new(format!("cannot run `{} --version`: {e}", etcd_bin()))),
    }
}

/// Panics, saying how to get it, unless the etcd binary runs.
#[track_caller]
pub fn require_etcd() {
    if let Err(e) = etcd_version() {
        panic!("{e}");
    }
}

/// A port nobody listens on now.
fn free_port() -> Result<u16, EtcdError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EtcdError::new(format!("choosing a free port on 127.0.0.1: {e}")))
}

/// The reply (headers and body) to an HTTP/1.0 `GET path` to `addr` (etcd's
/// client URL serves `/health` and `/metrics`), or `None` if there is no
/// answer within about a second.
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

impl EtcdServer {
    /// Starts etcd and waits until it reports healthy; the error says how to
    /// get etcd if the binary is missing, or carries etcd's log if it does
    /// not come up.
    pub fn start() -> Result<EtcdServer, EtcdError> {
        let version = etcd_version()?;
        let mut last = EtcdError::new("etcd did not start");
        for _ in 0..START_ATTEMPTS {
            match EtcdServer::try_start(&version) {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last.context(&format!("etcd did not start after {START_ATTEMPTS} attempts")))
    }

    /// [`EtcdServer::start`] for tests: panics (failing the test) if the
    /// binary is missing or etcd does not come up in time, showing etcd's
    /// whole log.
    #[track_caller]
    pub fn start_or_panic() -> EtcdServer {
        match EtcdServer::start() {
            Ok(server) => server,
            Err(EtcdError {
                message,
                log: Some(log),
            }) => panic!("{message}; its log:\n{log}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn try_start(version: &str) -> Result<EtcdServer, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("sigma-etcd-")
            .tempdir()
            .map_err(|e| EtcdError::new(format!("creating etcd's temp dir: {e}")))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| EtcdError::new(format!("creating etcd's log: {e}")))?;
        let log_too = log
            .try_clone()
            .map_err(|e| EtcdError::new(format!("dup etcd's log: {e}")))?;
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
            // Short raft timings: the single member elects itself within
            // ~0.1 s instead of ~1 s, and etcd's minimum lease TTL (1.5
            // election timeouts, 2 s by default) drops below 1 s, so 1 s
            // leases stay 1 s. With one member there are no peers to
            // heartbeat, so requests are not affected.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .map_err(|e| EtcdError::new(format!("spawn `{}`: {e}", etcd_bin())))?;
        let mut server = EtcdServer {
            child: Some(child),
            dir,
            endpoint: client,
            version: version.to_string(),
        };
        let started = Instant::now();
        loop {
            if healthy_at(([127, 0, 0, 1], client_port).into()) {
                return Ok(server);
            }
            let exited = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let message = match exited {
                    Some(status) => format!("etcd exited with {status}"),
                    None => format!("etcd not healthy after {START_TIMEOUT:?}"),
                };
                server.kill();
                return Err(EtcdError {
                    message,
                    log: Some(server.log()),
                });
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

    /// Freezes etcd (SIGSTOP): it keeps its connections but answers
    /// nothing, as a hung member does, until the returned guard drops
    /// (SIGCONT) — on a test's failure too.
    pub fn freeze(&self) -> Frozen<'_> {
        let pid = self.child.as_ref().expect("etcd was killed").id() as libc::pid_t;
        // SAFETY: kill(2) on our own child; it touches no memory.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP etcd: {}", std::io::Error::last_os_error());
        Frozen { pid, _server: self }
    }

    /// Kills etcd now (SIGKILL) and waits for it; its data dir and log stay
    /// until drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A frozen etcd ([`EtcdServer::freeze`]); dropping it thaws etcd.
#[derive(Debug)]
#[must_use = "etcd thaws when this drops"]
pub struct Frozen<'a> {
    pid: libc::pid_t,
    /// Borrowed so that etcd is not killed and reaped (its pid free for
    /// reuse) while frozen.
    _server: &'a EtcdServer,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped (see `_server`).
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
