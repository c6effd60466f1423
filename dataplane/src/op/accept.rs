//! ACCEPT, single-shot: one entry, one completion, one connection (a
//! multishot accept could post a completion per connection waiting in the
//! backlog, which no bound of the core's completion queue covers).

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::driver::epoll::Interest;
use crate::net::socket::Socket;
use io_uring::{opcode, squeue};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// The accept behind a listener's `incoming()`: at most one single-shot
/// accept in flight, kept across calls, so that a `next()` future dropped
/// and made again (a `select` loop) neither loses a connection nor starts
/// a second accept. One completion per connection, one connection pulled
/// into an fd at a time: further connections wait in the listen backlog.
/// Dropped with its accept in flight, the driver closes what it accepts.
pub(crate) struct Incoming {
    pending: Option<Op<Accept>>,
}

impl Incoming {
    pub(crate) fn new() -> Incoming {
        Incoming { pending: None }
    }

    /// The next connection accepted on `listener`, the socket this was
    /// made for.
    pub(crate) async fn next(&mut self, listener: &Socket) -> io::Result<OwnedFd> {
        if !listener.is_uring() {
            return accept(listener).await;
        }
        let target = listener.target();
        let pending = self.pending.get_or_insert_with(|| Op::new(Accept { target }));
        let res = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *pending).poll(cx)).await;
        self.pending = None;
        res
    }
}
