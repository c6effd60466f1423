//! READ from a file at an offset (the binary cache's reads).

use super::{Op, UringOp};
use crate::buf::{BufResult, IoBufMut};
use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

struct Read<B> {
    fd: RawFd,
    buf: B,
    offset: u64,
}

impl<B: IoBufMut + Unpin> UringOp for Read<B> {
    type Output = BufResult<usize, B>;
    fn entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_total().min(u32::MAX as usize) as u32;
        opcode::Read::new(types::Fd(self.fd), self.buf.stable_mut_ptr(), len)
            .offset(self.offset)
            .build()
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

/// Reads up to the buffer's capacity from `fd` at `offset` (pread). The fd
/// must stay open until the returned future completes or is dropped.
pub async fn read_at<B: IoBufMut + Unpin>(fd: RawFd, mut buf: B, offset: u64) -> BufResult<usize, B> {
    if crate::runtime::with_local(|l| l.driver.uring().is_some()) {
        return Op::new(Read { fd, buf, offset }).await;
    }
    // Regular files are always "ready" to epoll; the fallback reads in place.
    // SAFETY: the buffer has `bytes_total` writable bytes.
    let n = unsafe {
        libc::pread(
            fd,
            buf.stable_mut_ptr().cast(),
            buf.bytes_total(),
            offset as libc::off_t,
        )
    };
    let res = crate::sys::cvt_isize(n);
    if let Ok(n) = res {
        // SAFETY: pread wrote `n` bytes at the start of the buffer.
        unsafe { buf.set_init(n) };
    }
    (res, buf)
}
