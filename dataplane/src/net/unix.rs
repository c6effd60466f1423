//! Unix-domain stream listeners and streams, with fd passing.

use super::socket::Socket;
use crate::op::accept::Incoming;
use crate::sys::{self, RawAddr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// A Unix stream listener on the current core. Removes its socket file on
/// drop, if the file at its path is still the one it bound (another process
/// may have replaced it since).
#[derive(Debug)]
pub struct UnixListener {
    socket: Socket,
    path: PathBuf,
    /// Device and inode of the socket file it bound, if it could tell.
    bound: Option<(u64, u64)>,
}

/// The device and inode of the file at `path` (not following a symlink).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl UnixListener {
    /// Binds to `path` (which must not exist) and listens.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let path = path.as_ref().to_path_buf();
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, Socket::wants_nonblocking())?;
        sys::bind(fd.as_raw_fd(), &RawAddr::from_path(&path)?)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
        sys::listen(fd.as_raw_fd(), 1024)?;
        let bound = file_id(&path);
        Ok(UnixListener {
            socket: Socket::adopt(fd)?,
            path,
            bound,
        })
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<UnixStream> {
        let fd = crate::op::accept::accept(&self.socket).await?;
        UnixStream::from_owned(fd)
    }

    /// Accepted connections (multishot accept on io_uring).
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming {
            listener: self,
            accept: Incoming::new(),
        }
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        if self.bound.is_some() && file_id(&self.path) == self.bound {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connections accepted by a [`UnixListener`].
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
    accept: Incoming,
}

impl std::fmt::Debug for UnixIncoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixIncoming").field("listener", self.listener).finish()
    }
}

impl UnixIncoming<'_> {
    /// The next connection.
    pub async fn next(&mut self) -> io::Result<UnixStream> {
        let fd = self.accept.next(&self.listener.socket).await?;
        UnixStream::from_owned(fd)
    }
}

/// A Unix stream connection on the current core.
#[derive(Debug)]
pub struct UnixStream {
    socket: Socket,
}

impl UnixStream {
    /// Connects to the listener at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let addr = RawAddr::from_path(path.as_ref())?;
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM, Socket::wants_nonblocking())?;
        let socket = Socket::adopt(fd)?;
        crate::op::connect::connect(&socket, addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", path.as_ref().display())))?;
        Ok(UnixStream { socket })
    }

    /// A connected pair, both on the current core.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = sys::socketpair(Socket::wants_nonblocking())?;
        Ok((UnixStream::from_owned(a)?, UnixStream::from_owned(b)?))
    }

    /// Adopts a connected Unix stream socket.
    pub fn from_owned(fd: OwnedFd) -> io::Result<UnixStream> {
        Ok(UnixStream {
            socket: Socket::adopt(fd)?,
        })
    }

    /// Sends `bufs` in one message with duplicates of `fds` (SCM_RIGHTS).
    pub async fn send_with_fds<B: crate::buf::IoBuf + Unpin>(
        &self,
        bufs: Vec<B>,
        fds: &[BorrowedFd<'_>],
    ) -> crate::buf::BufResult<usize, Vec<B>> {
        crate::op::sendmsg::sendmsg(&self.socket, bufs, fds).await
    }

    /// Receives into `buf` and takes ownership of any fds that came along.
    pub async fn recv_with_fds<B: crate::buf::IoBufMut + Unpin>(&self, buf: B) -> super::RecvMsgResult<B> {
        crate::op::recvmsg::recvmsg(&self.socket, buf).await
    }

    super::stream_methods!(true);
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
