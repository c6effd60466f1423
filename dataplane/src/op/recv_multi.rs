//! Multishot RECV into the core's provided buffer ring.
//!
//! One submission yields a completion per arriving chunk, each naming the
//! provided buffer the kernel filled; the chunk reaches the caller as a
//! `Bytes` pointing into that buffer. When the ring runs dry the kernel ends
//! the multishot with ENOBUFS; the stream waits until buffers come back and
//! re-arms. Data is never lost meanwhile: it waits in the socket.
//!
//! A Unix stream on a core with wake polls on (`CoreBuilder::wake_polls`,
//! by default on cores that park at once) also arms a wake poll: a
//! multishot POLL_ADD(POLLOUT) on the socket, on the core's wake ring
//! (`driver/wake_ring.rs`). A Unix socket signals write space each time the
//! peer takes one of its messages, so the poll wakes the parked core when
//! the peer takes a request, before the reply comes: the kernel's wake-up
//! of this core then overlaps the peer's work instead of following it, and
//! the core's enter goes on waiting for the reply without returning. Its
//! completions carry nothing; the wake ring drops them. A poll the kernel
//! ended (the wake ring's queue was full, or it failed) is not re-armed:
//! the stream goes on without. Measured in `docs/parked-rtt.md`.

use crate::driver::bufpool::BGID;
use crate::driver::epoll::Interest;
use crate::driver::uring::Uring;
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
    wake: WakePoll,
}

/// The state of a stream's wake poll (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WakePoll {
    /// None, and none to arm.
    Off,
    /// To arm at the next poll, if the core has wake polls on and room.
    Wanted,
    /// Armed on the core's wake ring with this id.
    Armed(u64),
}

impl<'a> RecvStream<'a> {
    /// `wake_poll`: whether this kind of stream gets a wake poll (Unix
    /// streams do, TCP streams do not: TCP signals write space only after
    /// its send buffer was full).
    pub(crate) fn new(socket: &'a Socket, wake_poll: bool) -> Self {
        RecvStream {
            socket,
            slot: None,
            eof: false,
            wake: if wake_poll { WakePoll::Wanted } else { WakePoll::Off },
        }
    }

    /// Arms the wake poll if wanted and the core has a wake ring (it has
    /// one when its wake polls are on) with room.
    fn service_wake_poll(&mut self, uring: &Uring) {
        if self.wake != WakePoll::Wanted {
            return;
        }
        self.wake = match uring.wake_ring() {
            Some(wake_ring) => wake_ring
                .arm(self.socket.as_raw_fd())
                .map_or(WakePoll::Off, WakePoll::Armed),
            None => WakePoll::Off,
        };
    }

    /// Removes the wake poll, if armed, and arms none again.
    fn end_wake_poll(&mut self, uring: &Uring) {
        if let (WakePoll::Armed(id), Some(wake_ring)) = (self.wake, uring.wake_ring()) {
            wake_ring.disarm(id);
        }
        self.wake = WakePoll::Off;
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
            self.service_wake_poll(uring);
            loop {
                let slot = match self.slot {
                    Some(slot) => slot,
                    None => {
                        if local.pool.available() == 0 {
                            local.pool.wait_for_buffers(cx.waker());
                            return Poll::Pending;
                        }
                        let target = self.socket.target();
                        let slot = std::task::ready!(uring.submit_multi(cx, || with_target!(target, |t| {
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
                        self.end_wake_poll(uring);
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
        let socket: &Socket = self.socket;
        if let Some(uring) = socket.core().driver.uring() {
            self.end_wake_poll(uring);
        }
        if let Some(slot) = self.slot.take() {
            let core = self.socket.core();
            let uring = core.driver.uring().expect("a multishot receive runs on io_uring");
            let mut unused = Vec::new();
            uring.drop_multi(slot, &mut unused);
            core.pool.give_back(&mut unused);
        }
    }
}
