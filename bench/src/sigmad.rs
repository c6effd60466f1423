//! A real `sigmad` process for the `ns` and `spawn` suites: found next to the sigmabench
//! executable (or at `SIGMA_SIGMAD`), started on a temporary data dir with its data-plane core
//! pinned, ready once it logs "sigmad serving the namespace", killed (and its data removed) when
//! the [`Sigmad`] drops.
//!
//! Started with [`PROCS_DEBUG_LOG`], sigmad also logs a debug line per proc it starts, with how
//! long the binary took to reach its cache ([`ProcStarted`]); [`Sigmad::proc_started`] hands
//! that line over, which is how the `spawn` suite fills the `sigma` rows' `fetch_us`.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The line sigmad logs once its admin socket accepts requests.
const READY_LINE: &str = "sigmad serving the namespace";
/// How long sigmad may take to start serving (it takes about 50 ms on embedded defaults).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of sigmad's log kept for error messages (all of them go into a failed start's error).
const LOG_TAIL_LINES: usize = 20;
/// Lines of sigmad's log in the error of a run during which sigmad died (a panic message is there).
const EXIT_LOG_LINES: usize = 5;

/// `RUST_LOG` for a sigmad whose proc starts should be reported: info (the ready line), and
/// `sigma_control::procs` at debug, whose only debug line is one per proc started (see
/// [`ProcStarted`]).
pub const PROCS_DEBUG_LOG: &str = "info,sigma_control::procs=debug";
/// The message of sigmad's debug line for a proc started.
const PROC_STARTED_LINE: &str = "proc started";
/// [`ProcStarted`] lines kept until asked for (the oldest go first: warm starts and spawn-rate's
/// are never asked for).
const PROC_STARTED_KEPT: usize = 1024;

/// What sigmad's debug line for a proc started says (`proc started pid=P program=N fetch_us=F
/// start_us=S`, logged by the proc table before it answers the Spawn call): `fetch_us` from the
/// spawn's entry in the proc table to the binary's cache file in hand (the hop to sigmad's
/// control thread, the record's look-up in the store unless cached, and on a miss the object's
/// read or GET, its BLAKE3 as it streams, the cache writes, fsync and rename), `start_us` from
/// there to the spawner's answer (the realm's sandbox parts and the proc started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStarted {
    /// σ pid (the Spawn call's answer).
    pub pid: u64,
    pub fetch_us: u64,
    pub start_us: u64,
}

/// The [`ProcStarted`] of one line of sigmad's log, if it is such a line.
pub fn parse_proc_started(line: &str) -> Option<ProcStarted> {
    let (_, fields) = line.split_once(PROC_STARTED_LINE)?;
    let field = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    Some(ProcStarted {
        pid: field("pid")?,
        fetch_us: field("fetch_us")?,
        start_us: field("start_us")?,
    })
}

/// The proc-started lines read from a sigmad's log and not yet asked for; a handle that can be
/// kept apart from the [`Sigmad`] ([`Sigmad::proc_starts`]).
#[derive(Debug, Clone, Default)]
pub struct ProcStarts(Arc<(Mutex<VecDeque<ProcStarted>>, Condvar)>);

impl ProcStarts {
    /// Adds a line read (the oldest goes past [`PROC_STARTED_KEPT`]).
    fn push(&self, p: ProcStarted) {
        let (lines, arrived) = &*self.0;
        let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == PROC_STARTED_KEPT {
            l.pop_front();
        }
        l.push_back(p);
        arrived.notify_all();
    }

    /// The line of σ pid `pid` (sigmad started with [`PROCS_DEBUG_LOG`]), waiting for it at most
    /// `wait`; `None` if it did not come. sigmad logs it before it answers the Spawn call, so it
    /// is in the pipe by then, but the log reader may not have read it yet.
    pub fn take(&self, pid: u64, wait: Duration) -> Option<ProcStarted> {
        let (lines, arrived) = &*self.0;
        let until = Instant::now() + wait;
        let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = l.iter().position(|p| p.pid == pid) {
                return l.remove(i);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            l = arrived.wait_timeout(l, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// The environment variable naming the sigmad binary to run.
pub const SIGMAD_ENV: &str = "SIGMA_SIGMAD";

/// The sigmad binary: `$SIGMA_SIGMAD`, else `sigmad` in the directory of the running sigmabench
/// (both are built into the same target directory). An error says how to build it.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(SIGMAD_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{SIGMAD_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding the sigmabench executable")?;
    let dir = exe.parent().context("the sigmabench executable has no directory")?;
    let p = dir.join("sigmad");
    if !p.is_file() {
        bail!(
            "sigmad not found at {} (sigmabench runs the one built beside it): run `cargo build --release -p sigma-tools` (or set {SIGMAD_ENV})",
            p.display()
        );
    }
    Ok(p)
}

/// A running sigmad; killed, and its data dir removed, on drop.
#[derive(Debug)]
pub struct Sigmad {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// The last lines of its log.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Its proc-started lines not yet asked for.
    started: ProcStarts,
    /// Its admin socket.
    pub sock: PathBuf,
}

impl Sigmad {
    /// Starts `bin --data TMPDIR --cpu CPU EXTRA...` and waits until it serves the namespace.
    pub fn start(bin: &Path, cpu: usize, extra: &[String]) -> Result<Sigmad> {
        Sigmad::start_with_env(bin, cpu, extra, &[])
    }

    /// [`Sigmad::start`] with `env` added to sigmad's environment (`RUST_LOG` is `info` unless
    /// `env` says otherwise).
    pub fn start_with_env(bin: &Path, cpu: usize, extra: &[String], env: &[(&str, &str)]) -> Result<Sigmad> {
        let dir = tempfile::Builder::new()
            .prefix("sigmabench-sigmad-")
            .tempdir()
            .context("creating sigmad's data dir")?;
        let sock = dir.path().join("sigmad.sock");
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(dir.path())
            .arg("--cpu")
            .arg(cpu.to_string())
            .args(extra)
            // The ready line is logged at info.
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stderr = child.stderr.take().context("sigmad's stderr")?;
        // Built before waiting, so that a failed start still kills the child.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let started = ProcStarts::default();
        let mut daemon = Sigmad {
            child: Some(child),
            _dir: dir,
            tail: tail.clone(),
            started: started.clone(),
            sock,
        };
        let (tx, rx) = mpsc::channel();
        {
            let tail = tail.clone();
            // Reads sigmad's log to its end (so that a chatty sigmad never blocks on a full pipe),
            // keeping the last lines.
            std::thread::Builder::new()
                .name("sigmad-log".into())
                .spawn(move || {
                    let mut tx = Some(tx);
                    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                        if line.contains(READY_LINE) {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        if let Some(p) = parse_proc_started(&line) {
                            started.push(p);
                            // Not kept in the tail: a run of starts would push out what matters.
                            continue;
                        }
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if t.len() == LOG_TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                })
                .context("spawning the sigmad log reader")?;
        }
        let started = Instant::now();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(daemon),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = daemon.child.as_mut().map(|c| c.wait());
                let status = match status {
                    Some(Ok(s)) => s.to_string(),
                    _ => "unknown status".to_string(),
                };
                bail!(
                    "sigmad exited ({status}) before serving, after {:.1} s; its log:\n{}",
                    started.elapsed().as_secs_f64(),
                    daemon.log_tail(LOG_TAIL_LINES)
                )
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                daemon.kill();
                bail!(
                    "sigmad did not log \"{READY_LINE}\" within {READY_TIMEOUT:?}; its log:\n{}",
                    daemon.log_tail(LOG_TAIL_LINES)
                )
            }
        }
    }

    /// Its proc-started lines, as they are read (there are some only if it was started with
    /// [`PROCS_DEBUG_LOG`]).
    pub fn proc_starts(&self) -> ProcStarts {
        self.started.clone()
    }

    /// The last `n` lines sigmad logged.
    fn log_tail(&self, n: usize) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let skip = t.len().saturating_sub(n);
        t.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Its pid, while it runs (not yet reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// If sigmad has exited (it should not, before it is killed): its status and last log lines.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        Some(format!(
            "sigmad exited ({status}); its last log lines:\n{}",
            self.log_tail(EXIT_LOG_LINES)
        ))
    }

    /// Stops it: SIGTERM first, so that it kills its procs and removes its
    /// cgroups, then SIGKILL if it is still there after 10 s.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: kill takes no pointers; the pid is our own child's, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sigmad {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_started_line_is_parsed_and_others_are_not() {
        let line = "2026-11-27T01:51:21.123456Z DEBUG sigma_control::procs: proc started pid=42 program=\"big-cold-7\" fetch_us=6123 start_us=12001";
        assert_eq!(
            parse_proc_started(line),
            Some(ProcStarted {
                pid: 42,
                fetch_us: 6123,
                start_us: 12001
            })
        );
        assert_eq!(parse_proc_started("INFO sigmad serving the namespace sock=/x"), None);
        // A field missing (a changed line): nothing, never a guess.
        assert_eq!(parse_proc_started("DEBUG proc started pid=1 start_us=3"), None);
    }

    #[test]
    fn a_proc_started_line_is_waited_for_and_taken_once() {
        let starts = ProcStarts::default();
        let line = ProcStarted {
            pid: 7,
            fetch_us: 1,
            start_us: 2,
        };
        let later = starts.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            later.push(line);
        });
        assert_eq!(starts.take(7, Duration::from_secs(5)), Some(line));
        t.join().unwrap();
        assert_eq!(starts.take(7, Duration::from_millis(10)), None);
    }
}
