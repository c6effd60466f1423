//! SENDMSG of a gather list of `Bytes` (e.g. a frame header and its payload)
//! in one system call, with no copy of the payloads and no allocation once
//! the list has been used: its iovec array and message header are kept and
//! reused across sends.

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::buf::BufResult;
use crate::driver::epoll::Interest;
use crate::net::socket::{SendTicket, Socket};
use bytes::{Buf, Bytes};
use io_uring::{opcode, squeue};
use std::os::fd::AsRawFd;

/// A reusable list of buffers to send in one message.
pub struct Gather {
    bufs: Vec<Bytes>,
    iov: Vec<libc::iovec>,
    // On the heap: the kernel reads it when the entry is submitted.
    hdr: Box<libc::msghdr>,
}

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather")
            .field("bufs", &self.bufs.len())
            .field("bytes", &self.len())
            .finish()
    }
}

impl Default for Gather {
    fn default() -> Self {
        Gather::with_capacity(4)
    }
}

impl Gather {
    /// An empty list with room for `n` buffers.
    pub fn with_capacity(n: usize) -> Gather {
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        Gather {
            bufs: Vec::with_capacity(n),
            iov: Vec::with_capacity(n),
            hdr: Box::new(hdr),
        }
    }

    /// Appends a buffer (empty buffers are skipped).
    pub fn push(&mut self, buf: Bytes) {
        if !buf.is_empty() {
            self.bufs.push(buf);
        }
    }

    /// The buffers left to send, in order (for sending them by other means,
    /// e.g. a transport on another executor).
    pub fn bufs(&self) -> &[Bytes] {
        &self.bufs
    }

    /// Total bytes left to send.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(Bytes::len).sum()
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Drops everything (keeping the capacity).
    pub fn clear(&mut self) {
        self.bufs.clear();
    }

    /// Moves every buffer of `other` to the end of this list.
    pub fn append(&mut self, other: &mut Gather) {
        self.bufs.append(&mut other.bufs);
    }

    /// Forgets the first `n` bytes (after a partial send).
    pub fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for buf in &mut self.bufs {
            if n >= buf.len() {
                n -= buf.len();
                done += 1;
            } else {
                buf.advance(n);
                break;
            }
        }
        self.bufs.drain(..done);
    }

    /// Points the message header at the current buffers.
    fn prepare(&mut self) -> *const libc::msghdr {
        self.iov.clear();
        for buf in self.bufs.iter().take(libc::UIO_MAXIOV as usize) {
            self.iov.push(libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            });
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = self.iov.len();
        &*self.hdr
    }
}

struct SendGather {
    target: Target,
    gather: Gather,
    _ticket: SendTicket,
}

impl UringOp for SendGather {
    type Output = BufResult<usize, Gather>;
    fn entry(&mut self) -> squeue::Entry {
        let hdr = self.gather.prepare();
        with_target!(self.target, |t| opcode::SendMsg::new(t, hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build())
    }
    fn complete(self, res: i32, _flags: u32) -> BufResult<usize, Gather> {
        (crate::sys::cqe_result(res).map(|n| n as usize), self.gather)
    }
}

/// Sends as much of `gather` as the socket takes in one message.
pub(crate) async fn send_gather(socket: &Socket, mut gather: Gather) -> BufResult<usize, Gather> {
    if socket.is_uring() {
        // Never ahead of a dropped ring send of this socket (`SendsInFlight`).
        socket.sends().idle().await;
        return Op::new(SendGather {
            target: socket.target(),
            gather,
            _ticket: socket.sends().ticket(),
        })
        .await;
    }
    let fd = socket.as_raw_fd();
    let res = epoll_retry(socket.token(), Interest::Write, || {
        let hdr = gather.prepare();
        // SAFETY: the header points at the iovecs and buffers of `gather`, all alive.
        let n = unsafe { libc::sendmsg(fd, hdr, libc::MSG_NOSIGNAL) };
        crate::sys::cvt_isize(n)
    })
    .await;
    (res, gather)
}

/// Sends all of `gather`; returns it emptied, for reuse.
pub(crate) async fn send_gather_all(socket: &Socket, mut gather: Gather) -> BufResult<(), Gather> {
    while !gather.is_empty() {
        let (res, g) = send_gather(socket, gather).await;
        gather = g;
        match res {
            Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), gather),
            Ok(n) => gather.advance(n),
            Err(e) => return (Err(e), gather),
        }
    }
    (Ok(()), gather)
}
