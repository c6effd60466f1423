//! Where a parked core's round trip goes: a 64-byte ping-pong over a Unix
//! socket pair (or loopback TCP, below) between two pinned threads (cpu 0
//! and 1), both ends waiting the same way: each of the kernel's ways with
//! no runtime in between, and σ itself. Findings: docs/parked-rtt.md.
//!
//! `cargo run --release -p sigma-dataplane --example park_probe [-- ITERS [MODE-PREFIX[,MODE-PREFIX...]]]`
//!
//! Modes:
//! - `sigma`: σ cores with spin 0 and early wakes off, `recv_stream` and
//!   `send_all` (as sigmabench's `sigma-nospin`);
//! - `blocking`: read(2) on a blocking socket;
//! - `epoll`: epoll_wait(2) for one socket registered EPOLLIN|EPOLLET,
//!   then read(2);
//! - `epoll-oneshot`: the same, registered before each wait and removed
//!   after it (two more system calls per wait);
//! - `epoll-inout`: registered EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET, as
//!   tokio registers every stream;
//! - `blocking-watched`: `blocking`, with the socket also registered in an
//!   epoll set nobody waits on;
//! - `uring-recv`: a single-shot RECV with submit_and_wait(1), plain ring;
//! - `uring-recv-defer`: the same on a SINGLE_ISSUER|DEFER_TASKRUN ring;
//! - `uring-multi-defer`: one multishot RECV into a provided-buffer ring on
//!   a SINGLE_ISSUER|DEFER_TASKRUN ring, enter(GETEVENTS, 1) to wait (σ's
//!   shape); with `PROBE_FLAGS=pollout`, plus a multishot POLL_ADD(POLLOUT)
//!   whose completions are ignored (tokio's write interest, on io_uring);
//!   `PROBE_FLAGS=epollwait` adds instead an epoll set holding the socket
//!   EPOLLOUT|EPOLLET, watched by one IORING_OP_EPOLL_WAIT at a time;
//!   `PROBE_FLAGS=epollpark` parks in epoll_wait(2) on the ring's registered
//!   eventfd and the socket (tokio's registration), then enters the ring
//!   to run its deferred work; `PROBE_FLAGS=wakering` puts the POLLOUT poll
//!   on a second ring without DEFER_TASKRUN that is never waited on (σ's
//!   wake ring); `PROBE_FLAGS=nodefer` (with `coop`: COOP_TASKRUN) builds
//!   the ring without DEFER_TASKRUN;
//! - `uring-multi-defer-ts`: the same, each wait with a 1 s EXT_ARG timeout;
//! - `uring-poll-defer`, `uring-pollmulti-defer`: a single-shot or a
//!   multishot POLL_ADD, then read(2), DEFER_TASKRUN; with
//!   `PROBE_FLAGS=pollout` the poll is for POLLIN|POLLOUT (readiness as
//!   tokio waits), and with `ringrecv` the read is a MSG_DONTWAIT RECV on
//!   the ring.
//!
//! `PROBE_FLAGS=epollcore` runs the `sigma` mode on σ's epoll back end;
//! `PROBE_ROUNDS` (3) sets how many times the modes alternate;
//! `PROBE_FLAGS=tcp` runs every mode over a loopback TCP connection
//! (TCP_NODELAY) instead of a Unix socket pair.
//!
//! `PROBE_FLAGS` also adds σ's ring settings to the raw io_uring modes
//! (taskrun, submitall, cq64k, evpoll) and `PROBE_DELAY_US` burns that long
//! before each epoll wait. Sends are write(2) in the raw modes, send(2) in
//! σ. Prints p50/p99 of the RTT and the process's CPU time per round trip.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

const PAYLOAD: usize = 64;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn write_all(fd: RawFd, buf: &[u8]) {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    assert_eq!(n as usize, buf.len(), "write: {}", std::io::Error::last_os_error());
}

/// A receiver that waits one way; `recv` returns after at least one byte.
trait Waiter {
    fn recv(&mut self, buf: &mut [u8]) -> usize;
}

struct Blocking(RawFd);
impl Waiter for Blocking {
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0);
        n as usize
    }
}

struct Epoll {
    fd: RawFd,
    ep: RawFd,
    oneshot: bool,
}
impl Epoll {
    fn new(fd: RawFd, oneshot: bool) -> Self {
        set_nonblocking(fd);
        // SAFETY: plain syscalls on fds we own.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            if !oneshot {
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
            }
            Epoll { fd, ep, oneshot }
        }
    }
}
impl Waiter for Epoll {
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return n as usize;
            }
            if self.oneshot {
                // Registered only while waiting, like a blocking read's wait-queue entry.
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 0,
                };
                // SAFETY: plain syscall on fds we own.
                unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, self.fd, &mut ev) };
            }
            if let Some(d) = delay() {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: evs is valid for 4 entries.
            unsafe { libc::epoll_wait(self.ep, evs.as_mut_ptr(), 4, -1) };
            if self.oneshot {
                // SAFETY: plain syscall on fds we own.
                unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_DEL, self.fd, std::ptr::null_mut()) };
            }
        }
    }
}

/// `PROBE_DELAY_US`: burn this long (without looking at the socket) before each epoll wait.
fn delay() -> Option<std::time::Duration> {
    static D: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("PROBE_DELAY_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(std::time::Duration::from_micros)
    })
}

fn nonblocking(fd: RawFd) -> RawFd {
    set_nonblocking(fd);
    fd
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// `PROBE_FLAGS` (comma-separated): σ's ring settings to add one at a time
/// to the raw modes (taskrun, submitall, cq64k, evpoll) and the variants
/// the modes' documentation names. Read once: the receive loops ask on
/// every message, and an environment lookup there would be work on the
/// measured path that the epoll modes do not do.
fn probe_flag(name: &str) -> bool {
    static FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FLAGS
        .get_or_init(|| {
            std::env::var("PROBE_FLAGS")
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|f| f == name)
}

fn ring(defer: bool) -> IoUring {
    let mut b = IoUring::builder();
    if defer {
        b.setup_single_issuer().setup_defer_taskrun();
    }
    if probe_flag("taskrun") {
        b.setup_taskrun_flag();
    }
    if probe_flag("coop") {
        b.setup_coop_taskrun();
    }
    if probe_flag("submitall") {
        b.setup_submit_all();
    }
    if probe_flag("cq64k") {
        b.setup_cqsize(65536);
    }
    let mut ring = b.build(256).expect("io_uring");
    if probe_flag("evpoll") {
        // A multishot poll on an eventfd nobody writes, as σ's wake-up eventfd.
        // SAFETY: a new eventfd, leaked for the probe's life.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let e = opcode::PollAdd::new(types::Fd(efd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(99);
        // SAFETY: the entry holds no pointers.
        unsafe { ring.submission().push(&e).unwrap() };
        ring.submit().unwrap();
    }
    ring
}

struct UringRecv {
    fd: RawFd,
    ring: IoUring,
}
impl Waiter for UringRecv {
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let e = opcode::Recv::new(types::Fd(self.fd), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .user_data(1);
        // SAFETY: buf outlives the wait below, which reaps this very entry.
        unsafe { self.ring.submission().push(&e).unwrap() };
        self.ring.submit_and_wait(1).unwrap();
        let cqe = self.ring.completion().next().unwrap();
        assert!(cqe.result() > 0);
        cqe.result() as usize
    }
}

struct UringPoll {
    fd: RawFd,
    ring: IoUring,
    /// One multishot POLL_ADD armed for good instead of one per wait.
    multi: bool,
    armed: bool,
}
impl Waiter for UringPoll {
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        'recv: loop {
            let n = if probe_flag("ringrecv") {
                // The read as a single-shot RECV on the ring (inline when data waits).
                // MSG_DONTWAIT: EAGAIN when nothing waits, as read(2) on the non-blocking socket.
                let e = opcode::Recv::new(types::Fd(self.fd), buf.as_mut_ptr(), buf.len() as u32)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(9);
                // SAFETY: buf outlives the wait below, which reaps this very entry.
                unsafe { self.ring.submission().push(&e).unwrap() };
                loop {
                    self.ring.submit_and_wait(1).unwrap();
                    let mut got = None;
                    let mut polled = false;
                    for cqe in self.ring.completion() {
                        if cqe.user_data() == 9 {
                            got = Some(cqe.result());
                        } else {
                            polled = true;
                            if !io_uring::cqueue::more(cqe.flags()) {
                                self.armed = false;
                            }
                        }
                    }
                    match got {
                        // A poll event came with the EAGAIN: look again at once.
                        Some(r) if r == -libc::EAGAIN && polled => continue 'recv,
                        Some(r) => break r as isize,
                        None => {}
                    }
                }
            } else {
                // SAFETY: buf is valid for its length.
                unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) }
            };
            if n > 0 {
                return n as usize;
            }
            if !self.armed {
                // `PROBE_FLAGS=pollout`: POLLIN|POLLOUT in the one poll, as epoll-inout.
                let mask = if probe_flag("pollout") {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                };
                let e = opcode::PollAdd::new(types::Fd(self.fd), mask as u32)
                    .multi(self.multi)
                    .build()
                    .user_data(1);
                // SAFETY: the entry holds no pointers.
                unsafe { self.ring.submission().push(&e).unwrap() };
                self.armed = self.multi;
            }
            if self.ring.completion().is_empty() {
                self.ring.submit_and_wait(1).unwrap();
            }
            let cqe = self.ring.completion().next().unwrap();
            if !io_uring::cqueue::more(cqe.flags()) {
                self.armed = false;
            }
        }
    }
}

/// σ's shape: one multishot recv into a provided-buffer ring.
struct UringMulti {
    ring: IoUring,
    bufs: Vec<u8>,
    br: *mut io_uring::types::BufRingEntry,
    tail: u16,
    timeout: bool,
    armed: bool,
    pollout: bool,
    /// `PROBE_FLAGS=epollwait`: an epoll set holding the socket with
    /// EPOLLOUT|EPOLLET, watched by one IORING_OP_EPOLL_WAIT at a time.
    epoll: Option<(RawFd, Box<[libc::epoll_event; 4]>, bool)>,
    /// `PROBE_FLAGS=epollpark`: park in epoll_wait(2) on a set holding the
    /// ring's registered eventfd and the socket (EPOLLIN|EPOLLOUT|EPOLLET,
    /// tokio's registration), then enter(GETEVENTS, 0) to run the ring's
    /// deferred work.
    park_ep: Option<RawFd>,
    /// `PROBE_FLAGS=wakering`: the POLLOUT poll on a second ring without
    /// DEFER_TASKRUN (COOP_TASKRUN), never waited on: its task work wakes
    /// the thread parked in the main ring's enter and runs inside that
    /// enter's wait loop, which goes on waiting for the reply.
    wake_ring: Option<IoUring>,
    fd: RawFd,
}
const NBUF: u16 = 16;
const BSZ: usize = 4096;
impl UringMulti {
    fn new(fd: RawFd, timeout: bool) -> Self {
        let ring = ring(!probe_flag("nodefer"));
        let bufs = vec![0u8; NBUF as usize * BSZ];
        let size = NBUF as usize * std::mem::size_of::<io_uring::types::BufRingEntry>();
        // SAFETY: an anonymous private mapping, page aligned, never unmapped (the probe exits).
        let br = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size.max(4096),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        } as *mut io_uring::types::BufRingEntry;
        // SAFETY: br is a page-aligned mapping of NBUF entries.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br as u64, NBUF, 7, 0)
                .expect("buf ring");
        }
        let mut me = UringMulti {
            ring,
            bufs,
            br,
            tail: 0,
            timeout,
            armed: false,
            pollout: false,
            epoll: None,
            park_ep: None,
            wake_ring: None,
            fd,
        };
        if probe_flag("wakering") {
            let mut w = IoUring::builder().setup_coop_taskrun().build(8).expect("io_uring");
            let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                .multi(true)
                .build()
                .user_data(5);
            // SAFETY: the entry holds no pointers.
            unsafe { w.submission().push(&e).unwrap() };
            w.submit().unwrap();
            me.wake_ring = Some(w);
        }
        if probe_flag("epollpark") {
            // SAFETY: plain syscalls on fds we own; all leaked for the probe's life.
            let (ep, efd) = unsafe {
                (
                    libc::epoll_create1(libc::EPOLL_CLOEXEC),
                    libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC),
                )
            };
            me.ring.submitter().register_eventfd(efd).expect("register eventfd");
            for (f, ev) in [
                (efd, libc::EPOLLIN | libc::EPOLLET),
                (fd, libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET),
            ] {
                let mut e = libc::epoll_event {
                    events: ev as u32,
                    u64: f as u64,
                };
                // SAFETY: as above.
                assert_eq!(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, f, &mut e) }, 0);
            }
            me.park_ep = Some(ep);
        }
        if probe_flag("epollwait") {
            // SAFETY: plain syscalls on fds we own.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLOUT | libc::EPOLLET) as u32,
                u64: 0,
            };
            // SAFETY: as above.
            let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            assert_eq!(rc, 0);
            me.epoll = Some((ep, Box::new([libc::epoll_event { events: 0, u64: 0 }; 4]), false));
        }
        for bid in 0..NBUF {
            me.provide(bid);
        }
        me
    }
    fn provide(&mut self, bid: u16) {
        // SAFETY: the entry index is masked into the ring; the buffer lives in self.bufs.
        unsafe {
            let e = &mut *self.br.add((self.tail & (NBUF - 1)) as usize);
            e.set_addr(self.bufs.as_ptr().add(bid as usize * BSZ) as u64);
            e.set_len(BSZ as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = io_uring::types::BufRingEntry::tail(self.br) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
    fn wait(&mut self) {
        if let Some(ep) = self.park_ep {
            if !self.ring.submission().is_empty() {
                self.ring.submit().unwrap();
            }
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: evs is valid for 4 entries.
            unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, -1) };
            // SAFETY: no argument; runs the ring's deferred work.
            unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, 1 /* IORING_ENTER_GETEVENTS */, None)
                    .unwrap()
            };
            return;
        }
        if !self.timeout {
            self.ring.submitter().submit_and_wait(1).unwrap();
            return;
        }
        let ts = types::Timespec::new().sec(1);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
impl Waiter for UringMulti {
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            if !self.armed {
                let e = opcode::RecvMulti::new(types::Fd(self.fd), 7)
                    .build()
                    .user_data(2)
                    .flags(squeue::Flags::BUFFER_SELECT);
                // SAFETY: the entry names the registered buffer group only.
                unsafe { self.ring.submission().push(&e).unwrap() };
                self.armed = true;
            }
            if probe_flag("pollout") && !self.pollout {
                // tokio's registration: also woken when the socket becomes writable again.
                let e = opcode::PollAdd::new(types::Fd(self.fd), libc::POLLOUT as u32)
                    .multi(true)
                    .build()
                    .user_data(3);
                // SAFETY: the entry holds no pointers.
                unsafe { self.ring.submission().push(&e).unwrap() };
                self.pollout = true;
            }
            if let Some((ep, events, armed @ false)) = self.epoll.as_mut() {
                let e = opcode::EpollWait::new(types::Fd(*ep), events.as_mut_ptr() as *mut _, 4)
                    .build()
                    .user_data(4);
                // SAFETY: the events array is boxed and lives as long as the ring.
                unsafe { self.ring.submission().push(&e).unwrap() };
                *armed = true;
            }
            if let Some(w) = self.wake_ring.as_mut() {
                // Its completions are only dropped.
                for cqe in w.completion() {
                    assert!(io_uring::cqueue::more(cqe.flags()), "the wake ring's poll ended");
                }
            }
            let cqe = self.ring.completion().next();
            match cqe {
                Some(cqe) if cqe.user_data() == 4 => {
                    if let Some((_, _, armed)) = self.epoll.as_mut() {
                        *armed = false;
                    }
                }
                Some(cqe) if cqe.user_data() == 3 => {
                    if !io_uring::cqueue::more(cqe.flags()) {
                        self.pollout = false;
                    }
                }
                Some(cqe) => {
                    if !io_uring::cqueue::more(cqe.flags()) {
                        self.armed = false;
                    }
                    let res = cqe.result();
                    if res <= 0 {
                        continue;
                    }
                    let bid = io_uring::cqueue::buffer_select(cqe.flags()).unwrap();
                    let n = res as usize;
                    buf[..n].copy_from_slice(&self.bufs[bid as usize * BSZ..][..n]);
                    self.provide(bid);
                    return n;
                }
                None => self.wait(),
            }
        }
    }
}

/// The two ends: a Unix socket pair, or with `PROBE_FLAGS=tcp` a loopback
/// TCP connection with TCP_NODELAY (as sigmabench's TCP cases).
fn pair() -> (OwnedFd, OwnedFd) {
    if !probe_flag("tcp") {
        let (a, b) = UnixStream::pair().unwrap();
        return (a.into(), b.into());
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a.into(), b.into())
}

fn run(mode: &str, iters: usize) -> (f64, f64) {
    let (a, b) = pair();
    let mode_s = mode.to_string();
    let make = move |fd: RawFd| -> Box<dyn Waiter> {
        match mode_s.as_str() {
            "blocking" => Box::new(Blocking(fd)),
            "epoll" => Box::new(Epoll::new(fd, false)),
            "uring-recv" => Box::new(UringRecv { fd, ring: ring(false) }),
            "uring-recv-defer" => Box::new(UringRecv { fd, ring: ring(true) }),
            "uring-multi-defer" => Box::new(UringMulti::new(fd, false)),
            "uring-multi-defer-ts" => Box::new(UringMulti::new(fd, true)),
            "uring-poll-defer" => Box::new(UringPoll {
                fd: nonblocking(fd),
                ring: ring(true),
                multi: false,
                armed: false,
            }),
            "uring-pollmulti-defer" => Box::new(UringPoll {
                fd: nonblocking(fd),
                ring: ring(true),
                multi: true,
                armed: false,
            }),
            "epoll-oneshot" => Box::new(Epoll::new(fd, true)),
            "epoll-inout" => {
                let e = Epoll::new(fd, false);
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                    u64: 0,
                };
                // SAFETY: plain syscall on fds we own.
                unsafe { libc::epoll_ctl(e.ep, libc::EPOLL_CTL_MOD, fd, &mut ev) };
                Box::new(e)
            }
            "blocking-watched" => {
                // A blocking read whose socket also sits in an epoll set nobody waits on.
                // The epoll fd stays open for the probe's life (never closed).
                let _watch = Epoll::new(fd, false);
                // SAFETY: fcntl on an fd we own: back to blocking.
                unsafe {
                    let fl = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                }
                Box::new(Blocking(fd))
            }
            m => panic!("unknown mode {m}"),
        }
    };
    let make2 = make.clone();
    let total = iters + iters / 10;
    let echo = std::thread::spawn(move || {
        pin(1);
        let fd = b.as_raw_fd();
        let mut w = make2(fd);
        let mut buf = [0u8; PAYLOAD];
        for _ in 0..total {
            let mut got = 0;
            while got < PAYLOAD {
                got += w.recv(&mut buf[got..]);
            }
            write_all(fd, &buf);
        }
        drop(b);
    });
    pin(0);
    let fd = a.as_raw_fd();
    let mut w = make(fd);
    let out = [7u8; PAYLOAD];
    let mut buf = [0u8; PAYLOAD];
    let mut rtts = Vec::with_capacity(iters);
    for i in 0..total {
        let t0 = Instant::now();
        write_all(fd, &out);
        let mut got = 0;
        while got < PAYLOAD {
            got += w.recv(&mut buf[got..]);
        }
        if i >= iters / 10 {
            rtts.push(t0.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    echo.join().unwrap();
    rtts.sort_by(|x, y| x.partial_cmp(y).unwrap());
    (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100])
}

/// σ itself: a core per side (spin 0, early wakes off), `recv_stream` and
/// `send_all`, as sigmabench's `sigma-nospin` does; with σ's default receives (multishot RECV into the buffer ring).
fn run_sigma(iters: usize) -> (f64, f64) {
    let (a, b) = pair();
    let total = iters + iters / 10;
    let core = move |cpu: usize| {
        sigma_dataplane::Core::builder()
            .pin(cpu)
            .spin(std::time::Duration::ZERO)
            .early_wake(false)
            .backend(if probe_flag("epollcore") {
                sigma_dataplane::Backend::Epoll
            } else {
                sigma_dataplane::Backend::Uring
            })
            .build()
            .unwrap()
    };
    macro_rules! ping_pong {
        ($S:ty) => {{
            let echo = std::thread::spawn(move || {
                core(1).block_on(async move {
                    let s = <$S>::from_owned(b).unwrap();
                    let mut chunks = s.recv_stream();
                    while let Some(c) = chunks.next().await {
                        s.send_all(c.unwrap()).await.0.unwrap();
                    }
                })
            });
            let rtts = core(0).block_on(async move {
                let s = <$S>::from_owned(a).unwrap();
                let mut chunks = s.recv_stream();
                let out = bytes::Bytes::from(vec![7u8; PAYLOAD]);
                let mut back = Vec::with_capacity(PAYLOAD);
                let mut rtts = Vec::with_capacity(iters);
                for i in 0..total {
                    let t0 = Instant::now();
                    s.send_all(out.clone()).await.0.unwrap();
                    back.clear();
                    while back.len() < PAYLOAD {
                        back.extend_from_slice(&chunks.next().await.unwrap().unwrap());
                    }
                    if i >= iters / 10 {
                        rtts.push(t0.elapsed().as_nanos() as f64 / 1000.0);
                    }
                }
                rtts
            });
            (echo, rtts)
        }};
    }
    let (echo, rtts) = if probe_flag("tcp") {
        ping_pong!(sigma_dataplane::net::TcpStream)
    } else {
        ping_pong!(sigma_dataplane::net::UnixStream)
    };
    echo.join().unwrap();
    let mut rtts = rtts;
    rtts.sort_by(|x, y| x.partial_cmp(y).unwrap());
    (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100])
}

/// This process's CPU time (both threads, user and system), in µs.
fn cpu_us() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let iters: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20000);
    let modes = [
        "blocking",
        "epoll",
        "uring-recv",
        "uring-recv-defer",
        "uring-multi-defer",
        "uring-multi-defer-ts",
        "uring-poll-defer",
        "uring-pollmulti-defer",
        "epoll-oneshot",
        "epoll-inout",
        "blocking-watched",
    ];
    let only = std::env::args().nth(2);
    // No list, or a mode that starts with one of its prefixes.
    let selected = |m: &str| only.as_deref().is_none_or(|o| o.split(',').any(|o| m.starts_with(o)));
    let rounds: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        for name in ["sigma"] {
            if !selected(name) {
                continue;
            }
            let cpu0 = cpu_us();
            let (p50, p99) = run_sigma(iters);
            let cpu = (cpu_us() - cpu0) / (iters + iters / 10) as f64;
            println!("round {round} {name:22} p50 {p50:6.1} us  p99 {p99:6.1} us  CPU {cpu:5.1} us/RTT");
        }
        for m in modes {
            if !selected(m) {
                continue;
            }
            let cpu0 = cpu_us();
            let (p50, p99) = run(m, iters);
            let cpu = (cpu_us() - cpu0) / (iters + iters / 10) as f64;
            println!("round {round} {m:22} p50 {p50:6.1} us  p99 {p99:6.1} us  CPU {cpu:5.1} us/RTT");
        }
    }
}
