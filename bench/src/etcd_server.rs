//! A throwaway single-member etcd for the `ns` suite: Debian's `etcd` binary on 127.0.0.1 with
//! free client and peer ports and a temporary data dir, killed and removed when the
//! [`EtcdServer`] drops. (The same recipe as `control/tests/support/etcd.rs`, with errors instead
//! of panics: a missing etcd makes error rows, not a crash.)
//!
//! `SIGMA_ETCD_BIN` names another binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long etcd may take to become healthy (it takes about 0.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports, in case another process took a port between choosing it and etcd
/// binding it.
const START_ATTEMPTS: usize = 3;

/// A running etcd; killed, and its data removed, on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// What `etcd --version` says first, shortened: `etcd 3.4.23`.
    pub version: String,
}

/// The etcd binary (`SIGMA_ETCD_BIN`, else `etcd`).
pub fn etcd_bin() -> String {
    std::env::var("SIGMA_ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("bind 127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether the etcd whose client URL is at `addr` reports itself healthy (a member of a cluster
/// with a leader).
fn healthy_at(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut reply = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).contains("\"health\":\"true\"")
}

impl EtcdServer {
    /// Starts etcd and waits until it reports healthy; an error says how to get etcd if the
    /// binary is missing, or shows etcd's log if it does not come up.
    pub fn start() -> Result<EtcdServer> {
        let version = match Command::new(etcd_bin()).arg("--version").stderr(Stdio::null()).output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("etcd, version unknown")
                .trim()
                .replace("etcd Version:", "etcd"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "`{}` not found: the etcd systems need a real etcd; run scripts/setup.sh (installs Debian's etcd-server)",
                etcd_bin()
            ),
            Err(e) => bail!("cannot run `{} --version`: {e}", etcd_bin()),
        };
        let mut last = anyhow!("etcd did not start");
        for _ in 0..START_ATTEMPTS {
            match EtcdServer::try_start(&version) {
                Ok(server) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last.context(format!("etcd did not start after {START_ATTEMPTS} attempts")))
    }

    fn try_start(version: &str) -> Result<EtcdServer> {
        let dir = tempfile::Builder::new()
            .prefix("sigmabench-etcd-")
            .tempdir()
            .context("creating etcd's temp dir")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).context("creating etcd's log")?;
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
            // Short raft timings: the single member elects itself within ~0.1 s instead of ~1 s.
            // With one member there are no peers to heartbeat, so requests are not affected.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup etcd's log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn `{}`", etcd_bin()))?;
        let mut server = EtcdServer {
            child: Some(child),
            _dir: dir,
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
                let why = match exited {
                    Some(status) => format!("etcd exited with {status}"),
                    None => format!("etcd not healthy after {START_TIMEOUT:?}"),
                };
                server.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!("{why}; last lines of its log:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The endpoints to give a client.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// Kills etcd now (SIGKILL) and waits for it.
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
