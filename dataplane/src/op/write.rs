//! WRITE to a file at an offset (the binary cache's writes).

use super::{FileOp, Op, UringOp};
use crate::buf::{BufResult, IoBuf};
use crate::driver::blocking::FileJob;
use io_uring::{opcode, squeue, types};
use std::io;
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
///
/// On a file that cannot seek (a pipe, FIFO or character device) the offset
/// is ignored and the bytes are written next, as io_uring does.
///
/// The fd must stay open until the returned future completes or is dropped.
/// On the epoll back end a pool thread makes the call, so the core never
/// blocks; if the future is dropped while that call is already running, the
/// call still finishes on the fd shortly after the drop (a write dropped
/// before a thread took it is not made), like a cancel that comes too late
/// on io_uring. The buffer is `Send` because of that thread.
pub async fn write_at<B: IoBuf + Unpin + Send>(fd: RawFd, buf: B, offset: u64) -> BufResult<usize, B> {
    let core = crate::runtime::try_local().expect("not on a σ data-plane core: call write_at inside Core::block_on");
    if core.driver.uring().is_some() {
        return Op::with_core(core, Write { fd, buf, offset }).await;
    }
    let run = pwrite::<B>;
    FileOp::new(core, FileJob { fd, offset, buf, run }).await
}

/// pwrite from `buf` on a pool thread (epoll back end); write on a file that
/// cannot seek (ESPIPE).
fn pwrite<B: IoBuf>(fd: RawFd, buf: &mut B, offset: u64) -> io::Result<usize> {
    let (ptr, len) = (buf.stable_ptr().cast(), buf.bytes_init());
    crate::sys::positioned_io(|seekable| {
        // SAFETY: the buffer has `bytes_init` readable bytes, owned by the
        // job for as long as the call runs.
        unsafe {
            if seekable {
                libc::pwrite(fd, ptr, len, offset as libc::off_t)
            } else {
                libc::write(fd, ptr, len)
            }
        }
    })
}
