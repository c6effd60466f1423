//! CONNECT an existing socket to an address.

use super::{with_target, Op, Target, UringOp};
use crate::driver::epoll::Interest;
use crate::net::socket::Socket;
use crate::sys::RawAddr;
use io_uring::{opcode, squeue};
use std::io;
use std::os::fd::AsRawFd;

struct Connect {
    target: Target,
    // On the heap: the kernel reads the address when the entry is submitted.
    addr: Box<RawAddr>,
}

impl UringOp for Connect {
    type Output = io::Result<()>;
    fn entry(&mut self) -> squeue::Entry {
        let ptr = self.addr.as_ptr();
        let len = self.addr.len;
        with_target!(self.target, |t| opcode::Connect::new(t, ptr, len).build())
    }
    fn complete(self, res: i32, _flags: u32) -> io::Result<()> {
        crate::sys::cqe_result(res).map(drop)
    }
}

/// Connects `socket` to `addr`.
pub(crate) async fn connect(socket: &Socket, addr: RawAddr) -> io::Result<()> {
    if socket.is_uring() {
        return Op::new(Connect {
            target: socket.target(),
            addr: Box::new(addr),
        })
        .await;
    }
    let fd = socket.as_raw_fd();
    match crate::sys::connect(fd, &addr) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let token = socket.token();
    std::future::poll_fn(|cx| {
        crate::runtime::with_local(|l| {
            l.driver
                .epoll()
                .expect("epoll back end")
                .poll_ready(token, Interest::Write, cx)
        })
    })
    .await;
    match crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}
