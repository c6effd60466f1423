//! Benchmark suites (`sigmabench run SUITE`) and the deadline wrapper every measurement runs under.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::systems::panic_message;

pub mod ns;
pub mod peers;
pub mod rpc;

/// Names of the suites `sigmabench run` knows.
pub const KNOWN: &[&str] = &["peers", "rpc", "ns"];

/// Runs `f` on its own thread and waits at most `deadline` for it.
///
/// A panic becomes an error. On timeout the thread is leaked (it may be stuck in a peer
/// runtime) and an error is returned, so that one hung system cannot hang the suite.
pub fn with_deadline<T, F>(name: &str, deadline: Duration, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .map_err(|e| anyhow!("spawning {name}: {e}"))?;
    match rx.recv_timeout(deadline) {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => Err(anyhow!("panicked: {}", panic_message(&*p))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!(
            "timed out after {:.0} s (worker thread leaked)",
            deadline.as_secs_f64()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(anyhow!("worker thread died")),
    }
}

/// The cases a run asks for, in the suite's order: all of them, or those
/// named in `wanted`. An unknown name is an error listing the known ones.
pub fn select_cases<C: Copy>(
    all: &[C],
    name: impl Fn(&C) -> &'static str,
    wanted: Option<&[String]>,
) -> Result<Vec<C>> {
    let Some(wanted) = wanted else {
        return Ok(all.to_vec());
    };
    for w in wanted {
        if !all.iter().any(|c| name(c) == w) {
            let known: Vec<&str> = all.iter().map(&name).collect();
            anyhow::bail!("unknown case '{w}'; known cases: {}", known.join(", "));
        }
    }
    Ok(all
        .iter()
        .filter(|c| wanted.iter().any(|w| w == name(c)))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_turns_hangs_and_panics_into_errors() {
        let t0 = std::time::Instant::now();
        let r: Result<()> = with_deadline("hang", Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(())
        });
        assert!(format!("{:#}", r.unwrap_err()).contains("timed out"));
        assert!(t0.elapsed() < Duration::from_secs(5));

        let r: Result<()> = with_deadline("boom", Duration::from_secs(5), || panic!("boom"));
        assert!(format!("{:#}", r.unwrap_err()).contains("panicked: boom"));

        assert_eq!(with_deadline("ok", Duration::from_secs(5), || Ok(7)).unwrap(), 7);
    }
}
