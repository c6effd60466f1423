//! On the epoll back end, file reads and writes run on the core's file-IO
//! pool: a read that blocks in the kernel blocks a pool thread, never the
//! core, and the pool's bounds, drops and errors behave.

mod common;

use sigma_dataplane::limits::{FILE_IO_QUEUE_MAX, FILE_IO_THREADS_MAX};
use sigma_dataplane::net::UnixStream;
use sigma_dataplane::{read_at, sleep, spawn, write_at, Backend};
use std::ffi::CString;
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The tests of this file run one at a time: they look for their core's
/// pool threads among all of this process's threads.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes a FIFO at `dir/name` and opens it read-write (so that the open
/// does not wait for a peer and reads block until someone writes).
fn fifo(dir: &Path, name: &str) -> (PathBuf, File) {
    let path = dir.join(name);
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    (path, file)
}

/// Writes `bytes` into a FIFO from this thread (a few bytes into a pipe
/// with room never block).
fn feed(file: &File, bytes: &[u8]) {
    use std::io::Write;
    (&*file).write_all(bytes).unwrap();
}

/// Pool threads of this process (name `sigma-fileio-N`): (tid, wchan).
fn pool_threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("sigma-fileio-") {
            let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            out.push((task.file_name().to_string_lossy().into_owned(), wchan));
        }
    }
    out
}

/// Waits on the core until at least `n` pool threads of this process are
/// blocked reading a pipe (where the kernel names wait channels; elsewhere
/// it waits 300 ms, long enough for a thread to start and take its job).
async fn pool_threads_in_pipe_read(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let threads = pool_threads();
        if threads.iter().filter(|(_, w)| w.contains("pipe_read")).count() >= n {
            return;
        }
        if !threads.is_empty() && threads.iter().all(|(_, w)| w.trim() == "0" || w.is_empty()) {
            sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} pool threads blocked in a pipe read: {threads:?}"
        );
        sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// What a core thread reports while a file read of it waits.
enum Event {
    /// Another task of the core ran; whether the read had finished then.
    Tick { read_finished: bool },
    /// The read's outcome.
    Read(std::io::Result<usize>, Vec<u8>),
}

/// Starts an epoll core on its own thread that spawns `read` and then, until
/// `stop` is set, runs a 5 ms sleep and a Unix-socket echo per tick and
/// reports each tick; then it awaits the read and reports it. (The read is
/// made on the core thread: operations are `!Send`.)
fn core_thread_ticking<F, Fut>(read: F, stop: Arc<AtomicBool>) -> (mpsc::Receiver<Event>, std::thread::JoinHandle<()>)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (std::io::Result<usize>, Vec<u8>)> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let core = common::core(Backend::Epoll);
        assert_eq!(core.backend(), Backend::Epoll);
        core.block_on(async move {
            let read = spawn(read());
            let (a, b) = UnixStream::pair().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                sleep(Duration::from_millis(5)).await;
                let (res, _) = a.send_all(b"tick".to_vec()).await;
                res.unwrap();
                let (res, got) = b.recv_exact(Vec::with_capacity(4), 4).await;
                res.unwrap();
                assert_eq!(got, b"tick");
                let _ = tx.send(Event::Tick {
                    read_finished: read.is_finished(),
                });
            }
            let (res, buf) = read.await;
            let _ = tx.send(Event::Read(res, buf));
        });
    });
    (rx, thread)
}

/// Receives `n` ticks in which the read is still pending, each within
/// `within`; on failure calls `unblock` (so that the core thread can end)
/// and panics with what happened.
fn expect_ticks_while_pending(rx: &mpsc::Receiver<Event>, n: usize, within: Duration, unblock: impl FnOnce()) {
    for i in 0..n {
        match rx.recv_timeout(within) {
            Ok(Event::Tick { read_finished: false }) => {}
            Ok(Event::Tick { read_finished: true }) => {
                unblock();
                let outcome = loop {
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        Ok(Event::Read(res, buf)) => break format!("{res:?} {buf:?}"),
                        Ok(Event::Tick { .. }) => continue,
                        Err(e) => break format!("no outcome: {e}"),
                    }
                };
                panic!("tick {i}: the read finished before anything was there to read: {outcome}");
            }
            Ok(Event::Read(res, buf)) => {
                unblock();
                panic!("tick {i}: the read finished before anything was there to read: {res:?} {buf:?}")
            }
            Err(_) => {
                unblock();
                panic!(
                    "tick {i}: the core ran no other task for {within:?} while a read_at waited: \
                     the core itself is blocked in the read"
                );
            }
        }
    }
}

/// Waits for the read's outcome, skipping ticks.
fn read_outcome(rx: &mpsc::Receiver<Event>) -> (std::io::Result<usize>, Vec<u8>) {
    loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the read never finished")
        {
            Event::Read(res, buf) => return (res, buf),
            Event::Tick { .. } => {}
        }
    }
}

/// (a) A read_at on a FIFO nobody has written to waits on a pool thread:
/// the core goes on running its other tasks (timers, a socket echo), and
/// the read completes with the bytes once they are written.
#[test]
fn a_fifo_read_waits_on_a_pool_thread_while_the_core_runs_other_tasks() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_path, file) = fifo(dir.path(), "fifo");
    let fd = file.as_raw_fd();
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, thread) = core_thread_ticking(move || read_at(fd, Vec::with_capacity(64), 0), stop.clone());
    expect_ticks_while_pending(&rx, 20, Duration::from_secs(5), || {
        stop.store(true, Ordering::SeqCst);
        feed(&file, b"unblock");
    });
    feed(&file, b"hello, fifo");
    stop.store(true, Ordering::SeqCst);
    let (res, buf) = read_outcome(&rx);
    assert_eq!(res.unwrap(), 11);
    assert_eq!(buf, b"hello, fifo");
    thread.join().unwrap();
}

/// Memory registered with userfaultfd: the kernel's first write into it
/// (pread's copy to user space) blocks until this test resolves the fault.
struct FaultingBuf {
    ptr: *mut u8,
    len: usize,
    init: usize,
}

// SAFETY: the memory is a private mapping owned by the test, unmapped only
// after every user of the buffer is gone.
unsafe impl Send for FaultingBuf {}

// SAFETY: the mapping does not move while the value is alive.
unsafe impl sigma_dataplane::IoBuf for FaultingBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn bytes_init(&self) -> usize {
        self.init
    }
}

// SAFETY: `len` bytes of the mapping are writable.
unsafe impl sigma_dataplane::IoBufMut for FaultingBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    fn bytes_total(&self) -> usize {
        self.len
    }
    unsafe fn set_init(&mut self, len: usize) {
        self.init = len;
    }
}

#[cfg(target_arch = "x86_64")]
mod uffd {
    //! The userfaultfd ABI (linux/userfaultfd.h), for x86_64.
    pub const API: u64 = 0xAA;
    pub const IOCTL_API: libc::c_ulong = 0xC018_AA3F;
    pub const IOCTL_REGISTER: libc::c_ulong = 0xC020_AA00;
    pub const IOCTL_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
    pub const REGISTER_MODE_MISSING: u64 = 1;
    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Range {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct Register {
        pub range: Range,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Zeropage {
        pub range: Range,
        pub mode: u64,
        pub zeropage: i64,
    }
}

/// A pread of a regular file that blocks in the kernel (its destination
/// page faults into a userfaultfd nobody answers yet) holds up a pool
/// thread only: the core's other tasks keep running until the fault is
/// resolved, and the read then completes with the file's bytes.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_pread_blocked_in_the_kernel_stalls_no_other_task_of_the_core() {
    let _serial = serial();
    const LEN: usize = 4096;
    // SAFETY: userfaultfd takes flags only.
    let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as libc::c_int;
    if uffd < 0 {
        eprintln!(
            "skipping: userfaultfd for kernel faults unavailable ({}; needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)",
            std::io::Error::last_os_error()
        );
        return;
    }
    let mut api = uffd::Api {
        api: uffd::API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: the ioctl reads and writes a uffdio_api.
    assert_eq!(unsafe { libc::ioctl(uffd, uffd::IOCTL_API, &mut api) }, 0, "UFFDIO_API");
    // SAFETY: a fresh private anonymous mapping.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let mut register = uffd::Register {
        range: uffd::Range {
            start: map as u64,
            len: LEN as u64,
        },
        mode: uffd::REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: the ioctl reads and writes a uffdio_register naming our mapping.
    let registered = unsafe { libc::ioctl(uffd, uffd::IOCTL_REGISTER, &mut register) };
    assert_eq!(registered, 0, "UFFDIO_REGISTER: {}", std::io::Error::last_os_error());
    let resolve = move || {
        let mut zero = uffd::Zeropage {
            range: uffd::Range {
                start: map as u64,
                len: LEN as u64,
            },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: the ioctl reads and writes a uffdio_zeropage naming our
        // mapping; EEXIST (already resolved) is fine.
        unsafe { libc::ioctl(uffd, uffd::IOCTL_ZEROPAGE, &mut zero) };
    };

    let pattern: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let file = tempfile::tempfile().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &pattern, 0).unwrap();
    let fd = file.as_raw_fd();
    let buf = FaultingBuf {
        ptr: map.cast(),
        len: LEN,
        init: 0,
    };
    let read = move || async move {
        let (res, buf) = read_at(fd, buf, 0).await;
        // SAFETY: `init` bytes of the mapping were written by the read.
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.init) }.to_vec();
        (res, bytes)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, thread) = core_thread_ticking(read, stop.clone());

    // The read's copy to user space faults: the fault waits in the uffd.
    let mut pfd = libc::pollfd {
        fd: uffd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    if ready != 1 {
        stop.store(true, Ordering::SeqCst);
        resolve();
        panic!("the read never faulted on its buffer");
    }
    // While it waits, the core runs its other tasks.
    expect_ticks_while_pending(&rx, 20, Duration::from_secs(2), || {
        stop.store(true, Ordering::SeqCst);
        resolve();
    });
    resolve();
    stop.store(true, Ordering::SeqCst);
    let (res, bytes) = read_outcome(&rx);
    assert_eq!(res.unwrap(), LEN);
    assert_eq!(bytes, pattern);
    thread.join().unwrap();
    // SAFETY: the buffer and the core thread are gone; nothing uses the mapping.
    unsafe {
        libc::munmap(map, LEN);
        libc::close(uffd);
    }
}

/// (b) Reads and writes at offsets round-trip on a regular file on epoll:
/// holes read as zeros, a read across the end is short, past it empty; a
/// bad fd is an error with the buffer handed back.
#[test]
fn reads_and_writes_at_offsets_round_trip_on_epoll() {
    let _serial = serial();
    let file = tempfile::tempfile().unwrap();
    let fd = file.as_raw_fd();
    let core = common::core(Backend::Epoll);
    core.block_on(async move {
        let (res, buf) = write_at(fd, b"hello".to_vec(), 0).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"hello", "the buffer comes back");
        let (res, _) = write_at(fd, b"world".to_vec(), 8192).await;
        assert_eq!(res.unwrap(), 5);
        let (res, _) = write_at(fd, bytes::Bytes::from_static(b"J"), 0).await;
        assert_eq!(res.unwrap(), 1);

        let (res, buf) = read_at(fd, Vec::with_capacity(5), 0).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"Jello");
        let (res, buf) = read_at(fd, Vec::with_capacity(16), 4096).await;
        assert_eq!(res.unwrap(), 16);
        assert_eq!(buf, [0u8; 16], "a hole reads as zeros");
        let (res, buf) = read_at(fd, Vec::with_capacity(16), 8190).await;
        assert_eq!(res.unwrap(), 7, "a read across the end is short");
        assert_eq!(buf, b"\0\0world");
        let (res, buf) = read_at(fd, Vec::with_capacity(16), 100_000).await;
        assert_eq!(res.unwrap(), 0);
        assert!(buf.is_empty());
        let (res, buf) = read_at(fd, bytes::BytesMut::with_capacity(8), 8192).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(&buf[..], b"world");

        let (res, buf) = read_at(-1, Vec::with_capacity(8), 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(buf.capacity(), 8, "the buffer comes back");
        let (res, buf) = write_at(-1, b"x".to_vec(), 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(buf, b"x");
        let (res, _) = read_at(fd, Vec::with_capacity(8), u64::MAX).await;
        assert_eq!(
            res.unwrap_err().raw_os_error(),
            Some(libc::EINVAL),
            "an offset past off_t"
        );
    });
    let mut whole = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut whole).unwrap();
    assert_eq!(whole.len(), 8197);
    assert_eq!(&whole[..5], b"Jello");
    assert_eq!(&whole[8192..], b"world");
}

/// (c) A read_at dropped while a pool thread is blocked in it does not
/// free the buffer under the thread: the thread finishes the read when the
/// FIFO is fed (the bytes go into the job's own buffer and are discarded),
/// and the core and its pool go on working.
#[test]
fn a_read_dropped_while_its_thread_is_blocked_in_it_corrupts_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = fifo(dir.path(), "fifo");
    let fd = file.as_raw_fd();
    let core = common::core(Backend::Epoll);
    core.block_on(async move {
        let mut read = Box::pin(read_at(fd, Vec::with_capacity(64), 0));
        assert!(poll_once(&mut read).is_pending());
        pool_threads_in_pipe_read(1).await;
        drop(read);
        // Churn the allocator: a buffer freed too early would be reused here
        // and then written by the thread's read.
        let churn: Vec<Vec<u8>> = (0..64).map(|_| vec![0xEE; 64]).collect();
        assert_eq!(
            sigma_dataplane::stats().unwrap().ops_in_flight,
            1,
            "the job outlives its future"
        );
        feed(&file, b"eaten");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sigma_dataplane::stats().unwrap().ops_in_flight > 0 {
            assert!(Instant::now() < deadline, "the dropped read never finished");
            sleep(Duration::from_millis(1)).await;
        }
        assert!(
            churn.iter().all(|v| v.iter().all(|&b| b == 0xEE)),
            "freed memory was written"
        );
        // The dropped read took the bytes: the FIFO is empty.
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut one = [0u8; 8];
        let err = std::io::Read::read(&mut &probe, &mut one).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::WouldBlock,
            "the dropped read was running"
        );
        // The core and the pool go on.
        sleep(Duration::from_millis(1)).await;
        let (res, _) = write_at(fd, b"after".to_vec(), 0).await;
        assert_eq!(res.unwrap(), 5);
        let (res, buf) = read_at(fd, Vec::with_capacity(64), 0).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"after");
    });
}

/// (d) With every pool thread blocked and more jobs than the queue holds,
/// the extra jobs wait for room (the core is not blocked and nothing is
/// dropped); once the threads are free, every job completes.
#[test]
fn more_jobs_than_the_queue_holds_all_complete() {
    let _serial = serial();
    const BLOCK: usize = 512;
    const WRITES: usize = FILE_IO_QUEUE_MAX + 40;
    let dir = tempfile::tempdir().unwrap();
    let fifos: Vec<(PathBuf, File)> = (0..FILE_IO_THREADS_MAX)
        .map(|i| fifo(dir.path(), &format!("fifo{i}")))
        .collect();
    let fifo_fds: Vec<i32> = fifos.iter().map(|(_, f)| f.as_raw_fd()).collect();
    let file = tempfile::tempfile().unwrap();
    let fd = file.as_raw_fd();
    let core = common::core(Backend::Epoll);
    core.block_on(async move {
        // Occupy every pool thread with a read nobody answers yet.
        let reads: Vec<_> = fifo_fds
            .iter()
            .map(|&f| spawn(read_at(f, Vec::with_capacity(16), 0)))
            .collect();
        pool_threads_in_pipe_read(FILE_IO_THREADS_MAX).await;
        let writes: Vec<_> = (0..WRITES)
            .map(|i| spawn(write_at(fd, vec![(i % 251) as u8 + 1; BLOCK], (i * BLOCK) as u64)))
            .collect();
        sleep(Duration::from_millis(20)).await;
        let stats = sigma_dataplane::stats().unwrap();
        assert!(stats.file_queue_full > 0, "no write waited for room: {stats:?}");
        assert_eq!(
            stats.ops_in_flight as usize,
            FILE_IO_THREADS_MAX + FILE_IO_QUEUE_MAX,
            "the running reads and a full queue"
        );
        assert!(writes.iter().all(|w| !w.is_finished()));
        for (_, f) in &fifos {
            feed(f, b"go");
        }
        for read in reads {
            let (res, buf) = read.await;
            assert_eq!(res.unwrap(), 2);
            assert_eq!(buf, b"go");
        }
        for write in writes {
            let (res, _) = write.await;
            assert_eq!(res.unwrap(), BLOCK);
        }
        assert_eq!(sigma_dataplane::stats().unwrap().ops_in_flight, 0);
    });
    let mut whole = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut whole).unwrap();
    assert_eq!(whole.len(), WRITES * BLOCK);
    for (i, block) in whole.chunks(BLOCK).enumerate() {
        assert!(block.iter().all(|&b| b == (i % 251) as u8 + 1), "block {i}");
    }
}

/// Pool threads are named `sigma-fileio-N`, at most FILE_IO_THREADS_MAX
/// per core, and block every signal (a process-directed signal goes to the
/// application's own threads).
#[test]
fn pool_threads_are_named_bounded_and_block_signals() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_path, file) = fifo(dir.path(), "fifo");
    let fd = file.as_raw_fd();
    let core = common::core(Backend::Epoll);
    core.block_on(async move {
        let reads: Vec<_> = (0..FILE_IO_THREADS_MAX + 2)
            .map(|_| spawn(read_at(fd, Vec::with_capacity(1), 0)))
            .collect();
        pool_threads_in_pipe_read(FILE_IO_THREADS_MAX).await;
        sleep(Duration::from_millis(20)).await;
        let mut mine = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let name = status
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("Name:")
                .trim();
            if !name.starts_with("sigma-fileio-") {
                continue;
            }
            let index: usize = name["sigma-fileio-".len()..].parse().unwrap();
            assert!(index < FILE_IO_THREADS_MAX, "{name}");
            let blocked = status
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
                .unwrap();
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGPIPE, libc::SIGALRM] {
                assert_ne!(blocked & (1 << (sig - 1)), 0, "{name} does not block signal {sig}");
            }
            mine += 1;
        }
        // Other tests' cores may run pools of their own in this process.
        assert!(mine >= FILE_IO_THREADS_MAX, "{mine} pool threads");
        feed(&file, &[7u8; FILE_IO_THREADS_MAX + 2]);
        for read in reads {
            let (res, buf) = read.await;
            assert_eq!(res.unwrap(), 1);
            assert_eq!(buf, [7]);
        }
    });
}
