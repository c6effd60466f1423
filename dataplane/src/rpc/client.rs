//! The client side: many calls in flight on one connection.

use super::reader::{FrameReader, ReadError};
use super::{Status, Transport};
use crate::limits;
use crate::net::Gather;
use bytes::{BufMut, Bytes, BytesMut};
use sigma_ep::limits::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, METHOD_ID_MAX};
use sigma_ep::{Header, Kind, StatusCode};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Calls in flight at most; a call beyond waits for one to finish.
    pub calls_in_flight: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            calls_in_flight: limits::RPC_CALLS_IN_FLIGHT_DEFAULT,
        }
    }
}

enum CallState {
    Free,
    Waiting(Option<Waker>),
    Done(Result<Bytes, Status>),
    /// Its deadline passed before a response came (set by the deadline
    /// sweeper); the slot waits for its guard to free it and cancel.
    Expired,
    /// The caller took the result; the slot waits for its guard to free it.
    Answered,
}

struct Slot {
    generation: u64,
    state: CallState,
    /// When a waiting call expires, and the deadline it was given.
    deadline: Option<(Instant, Duration)>,
}

struct Calls {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Request ids below this have been issued (for telling late responses
    /// from forged ones).
    issued: u64,
}

struct Inner<T> {
    stream: T,
    calls: RefCell<Calls>,
    /// Callers waiting for a free call slot, by ticket, oldest first. A freed
    /// slot wakes one; a woken caller that goes away without taking the slot
    /// passes the wake-up on (see `Acquire`).
    room_waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: std::cell::Cell<u64>,
    outgoing: RefCell<Gather>,
    headers: RefCell<BytesMut>,
    writer: RefCell<Option<Waker>>,
    closed: RefCell<Option<Status>>,
    /// The deadline sweeper: one task and one timer per client, armed for
    /// the earliest deadline of the calls in flight, instead of one timer
    /// per call (a timer armed and cancelled per call costs allocations
    /// and two extra completions on the ring).
    sweeper: RefCell<Sweeper>,
}

#[derive(Default)]
struct Sweeper {
    /// Whether the sweeper task runs.
    started: bool,
    /// The time its timer is armed for, if it is armed.
    armed: Option<Instant>,
    /// A call with an earlier deadline than `armed` came: re-arm.
    rearm: bool,
    waker: Option<Waker>,
}

/// An RPC client on one connection. Dropping it closes the connection.
pub struct Client<T: Transport + 'static> {
    inner: Rc<Inner<T>>,
}

impl<T: Transport + 'static> std::fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.inner.stream.peer())
            .finish()
    }
}

fn slot_of(request_id: u64) -> (usize, u64) {
    ((request_id & 0xFFFF) as usize, request_id >> 16)
}

impl<T: Transport + 'static> Client<T> {
    /// A client over a connected stream; starts its reader and writer tasks
    /// on the current core.
    pub fn new(stream: T, config: ClientConfig) -> Client<T> {
        let n = config.calls_in_flight.clamp(1, limits::RPC_CALLS_IN_FLIGHT_MAX);
        let inner = Rc::new(Inner {
            stream,
            calls: RefCell::new(Calls {
                slots: (0..n)
                    .map(|_| Slot {
                        generation: 1,
                        state: CallState::Free,
                        deadline: None,
                    })
                    .collect(),
                free: (0..n as u32).rev().collect(),
                issued: 0,
            }),
            room_waiters: RefCell::new(VecDeque::new()),
            next_ticket: std::cell::Cell::new(0),
            outgoing: RefCell::new(Gather::with_capacity(2 * n.min(64))),
            headers: RefCell::new(BytesMut::with_capacity(64 * FRAME_HEADER_BYTES)),
            writer: RefCell::new(None),
            closed: RefCell::new(None),
            sweeper: RefCell::new(Sweeper::default()),
        });
        crate::spawn(reader_task(inner.clone()));
        crate::spawn(writer_task(inner.clone()));
        Client { inner }
    }

    /// Calls `method` with `payload`; fails with DeadlineExceeded if no
    /// response comes within `deadline`. Dropping the future cancels the call.
    pub async fn call(&self, method: u32, payload: Bytes, deadline: Option<Duration>) -> Result<Bytes, Status> {
        if method > METHOD_ID_MAX {
            return Err(Status::new(
                StatusCode::UnknownMethod,
                format!("method id {method} beyond {METHOD_ID_MAX}"),
            ));
        }
        if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
            return Err(Status::new(
                StatusCode::TooLarge,
                format!(
                    "a request of {} bytes exceeds the {FRAME_PAYLOAD_BYTES_MAX}-byte limit on a frame's payload (FRAME_PAYLOAD_BYTES_MAX)",
                    payload.len()
                ),
            ));
        }
        let request_id = self.acquire().await?;
        let mut guard = CallGuard {
            inner: &self.inner,
            request_id,
            finished: false,
        };
        let deadline_us = deadline.map_or(0, |d| d.as_micros().clamp(1, u128::from(u32::MAX)) as u32);
        self.inner.queue(
            Header::request(request_id, method, payload.len() as u32, deadline_us),
            payload,
        );
        if let Some(d) = deadline {
            // A deadline too far to represent is no local deadline.
            if let Some(at) = Instant::now().checked_add(d) {
                self.inner.set_deadline(request_id, at, d);
            }
        }
        let result = std::future::poll_fn(|cx| self.inner.poll_call(request_id, cx)).await;
        // A local timeout leaves the server working on it: tell it to stop.
        guard.finished = !matches!(&result, Err(s) if s.code == StatusCode::DeadlineExceeded);
        result
    }

    /// Whether the connection is gone: every call from now on fails
    /// `Unavailable` without sending anything.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.borrow().is_some()
    }

    /// Waits for a free call slot; returns the request id it gets.
    async fn acquire(&self) -> Result<u64, Status> {
        Acquire {
            inner: &self.inner,
            ticket: None,
        }
        .await
    }
}

/// A caller waiting for a free call slot.
struct Acquire<'a, T: Transport> {
    inner: &'a Inner<T>,
    /// Its place in `room_waiters`, once it waits.
    ticket: Option<u64>,
}

impl<T: Transport> Acquire<'_, T> {
    /// Whether this caller is still queued (not yet woken).
    fn queued(&self) -> bool {
        self.ticket
            .is_some_and(|t| self.inner.room_waiters.borrow().iter().any(|(w, _)| *w == t))
    }

    fn leave_queue(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.inner.room_waiters.borrow_mut().retain(|(w, _)| *w != t);
        }
    }
}

impl<T: Transport> Future for Acquire<'_, T> {
    type Output = Result<u64, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(status) = &*this.inner.closed.borrow() {
            return Poll::Ready(Err(status.clone()));
        }
        let taken = {
            let mut calls = this.inner.calls.borrow_mut();
            calls.free.pop().map(|index| {
                let slot = &mut calls.slots[index as usize];
                slot.state = CallState::Waiting(None);
                let request_id = (slot.generation << 16) | u64::from(index);
                calls.issued = calls.issued.max(request_id + 1);
                request_id
            })
        };
        match taken {
            Some(request_id) => {
                this.leave_queue();
                Poll::Ready(Ok(request_id))
            }
            None => {
                let mut waiters = this.inner.room_waiters.borrow_mut();
                let queued = this.ticket.and_then(|t| waiters.iter_mut().find(|(w, _)| *w == t));
                match queued {
                    Some((_, waker)) => {
                        if !waker.will_wake(cx.waker()) {
                            *waker = cx.waker().clone();
                        }
                    }
                    // New, or woken and beaten to the slot: queue (again).
                    None => {
                        let t = this.inner.next_ticket.get();
                        this.inner.next_ticket.set(t + 1);
                        this.ticket = Some(t);
                        waiters.push_back((t, cx.waker().clone()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: Transport> Drop for Acquire<'_, T> {
    fn drop(&mut self) {
        if self.ticket.is_none() {
            return;
        }
        if self.queued() {
            self.leave_queue();
        } else {
            // Woken for a free slot it will never take: pass the wake-up on.
            self.ticket = None;
            self.inner.wake_one_waiter();
        }
    }
}

impl<T: Transport + 'static> Drop for Client<T> {
    fn drop(&mut self) {
        self.inner.close(Status::new(StatusCode::Unavailable, "client dropped"));
    }
}

/// Frees a call's slot however the call ends; a call abandoned before its
/// response (dropped or timed out) also sends a Cancel frame.
struct CallGuard<'a, T: Transport> {
    inner: &'a Inner<T>,
    request_id: u64,
    finished: bool,
}

impl<T: Transport> Drop for CallGuard<'_, T> {
    fn drop(&mut self) {
        let (index, _) = slot_of(self.request_id);
        {
            let mut calls = self.inner.calls.borrow_mut();
            let slot = &mut calls.slots[index];
            let answered = matches!(slot.state, CallState::Done(_) | CallState::Answered);
            slot.state = CallState::Free;
            slot.deadline = None;
            slot.generation = (slot.generation + 1) & ((1 << 48) - 1);
            calls.free.push(index as u32);
            if !answered && !self.finished && self.inner.closed.borrow().is_none() {
                drop(calls);
                self.inner.queue(Header::cancel(self.request_id), Bytes::new());
            }
        }
        // One slot came free: one waiter gets it (a woken waiter that goes
        // away passes the wake-up on).
        self.inner.wake_one_waiter();
    }
}

impl<T: Transport> Inner<T> {
    /// Wakes the oldest caller waiting for a call slot, if any.
    fn wake_one_waiter(&self) {
        let waiter = self.room_waiters.borrow_mut().pop_front();
        if let Some((_, waker)) = waiter {
            waker.wake();
        }
    }

    fn queue(&self, header: Header, payload: Bytes) {
        let header = {
            let mut headers = self.headers.borrow_mut();
            if headers.capacity() < FRAME_HEADER_BYTES {
                headers.reserve(64 * FRAME_HEADER_BYTES);
            }
            let mut wire = [0u8; FRAME_HEADER_BYTES];
            header.encode(&mut wire);
            headers.put_slice(&wire);
            headers.split().freeze()
        };
        let mut outgoing = self.outgoing.borrow_mut();
        outgoing.push(header);
        outgoing.push(payload);
        drop(outgoing);
        if let Some(waker) = self.writer.borrow_mut().take() {
            waker.wake();
        }
    }

    fn poll_call(&self, request_id: u64, cx: &mut std::task::Context<'_>) -> Poll<Result<Bytes, Status>> {
        let (index, _) = slot_of(request_id);
        let mut calls = self.calls.borrow_mut();
        let slot = &mut calls.slots[index];
        match &mut slot.state {
            CallState::Done(_) => {
                let CallState::Done(result) = std::mem::replace(&mut slot.state, CallState::Answered) else {
                    unreachable!("the state was just matched as Done")
                };
                Poll::Ready(result)
            }
            CallState::Waiting(waker) => {
                if let Some(status) = &*self.closed.borrow() {
                    return Poll::Ready(Err(status.clone()));
                }
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            CallState::Expired => {
                let d = slot.deadline.map_or(Duration::ZERO, |(_, d)| d);
                Poll::Ready(Err(Status::new(
                    StatusCode::DeadlineExceeded,
                    format!("no response within {d:?}"),
                )))
            }
            CallState::Free | CallState::Answered => unreachable!("polling a call whose slot is free or answered"),
        }
    }

    /// Delivers a response; false if the request id was never issued.
    fn complete(&self, request_id: u64, result: Result<Bytes, Status>) -> bool {
        let (index, generation) = slot_of(request_id);
        let mut calls = self.calls.borrow_mut();
        if request_id >= calls.issued || index >= calls.slots.len() {
            return false;
        }
        let slot = &mut calls.slots[index];
        if slot.generation != generation {
            tracing::debug!(
                request_id,
                "response to a call that was cancelled or timed out; dropped"
            );
            return true;
        }
        if let CallState::Waiting(waker) = &mut slot.state {
            let waker = waker.take();
            slot.state = CallState::Done(result);
            drop(calls);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        true
    }

    fn close(&self, status: Status) {
        if self.closed.borrow().is_some() {
            return;
        }
        *self.closed.borrow_mut() = Some(status);
        let _ = self.stream_shutdown();
        let wakers: Vec<Waker> = {
            let mut calls = self.calls.borrow_mut();
            calls
                .slots
                .iter_mut()
                .filter_map(|s| match &mut s.state {
                    CallState::Waiting(w) => w.take(),
                    _ => None,
                })
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
        let waiters = std::mem::take(&mut *self.room_waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
        if let Some(waker) = self.writer.borrow_mut().take() {
            waker.wake();
        }
        let sweeper = self.sweeper.borrow_mut().waker.take();
        if let Some(waker) = sweeper {
            waker.wake();
        }
    }

    /// Gives a waiting call a deadline; starts the sweeper, or has it
    /// re-arm when this deadline comes before the one it is armed for.
    fn set_deadline(self: &Rc<Self>, request_id: u64, at: Instant, d: Duration)
    where
        T: 'static,
    {
        let (index, _) = slot_of(request_id);
        self.calls.borrow_mut().slots[index].deadline = Some((at, d));
        let mut sweeper = self.sweeper.borrow_mut();
        if !sweeper.started {
            sweeper.started = true;
            sweeper.rearm = true;
            drop(sweeper);
            crate::spawn(sweeper_task(self.clone()));
            return;
        }
        if sweeper.armed.is_none_or(|armed| at < armed) {
            sweeper.rearm = true;
            if let Some(waker) = sweeper.waker.take() {
                waker.wake();
            }
        }
    }

    /// Expires the waiting calls whose deadline is at or before `now`
    /// (waking their callers); returns the earliest deadline left.
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let mut woken = Vec::new();
        let mut earliest: Option<Instant> = None;
        {
            let mut calls = self.calls.borrow_mut();
            for slot in calls.slots.iter_mut() {
                let (CallState::Waiting(waker), Some((at, _))) = (&mut slot.state, slot.deadline) else {
                    continue;
                };
                if at <= now {
                    if let Some(w) = waker.take() {
                        woken.push(w);
                    }
                    slot.state = CallState::Expired;
                } else {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
        earliest
    }

    fn stream_shutdown(&self) -> std::io::Result<()> {
        self.stream.shutdown_both()
    }
}

async fn reader_task<T: Transport>(inner: Rc<Inner<T>>) {
    let mut reader = FrameReader::new();
    let status = loop {
        if inner.closed.borrow().is_some() {
            break None;
        }
        let frame = match reader.next(&inner.stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                break Some(Status::new(
                    StatusCode::Unavailable,
                    format!("{} closed the connection", inner.stream.peer()),
                ))
            }
            Err(ReadError::Malformed(e)) => {
                break Some(Status::new(
                    StatusCode::Malformed,
                    format!("{}: {e}", inner.stream.peer()),
                ))
            }
            Err(e) => {
                break Some(Status::new(
                    StatusCode::Unavailable,
                    format!("{}: {e}", inner.stream.peer()),
                ))
            }
        };
        let header = frame.header;
        let result = match header.kind {
            Kind::Response => Ok(frame.payload),
            Kind::Error => {
                let code = header.status.unwrap_or(StatusCode::Malformed);
                match sigma_ep::codec::decode_error_message(&frame.payload) {
                    Ok(message) => Err(Status::new(code, message)),
                    Err(e) => Err(Status::new(code, format!("(unreadable message: {e})"))),
                }
            }
            kind => {
                break Some(Status::new(
                    StatusCode::Malformed,
                    format!("{}: unexpected {kind:?} frame", inner.stream.peer()),
                ))
            }
        };
        if header.kind == Kind::Error && header.request_id == 0 {
            // About the connection, not a call (no call has id 0): the
            // server is closing it (it could not parse our stream, or it
            // refuses the connection) and says why.
            break Some(
                result
                    .err()
                    .unwrap_or_else(|| Status::new(StatusCode::Malformed, "server reported a malformed frame")),
            );
        }
        if !inner.complete(header.request_id, result) {
            break Some(Status::new(
                StatusCode::Malformed,
                format!(
                    "{}: response to request id {} that was never issued",
                    inner.stream.peer(),
                    header.request_id
                ),
            ));
        }
    };
    if let Some(status) = status {
        tracing::warn!(%status, "RPC client connection closed");
        inner.close(status);
    }
}

/// Fails calls whose deadline passed: sleeps until the earliest deadline in
/// flight, expires what is due, and re-arms; a call with an earlier
/// deadline than the armed one wakes it to re-arm sooner. Warm calls with
/// deadlines later than the armed one (the usual case: equal deadlines)
/// touch no timer at all.
async fn sweeper_task<T: Transport>(inner: Rc<Inner<T>>) {
    loop {
        if inner.closed.borrow().is_some() {
            break;
        }
        let now = Instant::now();
        let next = inner.expire_due(now);
        {
            let mut sweeper = inner.sweeper.borrow_mut();
            sweeper.armed = next;
            sweeper.rearm = false;
        }
        let sleep = next.map(|at| crate::sleep(at.saturating_duration_since(now)));
        let mut sleep = std::pin::pin!(sleep);
        std::future::poll_fn(|cx| {
            if inner.closed.borrow().is_some() {
                return Poll::Ready(());
            }
            let mut sweeper = inner.sweeper.borrow_mut();
            if sweeper.rearm {
                return Poll::Ready(());
            }
            if let Some(sleep) = sleep.as_mut().as_pin_mut() {
                if sleep.poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            match &sweeper.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => sweeper.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await;
    }
}

async fn writer_task<T: Transport>(inner: Rc<Inner<T>>) {
    let mut sending = Gather::with_capacity(64);
    loop {
        let ready = std::future::poll_fn(|cx| {
            if inner.closed.borrow().is_some() {
                return Poll::Ready(false);
            }
            let mut outgoing = inner.outgoing.borrow_mut();
            if outgoing.is_empty() {
                *inner.writer.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            sending.append(&mut outgoing);
            Poll::Ready(true)
        })
        .await;
        if !ready {
            break;
        }
        let (res, g) = inner.stream.send_all_gather(sending).await;
        sending = g;
        sending.clear();
        if let Err(e) = res {
            inner.close(Status::new(
                StatusCode::Unavailable,
                format!("{}: send failed: {e}", inner.stream.peer()),
            ));
            break;
        }
    }
}
