//! SEND from an owned buffer.

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::buf::{BufResult, IoBuf};
use crate::driver::epoll::Interest;
use crate::net::socket::{SendTicket, Socket};
use io_uring::{opcode, squeue};

struct Send<B> {
    target: Target,
    buf: B,
    offset: usize,
    _ticket: SendTicket,
}

impl<B: IoBuf + Unpin> UringOp for Send<B> {
    type Output = BufResult<usize, B>;
    fn entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_init() - self.offset;
        // SAFETY: offset <= bytes_init, so the pointer stays inside the buffer.
        let ptr = unsafe { self.buf.stable_ptr().add(self.offset) };
        let len = len.min(u32::MAX as usize) as u32;
        with_target!(self.target, |t| opcode::Send::new(t, ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build())
    }
    fn complete(self, res: i32, _flags: u32) -> BufResult<usize, B> {
        (crate::sys::cqe_result(res).map(|n| n as usize), self.buf)
    }
}

/// Sends bytes of `buf` from `offset` on; returns how many went out.
pub(crate) async fn send<B: IoBuf + Unpin>(socket: &Socket, buf: B, offset: usize) -> BufResult<usize, B> {
    assert!(offset <= buf.bytes_init(), "send offset beyond the buffer");
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    if socket.is_uring() {
        // A send that fits the socket's buffer completes at once, whichever
        // way it goes; a plain non-blocking send(2) costs the same one
        // system call as the enter that would issue it, without the ring's
        // request set-up, its completion, and a wake-up and second poll of
        // the task. Only one that would wait goes to the ring, which waits
        // for room. Neither may overtake the bytes of an earlier ring send
        // of this socket whose future was dropped: its cancel may come too
        // late, so it waits until that send completed (`SendsInFlight`).
        // Concurrent sends of one socket from several tasks are not
        // ordered, on either back end.
        socket.sends().idle().await;
        // SAFETY: the range [offset, bytes_init) of the buffer is readable.
        let n = unsafe {
            libc::send(
                fd,
                buf.stable_ptr().add(offset).cast(),
                buf.bytes_init() - offset,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match crate::sys::cvt_isize(n) {
            Ok(n) => return (Ok(n), buf),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return (Err(e), buf),
        }
        return Op::new(Send {
            target: socket.target(),
            buf,
            offset,
            _ticket: socket.sends().ticket(),
        })
        .await;
    }
    let res = epoll_retry(socket.token(), Interest::Write, || {
        // SAFETY: the range [offset, bytes_init) of the buffer is readable.
        let n = unsafe {
            libc::send(
                fd,
                buf.stable_ptr().add(offset).cast(),
                buf.bytes_init() - offset,
                libc::MSG_NOSIGNAL,
            )
        };
        crate::sys::cvt_isize(n)
    })
    .await;
    (res, buf)
}
