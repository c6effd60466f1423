//! sigma-dataplane: the thread-per-core data plane of σ.
//!
//! Each core is one pinned thread owning one io_uring (SINGLE_ISSUER |
//! DEFER_TASKRUN, its fd registered, a sparse fixed-file table, an opcode
//! allow-list registered while the ring starts disabled), one executor with
//! LC and BE task classes, and one provided-buffer ring for receives. Cores
//! share nothing on the hot path; they talk through bounded SPSC queues
//! whose wake-ups travel by MSG_RING. Where io_uring is unavailable the same
//! API runs on epoll.
//!
//! ```no_run
//! use sigma_dataplane::{Core, net::TcpListener};
//! let core = Core::builder().pin(0).build().unwrap();
//! core.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let mut incoming = listener.incoming();
//!     while let Ok(stream) = incoming.next().await {
//!         sigma_dataplane::spawn(async move {
//!             let mut buf = Vec::with_capacity(4096);
//!             loop {
//!                 let (res, b) = stream.recv(buf).await;
//!                 let n = match res { Ok(0) | Err(_) => break, Ok(n) => n };
//!                 let (res, b) = stream.send_all(b).await;
//!                 if res.is_err() || n == 0 { break; }
//!                 buf = b;
//!             }
//!         });
//!     }
//! });
//! ```

//! Operations, and the futures and sockets that hold them, belong to the
//! core that started them and cannot leave its thread: they are `!Send`, so
//! moving one to another thread does not compile.
//!
//! ```compile_fail
//! fn send_to_another_thread<T: Send>(_: T) {}
//! // An in-flight write holds its core.
//! send_to_another_thread(sigma_dataplane::write_at(0, vec![0u8; 8], 0));
//! ```
//!
//! ```compile_fail
//! fn send_to_another_thread<T: Send>(_: T) {}
//! send_to_another_thread(sigma_dataplane::sleep(std::time::Duration::from_millis(1)));
//! ```
//!
//! ```compile_fail
//! fn send_to_another_thread<T: Send>(_: T) {}
//! fn stream(s: sigma_dataplane::net::TcpStream) {
//!     send_to_another_thread(s);
//! }
//! ```

pub mod buf;
pub mod channel;
mod driver;
pub mod error;
mod executor;
mod idle;
pub mod limits;
pub mod net;
mod op;
mod park;
pub mod probe;
pub mod rpc;
mod runtime;
mod sync;
mod sys;

/// The park handshake, public only for the loom models (tests/loom.rs).
#[cfg(loom)]
#[doc(hidden)]
pub use park::{ParkFlag, WakeCount};

pub use buf::{BufResult, IoBuf, IoBufMut};
pub use driver::Backend;
pub use error::{Error, Result};
pub use executor::{maybe_yield, panic_message, spawn, spawn_be, spawn_with_class, yield_now, Class, JoinHandle};
pub use op::nop::nop;
pub use op::read::read_at;
pub use op::timeout::{sleep, timeout, Elapsed, Sleep};
pub use op::write::write_at;
pub use runtime::{default_spin, Core, CoreBuilder, CoreStats, Runtime};

/// Paths the exported macros use, so that their users need not depend on
/// these crates themselves.
#[doc(hidden)]
pub mod __private {
    pub use bytes;
    pub use sigma_ep;
}

/// Information about the current core, for logs and benchmarks.
pub fn current_backend() -> Option<Backend> {
    runtime::try_local().map(|l| l.driver.backend())
}

/// Tells the current core (if the caller runs on one) that what its tasks
/// wait for next takes long — a proc's start on another thread, say — so
/// that its next idle period parks at once instead of spinning first: on
/// a small machine the spin would take CPU from the thread doing the work.
/// The period is left out of the idle policy's history. A no-op off a core.
pub fn expect_long_wait() {
    if let Some(l) = runtime::try_local() {
        l.idle.park_next();
    }
}

/// Pins the calling thread to `cpu` (as [`CoreBuilder::pin`] pins a core),
/// for a thread that takes turns with a core on its cpu.
pub fn pin_thread(cpu: usize) -> std::io::Result<()> {
    sys::pin_to_cpu(cpu)
}

/// The current core's counters.
pub fn stats() -> Option<CoreStats> {
    runtime::try_local().map(|l| l.stats.snapshot(&l.driver, &l.exec, l.shared.unparker()))
}

/// Buffers of the current core's receive pool that are free (io_uring: in
/// the kernel's ring), for tests and diagnostics.
pub fn free_receive_buffers() -> Option<u32> {
    runtime::try_local().map(|l| l.pool.available())
}

/// Receive-buffer pools whose memory is still allocated, in this process:
/// one per running core, plus those of stopped cores whose chunks are still
/// held somewhere (the last chunk frees the pool). For tests and diagnostics.
pub fn receive_pools_alive() -> usize {
    driver::bufpool::POOLS_ALIVE.load(std::sync::atomic::Ordering::SeqCst)
}
