//! RECV into an owned buffer.

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::buf::{BufResult, IoBufMut};
use crate::driver::epoll::Interest;
use crate::net::socket::Socket;
use io_uring::{opcode, squeue};

struct Recv<B> {
    target: Target,
    buf: B,
}

impl<B: IoBufMut + Unpin> UringOp for Recv<B> {
    type Output = BufResult<usize, B>;
    fn entry(&mut self) -> squeue::Entry {
        let ptr = self.buf.stable_mut_ptr();
        let len = self.buf.bytes_total().min(u32::MAX as usize) as u32;
        with_target!(self.target, |t| opcode::Recv::new(t, ptr, len).build())
    }
    fn complete(mut self, res: i32, _flags: u32) -> BufResult<usize, B> {
        let res = crate::sys::cqe_result(res).map(|n| n as usize);
        if let Ok(n) = res {
            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
            unsafe { self.buf.set_init(n) };
        }
        (res, self.buf)
    }
}

/// Receives into `buf` (its contents become what arrived; 0 bytes is EOF).
pub(crate) async fn recv<B: IoBufMut + Unpin>(socket: &Socket, mut buf: B) -> BufResult<usize, B> {
    if socket.is_uring() {
        return Op::new(Recv {
            target: socket.target(),
            buf,
        })
        .await;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    let res = epoll_retry(socket.token(), Interest::Read, || {
        // SAFETY: the buffer has `bytes_total` writable bytes.
        let n = unsafe { libc::recv(fd, buf.stable_mut_ptr().cast(), buf.bytes_total(), 0) };
        crate::sys::cvt_isize(n)
    })
    .await;
    if let Ok(n) = res {
        // SAFETY: recv wrote `n` bytes at the start of the buffer.
        unsafe { buf.set_init(n) };
    }
    (res, buf)
}
