//! The socket every stream and listener wraps: an owned fd, its fixed-file
//! slot on io_uring or its epoll registration, and the core it belongs to.

use crate::op::Target;
use crate::runtime::{with_local, Local};
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// The ring sends of one socket in flight, their futures dropped or not
/// (io_uring). A send goes out — as a plain send(2) or on the ring — only
/// when there are none: the cancel of a dropped send may come too late
/// (the socket became writable and the kernel already queued the send's
/// retry), and a send issued meanwhile would put its bytes before the
/// dropped one's (tests/net.rs). A send that finishes normally has ended
/// before its caller can start the next, so this waits only behind a
/// dropped send, or another task's.
#[derive(Debug, Default)]
pub(crate) struct SendsInFlight {
    count: Cell<u32>,
    waiters: RefCell<Vec<Waker>>,
}

/// One ring send in flight, counted until its data is dropped (at its
/// completion, also when its future was dropped first).
pub(crate) struct SendTicket(Rc<SendsInFlight>);

impl Drop for SendTicket {
    fn drop(&mut self) {
        let left = self.0.count.get() - 1;
        self.0.count.set(left);
        if left == 0 {
            for waker in self.0.waiters.take() {
                waker.wake();
            }
        }
    }
}

impl SendsInFlight {
    /// Waits until this socket has no ring send in flight.
    pub(crate) async fn idle(&self) {
        if self.count.get() == 0 {
            return;
        }
        std::future::poll_fn(|cx| {
            if self.count.get() == 0 {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Counts a ring send in flight until the ticket drops.
    pub(crate) fn ticket(self: &Rc<Self>) -> SendTicket {
        self.count.set(self.count.get() + 1);
        SendTicket(self.clone())
    }
}

/// A socket registered with the current core. It is `!Send`: it belongs to
/// the core that created it, and holds that core, so that dropping it
/// anywhere on the core's thread (even after `block_on` returned) empties
/// its fixed-file slot or epoll registration on the right core.
pub struct Socket {
    fd: OwnedFd,
    fixed: Option<u32>,
    token: Option<u32>,
    core: Rc<Local>,
    /// Ring sends in flight (io_uring only).
    sends: Rc<SendsInFlight>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field("fixed", &self.fixed)
            .finish()
    }
}

impl Socket {
    /// Adopts `fd` on the current core: a fixed-file slot on io_uring (if
    /// one is free), an edge-triggered registration on epoll.
    pub(crate) fn adopt(fd: OwnedFd) -> io::Result<Socket> {
        let raw = fd.as_raw_fd();
        let core =
            crate::runtime::try_local().expect("not on a σ data-plane core: create sockets inside Core::block_on");
        match (core.driver.uring(), core.driver.epoll()) {
            (Some(uring), _) => {
                crate::sys::set_nonblocking(raw, false)?;
                Ok(Socket {
                    fixed: uring.register_fixed(raw),
                    token: None,
                    fd,
                    core,
                    sends: Rc::default(),
                })
            }
            (None, Some(epoll)) => {
                crate::sys::set_nonblocking(raw, true)?;
                Ok(Socket {
                    token: Some(epoll.register(raw)?),
                    fixed: None,
                    fd,
                    core,
                    sends: Rc::default(),
                })
            }
            (None, None) => unreachable!("a driver is either io_uring or epoll"),
        }
    }

    /// The core this socket belongs to.
    pub(crate) fn core(&self) -> &Rc<Local> {
        &self.core
    }

    /// The ring sends of this socket in flight (io_uring): a send waits
    /// for `idle()` and holds a `ticket()` while on the ring.
    pub(crate) fn sends(&self) -> &Rc<SendsInFlight> {
        &self.sends
    }

    /// Whether new sockets should be created non-blocking (epoll back end).
    pub(crate) fn wants_nonblocking() -> bool {
        with_local(|local| local.driver.epoll().is_some())
    }

    pub(crate) fn target(&self) -> Target {
        match self.fixed {
            Some(slot) => Target::Fixed(slot),
            None => Target::Fd(self.fd.as_raw_fd()),
        }
    }

    pub(crate) fn token(&self) -> u32 {
        self.token.expect("socket registered with epoll")
    }

    pub(crate) fn is_uring(&self) -> bool {
        self.token.is_none()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let (Some(slot), Some(uring)) = (self.fixed, self.core.driver.uring()) {
            uring.unregister_fixed(slot);
        }
        if let (Some(token), Some(epoll)) = (self.token, self.core.driver.epoll()) {
            epoll.deregister(self.fd.as_raw_fd(), token);
        }
    }
}
