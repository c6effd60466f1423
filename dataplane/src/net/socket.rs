//! The socket every stream and listener wraps: an owned fd, its fixed-file
//! slot on io_uring or its epoll registration, and the core it belongs to.

use crate::op::Target;
use crate::runtime::{with_local, Local};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// A socket registered with the current core. It is `!Send`: it belongs to
/// the core that created it, and holds that core, so that dropping it
/// anywhere on the core's thread (even after `block_on` returned) empties
/// its fixed-file slot or epoll registration on the right core.
pub struct Socket {
    fd: OwnedFd,
    fixed: Option<u32>,
    token: Option<u32>,
    core: Rc<Local>,
    /// Ring sends of this socket the kernel has not completed yet (io_uring;
    /// see `op::send`): while there are any, sends go through the ring too,
    /// so that none overtakes one the kernel still holds.
    ring_sends: Rc<std::cell::Cell<u32>>,
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
                    ring_sends: Rc::default(),
                })
            }
            (None, Some(epoll)) => {
                crate::sys::set_nonblocking(raw, true)?;
                Ok(Socket {
                    token: Some(epoll.register(raw)?),
                    fixed: None,
                    fd,
                    core,
                    ring_sends: Rc::default(),
                })
            }
            (None, None) => unreachable!("a driver is either io_uring or epoll"),
        }
    }

    /// The core this socket belongs to.
    pub(crate) fn core(&self) -> &Rc<Local> {
        &self.core
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

    /// Whether no ring send of this socket is in the kernel's hands.
    pub(crate) fn no_ring_sends(&self) -> bool {
        self.ring_sends.get() == 0
    }

    /// Counts a ring send in until the guard drops (which, for an operation
    /// whose future was dropped, is at its last completion).
    pub(crate) fn ring_send_guard(&self) -> RingSendGuard {
        self.ring_sends.set(self.ring_sends.get() + 1);
        RingSendGuard(self.ring_sends.clone())
    }
}

/// One ring send counted in on its socket (`Socket::ring_send_guard`).
pub(crate) struct RingSendGuard(Rc<std::cell::Cell<u32>>);

impl Drop for RingSendGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
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
