//! ACCEPT: single-shot, and multishot (one entry, one completion per
//! connection).

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::driver::epoll::Interest;
use crate::driver::uring::MultiKind;
use crate::net::socket::Socket;
use crate::runtime::{with_local, Local};
use io_uring::{cqueue, opcode, squeue};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll};

struct Accept {
    target: Target,
}

impl UringOp for Accept {
    type Output = io::Result<OwnedFd>;
    fn entry(&mut self) -> squeue::Entry {
        with_target!(self.target, |t| opcode::Accept::new(
            t,
            std::ptr::null_mut(),
            std::ptr::null_mut()
        )
        .flags(libc::SOCK_CLOEXEC)
        .build())
    }
    fn complete(self, res: i32, _flags: u32) -> io::Result<OwnedFd> {
        // SAFETY: a non-negative result is a new fd owned by nobody else.
        crate::sys::cqe_result(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

fn accept_now(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: accept4 with NULL address pointers.
    let ret = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Accepts one connection.
pub(crate) async fn accept(listener: &Socket) -> io::Result<OwnedFd> {
    if listener.is_uring() {
        return Op::new(Accept {
            target: listener.target(),
        })
        .await;
    }
    let fd = listener.as_raw_fd();
    epoll_retry(listener.token(), Interest::Read, || accept_now(fd)).await
}

/// A multishot accept: one submission, one completion per connection,
/// re-armed when the kernel ends it.
pub(crate) struct AcceptMulti {
    slot: Option<u32>,
    target: Target,
    /// The listener's core, which the multishot is released on when dropped.
    core: Rc<Local>,
}

impl AcceptMulti {
    pub(crate) fn new(listener: &Socket) -> AcceptMulti {
        AcceptMulti {
            slot: None,
            target: listener.target(),
            core: listener.core().clone(),
        }
    }

    /// The next accepted connection (uring back end only).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        with_local(|local| {
            let uring = local.driver.uring().expect("multishot accept needs io_uring");
            loop {
                let slot = match self.slot {
                    Some(slot) => slot,
                    None => {
                        let target = self.target;
                        let slot = std::task::ready!(uring
                            .submit_multi(cx, MultiKind::Accept, || with_target!(target, |t| {
                                opcode::AcceptMulti::new(t).flags(libc::SOCK_CLOEXEC).build()
                            })));
                        self.slot = Some(slot);
                        slot
                    }
                };
                match std::task::ready!(uring.poll_multi(slot, cx)) {
                    Some((res, flags)) => {
                        if !cqueue::more(flags) {
                            // The kernel ended the multishot; the slot is freed
                            // once poll_multi reports None. Drain it first.
                            if let Poll::Ready(None) = uring.poll_multi(slot, cx) {
                                self.slot = None;
                            }
                        }
                        // SAFETY: a non-negative result is a new fd owned by nobody else.
                        return Poll::Ready(
                            crate::sys::cqe_result(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) }),
                        );
                    }
                    None => self.slot = None,
                }
            }
        })
    }
}

impl Drop for AcceptMulti {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let uring = self.core.driver.uring().expect("a multishot accept runs on io_uring");
            // Accepted connections still queued are closed; an accept carries
            // no buffers.
            let mut unused = Vec::new();
            uring.drop_multi(slot, &mut unused);
            debug_assert!(unused.is_empty());
        }
    }
}
