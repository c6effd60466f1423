//! sigmad's connection ceiling: how many admin connections it serves at
//! once, and how it turns away the ones past that.
//!
//! A connection past the limit is accepted, told why in an error frame
//! (request id 0, status `overloaded`, which every σ RPC client takes as
//! the server closing the connection and prints; not `unavailable`, which
//! a client takes as a change's fate unknown: a refused request was never
//! applied), and closed once the
//! client has read it (it closes its end) or after [`REFUSE_LINGER`]. Only
//! [`REFUSING_MAX`] such connections linger at a time; past that, a refused
//! connection is closed at once. Refusals are logged at most once per
//! [`LOG_EVERY`], with how many there were since the last line.
//!
//! Each connection sigmad serves holds at most two data-plane operations
//! while it waits (its idle timer, and its receive or, while a watch is
//! pending, the watch's timer), so the default limit
//! keeps idle connections well inside a core's operations in flight
//! (`CoreStats::ops_in_flight_max`, 32,447 by default): new work is never
//! starved by idle connections.

use crate::log_limit::LogLimit;
use bytes::{Bytes, BytesMut};
use sigma_dataplane::net::Gather;
use sigma_dataplane::rpc::Transport;
use sigma_ep::frame::Header;
use sigma_ep::limits::FRAME_HEADER_BYTES;
use sigma_ep::StatusCode;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Connections sigmad serves at once by default.
pub const CONNECTIONS_DEFAULT: usize = 12_000;
/// The largest `--max-connections` accepted: two operations each must fit a
/// core's operations in flight with room to spare.
pub const CONNECTIONS_MAX: usize = 15_000;
/// How long a refused connection stays open for its client to read why.
pub const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once, at most.
pub const REFUSING_MAX: usize = 64;
/// At most one log line about refused connections per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// fds sigmad keeps for itself beyond its connections (store files, the
/// ring, etcd's sockets, logs).
pub const FDS_RESERVED: u64 = 256;

/// Raises this process's soft open-file limit to its hard limit, and
/// returns the connections that limit leaves room for.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
    }
    Ok(limit.rlim_cur.saturating_sub(FDS_RESERVED))
}

/// The connections being served, against the limit; single-threaded (one
/// core or one control thread serves them all).
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: Cell<usize>,
    refusing: Cell<usize>,
    /// One line per [`LOG_EVERY`] about refusals.
    log: RefCell<LogLimit>,
    what: String,
}

/// One connection counted against the limit, until dropped.
#[derive(Debug)]
pub struct Slot(Rc<ConnLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

impl ConnLimit {
    /// At most `max` connections at once; `what` names the server in the
    /// refusal (e.g. "sigmad at sigma-data/sigmad.sock").
    pub fn new(max: usize, what: impl Into<String>) -> Rc<ConnLimit> {
        Rc::new(ConnLimit {
            max,
            open: Cell::new(0),
            refusing: Cell::new(0),
            log: RefCell::new(LogLimit::new(1, LOG_EVERY)),
            what: what.into(),
        })
    }

    /// Connections served now.
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a new connection, or `None` past the limit (the refusal
    /// is counted for the log).
    pub fn admit(self: &Rc<Self>) -> Option<Slot> {
        if self.open.get() >= self.max {
            self.note_refused();
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(Slot(self.clone()))
    }

    fn note_refused(&self) {
        let (admitted, suppressed) = self.log.borrow_mut().admit(Instant::now());
        if admitted {
            tracing::warn!(
                refused = suppressed + 1,
                open = self.open.get(),
                max = self.max,
                "refusing admin connections: {} serves at most {} at once (--max-connections); this line repeats at most every {:?}",
                self.what,
                self.max,
                LOG_EVERY
            );
        }
    }

    /// Why a refused connection is refused, as its client prints it.
    pub fn refusal(&self) -> String {
        format!(
            "{} serves at most {} connections at once (its --max-connections) and all are in use; try again later",
            self.what, self.max
        )
    }

    /// Whether a refused connection may linger to be told why (else it is
    /// closed at once); if so, it counts until `done_refusing`.
    pub fn start_refusing(&self) -> bool {
        if self.refusing.get() >= REFUSING_MAX {
            return false;
        }
        self.refusing.set(self.refusing.get() + 1);
        true
    }

    /// A lingering refused connection closed.
    pub fn done_refusing(&self) {
        self.refusing.set(self.refusing.get() - 1);
    }
}

/// The error frame that refuses a connection: request id 0, `overloaded`,
/// `message` (cut to what an error frame carries).
pub fn refusal_frame(message: &str) -> (Bytes, Bytes) {
    let payload = Bytes::copy_from_slice(sigma_ep::codec::truncate_error_message(message).as_bytes());
    let mut header = [0u8; FRAME_HEADER_BYTES];
    Header::error(0, 0, StatusCode::Overloaded, payload.len() as u32).encode(&mut header);
    (Bytes::copy_from_slice(&header), payload)
}

/// Tells the client of `stream` why it is refused, then waits until it
/// closes its end or [`REFUSE_LINGER`] passes (so that its request, sent
/// meanwhile, does not meet a closed socket before it reads the answer).
pub async fn refuse<T: Transport>(stream: &T, limit: &ConnLimit) {
    let (header, payload) = refusal_frame(&limit.refusal());
    let mut gather = Gather::default();
    gather.push(header);
    gather.push(payload);
    if stream.send_all_gather(gather).await.0.is_err() {
        return;
    }
    let _ = sigma_dataplane::timeout(REFUSE_LINGER, async {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            buf.clear();
            let (res, back) = stream.recv_buf(buf).await;
            buf = back;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
    })
    .await;
}
