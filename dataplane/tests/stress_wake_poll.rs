//! Wake polls under stress: on an io_uring core that parks at once (so its
//! Unix streams' receives carry wake polls), many Unix stream pairs opened,
//! echoed over, their receive streams and sockets dropped mid-receive and
//! re-opened at random, with more streams alive than the core allows wake
//! polls. Afterwards no fd is leaked, no byte reached the wrong stream, no
//! wake poll is left armed, nothing is left in flight on the ring, and every
//! receive buffer is back.
//!
//! One test in its own binary, so that counting `/proc/self/fd` sees only
//! this test's descriptors. `SIGMA_STRESS_SECS` sets its time (default 3).

mod common;

use common::{open_fds, poll_once_and_drop, Rng};
use sigma_dataplane::net::{RecvStream, UnixStream};
use sigma_dataplane::{limits, spawn, Backend, Core};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Echoing pairs alive at once: two receive streams each, more than
/// `limits::WAKE_POLLS_MAX` in all.
const PAIRS: usize = 48;
/// Receive buffers of the core: few, so the ring runs dry now and then.
const RING: u16 = 64;
/// Bytes of each message.
const MSG: usize = 64;

/// Polls the stream's receive once (arming it and its wake poll) and drops
/// the stream with them in flight.
async fn drop_mid_receive(mut chunks: RecvStream<'_>) {
    poll_once_and_drop(chunks.next()).await;
    drop(chunks);
}

/// A message naming its pair, round and sequence number in every byte, so
/// that one on the wrong stream, or torn, shows.
fn message(pair: usize, round: u64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MSG);
    out.extend_from_slice(&(pair as u64).to_le_bytes());
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    while out.len() < MSG {
        out.push((pair as u64 ^ round.wrapping_mul(31) ^ seq.wrapping_mul(7) ^ out.len() as u64) as u8);
    }
    out
}

#[derive(Default)]
struct Counts {
    checked: Cell<u64>,
    dropped: Cell<u64>,
    max_armed: Cell<u64>,
}

/// One pair after another until `end`: an echo task on one side, messages
/// checked on the other, either side dropping its receive mid-flight now
/// and then (and its socket with it).
async fn pairs(pair: usize, rng: Rc<Rng>, end: Instant, counts: Rc<Counts>) {
    let mut round = 0u64;
    while Instant::now() < end {
        let (a, b) = UnixStream::pair().unwrap();
        let echo_rng = rng.clone();
        let echo = spawn(async move {
            let mut chunks = b.recv_stream();
            loop {
                if echo_rng.below(150) == 0 {
                    drop_mid_receive(chunks).await;
                    return;
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        if b.send_all(chunk).await.0.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        let mut chunks = a.recv_stream();
        for seq in 0..1 + rng.below(30) {
            let msg = message(pair, round, seq);
            if rng.below(150) == 0 {
                // Dropped with nothing sent, or with the echo on its way.
                if rng.below(2) == 0 {
                    let _ = a.send_all(msg).await;
                }
                drop_mid_receive(chunks).await;
                counts.dropped.set(counts.dropped.get() + 1);
                chunks = a.recv_stream();
                break;
            }
            if a.send_all(msg.clone()).await.0.is_err() {
                break;
            }
            let mut got = Vec::with_capacity(MSG);
            while got.len() < MSG {
                match chunks.next().await {
                    Some(Ok(chunk)) => got.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            if got.len() < MSG {
                // The echo side dropped its receive and the connection.
                assert!(msg.starts_with(&got), "a torn message: {got:?}");
                break;
            }
            assert_eq!(got, msg, "bytes from another stream, or torn");
            counts.checked.set(counts.checked.get() + 1);
            let armed = sigma_dataplane::stats().unwrap().wake_polls_armed;
            counts.max_armed.set(counts.max_armed.get().max(armed));
        }
        drop(chunks);
        drop(a);
        echo.await;
        round += 1;
    }
}

#[test]
fn wake_polls_survive_streams_and_sockets_dropped_mid_receive() {
    if !matches!(common::backends().first(), Some(Backend::Uring)) {
        eprintln!("skipped: io_uring unavailable (wake polls are io_uring's)");
        return;
    }
    let secs: u64 = std::env::var("SIGMA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}, {secs} s");
    let fds_before = open_fds();
    let (stats, free, counts) = common::within(Duration::from_secs(secs + 60), "the wake-poll stress", move || {
        let core = Core::builder()
            .backend(Backend::Uring)
            .spin(Duration::ZERO)
            .wake_polls(true)
            .recv_buffers(RING, 256)
            .build()
            .unwrap();
        core.block_on(async move {
            let rng = Rc::new(Rng::new(seed));
            let counts = Rc::new(Counts::default());
            let end = Instant::now() + Duration::from_secs(secs);
            let tasks: Vec<_> = (0..PAIRS)
                .map(|pair| spawn(pairs(pair, rng.clone(), end, counts.clone())))
                .collect();
            for task in tasks {
                task.await;
            }
            // The cancels of dropped receives and wake polls complete.
            for _ in 0..200 {
                let stats = sigma_dataplane::stats().unwrap();
                if stats.ops_in_flight == 0 && sigma_dataplane::free_receive_buffers() == Some(u32::from(RING)) {
                    break;
                }
                sigma_dataplane::sleep(Duration::from_millis(1)).await;
            }
            let counts = (counts.checked.get(), counts.dropped.get(), counts.max_armed.get());
            (
                sigma_dataplane::stats().unwrap(),
                sigma_dataplane::free_receive_buffers().unwrap(),
                counts,
            )
        })
    });
    let (checked, dropped, max_armed) = counts;
    eprintln!("{checked} messages checked, {dropped} receives dropped mid-flight, at most {max_armed} wake polls armed; {stats:?}");
    assert!(checked > 1000 && dropped > 10, "too little happened to tell");
    assert_eq!(
        max_armed as usize,
        limits::WAKE_POLLS_MAX,
        "the streams alive should exceed the cap"
    );
    assert!(stats.wake_poll_completions > 0);
    assert_eq!(stats.wake_polls_armed, 0, "wake polls left armed");
    assert_eq!(stats.ops_in_flight, 0, "operations left in flight");
    assert_eq!(free, u32::from(RING), "receive buffers not back in the ring");
    assert_eq!(open_fds(), fds_before, "fds leaked");
}
