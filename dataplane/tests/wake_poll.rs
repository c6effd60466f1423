//! Wake polls (`op/recv_multi.rs`): what σ arms, and the two kernel
//! behaviours the completion bound in `limits.rs` rests on, tested against
//! the running kernel with a bare ring shaped like σ's
//! (SINGLE_ISSUER|DEFER_TASKRUN).

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

/// A σ-shaped ring: task work runs only when this thread enters with GETEVENTS.
fn ring(cq_entries: u32) -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq_entries)
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

fn drain(ring: &mut IoUring) -> Vec<(i32, u32)> {
    ring.completion().map(|c| (c.result(), c.flags())).collect()
}

/// Wake-ups that arrive while the core is out of the kernel post one
/// completion, not one each: the poll's task work runs at the core's next
/// enter, once, and looks at the socket then (io_poll_check_events). This
/// is what bounds a wake poll's completions per enter.
#[test]
fn a_wake_poll_posts_one_completion_per_enter_however_many_wake_ups_came() {
    if !uring_available() {
        eprintln!("skipped: io_uring unavailable");
        return;
    }
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring(16);
    arm_pollout(&mut ring, a.as_raw_fd());
    run_task_work(&ring);
    let armed = drain(&mut ring);
    assert_eq!(armed.len(), 1, "a writable socket posts once at arm: {armed:?}");
    assert!(cqueue::more(armed[0].1), "the poll stays armed");

    // 20 messages, each taken by the peer: 20 write-space wake-ups.
    for _ in 0..20 {
        a.write_all(&[1u8; MSG]).unwrap();
    }
    let mut buf = [0u8; MSG];
    for _ in 0..20 {
        b.read_exact(&mut buf).unwrap();
    }
    assert!(drain(&mut ring).is_empty(), "nothing posts before the core enters");
    run_task_work(&ring);
    let posted = drain(&mut ring);
    assert_eq!(posted.len(), 1, "20 wake-ups before one enter: {posted:?}");
    assert!(posted[0].0 & libc::POLLOUT as i32 != 0 && cqueue::more(posted[0].1));
}

/// A multishot poll never overflows the completion queue: when the queue is
/// full the kernel ends it, and only its final completion waits in the
/// overflow list (kept: IORING_FEAT_NODROP), counted as that operation's
/// one final completion.
#[test]
fn a_wake_poll_ends_instead_of_overflowing_the_completion_queue() {
    if !uring_available() {
        eprintln!("skipped: io_uring unavailable");
        return;
    }
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut ring = ring(4);
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
