//! TIMEOUT: sleeping on the ring (a heap timer on epoll).

use super::{Op, UringOp};
use crate::runtime::Local;
use io_uring::{opcode, squeue, types};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

struct Timeout {
    // On the heap: the kernel reads it when the entry is submitted, which may
    // be after this value has moved.
    spec: Box<types::Timespec>,
}

impl UringOp for Timeout {
    type Output = ();
    fn entry(&mut self) -> squeue::Entry {
        opcode::Timeout::new(&*self.spec as *const types::Timespec).build()
    }
    fn complete(self, res: i32, _flags: u32) {
        // -ETIME is the normal expiry; -ECANCELED only happens at shutdown.
        debug_assert!(
            res == -libc::ETIME || res == -libc::ECANCELED || res >= 0,
            "timeout completed with {res}"
        );
    }
}

/// A future that completes after a duration.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    inner: SleepInner,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sleep")
    }
}

enum SleepInner {
    Uring(Op<Timeout>),
    Epoll {
        deadline: Instant,
        /// The heap timer, once polled.
        timer: Option<u32>,
        done: bool,
        /// The core whose heap holds the timer.
        core: Rc<Local>,
    },
}

/// Sleeps for `duration`.
///
/// # Panics
///
/// When called off a data-plane core.
pub fn sleep(duration: Duration) -> Sleep {
    let core = crate::runtime::try_local().expect("not on a σ data-plane core: call sleep inside Core::block_on");
    let inner = if core.driver.uring().is_some() {
        let spec = types::Timespec::new()
            .sec(duration.as_secs())
            .nsec(duration.subsec_nanos());
        SleepInner::Uring(Op::with_core(core, Timeout { spec: Box::new(spec) }))
    } else {
        SleepInner::Epoll {
            deadline: Instant::now() + duration,
            timer: None,
            done: false,
            core,
        }
    };
    Sleep { inner }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().inner {
            SleepInner::Uring(op) => Pin::new(op).poll(cx),
            SleepInner::Epoll {
                deadline,
                timer,
                done,
                core,
            } => {
                let epoll = core.driver.epoll().expect("epoll back end");
                match timer {
                    None => {
                        if *done || Instant::now() >= *deadline {
                            *done = true;
                            return Poll::Ready(());
                        }
                        *timer = Some(epoll.add_timer(*deadline, cx.waker().clone()));
                        Poll::Pending
                    }
                    Some(id) => {
                        let ready = epoll.poll_timer(*id, cx);
                        if ready.is_ready() {
                            epoll.remove_timer(*id);
                            *timer = None;
                            *done = true;
                        }
                        ready
                    }
                }
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // The timer leaves the heap of the core that holds it, wherever the
        // sleep is dropped (`Sleep` is `!Send`: always on that core's thread).
        if let SleepInner::Epoll {
            timer: Some(id), core, ..
        } = &self.inner
        {
            if let Some(epoll) = core.driver.epoll() {
                epoll.remove_timer(*id);
            }
        }
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} exceeded")]
pub struct Elapsed(pub Duration);

/// Runs `future` with a deadline; the future is dropped (and its operations
/// cancelled) if the deadline passes first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed(duration)));
        }
        Poll::Pending
    })
    .await
}
