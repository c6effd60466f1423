//! Multishot RECV into the core's provided buffer ring.
//!
//! One submission yields a completion per arriving chunk, each naming the
//! provided buffer the kernel filled; the chunk reaches the caller as a
//! `Bytes` pointing into that buffer. When the ring runs dry the kernel ends
//! the multishot with ENOBUFS; the stream waits until buffers come back and
//! re-arms. Data is never lost meanwhile: it waits in the socket.

use crate::driver::bufpool::BGID;
use crate::driver::epoll::Interest;
use crate::driver::uring::MultiKind;
use crate::net::socket::Socket;
use crate::op::with_target;
use crate::runtime::with_local;
use bytes::Bytes;
use io_uring::{cqueue, opcode};
use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

/// A stream of received chunks; see [`TcpStream::recv_stream`](crate::net::TcpStream::recv_stream).
#[derive(Debug)]
pub struct RecvStream<'a> {
    socket: &'a Socket,
    slot: Option<u32>,
    eof: bool,
}

impl<'a> RecvStream<'a> {
    pub(crate) fn new(socket: &'a Socket) -> Self {
        RecvStream {
            socket,
            slot: None,
            eof: false,
        }
    }

    /// The next chunk: `None` at EOF, an error if the connection failed.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next chunk.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.eof {
            return Poll::Ready(None);
        }
        if self.socket.is_uring() {
            self.poll_uring(cx)
        } else {
            self.poll_epoll(cx)
        }
    }

    fn poll_uring(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        with_local(|local| {
            let uring = local.driver.uring().expect("io_uring back end");
            loop {
                let slot = match self.slot {
                    Some(slot) => slot,
                    None => {
                        if local.pool.available() == 0 {
                            local.pool.wait_for_buffers(cx.waker());
                            return Poll::Pending;
                        }
                        let target = self.socket.target();
                        let slot = std::task::ready!(uring
                            .submit_multi(cx, MultiKind::Recv, || with_target!(target, |t| {
                                opcode::RecvMulti::new(t, BGID).build()
                            })));
                        self.slot = Some(slot);
                        slot
                    }
                };
                let Some((res, flags)) = std::task::ready!(uring.poll_multi(slot, cx)) else {
                    self.slot = None;
                    continue;
                };
                if !cqueue::more(flags) {
                    // The final completion of this submission: free the slot now.
                    let drained = uring.poll_multi(slot, cx);
                    debug_assert!(matches!(drained, Poll::Ready(None)), "completions after the final one");
                    self.slot = None;
                }
                if res > 0 {
                    let bid = cqueue::buffer_select(flags).expect("multishot recv completion without a buffer");
                    return Poll::Ready(Some(Ok(local.pool.take(bid, res as usize))));
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    local.pool.give_back(&mut vec![bid]);
                }
                match res {
                    0 => {
                        self.eof = true;
                        if let Some(slot) = self.slot.take() {
                            let mut unused = Vec::new();
                            uring.drop_multi(slot, &mut unused);
                            local.pool.give_back(&mut unused);
                        }
                        return Poll::Ready(None);
                    }
                    e if e == -libc::ENOBUFS => {
                        crate::runtime::Stats::bump(&local.stats.recv_rearms_after_enobufs, 1);
                        continue;
                    }
                    e => return Poll::Ready(Some(Err(io::Error::from_raw_os_error(-e)))),
                }
            }
        })
    }

    fn poll_epoll(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let fd = self.socket.as_raw_fd();
        let token = self.socket.token();
        with_local(|local| {
            let epoll = local.driver.epoll().expect("epoll back end");
            loop {
                let Some((bid, ptr)) = local.pool.alloc() else {
                    crate::runtime::Stats::bump(&local.stats.recv_rearms_after_enobufs, 1);
                    local.pool.wait_for_buffers(cx.waker());
                    return Poll::Pending;
                };
                // SAFETY: `ptr` is a free pool buffer of buf_bytes bytes, ours until freed or taken.
                let n = unsafe { libc::recv(fd, ptr.cast(), local.pool.buf_bytes(), 0) };
                match crate::sys::cvt_isize(n) {
                    Ok(0) => {
                        local.pool.free(bid);
                        self.eof = true;
                        return Poll::Ready(None);
                    }
                    Ok(n) => return Poll::Ready(Some(Ok(local.pool.take(bid, n)))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        local.pool.free(bid);
                        epoll.clear_ready(token, Interest::Read);
                        std::task::ready!(epoll.poll_ready(token, Interest::Read, cx));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => local.pool.free(bid),
                    Err(e) => {
                        local.pool.free(bid);
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        })
    }
}

impl Drop for RecvStream<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let core = self.socket.core();
            let uring = core.driver.uring().expect("a multishot receive runs on io_uring");
            let mut unused = Vec::new();
            uring.drop_multi(slot, &mut unused);
            core.pool.give_back(&mut unused);
        }
    }
}
