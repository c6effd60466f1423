//! RPC over any data-plane stream.
//!
//! Frames are σEP frames (`sigma_ep::frame`): a 32-byte header and a
//! payload. A [`Client`] keeps many calls in flight on one connection,
//! matched by request id, each with its own deadline and cancelled when its
//! future is dropped; a dedicated writer task sends queued frames together
//! in one gather send. A server ([`serve`]) reads requests, dispatches them
//! by method id to a [`Service`] — plain async Rust — and answers with a
//! gather send of header and payload. Request payloads reach handlers as
//! `Bytes` sliced out of the connection's receive buffer; nothing is copied
//! between the kernel and the handler, and once a connection is warm a call
//! allocates nothing on either side.
//!
//! Requests on one server connection are handled one after another, in
//! order; concurrency comes from many connections and from the client
//! pipelining calls. Typed services sit on top ([`typed`]).

mod client;
mod reader;
mod server;
pub mod typed;

pub use client::{Client, ClientConfig};
pub use server::{serve, serve_with, ConnectionError, Reply, ServerConfig, Service};

use crate::buf::BufResult;
use crate::net::{Gather, TcpStream, UnixStream};
use bytes::BytesMut;
use sigma_ep::StatusCode;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    /// The kind of failure.
    pub code: StatusCode,
    /// What happened, for people.
    pub message: String,
}

impl Status {
    /// A status with a message.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// The handler failed.
    pub fn handler(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Handler, message)
    }

    /// No such method.
    pub fn unknown_method(method: u32) -> Status {
        Status::new(StatusCode::UnknownMethod, format!("no handler for method {method}"))
    }
}

/// A stream RPC can run over: any connected data-plane stream.
#[allow(async_fn_in_trait)] // Futures are core-local (thread-per-core): no Send bound wanted.
pub trait Transport {
    /// Receives into `buf` (contents become what arrived; `Ok(0)` is EOF).
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut>;
    /// Sends all of `gather`, returning it emptied.
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather>;
    /// Who is at the other end, for logs.
    fn peer(&self) -> String;
    /// Shuts both directions down (pending receives end with EOF).
    fn shutdown_both(&self) -> std::io::Result<()>;
    /// Sleeps until `at` on the executor this stream runs on (a server's
    /// idle and frame timers); the data-plane core's timer unless
    /// overridden. Nothing is armed before the first poll.
    async fn sleep_until(&self, at: std::time::Instant) {
        crate::sleep(at.saturating_duration_since(std::time::Instant::now())).await;
    }
}

impl Transport for TcpStream {
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        self.recv(buf).await
    }
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather> {
        self.send_gather(gather).await
    }
    fn peer(&self) -> String {
        self.peer_addr()
            .map_or_else(|e| format!("tcp peer unknown ({e})"), |a| a.to_string())
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
}

impl Transport for UnixStream {
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        self.recv(buf).await
    }
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather> {
        self.send_gather(gather).await
    }
    fn peer(&self) -> String {
        format!("unix fd {}", std::os::fd::AsRawFd::as_raw_fd(self))
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
}

impl<T: Transport> Transport for std::rc::Rc<T> {
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        (**self).recv_buf(buf).await
    }
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather> {
        (**self).send_all_gather(gather).await
    }
    fn peer(&self) -> String {
        (**self).peer()
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        (**self).shutdown_both()
    }
    async fn sleep_until(&self, at: std::time::Instant) {
        (**self).sleep_until(at).await;
    }
}
