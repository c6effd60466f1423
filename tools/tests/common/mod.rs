//! What the tools' integration tests share: a sigmad started as a user
//! starts it, and sigmactl run against it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A sigmad child process, stopped when dropped (SIGTERM, so that it
/// kills its procs and removes its cgroups; SIGKILL after 10 s).
pub struct Daemon {
    pub child: Child,
    pub sock: PathBuf,
    /// Its stderr (the log), line by line, as it comes.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts sigmad on `data` (socket `DATA/sigmad.sock`), without procs.
    pub fn start(data: &Path) -> Daemon {
        Daemon::launch(data, &data.join("sigmad.sock"), &[], &[])
    }

    /// Starts sigmad on `data` with procs (a sandbox, cgroups, a spawner).
    pub fn start_procs(data: &Path) -> Daemon {
        Daemon::launch(data, &data.join("sigmad.sock"), &["--procs"], &[])
    }

    /// Starts sigmad with `--data data --sock sock` and `extra` arguments.
    pub fn start_with(data: &Path, sock: &Path, extra: &[&str]) -> Daemon {
        Daemon::launch(data, sock, extra, &[])
    }

    /// Starts sigmad with `--data data --sock sock`, `extra` arguments and
    /// `env`, and waits for its "serving" log line (probing the socket could
    /// reach a dying predecessor's listener). Without procs (`--no-procs`:
    /// no sandbox, no cgroups left behind by tests that kill it) unless
    /// `extra` holds `--procs`.
    pub fn launch(data: &Path, sock: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let sock = sock.to_path_buf();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigmad"));
        cmd.arg("--data").arg(data).arg("--sock").arg(&sock);
        if extra.contains(&"--procs") {
            cmd.args(extra.iter().filter(|a| **a != "--procs"));
        } else {
            cmd.arg("--no-procs").args(extra);
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        // Built before waiting, so that a failed start still kills the child.
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
        let started = Instant::now();
        rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
            panic!(
                "sigmad did not start within {:?}: {:?}",
                started.elapsed(),
                daemon.log.lock().unwrap()
            )
        });
        daemon
    }

    /// A sigmad the test started itself (its stderr not captured here).
    pub fn adopt(child: Child, sock: PathBuf) -> Daemon {
        Daemon {
            child,
            sock,
            log: Arc::default(),
        }
    }

    /// Runs sigmactl on this sigmad with `args` and no input.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run_ctl(&self.sock, &to_os(args), None)
    }

    /// As [`ctl`](Self::ctl), asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "sigmactl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&mut self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Lines of its log containing `text`.
    pub fn log_lines(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn to_os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Runs sigmactl on `sock` with `args`, feeding `stdin` (or nothing).
pub fn run_ctl(sock: &Path, args: &[OsString], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigmactl"))
        .arg("--sock")
        .arg(sock)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.unwrap_or_default().to_vec();
    // sigmactl may exit without reading its input: a failed write is fine.
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}
