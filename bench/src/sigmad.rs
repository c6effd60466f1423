//! A real `sigmad` process for the `ns` and `spawn` suites: found next to the sigmabench
//! executable (or at `SIGMA_SIGMAD`), started on a temporary data dir with its data-plane core
//! pinned, ready once it logs "sigmad serving the namespace", killed (and its data removed) when
//! the [`Sigmad`] drops.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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

/// A spawn asked of the keeper thread, and where its answer goes.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` so that it gets SIGTERM when sigmabench ends, however it ends (killed with
/// -9, or a case's timed-out thread still holding its [`Sigmad`], which is then never dropped):
/// a sigmad left behind would run on, pinned to a CPU with its cgroups, and skew every later
/// run. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, so the fork is
/// done by a keeper thread that lives as long as the process (the S3 side's sigmad is opened
/// from a case's thread, which ends with the case); the child checks that its parent is still
/// there after asking, for a parent that died in between.
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    static KEEPER: std::sync::OnceLock<std::result::Result<Mutex<mpsc::Sender<SpawnJob>>, String>> =
        std::sync::OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("sigmad-keeper".into())
            // The sender lives in the static: this thread waits for jobs until the process ends.
            .spawn(move || {
                for (mut command, answer) in rx {
                    let _ = answer.send(command.spawn());
                }
            })
            .map(|_| Mutex::new(tx))
            .map_err(|e| format!("starting the thread that spawns sigmad: {e}"))
    });
    let keeper = keeper.as_ref().map_err(|e| std::io::Error::other(e.clone()))?;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes two system calls
    // (prctl, getppid), both async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, tx))
        .map_err(|_| std::io::Error::other("the thread that spawns sigmad is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the thread that spawns sigmad did not answer"))?
}

/// A running sigmad; killed, and its data dir removed, on drop.
#[derive(Debug)]
pub struct Sigmad {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// The last lines of its log.
    tail: Arc<Mutex<VecDeque<String>>>,
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
        let mut command = Command::new(bin);
        command
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
            .stderr(Stdio::piped());
        let mut child = spawn_tied(command).with_context(|| format!("spawning {}", bin.display()))?;
        let stderr = child.stderr.take().context("sigmad's stderr")?;
        // Built before waiting, so that a failed start still kills the child.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut daemon = Sigmad {
            child: Some(child),
            _dir: dir,
            tail: tail.clone(),
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

    /// Set in the environment of [`helper_spawns_a_tied_sleeper_and_exits`]'s run.
    const HELPER_ENV: &str = "SIGMABENCH_TIED_HELPER";

    /// Whether `pid` still runs (a zombie does not).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| !s[i + 1..].trim_start().starts_with('Z')))
            .unwrap_or(false)
    }

    fn sleeper() -> Command {
        let mut c = Command::new("sleep");
        c.arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// A child spawned from a thread that then ends lives on: the fork is the keeper thread's,
    /// not the caller's (`PR_SET_PDEATHSIG` follows the forking thread).
    #[test]
    fn a_tied_child_outlives_the_thread_that_asked() {
        let mut child = std::thread::spawn(|| spawn_tied(sleeper()).unwrap()).join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(running(child.id()), "the child died with the thread that asked for it");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Not a test of its own: run by [`a_tied_child_ends_with_the_process`] in a process of its
    /// own, it spawns a tied sleeper, prints its pid and exits without dropping anything.
    #[test]
    #[ignore = "a helper process of a_tied_child_ends_with_the_process"]
    fn helper_spawns_a_tied_sleeper_and_exits() {
        if std::env::var_os(HELPER_ENV).is_none() {
            return;
        }
        let child = spawn_tied(sleeper()).unwrap();
        println!("tied-child {}", child.id());
        std::process::exit(0);
    }

    /// The process that spawned a tied child ends without a word (as sigmabench killed with -9,
    /// or exiting with a leaked [`Sigmad`]): the child gets SIGTERM.
    #[test]
    fn a_tied_child_ends_with_the_process() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigmad::tests::helper_spawns_a_tied_sleeper_and_exits",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let pid: u32 = text
            .lines()
            .find_map(|l| l.split_once("tied-child ")?.1.trim().parse().ok())
            .unwrap_or_else(|| panic!("the helper printed no pid: {text}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) {
            if Instant::now() > deadline {
                // SAFETY: kill of the pid the helper printed, a sleep of our own making.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("the tied child {pid} still runs 10 s after its process ended");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
