//! The IO drivers of a core: io_uring (the default) and epoll (the fallback).
//!
//! The back end is chosen once per core at start: `SIGMA_IO=epoll|uring`
//! forces one; otherwise io_uring is tried and, if the ring cannot be set up
//! (disabled by sysctl, denied by seccomp, missing, memlock), epoll takes
//! over and a log line says why.

pub(crate) mod blocking;
pub(crate) mod bufpool;
mod entries;
pub(crate) mod epoll;
pub(crate) mod unpark;
pub(crate) mod uring;
pub(crate) mod wake_ring;

use crate::error::{Error, Result};
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which IO back end a core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring with SINGLE_ISSUER | DEFER_TASKRUN and a restricted opcode set.
    Uring,
    /// epoll readiness and plain system calls.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(format!("unknown IO back end {other:?}: expected uring or epoll")),
        }
    }
}

/// How long a poll of the driver may wait for a completion or a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all: submit, reap what is there, return.
    No,
    /// Not at all, and submit only if the kernel may hold completions to
    /// reap anyway: for a caller that goes idle next if this finds nothing,
    /// so that the idle wait's enter carries the submissions (one system
    /// call instead of two per park on io_uring). Epoll: as `No`.
    Reap,
    /// Until at least one completion or wake-up.
    Forever,
    /// Until at least one completion or wake-up, or until this instant.
    Until(std::time::Instant),
}

/// The driver of one core. One per core, created once: the size difference
/// between the variants costs nothing worth a box on the hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Driver {
    Uring(uring::Uring),
    Epoll(epoll::Epoll),
}

static LOGGED_CHOICE: AtomicBool = AtomicBool::new(false);

fn log_once(backend: Backend, why: &str) {
    if !LOGGED_CHOICE.swap(true, Ordering::Relaxed) {
        tracing::info!(backend = %backend, "data plane IO back end: {backend} ({why})");
    }
}

impl Driver {
    /// Creates the driver. Returns it, for io_uring a duplicate of the ring
    /// fd for MSG_RING wake-ups, and why this back end was chosen.
    /// `wakes` counts wake-ups sent to the core that the driver has not
    /// observed yet; `provided_buffers` is the size of the core's provided
    /// buffer ring (the completion bound counts both); `wake_polls`: an
    /// io_uring core gets a wake ring (`wake_ring.rs`).
    pub(crate) fn new(
        forced: Option<Backend>,
        eventfd: RawFd,
        wakes: Arc<unpark::WakeCount>,
        provided_buffers: u32,
        wake_polls: bool,
    ) -> Result<(Driver, Option<OwnedFd>, String)> {
        let from_env = match std::env::var("SIGMA_IO") {
            Ok(value) => Some(value.parse::<Backend>().map_err(Error::Config)?),
            Err(_) => None,
        };
        match (forced, from_env) {
            (Some(Backend::Epoll), _) | (None, Some(Backend::Epoll)) => {
                let why = if forced.is_some() {
                    "forced by configuration"
                } else {
                    "forced by SIGMA_IO=epoll"
                };
                log_once(Backend::Epoll, why);
                Ok((Driver::Epoll(epoll::Epoll::new(eventfd, wakes)?), None, why.to_string()))
            }
            (Some(Backend::Uring), _) | (None, Some(Backend::Uring)) => {
                let (ring, dup) = uring::Uring::new(eventfd, wakes, provided_buffers, wake_polls)?;
                let why = if forced.is_some() {
                    "forced by configuration"
                } else {
                    "forced by SIGMA_IO=uring"
                };
                log_once(Backend::Uring, why);
                Ok((Driver::Uring(ring), Some(dup), why.to_string()))
            }
            (None, None) => match uring::Uring::new(eventfd, wakes.clone(), provided_buffers, wake_polls) {
                Ok((ring, dup)) => {
                    let why = "detected: ring set up with SINGLE_ISSUER|DEFER_TASKRUN and restrictions";
                    log_once(Backend::Uring, why);
                    Ok((Driver::Uring(ring), Some(dup), why.to_string()))
                }
                Err(e) => {
                    let why = format!(
                        "io_uring unavailable, fell back to epoll: {e}: {}",
                        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
                    );
                    if !LOGGED_CHOICE.swap(true, Ordering::Relaxed) {
                        tracing::warn!("data plane IO back end: epoll ({why})");
                    }
                    Ok((Driver::Epoll(epoll::Epoll::new(eventfd, wakes)?), None, why))
                }
            },
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Driver::Uring(_) => Backend::Uring,
            Driver::Epoll(_) => Backend::Epoll,
        }
    }

    /// Submits pending work and reaps what completed, waiting as `wait`
    /// says. Returns completions handled (wake-poll completions are on the
    /// wake ring and never counted).
    pub(crate) fn poll(&self, wait: Wait) -> usize {
        match self {
            Driver::Uring(u) => u.poll(wait),
            Driver::Epoll(e) => e.poll(wait),
        }
    }

    /// Whether [`Wait::Until`] ends a wait at its deadline (Linux 5.11:
    /// IORING_FEAT_EXT_ARG, epoll_pwait2); without, it does not wait.
    pub(crate) fn timed_waits(&self) -> bool {
        match self {
            Driver::Uring(u) => u.timed_waits(),
            Driver::Epoll(e) => e.timed_waits(),
        }
    }

    pub(crate) fn uring(&self) -> Option<&uring::Uring> {
        match self {
            Driver::Uring(u) => Some(u),
            Driver::Epoll(_) => None,
        }
    }

    pub(crate) fn epoll(&self) -> Option<&epoll::Epoll> {
        match self {
            Driver::Uring(_) => None,
            Driver::Epoll(e) => Some(e),
        }
    }
}
