//! Named limits of the data plane, units last. Every pool and queue is sized
//! from these; relations between them are checked at compile time.

/// Submission queue entries per core ring.
pub const RING_ENTRIES: u32 = 256;
/// Completion queue entries per core ring: the kernel's largest
/// (IORING_MAX_CQ_ENTRIES), 1 MiB of completions. A kernel that refuses it
/// for lack of locked memory gets a ring with a smaller queue (down to what
/// leaves `OPS_IN_FLIGHT_MIN` operations).
pub const RING_CQ_ENTRIES: u32 = 65536;
/// The completion bound (`driver/uring.rs`): nothing posts more completions
/// than the queue holds. Every operation in flight (single-shot, multishot,
/// cancels, MSG_RING wake-ups sent) is counted and posts at most one final
/// completion, and may be cancelled once (one more); every other completion
/// of a multishot receive carries one of the core's provided buffers; at
/// most `WAKES_UNOBSERVED_MAX` wake-ups sent to the core are unobserved,
/// each posting one completion (MSG_RING) or waking the eventfd poll.
/// Wake polls are not on this ring: they have one of their own
/// (`driver/wake_ring.rs`, `WAKE_RING_CQ_ENTRIES`), whose completions never
/// reach this queue. So a core may have
/// `(RING_CQ_ENTRIES - provided buffers - 2 × WAKES_UNOBSERVED_MAX - 2) / 2`
/// operations in flight: 32,447 with the default
/// 512 buffers (`CoreStats::ops_in_flight_max`); a submission past that
/// waits for room. At least this many, or the core does not start.
pub const OPS_IN_FLIGHT_MIN: usize = 1024;
/// Wake-ups (MSG_RING completions, eventfd writes) sent to one core and not
/// yet observed by it, at most: a waker that finds this many in flight
/// sends none, as the core looks for work once it has observed them.
pub const WAKES_UNOBSERVED_MAX: u32 = 64;
/// Driver polls `block_on` makes as it returns, at most, to submit the
/// cancels of the tasks it dropped and reap what they release.
pub const BLOCK_ON_FLUSHES_MAX: usize = 4;
/// Completions reaped per pass of the core loop before tasks run again.
pub const COMPLETIONS_PER_TICK_MAX: usize = 256;
/// Tasks polled per pass of the core loop before IO is reaped again.
pub const TASKS_PER_TICK_MAX: usize = 256;
/// Slots in a core's sparse fixed-file table.
pub const FIXED_FILES_MAX: u32 = 1024;
/// Live tasks per core.
pub const TASKS_MAX: usize = 1 << 16;
/// Buffers in a core's provided buffer ring by default (a power of two).
pub const BUF_RING_ENTRIES_DEFAULT: u16 = 512;
/// Most buffers a provided buffer ring may hold (the kernel's limit).
pub const BUF_RING_ENTRIES_MAX: u16 = 32768;
/// Bytes of each provided buffer by default.
pub const BUF_BYTES_DEFAULT: usize = 4096;
/// Bytes of each provided buffer, at least.
pub const BUF_BYTES_MIN: usize = 64;
/// Bytes of each provided buffer, at most.
pub const BUF_BYTES_MAX: usize = 1 << 20;
/// Completions queued on one multishot operation before its consumer reads them.
/// A multishot recv holds at most one buffer per queued completion, so the ring
/// size bounds it; the extra slot is for the terminating completion.
pub const MULTISHOT_QUEUE_MAX: usize = BUF_RING_ENTRIES_MAX as usize + 1;
/// Wake polls (`op/recv_multi.rs`) armed on one core at once, at most; a
/// stream that finds this many armed goes without one.
pub const WAKE_POLLS_MAX: usize = 64;
/// Submission queue entries of a core's wake ring (`driver/wake_ring.rs`):
/// each arm or removal is submitted at once.
pub const WAKE_RING_ENTRIES: u32 = 8;
/// Completion queue entries of a core's wake ring. Its completions (one
/// per write-space wake-up of a stream, coalesced per task-work run) are
/// dropped at every poll of the core's driver; a poll that finds the queue
/// full is ended by the kernel instead of overflowing it, and its stream
/// goes without (`CoreStats::wake_polls_ended`).
pub const WAKE_RING_CQ_ENTRIES: u32 = 1024;
/// Default time a BE task may run before `maybe_yield` tells it to yield, µs.
pub const BE_QUANTUM_US_DEFAULT: u64 = 500;
/// Default spin budget of an idle core before it parks in the kernel, µs.
/// Chosen by measurement (docs/spin-budget.md): a round trip on this VM kind
/// takes 5–15 µs when both ends spin, and a park costs 12–25 µs per wake-up.
pub const SPIN_US_DEFAULT: u64 = 50;
/// Largest spin budget accepted from configuration, µs.
pub const SPIN_US_MAX: u64 = 1_000_000;
/// Cores one runtime may start.
pub const CORES_MAX: usize = 256;
/// Entries of a cross-core queue, default.
pub const CROSS_CORE_QUEUE_ENTRIES_DEFAULT: usize = 1024;
/// Events taken from epoll per wait on the fallback back end.
pub const EPOLL_EVENTS_MAX: usize = 256;
/// Threads of one core's file-IO pool (epoll back end), at most. A thread
/// starts when a queued file job finds none idle, and then sleeps when idle
/// until its core stops. Few: they keep pread/pwrite off the core; they are
/// not meant to give the fallback back end much disk parallelism.
pub const FILE_IO_THREADS_MAX: usize = 4;
/// File jobs waiting in one core's file-IO pool (epoll back end) for a
/// thread, at most; a file operation that finds the queue full waits for
/// room (its task is woken when a thread takes a job).
pub const FILE_IO_QUEUE_MAX: usize = 64;
/// Control-message bytes reserved for SCM_RIGHTS: up to this many fds per message.
pub const SCM_FDS_MAX: usize = 8;

/// Bytes an RPC connection's receive buffer grows by.
pub const RPC_RECV_BYTES: usize = 64 * 1024;
/// Free bytes an RPC connection's receive buffer keeps before a receive.
pub const RPC_RECV_BYTES_MIN: usize = 4096;
/// Calls in flight on one RPC client connection by default.
pub const RPC_CALLS_IN_FLIGHT_DEFAULT: usize = 256;
/// Calls in flight on one RPC client connection, at most (ids carry the
/// call's slot in their low 16 bits).
pub const RPC_CALLS_IN_FLIGHT_MAX: usize = 1 << 16;

const _: () = assert!(RPC_RECV_BYTES_MIN <= RPC_RECV_BYTES);
const _: () = assert!(RPC_CALLS_IN_FLIGHT_DEFAULT <= RPC_CALLS_IN_FLIGHT_MAX);
const _: () = assert!(BUF_RING_ENTRIES_DEFAULT.is_power_of_two());
const _: () = assert!(BUF_RING_ENTRIES_DEFAULT <= BUF_RING_ENTRIES_MAX);
const _: () = assert!(BUF_BYTES_MIN <= BUF_BYTES_DEFAULT && BUF_BYTES_DEFAULT <= BUF_BYTES_MAX);
const _: () = assert!(RING_ENTRIES.is_power_of_two());
const _: () = assert!(RING_CQ_ENTRIES.is_power_of_two() && RING_CQ_ENTRIES <= 65536);
const _: () = assert!(
    (RING_CQ_ENTRIES - BUF_RING_ENTRIES_MAX as u32 - 2 * WAKES_UNOBSERVED_MAX - 2) / 2 >= OPS_IN_FLIGHT_MIN as u32
);
const _: () = assert!(TASKS_MAX <= u32::MAX as usize);
const _: () = assert!(SPIN_US_DEFAULT <= SPIN_US_MAX);
const _: () = assert!(FILE_IO_THREADS_MAX >= 1 && FILE_IO_QUEUE_MAX >= 1);

/// Idle periods a core remembers to decide whether spinning pays: it spins
/// only while one of them ended within the spin budget.
pub const IDLES_REMEMBERED: u32 = 16;
/// The longest spin of an early wake, in spin budgets (see `idle.rs`).
pub const EARLY_WAKE_SPIN_BUDGETS_MAX: u32 = 4;
/// While early wakes keep finding nothing, one idle period in this many
/// still tries one, to notice when they would pay again.
pub const EARLY_WAKE_PROBE_EVERY: u32 = 16;
