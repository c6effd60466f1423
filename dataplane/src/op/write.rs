//! WRITE to a file at an offset (the binary cache's writes).

use super::{Op, UringOp};
use crate::buf::{BufResult, IoBuf};
use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

struct Write<B> {
    fd: RawFd,
    buf: B,
    offset: u64,
}

impl<B: IoBuf + Unpin> UringOp for Write<B> {
    type Output = BufResult<usize, B>;
    fn entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_init().min(u32::MAX as usize) as u32;
        opcode::Write::new(types::Fd(self.fd), self.buf.stable_ptr(), len)
            .offset(self.offset)
            .build()
    }
    fn complete(self, res: i32, _flags: u32) -> BufResult<usize, B> {
        (crate::sys::cqe_result(res).map(|n| n as usize), self.buf)
    }
}

/// Writes the buffer to `fd` at `offset` (pwrite); returns bytes written.
pub async fn write_at<B: IoBuf + Unpin>(fd: RawFd, buf: B, offset: u64) -> BufResult<usize, B> {
    if crate::runtime::with_local(|l| l.driver.uring().is_some()) {
        return Op::new(Write { fd, buf, offset }).await;
    }
    // SAFETY: the buffer has `bytes_init` readable bytes.
    let n = unsafe { libc::pwrite(fd, buf.stable_ptr().cast(), buf.bytes_init(), offset as libc::off_t) };
    (crate::sys::cvt_isize(n), buf)
}
