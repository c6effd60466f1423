//! Owned-buffer IO operations, one file per operation.
//!
//! On io_uring an operation is an [`Op`]: a future that owns everything the
//! kernel reads or writes (buffers, addresses, message headers), submits one
//! entry when first polled, and hands the owned data back with the result.
//! **Rule for operation types:** every byte the kernel touches after the
//! entry is pushed must live on the heap, owned by the operation value, so
//! that moving the value (into the driver, when its future is dropped) does
//! not move that memory. Dropping an `Op` whose operation is in flight is
//! safe anywhere on its thread, even after its core's `block_on` returned:
//! it holds its core, whose driver keeps the owned data until the kernel's
//! completion arrives and submits a cancel (see `driver/uring.rs`).
//! Operations are `!Send`.
//!
//! On epoll the same functions try the system call and wait for readiness on
//! EAGAIN; nothing is in flight in the kernel, so dropping is trivially safe.
//! File reads and writes are the exception: epoll cannot wait for a file, so
//! they run on the core's file-IO pool ([`FileOp`], `driver/blocking.rs`),
//! whose jobs own their buffers as ring operations do.

pub(crate) mod accept;
pub(crate) mod connect;
pub(crate) mod gather;
pub(crate) mod nop;
pub(crate) mod read;
pub(crate) mod recv;
pub(crate) mod recv_multi;
pub(crate) mod recvmsg;
pub(crate) mod send;
pub(crate) mod sendmsg;
pub(crate) mod timeout;
pub(crate) mod write;

use crate::driver::blocking::{Completion, FileJob, Submit};
use crate::driver::epoll::Interest;
use crate::runtime::{with_local, Local, Stats};
use io_uring::squeue;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where an operation finds its file: a fixed-file slot or a plain fd.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds an entry with `$builder` applied to the target as an io-uring
/// `types::Fd` or `types::Fixed`.
macro_rules! with_target {
    ($target:expr, |$t:ident| $build:expr) => {
        match $target {
            $crate::op::Target::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $build
            }
            $crate::op::Target::Fixed(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $build
            }
        }
    };
}
pub(crate) use with_target;

/// An operation type for the io_uring back end.
pub(crate) trait UringOp: Unpin + 'static {
    /// What the operation resolves to.
    type Output;
    /// The submission entry. Called once, when the operation is submitted.
    fn entry(&mut self) -> squeue::Entry;
    /// Turns the completion into the output, handing back owned data.
    fn complete(self, res: i32, flags: u32) -> Self::Output;
}

/// A dropped operation's data is released with its completion: completing
/// it and dropping the output frees the buffers it owned and whatever the
/// completion carries (an accepted connection's fd is closed).
impl<T: UringOp> crate::driver::uring::Orphan for T {
    fn release(self: Box<Self>, res: i32, flags: u32) {
        drop((*self).complete(res, flags));
    }
}

/// A single-shot io_uring operation in flight.
///
/// From its first poll it holds its core (`core`): wherever and whenever the
/// operation is dropped (inside its core's `block_on`, after it returned,
/// at shutdown), its owned data goes to that core's driver, which keeps it
/// until the kernel's completion. Holding an `Rc` also makes every
/// operation, and every future that holds one, `!Send`: an operation cannot
/// be moved to another thread, where it would touch another core's ring.
pub(crate) struct Op<T: UringOp> {
    data: Option<T>,
    slot: Option<u32>,
    core: Option<Rc<Local>>,
}

impl<T: UringOp> Op<T> {
    pub(crate) fn new(data: T) -> Self {
        Op {
            data: Some(data),
            slot: None,
            core: None,
        }
    }

    /// An operation of `core`, for callers that already hold it.
    pub(crate) fn with_core(core: Rc<Local>, data: T) -> Self {
        Op {
            data: Some(data),
            slot: None,
            core: Some(core),
        }
    }
}

impl<T: UringOp> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        // Found once through the thread's current core, then held: later
        // polls and the drop reach the driver without a thread-local lookup.
        let core = this.core.get_or_insert_with(|| {
            crate::runtime::try_local().expect("not on a σ data-plane core: poll operations inside Core::block_on")
        });
        let uring = core
            .driver
            .uring()
            .expect("io_uring operation on a core without io_uring");
        let slot = match this.slot {
            Some(slot) => slot,
            None => {
                let data = this.data.as_mut().expect("Op polled after completion");
                let slot = std::task::ready!(uring.submit(cx, || data.entry()));
                this.slot = Some(slot);
                slot
            }
        };
        let (res, flags) = std::task::ready!(uring.poll_op(slot, cx));
        this.slot = None;
        let data = this.data.take().expect("Op completed twice");
        Poll::Ready(data.complete(res, flags))
    }
}

impl<T: UringOp> Drop for Op<T> {
    fn drop(&mut self) {
        if let (Some(slot), Some(data)) = (self.slot.take(), self.data.take()) {
            let core = self.core.take().expect("a submitted operation holds its core");
            let uring = core
                .driver
                .uring()
                .expect("io_uring operation on a core without io_uring");
            uring.drop_op(slot, Box::new(data));
        }
    }
}

/// A file read or write on the epoll back end: a job for the core's
/// file-IO pool, completed on the core when a pool thread has run it.
///
/// Holds its core (which owns the pool), so it is `!Send` like [`Op`]. A
/// dropped `FileOp` leaves its buffer with the job (see `driver/blocking.rs`).
pub(crate) struct FileOp<B: Send + 'static> {
    core: Rc<Local>,
    state: FileOpState<B>,
}

enum FileOpState<B> {
    /// Not queued yet (or the queue was full).
    Unqueued(FileJob<B>),
    Queued(Arc<Completion<B>>),
    Finished,
}

impl<B: Send + 'static> FileOp<B> {
    pub(crate) fn new(core: Rc<Local>, job: FileJob<B>) -> Self {
        FileOp {
            core,
            state: FileOpState::Unqueued(job),
        }
    }
}

impl<B: Send + Unpin + 'static> Future for FileOp<B> {
    type Output = (io::Result<usize>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let FileOpState::Unqueued(_) = this.state {
            let FileOpState::Unqueued(job) = std::mem::replace(&mut this.state, FileOpState::Finished) else {
                unreachable!()
            };
            let pool = this
                .core
                .driver
                .epoll()
                .expect("file job on a core without epoll")
                .files();
            match pool.submit(job, cx) {
                Submit::Queued(completion) => this.state = FileOpState::Queued(completion),
                Submit::Full(job) => {
                    Stats::bump(&this.core.stats.file_queue_full, 1);
                    this.state = FileOpState::Unqueued(job);
                    return Poll::Pending;
                }
                Submit::Failed(e, buf) => return Poll::Ready((Err(e), buf)),
            }
        }
        match &this.state {
            FileOpState::Queued(completion) => {
                let out = std::task::ready!(completion.poll(cx));
                this.state = FileOpState::Finished;
                Poll::Ready(out)
            }
            FileOpState::Unqueued(_) => unreachable!("queued above"),
            FileOpState::Finished => panic!("FileOp polled after completion"),
        }
    }
}

impl<B: Send + 'static> Drop for FileOp<B> {
    fn drop(&mut self) {
        if let FileOpState::Queued(completion) = &self.state {
            completion.abandon();
        }
    }
}

/// Runs `attempt` until it does not return EAGAIN/EWOULDBLOCK, waiting for
/// `interest` on the epoll back end between attempts.
pub(crate) async fn epoll_retry<R>(
    token: u32,
    interest: Interest,
    mut attempt: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                with_local(|local| {
                    local
                        .driver
                        .epoll()
                        .expect("epoll back end")
                        .clear_ready(token, interest)
                });
                std::future::poll_fn(|cx| {
                    with_local(|local| {
                        local
                            .driver
                            .epoll()
                            .expect("epoll back end")
                            .poll_ready(token, interest, cx)
                    })
                })
                .await;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
