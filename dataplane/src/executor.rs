//! The per-core executor: a slab of local tasks and two ready queues.
//!
//! LC tasks always run before BE tasks. BE tasks run only while no LC task is
//! ready, in slices of at most the BE quantum; a BE task that runs long calls
//! [`maybe_yield`](crate::maybe_yield) to give the core back.
//!
//! Wakers are `Arc<TaskHeader>` (std's `Wake`): waking from the task's own core
//! pushes onto the local ready queue; waking from any other thread pushes onto
//! the core's bounded remote queue and, if the core is parked, notifies it.

use crate::driver::unpark::Unparker;
use crate::limits;
use crossbeam_queue::ArrayQueue;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The class of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Latency-critical: always runs before any BE task.
    Lc,
    /// Best-effort: runs on what LC leaves idle and yields within a quantum.
    Be,
}

/// The part of a core that other threads may touch: its remote wake queue
/// and the means to wake it when it is parked.
pub(crate) struct CoreShared {
    remote: ArrayQueue<Arc<TaskHeader>>,
    /// Where remote wakes go when `remote` is full. Each header is queued at
    /// most once, but headers of finished tasks count too (their wakers may
    /// outlive them), so the bounded queue can fill; this slow path keeps
    /// such a wake instead of losing it (or panicking).
    overflow: std::sync::Mutex<Vec<Arc<TaskHeader>>>,
    overflowed: AtomicBool,
    unparker: Arc<Unparker>,
}

impl CoreShared {
    pub(crate) fn new(unparker: Arc<Unparker>) -> CoreShared {
        CoreShared {
            // Each live task at most once (remote_queued), plus the main future.
            remote: ArrayQueue::new(limits::TASKS_MAX + 1),
            overflow: std::sync::Mutex::new(Vec::new()),
            overflowed: AtomicBool::new(false),
            unparker,
        }
    }

    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.unparker.id()
    }

    #[inline]
    pub(crate) fn unparker(&self) -> &Unparker {
        &self.unparker
    }

    /// Whether the calling thread is this core's, inside its `block_on`.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.unparker.is_current()
    }

    /// Queues a task woken from another thread and notifies the core if it
    /// is parked.
    pub(crate) fn wake_remote(&self, task: &Arc<TaskHeader>) {
        if task.remote_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(task) = self.remote.push(task.clone()) {
            self.overflow.lock().unwrap_or_else(|e| e.into_inner()).push(task);
            self.overflowed.store(true, Ordering::SeqCst);
        }
        self.unparker.wake_if_parked();
    }

    /// The next task woken from another thread (the core's own thread).
    pub(crate) fn pop_remote(&self) -> Option<Arc<TaskHeader>> {
        let task = match self.remote.pop() {
            Some(task) => task,
            None => {
                if !self.overflowed.load(Ordering::SeqCst) {
                    return None;
                }
                let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
                let task = overflow.pop();
                if overflow.is_empty() {
                    self.overflowed.store(false, Ordering::SeqCst);
                }
                task?
            }
        };
        task.remote_queued.store(false, Ordering::Release);
        Some(task)
    }
}

thread_local! {
    /// The executor of the core whose `block_on` runs on this thread.
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

/// Calls `f` with this thread's executor.
///
/// # Panics
///
/// When this thread is not running a σ data-plane core.
#[inline]
pub(crate) fn with_exec<R>(f: impl FnOnce(&Executor) -> R) -> R {
    CURRENT.with(|c| match &*c.borrow() {
        Some(exec) => f(exec),
        None => panic!("not on a σ data-plane core: call this inside Core::block_on"),
    })
}

/// Makes `exec` this thread's executor until the returned guard drops.
pub(crate) fn enter(exec: Rc<Executor>) -> Entered {
    CURRENT.with(|c| *c.borrow_mut() = Some(exec));
    Entered(())
}

/// This thread's executor stays current while this lives.
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// The slot number the `block_on` future uses in wakers.
pub(crate) const MAIN_SLOT: u32 = u32::MAX;

/// What a waker points to: the core and the task's slot and generation.
pub(crate) struct TaskHeader {
    pub(crate) core: Arc<CoreShared>,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
    /// Set while the task sits in the core's remote queue, so that the queue
    /// holds each task at most once and can never overflow.
    pub(crate) remote_queued: AtomicBool,
}

impl Wake for TaskHeader {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.core.is_current() {
            with_exec(|exec| exec.schedule(self.slot, self.generation));
        } else {
            self.core.wake_remote(self);
        }
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct TaskSlot {
    future: Option<LocalFuture>,
    waker: Waker,
    class: Class,
    generation: u32,
    scheduled: bool,
}

/// The executor state of one core. It lives in the core's thread-local
/// context and is only touched from that thread.
pub(crate) struct Executor {
    slots: RefCell<Vec<Option<TaskSlot>>>,
    free: RefCell<Vec<u32>>,
    generations: RefCell<Vec<u32>>,
    lc: RefCell<VecDeque<u32>>,
    be: RefCell<VecDeque<u32>>,
    pub(crate) main_scheduled: Cell<bool>,
    be_quantum: Duration,
    be_slice_start: Cell<Option<Instant>>,
    current_class: Cell<Class>,
    /// The core's cross-thread side, which every waker of its tasks holds.
    shared: Arc<CoreShared>,
    /// Tasks that panicked (`CoreStats::tasks_panicked`).
    tasks_panicked: Cell<u64>,
}

impl Executor {
    pub(crate) fn new(be_quantum: Duration, shared: Arc<CoreShared>) -> Self {
        Self {
            shared,
            tasks_panicked: Cell::new(0),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            generations: RefCell::new(Vec::new()),
            lc: RefCell::new(VecDeque::with_capacity(64)),
            be: RefCell::new(VecDeque::with_capacity(64)),
            main_scheduled: Cell::new(true),
            be_quantum,
            be_slice_start: Cell::new(None),
            current_class: Cell::new(Class::Lc),
        }
    }

    pub(crate) fn has_ready(&self) -> bool {
        self.main_scheduled.get() || !self.lc.borrow().is_empty() || !self.be.borrow().is_empty()
    }

    pub(crate) fn has_lc_ready(&self) -> bool {
        self.main_scheduled.get() || !self.lc.borrow().is_empty()
    }

    pub(crate) fn current_class(&self) -> Class {
        self.current_class.get()
    }

    /// Whether the BE task running now has used up its quantum and should yield.
    pub(crate) fn be_quantum_spent(&self) -> bool {
        match self.be_slice_start.get() {
            Some(start) => start.elapsed() >= self.be_quantum,
            None => false,
        }
    }

    pub(crate) fn tasks_panicked(&self) -> u64 {
        self.tasks_panicked.get()
    }

    /// Adds a task; panics past `TASKS_MAX` (a bug in the caller's bounds).
    pub(crate) fn spawn(&self, class: Class, future: LocalFuture) {
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                let mut slots = self.slots.borrow_mut();
                assert!(slots.len() < limits::TASKS_MAX, "more than TASKS_MAX tasks on one core");
                slots.push(None);
                self.generations.borrow_mut().push(0);
                (slots.len() - 1) as u32
            }
        };
        let generation = {
            let mut gens = self.generations.borrow_mut();
            gens[slot as usize] = gens[slot as usize].wrapping_add(1);
            gens[slot as usize]
        };
        let header = Arc::new(TaskHeader {
            core: self.shared.clone(),
            slot,
            generation,
            remote_queued: AtomicBool::new(false),
        });
        let waker = Waker::from(header);
        self.slots.borrow_mut()[slot as usize] = Some(TaskSlot {
            future: Some(future),
            waker,
            class,
            generation,
            scheduled: false,
        });
        self.schedule(slot, generation);
    }

    /// Puts a task on its ready queue unless it is already there or gone.
    pub(crate) fn schedule(&self, slot: u32, generation: u32) {
        if slot == MAIN_SLOT {
            self.main_scheduled.set(true);
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let Some(Some(task)) = slots.get_mut(slot as usize) else {
            return;
        };
        if task.generation != generation || task.scheduled {
            return;
        }
        task.scheduled = true;
        match task.class {
            Class::Lc => self.lc.borrow_mut().push_back(slot),
            Class::Be => self.be.borrow_mut().push_back(slot),
        }
    }

    fn poll_slot(&self, slot: u32) {
        let (mut future, waker, class) = {
            let mut slots = self.slots.borrow_mut();
            let Some(task) = slots[slot as usize].as_mut() else {
                return;
            };
            task.scheduled = false;
            let Some(future) = task.future.take() else {
                return;
            };
            (future, task.waker.clone(), task.class)
        };
        self.current_class.set(class);
        let mut cx = Context::from_waker(&waker);
        let done = future.as_mut().poll(&mut cx).is_ready();
        self.current_class.set(Class::Lc);
        let mut slots = self.slots.borrow_mut();
        if done {
            slots[slot as usize] = None;
            self.free.borrow_mut().push(slot);
            drop(slots);
            // Dropping the future may run destructors that wake or spawn.
            drop(future);
        } else if let Some(task) = slots[slot as usize].as_mut() {
            task.future = Some(future);
        }
    }

    /// Runs ready LC tasks, then BE tasks while no LC task is ready and the BE
    /// quantum lasts. At most `TASKS_PER_TICK_MAX` polls. Returns polls made.
    pub(crate) fn run_tick(&self, main_yielded: bool) -> usize {
        let mut polled = 0;
        // The main future runs before LC tasks, except after it woke itself (yield_now): then
        // the LC tasks already ready go first, or a main loop that yields would starve them.
        let mut owed = if main_yielded { self.lc.borrow().len() } else { 0 };
        while polled < limits::TASKS_PER_TICK_MAX && (owed > 0 || !self.main_scheduled.get()) {
            let Some(slot) = self.lc.borrow_mut().pop_front() else {
                break;
            };
            owed = owed.saturating_sub(1);
            self.poll_slot(slot);
            polled += 1;
        }
        if self.has_lc_ready() {
            return polled;
        }
        let slice_start = Instant::now();
        self.be_slice_start.set(Some(slice_start));
        while polled < limits::TASKS_PER_TICK_MAX {
            if self.has_lc_ready() || slice_start.elapsed() >= self.be_quantum {
                break;
            }
            let Some(slot) = self.be.borrow_mut().pop_front() else {
                break;
            };
            self.poll_slot(slot);
            polled += 1;
        }
        self.be_slice_start.set(None);
        polled
    }

    /// Drops every task (at shutdown), running their destructors on this core.
    pub(crate) fn clear(&self) {
        let tasks: Vec<_> = self.slots.borrow_mut().drain(..).collect();
        self.lc.borrow_mut().clear();
        self.be.borrow_mut().clear();
        self.free.borrow_mut().clear();
        self.generations.borrow_mut().clear();
        drop(tasks);
    }
}

/// A handle to a spawned task's output.
#[derive(Debug)]
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

#[derive(Debug)]
enum JoinState<T> {
    Pending(Option<Waker>),
    Done(T),
    /// The task panicked (the message); awaiting it panics in the joiner.
    Panicked(String),
    Taken,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished (returned or panicked).
    pub fn is_finished(&self) -> bool {
        matches!(
            *self.state.borrow(),
            JoinState::Done(_) | JoinState::Panicked(_) | JoinState::Taken
        )
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    /// The task's output.
    ///
    /// # Panics
    ///
    /// When the task panicked: the joiner fails with it (as joining a
    /// panicked thread and unwrapping would), and only the joiner.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, JoinState::Taken) {
            JoinState::Done(value) => Poll::Ready(value),
            JoinState::Pending(_) => {
                *state = JoinState::Pending(Some(cx.waker().clone()));
                Poll::Pending
            }
            JoinState::Panicked(message) => {
                drop(state);
                panic!("the joined task panicked: {message}")
            }
            JoinState::Taken => panic!("JoinHandle polled after completion"),
        }
    }
}

/// The text of a panic payload (what `catch_unwind` or a join returns).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Polls `fut` to completion, turning a panic while polling it into an
/// `Err` with the panic's payload instead of unwinding through the caller.
pub(crate) async fn catch_unwind<F: Future>(fut: F) -> Result<F::Output, Box<dyn std::any::Any + Send>> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await
}

/// Spawns a task of `class` on the current core.
///
/// # Panics
///
/// When called off a data-plane core.
pub fn spawn_with_class<F>(class: Class, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let state = Rc::new(RefCell::new(JoinState::Pending(None)));
    let task_state = state.clone();
    // A task that panics fails alone: its future is dropped where it
    // panicked, a log line names it, its joiner (if any) fails with it, and
    // the core goes on serving every other task.
    let wrapped = async move {
        let outcome = match catch_unwind(future).await {
            Ok(value) => JoinState::Done(value),
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(
                    task = std::any::type_name::<F>(),
                    panic = %message,
                    "a task panicked; it is dropped and the core goes on"
                );
                with_exec(|exec| exec.tasks_panicked.set(exec.tasks_panicked.get() + 1));
                JoinState::Panicked(message)
            }
        };
        let previous = std::mem::replace(&mut *task_state.borrow_mut(), outcome);
        if let JoinState::Pending(Some(waker)) = previous {
            waker.wake();
        }
    };
    with_exec(|exec| exec.spawn(class, Box::pin(wrapped)));
    JoinHandle { state }
}

/// Spawns an LC task on the current core.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with_class(Class::Lc, future)
}

/// Spawns a BE task on the current core.
pub fn spawn_be<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with_class(Class::Be, future)
}

/// Yields once: the task goes to the back of its ready queue.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Yields if the running BE task has used up its quantum or an LC task is
/// ready; costs no system call otherwise. LC tasks never yield here.
pub async fn maybe_yield() {
    let must = with_exec(|exec| exec.current_class() == Class::Be && (exec.be_quantum_spent() || exec.has_lc_ready()));
    if must {
        yield_now().await;
    }
}
