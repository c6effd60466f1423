//! Sockets on the data plane: TCP and Unix listeners and streams.
//!
//! Every method is an owned-buffer operation: buffers go in by value and
//! come back with the result. Sockets are `!Send`; they belong to the core
//! that created them.

pub(crate) mod socket;
mod tcp;
mod unix;

pub use crate::op::gather::Gather;
pub use crate::op::recv_multi::RecvStream;
pub use crate::op::recvmsg::RecvMsgResult;
pub use socket::Socket;
pub use tcp::{TcpIncoming, TcpListener, TcpStream};
pub use unix::{UnixIncoming, UnixListener, UnixStream};

/// Methods every stream type has, as thin wrappers over the operations.
/// `$wake_poll`: whether `recv_stream` arms a wake poll for this kind of
/// stream on a core set to (`op/recv_multi.rs`).
macro_rules! stream_methods {
    ($wake_poll:expr) => {
        /// Receives into `buf`; its contents become what arrived. `Ok(0)` is EOF.
        pub async fn recv<B: $crate::buf::IoBufMut + Unpin>(&self, buf: B) -> $crate::buf::BufResult<usize, B> {
            $crate::op::recv::recv(&self.socket, buf).await
        }

        /// Receives exactly `len` bytes into `buf` (whose capacity must be at
        /// least `len`), failing with UnexpectedEof if the peer closes first.
        pub async fn recv_exact(&self, mut buf: Vec<u8>, len: usize) -> $crate::buf::BufResult<(), Vec<u8>> {
            assert!(buf.capacity() >= len, "recv_exact: buffer capacity below len");
            buf.clear();
            let mut chunk = Vec::with_capacity(0);
            while buf.len() < len {
                if chunk.capacity() < len - buf.len() {
                    chunk = Vec::with_capacity(len - buf.len());
                }
                let (res, c) = self.recv(chunk).await;
                chunk = c;
                match res {
                    Ok(0) => return (Err(std::io::ErrorKind::UnexpectedEof.into()), buf),
                    Ok(_) => buf.extend_from_slice(&chunk),
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        }

        /// Sends some of `buf`; returns how many bytes went out.
        pub async fn send<B: $crate::buf::IoBuf + Unpin>(&self, buf: B) -> $crate::buf::BufResult<usize, B> {
            $crate::op::send::send(&self.socket, buf, 0).await
        }

        /// Sends all of `buf`.
        pub async fn send_all<B: $crate::buf::IoBuf + Unpin>(&self, buf: B) -> $crate::buf::BufResult<(), B> {
            let mut buf = buf;
            let mut offset = 0;
            let total = $crate::buf::IoBuf::bytes_init(&buf);
            while offset < total {
                let (res, b) = $crate::op::send::send(&self.socket, buf, offset).await;
                buf = b;
                match res {
                    Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => offset += n,
                    Err(e) => return (Err(e), buf),
                }
            }
            (Ok(()), buf)
        }

        /// Sends several buffers in one vectored message (e.g. a header and a
        /// payload, without copying either); returns bytes sent.
        pub async fn send_vectored<B: $crate::buf::IoBuf + Unpin>(
            &self,
            bufs: Vec<B>,
        ) -> $crate::buf::BufResult<usize, Vec<B>> {
            $crate::op::sendmsg::sendmsg(&self.socket, bufs, &[]).await
        }

        /// Sends every buffer of `gather` (e.g. a frame header and its
        /// payload) without copying them; returns the list emptied, for reuse.
        pub async fn send_gather(
            &self,
            gather: $crate::op::gather::Gather,
        ) -> $crate::buf::BufResult<(), $crate::op::gather::Gather> {
            $crate::op::gather::send_gather_all(&self.socket, gather).await
        }

        /// A stream of received chunks, each a `Bytes` pointing straight into
        /// the core's receive buffers (multishot recv on io_uring; for a
        /// Unix stream on a core that parks at once, with a wake poll beside
        /// it: `CoreBuilder::wake_polls`).
        pub fn recv_stream(&self) -> $crate::net::RecvStream<'_> {
            $crate::net::RecvStream::new(&self.socket, $wake_poll)
        }

        /// Shuts down one or both directions.
        pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
            $crate::sys::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.socket), how)
        }

        /// The underlying socket.
        pub fn socket(&self) -> &$crate::net::Socket {
            &self.socket
        }
    };
}
pub(crate) use stream_methods;
