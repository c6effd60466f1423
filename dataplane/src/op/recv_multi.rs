//! A stream's receives into the core's provided buffer ring, in one of two
//! ways on io_uring (chosen per core: `CoreBuilder::readiness_receives`).
//!
//! **Multishot receive.** One submission yields a completion per arriving
//! chunk, each naming the provided buffer the kernel filled; the chunk
//! reaches the caller as a `Bytes` pointing into that buffer. When the ring
//! runs dry the kernel ends the multishot with ENOBUFS; the stream waits
//! until buffers come back and re-arms. Data is never lost meanwhile: it
//! waits in the socket. No submission per chunk: the default for cores that
//! spin.
//!
//! **By readiness.** One multishot poll for POLLIN|POLLOUT|POLLRDHUP stays
//! armed; when it says the socket is readable, a single RECV with
//! MSG_DONTWAIT takes what is there into a provided buffer (so chunks are
//! the same `Bytes`), issued from the core's own next enter. This is how
//! epoll runtimes wait (tokio registers every stream for read and write,
//! edge-triggered), and it is the faster wait for a core that parks: on a
//! Unix socket, the peer taking this side's last message wakes the parked
//! core (write space: POLLOUT) a little before the reply arrives, and the
//! reply then finds it awake (docs/parked-rtt.md). POLLOUT-only events are
//! otherwise ignored. The default for cores that park at once.
//!
//! The epoll back end always receives by readiness (`poll_epoll`).

use crate::driver::bufpool::BGID;
use crate::driver::epoll::Interest;
use crate::driver::uring::{MultiKind, POLL_HUNG_UP, POLL_READABLE};
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
    /// The receive in flight: multishot, or one RECV by readiness.
    slot: Option<u32>,
    eof: bool,
    /// Receives by readiness (io_uring); else by multishot receive.
    readiness: bool,
    /// By readiness: the multishot poll, once armed.
    poll: Option<u32>,
    /// By readiness: the socket may hold data (set by the poll's POLLIN,
    /// POLLRDHUP, POLLHUP or POLLERR, or by a receive that filled its
    /// buffer; cleared when a receive is issued).
    readable: bool,
    /// By readiness: the poll saw the peer hang up or an error; no more
    /// events will come, so receives go on until EOF or the error.
    hung_up: bool,
}

impl<'a> RecvStream<'a> {
    /// `readiness_ok`: whether this stream may receive by readiness, when
    /// its core is set to (Unix streams: yes; TCP: no).
    pub(crate) fn new(socket: &'a Socket, readiness_ok: bool) -> Self {
        RecvStream {
            readiness: readiness_ok && socket.core().readiness_receives,
            socket,
            slot: None,
            eof: false,
            poll: None,
            readable: true,
            hung_up: false,
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
            if self.readiness {
                self.poll_uring_ready(cx)
            } else {
                self.poll_uring(cx)
            }
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

    /// By readiness (see the module's documentation).
    fn poll_uring_ready(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        with_local(|local| {
            let uring = local.driver.uring().expect("io_uring back end");
            loop {
                if let Some(slot) = self.slot {
                    // The one completion of a RECV; then its slot is free.
                    let Some((res, flags)) = std::task::ready!(uring.poll_multi(slot, cx)) else {
                        self.slot = None;
                        continue;
                    };
                    let drained = uring.poll_multi(slot, cx);
                    debug_assert!(matches!(drained, Poll::Ready(None)), "a RECV completed twice");
                    self.slot = None;
                    if res > 0 {
                        // More behind it (the kernel says so, or the buffer
                        // is full), or a hang-up seen: no further poll event
                        // will come for what is already there.
                        self.readable |=
                            self.hung_up || cqueue::sock_nonempty(flags) || res as usize == local.pool.buf_bytes();
                        let bid = cqueue::buffer_select(flags).expect("RECV completion without a buffer");
                        return Poll::Ready(Some(Ok(local.pool.take(bid, res as usize))));
                    }
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        local.pool.give_back(&mut vec![bid]);
                    }
                    match res {
                        0 => {
                            self.eof = true;
                            self.drop_slots();
                            return Poll::Ready(None);
                        }
                        // Nothing there: the poll says when there is.
                        e if e == -libc::EAGAIN => {}
                        e if e == -libc::ENOBUFS => {
                            crate::runtime::Stats::bump(&local.stats.recv_rearms_after_enobufs, 1);
                            self.readable = true;
                        }
                        e if e == -libc::EINTR => self.readable = true,
                        e => return Poll::Ready(Some(Err(io::Error::from_raw_os_error(-e)))),
                    }
                }
                let poll = match self.poll {
                    Some(poll) => poll,
                    None => {
                        let target = self.socket.target();
                        let mask = (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP) as u32;
                        let poll = std::task::ready!(uring.submit_multi(cx, MultiKind::Poll, || {
                            with_target!(target, |t| opcode::PollAdd::new(t, mask).multi(true).build())
                        }));
                        self.poll = Some(poll);
                        poll
                    }
                };
                // What the poll saw so far (merged by the driver); the last
                // look leaves the waker with it.
                loop {
                    match uring.poll_multi(poll, cx) {
                        Poll::Ready(Some((res, _))) => {
                            // An error (the poll failed or was cancelled) is
                            // left for a receive to report.
                            if res < 0 || res & POLL_READABLE != 0 {
                                self.readable = true;
                            }
                            if res < 0 || res & POLL_HUNG_UP != 0 {
                                self.hung_up = true;
                            }
                        }
                        Poll::Ready(None) => {
                            // It ended (the kernel ends a multishot whose
                            // completion finds the queue full): re-armed
                            // below, after a look at the socket.
                            self.poll = None;
                            self.readable = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                if !self.readable {
                    if self.poll.is_none() {
                        continue;
                    }
                    return Poll::Pending;
                }
                if local.pool.available() == 0 {
                    // The ring ran dry: counted as a multishot's re-arm after ENOBUFS is.
                    crate::runtime::Stats::bump(&local.stats.recv_rearms_after_enobufs, 1);
                    local.pool.wait_for_buffers(cx.waker());
                    return Poll::Pending;
                }
                let target = self.socket.target();
                let slot = std::task::ready!(uring.submit_multi(cx, MultiKind::Recv, || {
                    with_target!(target, |t| opcode::Recv::new(t, std::ptr::null_mut(), 0)
                        .buf_group(BGID)
                        .flags(libc::MSG_DONTWAIT)
                        .build()
                        .flags(io_uring::squeue::Flags::BUFFER_SELECT))
                }));
                self.readable = false;
                self.slot = Some(slot);
            }
        })
    }

    /// Drops the receive and the poll in flight (their completions are
    /// released by the driver; buffers go back to the pool).
    fn drop_slots(&mut self) {
        let core = self.socket.core();
        let Some(uring) = core.driver.uring() else {
            return;
        };
        let mut unused = Vec::new();
        for slot in [self.slot.take(), self.poll.take()].into_iter().flatten() {
            uring.drop_multi(slot, &mut unused);
        }
        core.pool.give_back(&mut unused);
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
        if self.slot.is_some() || self.poll.is_some() {
            self.drop_slots();
        }
    }
}
