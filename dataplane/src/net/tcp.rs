//! TCP listeners and streams.

use super::socket::Socket;
use crate::op::accept::Incoming;
use crate::sys::{self, RawAddr};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A TCP listener on the current core.
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
}

impl TcpListener {
    /// Binds and listens (SO_REUSEADDR, backlog 1024).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let fd = sys::socket(domain, libc::SOCK_STREAM, Socket::wants_nonblocking())?;
        sys::setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        sys::bind(fd.as_raw_fd(), &RawAddr::from_inet(&addr))?;
        sys::listen(fd.as_raw_fd(), 1024)?;
        Ok(TcpListener {
            socket: Socket::adopt(fd)?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.socket.as_raw_fd())
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let fd = crate::op::accept::accept(&self.socket).await?;
        TcpStream::from_owned(fd)
    }

    /// Accepted connections, one after another: a multishot accept on
    /// io_uring (one submission for many connections).
    pub fn incoming(&self) -> TcpIncoming<'_> {
        TcpIncoming {
            listener: self,
            accept: Incoming::new(),
        }
    }
}

/// Connections accepted by a [`TcpListener`].
pub struct TcpIncoming<'a> {
    listener: &'a TcpListener,
    accept: Incoming,
}

impl std::fmt::Debug for TcpIncoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpIncoming").field("listener", self.listener).finish()
    }
}

impl TcpIncoming<'_> {
    /// The next connection.
    pub async fn next(&mut self) -> io::Result<TcpStream> {
        let fd = self.accept.next(&self.listener.socket).await?;
        TcpStream::from_owned(fd)
    }
}

/// A TCP connection on the current core (TCP_NODELAY set).
#[derive(Debug)]
pub struct TcpStream {
    socket: Socket,
}

impl TcpStream {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let fd = sys::socket(domain, libc::SOCK_STREAM, Socket::wants_nonblocking())?;
        let socket = Socket::adopt(fd)?;
        crate::op::connect::connect(&socket, RawAddr::from_inet(&addr)).await?;
        sys::setsockopt_int(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        Ok(TcpStream { socket })
    }

    /// Adopts a connected socket (e.g. from `std::net::TcpStream::into`).
    pub fn from_owned(fd: OwnedFd) -> io::Result<TcpStream> {
        sys::setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        Ok(TcpStream {
            socket: Socket::adopt(fd)?,
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.socket.as_raw_fd())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.socket.as_raw_fd())
    }

    // No wake poll: TCP signals write space only after a full send buffer.
    super::stream_methods!(false);
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
