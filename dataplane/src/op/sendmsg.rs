//! SENDMSG: a vectored send of owned buffers, optionally passing fds
//! (SCM_RIGHTS).

use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::buf::{BufResult, IoBuf};
use crate::driver::epoll::Interest;
use crate::limits;
use crate::net::socket::{SendTicket, Socket};
use io_uring::{opcode, squeue};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// The message header and what it points to, on the heap (the kernel reads
/// them when the entry is submitted).
pub(crate) struct MsgHeader {
    pub(crate) hdr: libc::msghdr,
    pub(crate) iov: Vec<libc::iovec>,
    /// u64 words keep the control buffer aligned for cmsghdr.
    pub(crate) control: Vec<u64>,
}

/// Bytes of control buffer for `fds` descriptors.
pub(crate) fn control_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<libc::c_int>()) as u32) as usize }
}

impl MsgHeader {
    pub(crate) fn new(iov: Vec<libc::iovec>, control_bytes: usize) -> Box<MsgHeader> {
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut msg = Box::new(MsgHeader {
            hdr,
            iov,
            control: vec![0u64; control_bytes.div_ceil(8)],
        });
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = msg.iov.len();
        if control_bytes > 0 {
            msg.hdr.msg_control = msg.control.as_mut_ptr().cast();
            msg.hdr.msg_controllen = control_bytes;
        }
        msg
    }
}

fn build_header<B: IoBuf>(bufs: &[B], fds: &[OwnedFd]) -> Box<MsgHeader> {
    let iov = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.stable_ptr() as *mut libc::c_void,
            iov_len: b.bytes_init(),
        })
        .collect();
    let control_bytes = if fds.is_empty() { 0 } else { control_space(fds.len()) };
    let msg = MsgHeader::new(iov, control_bytes);
    if !fds.is_empty() {
        // SAFETY: the control buffer holds CMSG_SPACE(fds) bytes, so the first
        // header and its data fit; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg.hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * std::mem::size_of::<libc::c_int>()) as u32) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    msg
}

struct SendMsg<B> {
    target: Target,
    bufs: Vec<B>,
    msg: Box<MsgHeader>,
    // Duplicates of the fds being passed, open until the kernel is done.
    _fds: Vec<OwnedFd>,
    _ticket: SendTicket,
}

impl<B: IoBuf + Unpin> UringOp for SendMsg<B> {
    type Output = BufResult<usize, Vec<B>>;
    fn entry(&mut self) -> squeue::Entry {
        let hdr = &self.msg.hdr as *const libc::msghdr;
        with_target!(self.target, |t| opcode::SendMsg::new(t, hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build())
    }
    fn complete(self, res: i32, _flags: u32) -> BufResult<usize, Vec<B>> {
        (crate::sys::cqe_result(res).map(|n| n as usize), self.bufs)
    }
}

/// Sends `bufs` in one message, passing duplicates of `fds` along.
pub(crate) async fn sendmsg<B: IoBuf + Unpin>(
    socket: &Socket,
    bufs: Vec<B>,
    fds: &[BorrowedFd<'_>],
) -> BufResult<usize, Vec<B>> {
    if fds.len() > limits::SCM_FDS_MAX {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} fds in one message, at most {}", fds.len(), limits::SCM_FDS_MAX),
        );
        return (Err(e), bufs);
    }
    let fds: Vec<OwnedFd> = match fds.iter().map(|fd| fd.try_clone_to_owned()).collect() {
        Ok(fds) => fds,
        Err(e) => return (Err(e), bufs),
    };
    let msg = build_header(&bufs, &fds);
    if socket.is_uring() {
        // Never ahead of a dropped ring send of this socket (`SendsInFlight`).
        socket.sends().idle().await;
        return Op::new(SendMsg {
            target: socket.target(),
            bufs,
            msg,
            _fds: fds,
            _ticket: socket.sends().ticket(),
        })
        .await;
    }
    let fd = socket.as_raw_fd();
    let res = epoll_retry(socket.token(), Interest::Write, || {
        // SAFETY: the header points into `bufs`, `msg` and `fds`, all alive.
        let n = unsafe { libc::sendmsg(fd, &msg.hdr, libc::MSG_NOSIGNAL) };
        crate::sys::cvt_isize(n)
    })
    .await;
    drop(fds);
    (res, bufs)
}
