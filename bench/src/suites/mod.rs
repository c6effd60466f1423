//! Benchmark suites (`sigmabench run SUITE`) and the deadline wrapper every measurement runs under.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::report::Row;
use crate::systems::panic_message;

pub mod ns;
pub mod peers;
pub mod rpc;
pub mod spawn;
pub mod spawn_rate;

/// Names of the suites `sigmabench run` knows.
pub const KNOWN: &[&str] = &["peers", "rpc", "ns", "spawn", "spawn-rate"];

/// What a suite adds to the Markdown after its table (ratios to a floor, targets), if anything.
pub fn extra_markdown(doc: &crate::report::Doc) -> String {
    match doc.suite.as_str() {
        "spawn" => spawn::markdown(doc),
        "spawn-rate" => spawn_rate::markdown(doc),
        _ => String::new(),
    }
}

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

/// How the rounds of one (case, system) went.
#[derive(Debug, Default)]
pub struct Tally {
    /// Rounds whose result was folded in.
    pub ok_rounds: u32,
    /// What went wrong, one entry per failed round.
    pub errors: Vec<String>,
}

impl Tally {
    /// The error row of a (case, system) any round of which failed (its figures are
    /// discarded), or `None` if every round succeeded.
    pub fn failed_row(&self, case: &str, system: &str, rounds: u32, note: &str) -> Option<Row> {
        if self.errors.is_empty() {
            return None;
        }
        let mut note = note.to_string();
        if self.ok_rounds > 0 {
            note.push_str(&format!(
                "; {} of {rounds} rounds succeeded, figures discarded",
                self.ok_rounds
            ));
        }
        Some(Row::failed(case, system, self.errors.join("; "), note))
    }
}

/// Runs every (case, system) pair that `applies` once per round: cases in order, the system
/// order rotated each round (so no system always runs first or after the same neighbour), with
/// a progress line per run on stderr. `run_one(case, system)` measures; `absorb(case, system,
/// outcome)` folds a success into the suite's accumulators and returns the progress text and
/// whether the merge worked. Returns how each pair's rounds went (a pair that does not apply
/// keeps an empty tally).
pub fn interleave<T>(
    rounds: u32,
    case_names: &[&str],
    system_names: &[String],
    applies: impl Fn(usize, usize) -> bool,
    mut run_one: impl FnMut(usize, usize) -> Result<T>,
    mut absorb: impl FnMut(usize, usize, T) -> (String, std::result::Result<(), String>),
) -> Vec<Vec<Tally>> {
    let (ncases, nsys) = (case_names.len(), system_names.len());
    let mut tallies: Vec<Vec<Tally>> = (0..ncases)
        .map(|_| (0..nsys).map(|_| Tally::default()).collect())
        .collect();
    let per_round = (0..ncases)
        .map(|ci| (0..nsys).filter(|&si| applies(ci, si)).count())
        .sum::<usize>();
    let total = rounds as usize * per_round;
    let width = total.to_string().len();
    let mut step = 0;
    for round in 0..rounds {
        for ci in 0..ncases {
            for k in 0..nsys {
                let si = (k + round as usize) % nsys;
                if !applies(ci, si) {
                    continue;
                }
                step += 1;
                eprint!(
                    "[{step:>width$}/{total}] round {} {} {} ... ",
                    round + 1,
                    case_names[ci],
                    system_names[si]
                );
                let t0 = Instant::now();
                let result = run_one(ci, si);
                let took = t0.elapsed().as_secs_f64();
                let tally = &mut tallies[ci][si];
                match result {
                    Ok(out) => {
                        let (line, merged) = absorb(ci, si, out);
                        eprintln!("{line} ({took:.1} s)");
                        match merged {
                            Ok(()) => tally.ok_rounds += 1,
                            Err(e) => tally
                                .errors
                                .push(format!("round {}: merging histograms: {e}", round + 1)),
                        }
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        eprintln!("ERROR: {msg}");
                        tally.errors.push(if rounds > 1 {
                            format!("round {}: {msg}", round + 1)
                        } else {
                            msg
                        });
                    }
                }
            }
        }
    }
    tallies
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

    #[test]
    fn interleave_rotates_systems_and_tallies_rounds() {
        let mut order = Vec::new();
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let tallies = interleave(
            2,
            &["x"],
            &names,
            |_, _| true,
            |_, si| {
                order.push(si);
                if si == 2 {
                    anyhow::bail!("c fails")
                }
                Ok(si)
            },
            |_, si, _| (String::new(), if si == 1 { Err("bad".into()) } else { Ok(()) }),
        );
        assert_eq!(order, [0, 1, 2, 1, 2, 0]);
        assert_eq!(tallies[0][0].ok_rounds, 2);
        assert_eq!(
            tallies[0][1].errors,
            ["round 1: merging histograms: bad", "round 2: merging histograms: bad"]
        );
        assert_eq!(tallies[0][2].errors, ["round 1: c fails", "round 2: c fails"]);
        assert!(tallies[0][0].failed_row("x", "a", 2, "n").is_none());
        assert!(tallies[0][2].failed_row("x", "c", 2, "n").is_some());
    }
}
