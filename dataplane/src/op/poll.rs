//! POLL_ADD: waiting until an fd is readable (a proc's pidfd: its exit).

use super::{Op, UringOp};
use crate::driver::epoll::Interest;
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

struct PollIn {
    /// Held until the completion: the kernel's poll names this fd.
    fd: Arc<OwnedFd>,
}

impl UringOp for PollIn {
    type Output = io::Result<()>;
    fn entry(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.as_raw_fd()), libc::POLLIN as u32).build()
    }
    fn complete(self, res: i32, _flags: u32) -> io::Result<()> {
        crate::sys::cqe_result(res).map(drop)
    }
}

/// Waits until `fd` is readable: a single-shot POLL_ADD on io_uring, an
/// edge-triggered registration on epoll. For an fd whose readiness is a
/// one-way event (a pidfd turns readable when its process exits, and stays
/// so); a socket's readiness belongs to its stream.
///
/// The wait holds its share of `fd` until the kernel is done with it:
/// dropped early, the poll is cancelled (io_uring) or deregistered (epoll)
/// and the fd stays open until then.
pub async fn wait_readable(fd: Arc<OwnedFd>) -> io::Result<()> {
    let core =
        crate::runtime::try_local().expect("not on a σ data-plane core: call wait_readable inside Core::block_on");
    if core.driver.uring().is_some() {
        return Op::with_core(core, PollIn { fd }).await;
    }
    let epoll = core.driver.epoll().expect("the epoll back end");
    let token = epoll.register(fd.as_raw_fd())?;
    /// Deregisters on every way out, before its share of the fd goes.
    struct Registered {
        core: std::rc::Rc<crate::runtime::Local>,
        fd: Arc<OwnedFd>,
        token: u32,
    }
    impl Drop for Registered {
        fn drop(&mut self) {
            if let Some(epoll) = self.core.driver.epoll() {
                epoll.deregister(self.fd.as_raw_fd(), self.token);
            }
        }
    }
    let reg = Registered {
        core: core.clone(),
        fd,
        token,
    };
    std::future::poll_fn(|cx| epoll.poll_ready(reg.token, Interest::Read, cx)).await;
    drop(reg);
    Ok(())
}
