//! RECVMSG into an owned buffer, receiving passed fds (SCM_RIGHTS).

use super::sendmsg::{control_space, MsgHeader};
use super::{epoll_retry, with_target, Op, Target, UringOp};
use crate::buf::IoBufMut;
use crate::driver::epoll::Interest;
use crate::limits;
use crate::net::socket::Socket;
use io_uring::{opcode, squeue};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Bytes received and the fds that came with them.
pub type RecvMsgResult<B> = (io::Result<(usize, Vec<OwnedFd>)>, B);

struct RecvMsg<B> {
    target: Target,
    buf: B,
    msg: Box<MsgHeader>,
}

fn header_for<B: IoBufMut>(buf: &mut B) -> Box<MsgHeader> {
    let iov = vec![libc::iovec {
        iov_base: buf.stable_mut_ptr().cast(),
        iov_len: buf.bytes_total(),
    }];
    MsgHeader::new(iov, control_space(limits::SCM_FDS_MAX))
}

/// Takes ownership of the fds in the control data of a received message.
fn take_fds(msg: &MsgHeader) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    // SAFETY: the kernel wrote msg_controllen bytes of well-formed control
    // messages into the control buffer; CMSG_* walk them within that length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg.hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data_bytes = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..data_bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg.hdr, cmsg);
        }
    }
    if msg.hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        // The fds that fit are closed with `fds`; the rest were never installed.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {} fds passed in one message", limits::SCM_FDS_MAX),
        ));
    }
    Ok(fds)
}

fn finish<B: IoBufMut>(res: io::Result<usize>, mut buf: B, msg: &MsgHeader) -> RecvMsgResult<B> {
    match res {
        Ok(n) => {
            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
            unsafe { buf.set_init(n) };
            (take_fds(msg).map(|fds| (n, fds)), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

impl<B: IoBufMut + Unpin> UringOp for RecvMsg<B> {
    type Output = RecvMsgResult<B>;
    fn entry(&mut self) -> squeue::Entry {
        let hdr = &mut self.msg.hdr as *mut libc::msghdr;
        with_target!(self.target, |t| opcode::RecvMsg::new(t, hdr)
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build())
    }
    fn complete(self, res: i32, _flags: u32) -> RecvMsgResult<B> {
        let res = crate::sys::cqe_result(res).map(|n| n as usize);
        finish(res, self.buf, &self.msg)
    }
}

/// Receives into `buf` and takes the fds passed with the message.
pub(crate) async fn recvmsg<B: IoBufMut + Unpin>(socket: &Socket, mut buf: B) -> RecvMsgResult<B> {
    let mut msg = header_for(&mut buf);
    if socket.is_uring() {
        return Op::new(RecvMsg {
            target: socket.target(),
            buf,
            msg,
        })
        .await;
    }
    let fd = socket.as_raw_fd();
    let res = epoll_retry(socket.token(), Interest::Read, || {
        // SAFETY: the header points into `buf` and `msg`, both alive.
        let n = unsafe { libc::recvmsg(fd, &mut msg.hdr, libc::MSG_CMSG_CLOEXEC) };
        crate::sys::cvt_isize(n)
    })
    .await;
    finish(res, buf, &msg)
}
