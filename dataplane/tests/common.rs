//! Helpers shared by the data plane's integration tests.
#![allow(dead_code)]

use sigma_dataplane::{Backend, Core};

/// The back ends this machine can run: epoll always, io_uring where the
/// kernel allows it (otherwise a message says why it is skipped).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Epoll];
    match &sigma_dataplane::probe::support().unavailable {
        None => out.insert(0, Backend::Uring),
        Some(why) => eprintln!("skipping the io_uring back end: {why}"),
    }
    out
}

/// A core of `backend` on the current thread (not pinned: tests run in parallel).
pub fn core(backend: Backend) -> Core {
    Core::builder().backend(backend).build().expect("core")
}
