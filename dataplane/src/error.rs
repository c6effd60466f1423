//! The data plane's error type: one variant per operation that can fail.

use std::io;

/// Errors of the data plane. Variants are named after the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ring could not be created; the message says why (memlock, sysctl, seccomp).
    #[error("io_uring setup failed: {reason}")]
    RingSetup {
        /// What failed and what it most likely means.
        reason: String,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// A ring was created but registering a resource on it failed.
    #[error("io_uring register {what} failed")]
    RingRegister {
        /// Which resource.
        what: &'static str,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// The epoll back end could not be set up.
    #[error("epoll setup failed")]
    EpollSetup(#[source] io::Error),
    /// Pinning the core thread failed.
    #[error("pinning thread to cpu {cpu} failed")]
    Pin {
        /// The cpu asked for.
        cpu: usize,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// Spawning a core thread failed.
    #[error("spawning core thread {core} failed")]
    SpawnThread {
        /// The core index.
        core: usize,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// A configuration value is out of its limits.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The result type of the data plane.
pub type Result<T, E = Error> = std::result::Result<T, E>;
