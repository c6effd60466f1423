//! Wake polls (`op/recv_multi.rs`, `driver/wake_ring.rs`): what σ arms, and
//! the two kernel behaviours the wake ring rests on, tested against the
//! running kernel with bare rings shaped like a core's two rings.

mod common;

use io_uring::{cqueue, opcode, types, IoUring};
use sigma_dataplane::net::{TcpListener, TcpStream, UnixStream};
use sigma_dataplane::{spawn, Backend, Core};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

const MSG: usize = 64;

fn uring_available() -> bool {
    matches!(common::backends().first(), Some(Backend::Uring))
}

/// A core on io_uring that parks at once, with wake polls, or `None`
/// (with a message) where io_uring is unavailable.
fn parking_core() -> Option<Core> {
    if !uring_available() {
        eprintln!("skipped: io_uring unavailable");
        return None;
    }
    Some(
        Core::builder()
            .backend(Backend::Uring)
            .spin(Duration::ZERO)
            // On whatever SIGMA_WAKE_POLL says.
            .wake_polls(true)
            .build()
            .unwrap(),
    )
}

/// A ring shaped like a core's wake ring: no DEFER_TASKRUN, so its task
/// work is the thread's plain task work, run at its next kernel exit or
/// inside any enter's wait.
fn wake_ring(cq_entries: u32) -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_cqsize(cq_entries)
        .build(4)
        .expect("io_uring")
}

/// A ring shaped like a core's own ring: task work runs only when this
/// thread enters with GETEVENTS.
fn core_ring() -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4)
        .expect("io_uring")
}

fn arm_pollout(ring: &mut IoUring, fd: i32) {
    let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
        .multi(true)
        .build()
        .user_data(7);
    // SAFETY: the entry holds no pointers.
    unsafe { ring.submission().push(&entry).unwrap() };
    ring.submit().unwrap();
}

/// Runs the ring's task work without waiting (enter with GETEVENTS, min 0).
fn run_task_work(ring: &IoUring) {
    // SAFETY: no argument.
    unsafe {
        ring.submitter()
            .enter::<libc::sigset_t>(0, 0, 1 /* IORING_ENTER_GETEVENTS */, None)
            .unwrap();
    }
}

/// Waits in the ring's enter for one completion.
fn park(ring: &IoUring) {
    // SAFETY: no argument.
    unsafe {
        ring.submitter()
            .enter::<libc::sigset_t>(0, 1, 1 /* IORING_ENTER_GETEVENTS */, None)
            .unwrap();
    }
}

fn drain(ring: &mut IoUring) -> Vec<(i32, u32)> {
    ring.completion().map(|c| (c.result(), c.flags())).collect()
}

/// This thread's voluntary context switches so far: one per sleep.
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Why wake polls have a ring of their own (`driver/wake_ring.rs`): a wake
/// poll on the wake ring wakes a thread parked in the core ring's enter (it
/// sleeps twice), but does not end that enter, which returns with its own
/// completion, the reply. On the core ring itself (DEFER_TASKRUN) the same
/// wake-up ends the enter with the poll's completion alone: after a wake-up
/// the kernel runs only as many task-work items as the wait asked for, so
/// the reply needed a second enter.
#[test]
fn a_wake_rings_wake_up_wakes_a_parked_core_ring_but_its_enter_returns_with_the_reply() {
    if !uring_available() {
        eprintln!("skipped: io_uring unavailable");
        return;
    }
    for poll_on_core_ring in [false, true] {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut core = core_ring();
        let mut wake = wake_ring(16);
        arm_pollout(if poll_on_core_ring { &mut core } else { &mut wake }, a.as_raw_fd());
        // The poll's completion at arm (the socket is writable), dropped.
        run_task_work(&core);
        run_task_work(&wake);
        drain(&mut core);
        drain(&mut wake);
        let mut reply = Box::new([0u8; MSG]);
        let recv = opcode::Recv::new(types::Fd(a.as_raw_fd()), reply.as_mut_ptr(), MSG as u32)
            .build()
            .user_data(1);
        // SAFETY: `reply` outlives the ring's use of it: this test reaps the
        // receive's completion before it goes.
        unsafe { core.submission().push(&recv).unwrap() };
        core.submit().unwrap();
        a.write_all(&[1u8; MSG]).unwrap();

        // The peer takes the request once this thread is parked, then
        // answers a while later.
        let peer = std::thread::spawn(move || {
            let mut b = b;
            let mut buf = [0u8; MSG];
            std::thread::sleep(Duration::from_millis(50));
            b.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            b.write_all(&[2u8; MSG]).unwrap();
        });
        let switches = voluntary_switches();
        let started = std::time::Instant::now();
        park(&core);
        let parked = started.elapsed();
        let slept = voluntary_switches() - switches;
        let mut got = drain(&mut core);
        if poll_on_core_ring {
            assert!(
                got.len() == 1 && got[0].0 & libc::POLLOUT as i32 != 0 && cqueue::more(got[0].1),
                "on the core ring the wake-up ended the enter, with the poll's completion alone: {got:?} after {parked:?}"
            );
            // The reply needs a second enter.
            park(&core);
            got = drain(&mut core);
        } else {
            assert!(
                parked >= Duration::from_millis(140),
                "the wake ring's wake-up must not end the core ring's enter: it returned after {parked:?}"
            );
            assert!(
                slept >= 2,
                "the wake poll woke the parked thread, which slept again: {slept} sleep(s)"
            );
            let woke = drain(&mut wake);
            assert!(
                !woke.is_empty()
                    && woke
                        .iter()
                        .all(|c| c.0 & libc::POLLOUT as i32 != 0 && cqueue::more(c.1)),
                "the wake-up is on the wake ring: {woke:?}"
            );
        }
        peer.join().unwrap();
        assert_eq!(
            got,
            vec![(MSG as i32, 0)],
            "the (last) enter returns with the reply alone"
        );
        assert_eq!(*reply, [2u8; MSG]);
    }
}

/// A multishot poll never overflows the wake ring's completion queue: when
/// the queue is full the kernel ends it, and only its final completion
/// waits in the overflow list (kept: IORING_FEAT_NODROP) until an enter
/// flushes it. Here every wake-up posts at once: the thread's own read that
/// frees the message runs the poll's task work on its way out.
#[test]
fn a_wake_poll_ends_instead_of_overflowing_the_wake_rings_queue() {
    if !uring_available() {
        eprintln!("skipped: io_uring unavailable");
        return;
    }
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = wake_ring(4);
    let cq_entries = ring.params().cq_entries() as usize;
    arm_pollout(&mut ring, a.as_raw_fd());
    let mut buf = [0u8; MSG];
    // One message taken per enter, nothing reaped: far more wake-ups than
    // the queue holds.
    for _ in 0..4 * cq_entries {
        run_task_work(&ring);
        a.write_all(&[1u8; MSG]).unwrap();
        b.read_exact(&mut buf).unwrap();
    }
    run_task_work(&ring);
    let queued = drain(&mut ring);
    assert_eq!(queued.len(), cq_entries, "the queue filled: {queued:?}");
    assert!(queued.iter().all(|c| cqueue::more(c.1)));
    // The final completion comes out of the overflow list.
    run_task_work(&ring);
    let last = drain(&mut ring);
    assert_eq!(last.len(), 1, "one final completion after the full queue: {last:?}");
    assert!(!cqueue::more(last[0].1), "the poll ended");
    assert!(last[0].0 >= 0, "it ended with a mask, not an error: {}", last[0].0);
    assert_eq!(ring.completion().overflow(), 0, "the kernel dropped completions");
    // Ended: more wake-ups post nothing.
    for _ in 0..4 {
        a.write_all(&[1u8; MSG]).unwrap();
        b.read_exact(&mut buf).unwrap();
        run_task_work(&ring);
    }
    assert!(drain(&mut ring).is_empty());
}

/// Ping-pongs `n` messages over `a`/`b` on this core, reading with `recv_stream`.
async fn ping_pong(a: UnixStream, b: UnixStream, n: usize) {
    let echo = spawn(async move {
        let mut chunks = b.recv_stream();
        while let Some(chunk) = chunks.next().await {
            b.send_all(chunk.unwrap()).await.0.unwrap();
        }
    });
    {
        let mut chunks = a.recv_stream();
        for _ in 0..n {
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
            let mut got = 0;
            while got < MSG {
                got += chunks.next().await.unwrap().unwrap().len();
            }
        }
        let stats = sigma_dataplane::stats().unwrap();
        assert_eq!(stats.wake_polls_armed, 2, "one per live Unix recv_stream: {stats:?}");
    }
    drop(a);
    echo.await;
}

/// On a core that parks at once, each Unix stream's `recv_stream` arms a
/// wake poll, whose completions end parks and are counted, and which goes
/// with the stream; on a core that spins, or with wake polls off, none.
#[test]
fn parking_cores_arm_a_wake_poll_per_unix_stream_and_drop_it_with_the_stream() {
    let Some(core) = parking_core() else {
        return;
    };
    let stats = core.block_on(async {
        let (a, b) = UnixStream::pair().unwrap();
        ping_pong(a, b, 200).await;
        sigma_dataplane::stats().unwrap()
    });
    assert_eq!(stats.wake_polls_armed, 0, "the streams are gone: {stats:?}");
    assert!(
        stats.wake_poll_completions >= 200,
        "each message taken is a write-space wake-up: {stats:?}"
    );
    assert_eq!(stats.ops_in_flight, 0, "nothing left on the ring: {stats:?}");

    let mut without = vec![Core::builder()
        .backend(Backend::Uring)
        .spin(Duration::ZERO)
        .wake_polls(false)];
    // SIGMA_WAKE_POLL (set to run the suite with wake polls forced on or
    // off) decides for cores that do not say: the default is checked only
    // without it.
    if std::env::var_os("SIGMA_WAKE_POLL").is_none() {
        without.push(Core::builder().backend(Backend::Uring).spin(Duration::from_micros(50)));
        let core = Core::builder()
            .backend(Backend::Uring)
            .spin(Duration::ZERO)
            .build()
            .unwrap();
        let armed = core.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut chunks = b.recv_stream();
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
            chunks.next().await.unwrap().unwrap();
            sigma_dataplane::stats().unwrap().wake_polls_armed
        });
        assert_eq!(armed, 1, "a core that parks at once has wake polls by default");
    }
    for builder in without {
        let core = builder.build().unwrap();
        let (armed, completions) = core.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut chunks = b.recv_stream();
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
            chunks.next().await.unwrap().unwrap();
            let s = sigma_dataplane::stats().unwrap();
            (s.wake_polls_armed, s.wake_poll_completions)
        });
        assert_eq!((armed, completions), (0, 0));
    }
}

/// TCP signals write space only after a full send buffer, so a TCP stream
/// never gets a wake poll.
#[test]
fn tcp_streams_get_no_wake_poll() {
    let Some(core) = parking_core() else {
        return;
    };
    let armed = core.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let server = listener.accept().await.unwrap();
        let mut chunks = server.recv_stream();
        client.send_all(&[5u8; MSG][..]).await.0.unwrap();
        chunks.next().await.unwrap().unwrap();
        sigma_dataplane::stats().unwrap().wake_polls_armed
    });
    assert_eq!(armed, 0);
}

/// A core allows `limits::WAKE_POLLS_MAX` wake polls; streams past that go
/// without one and still receive.
#[test]
fn streams_past_the_wake_poll_limit_go_without_and_still_receive() {
    let Some(core) = parking_core() else {
        return;
    };
    let max = sigma_dataplane::limits::WAKE_POLLS_MAX;
    let armed = core.block_on(async move {
        let pairs: Vec<_> = (0..max + 3).map(|_| UnixStream::pair().unwrap()).collect();
        let mut streams: Vec<_> = pairs.iter().map(|(_, b)| b.recv_stream()).collect();
        for (a, _) in &pairs {
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
        }
        for s in &mut streams {
            assert_eq!(s.next().await.unwrap().unwrap().len(), MSG);
        }
        let armed = sigma_dataplane::stats().unwrap().wake_polls_armed;
        drop(streams);
        assert_eq!(sigma_dataplane::stats().unwrap().wake_polls_armed, 0);
        armed
    });
    assert_eq!(armed as usize, max);
}

/// On a σ core that parks at once, the peer taking a request wakes the
/// core (a wake-poll completion) without ending its park: the park's one
/// enter returns with the reply. (With the wake polls on the core's own
/// ring, the park returned at the wake-up and the core entered again.)
#[test]
fn a_parked_cores_wake_poll_wakes_it_without_ending_its_park() {
    let Some(core) = parking_core() else {
        return;
    };
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    // The peer echoes two messages, each a while after taking it.
    let peer = std::thread::spawn(move || {
        let mut b = b;
        let mut buf = [0u8; MSG];
        for _ in 0..2 {
            b.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            b.write_all(&buf).unwrap();
        }
    });
    let (enters, woke) = core.block_on(async move {
        let a = UnixStream::from_owned(a.into()).unwrap();
        let mut chunks = a.recv_stream();
        async fn round_trip(a: &UnixStream, chunks: &mut sigma_dataplane::net::RecvStream<'_>) {
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
            let mut got = 0;
            while got < MSG {
                got += chunks.next().await.unwrap().unwrap().len();
            }
        }
        // The first round trip arms the receive and its wake poll.
        round_trip(&a, &mut chunks).await;
        let before = sigma_dataplane::stats().unwrap();
        round_trip(&a, &mut chunks).await;
        let after = sigma_dataplane::stats().unwrap();
        (
            after.ring_enters - before.ring_enters,
            after.wake_poll_completions - before.wake_poll_completions,
        )
    });
    peer.join().unwrap();
    assert!(woke >= 1, "the peer's taking the request posted a wake-poll completion");
    assert_eq!(
        enters, 1,
        "one enter for the round trip: the park, ended by the reply alone"
    );
}

/// A core that only sends on a Unix stream (its receive armed, nothing
/// coming back) still drains its wake ring: after sixteen times as many
/// messages as the wake ring's queue holds, its wake poll is still armed,
/// not ended for a full queue.
#[test]
fn a_core_that_only_sends_drains_its_wake_ring() {
    let Some(core) = parking_core() else {
        return;
    };
    const MESSAGES: usize = 16 * sigma_dataplane::limits::WAKE_RING_CQ_ENTRIES as usize;
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = b;
        let mut buf = vec![0u8; MSG * MESSAGES];
        b.read_exact(&mut buf).unwrap();
    });
    let stats = core.block_on(async move {
        let a = UnixStream::from_owned(a.into()).unwrap();
        let mut chunks = a.recv_stream();
        // Arms the receive and its wake poll; nothing will come back.
        assert!(common::poll_once_and_drop(chunks.next()).await);
        for _ in 0..MESSAGES {
            a.send_all(&[5u8; MSG][..]).await.0.unwrap();
            sigma_dataplane::yield_now().await;
        }
        sigma_dataplane::stats().unwrap()
    });
    reader.join().unwrap();
    assert_eq!(stats.wake_polls_ended, 0, "the wake ring's queue filled: {stats:?}");
    assert_eq!(stats.wake_polls_armed, 1, "{stats:?}");
}
