//! READ from a file at an offset (the binary cache's reads).

use super::{FileOp, Op, UringOp};
use crate::buf::{BufResult, IoBufMut};
use crate::driver::blocking::FileJob;
use io_uring::{opcode, squeue, types};
use std::io;
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

/// Reads up to the buffer's capacity from `fd` at `offset` (pread).
///
/// On a file that cannot seek (a pipe, FIFO or character device) the offset
/// is ignored and the read takes what comes next, as io_uring does.
///
/// The fd must stay open until the returned future completes or is dropped.
/// On the epoll back end a pool thread makes the call, so the core never
/// blocks; if the future is dropped while that call is already running, the
/// call still finishes on the fd (into the buffer, which the pool then frees)
/// shortly after the drop, like a cancel that comes too late on io_uring.
/// The buffer is `Send` because of that thread.
pub async fn read_at<B: IoBufMut + Unpin + Send>(fd: RawFd, buf: B, offset: u64) -> BufResult<usize, B> {
    let core = crate::runtime::try_local().expect("not on a σ data-plane core: call read_at inside Core::block_on");
    if core.driver.uring().is_some() {
        return Op::with_core(core, Read { fd, buf, offset }).await;
    }
    let run = pread::<B>;
    FileOp::new(core, FileJob { fd, offset, buf, run }).await
}

/// pread into `buf` on a pool thread (epoll back end); read on a file that
/// cannot seek (ESPIPE).
fn pread<B: IoBufMut>(fd: RawFd, buf: &mut B, offset: u64) -> io::Result<usize> {
    let (ptr, len) = (buf.stable_mut_ptr().cast(), buf.bytes_total());
    let n = crate::sys::positioned_io(|seekable| {
        // SAFETY: the buffer has `bytes_total` writable bytes, owned by the
        // job for as long as the call runs.
        unsafe {
            if seekable {
                libc::pread(fd, ptr, len, offset as libc::off_t)
            } else {
                libc::read(fd, ptr, len)
            }
        }
    })?;
    // SAFETY: the call wrote `n <= bytes_total` bytes at the start of the buffer.
    unsafe { buf.set_init(n) };
    Ok(n)
}
