//! Dropping futures whose operations are in flight corrupts and leaks nothing.

mod common;

use sigma_dataplane::net::UnixStream;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::task::{Context, Waker};

/// Polls `future` once (which submits its operation) and drops it.
fn poll_once_then_drop<F: Future>(future: F) -> bool {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    future.as_mut().poll(&mut cx).is_pending()
}

async fn settle() {
    // Let the cancels' completions arrive.
    for _ in 0..100 {
        if sigma_dataplane::stats().unwrap().ops_in_flight == 0 {
            return;
        }
        sigma_dataplane::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn ten_thousand_dropped_recvs_leak_nothing_and_eat_no_data() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            let mut pending = 0;
            for i in 0..10_000usize {
                let buf = vec![0xA5u8; 64 + i % 64];
                if poll_once_then_drop(b.recv(buf)) {
                    pending += 1;
                }
                if i % 512 == 0 {
                    // Let cancels complete so that in-flight stays bounded by
                    // the ring, not by this loop.
                    sigma_dataplane::yield_now().await;
                }
            }
            assert_eq!(pending, 10_000, "every recv was in flight when dropped ({backend})");
            settle().await;
            assert_eq!(sigma_dataplane::stats().unwrap().ops_in_flight, 0, "{backend}");
            // No cancelled recv consumed anything: the next message arrives whole.
            let msg: Vec<u8> = (0..200u8).collect();
            let (res, _) = a.send_all(msg.clone()).await;
            res.unwrap();
            let (res, got) = b.recv_exact(Vec::with_capacity(200), 200).await;
            res.unwrap();
            assert_eq!(got, msg, "{backend}");
        });
    }
}

#[test]
fn ten_thousand_dropped_writes_leave_whole_blocks_or_nothing() {
    const BLOCK: usize = 64;
    const N: usize = 10_000;
    for backend in common::backends() {
        let file = tempfile::tempfile().unwrap();
        file.set_len((BLOCK * N) as u64).unwrap();
        let fd = file.as_raw_fd();
        let core = common::core(backend);
        core.block_on(async move {
            for i in 0..N {
                let pattern = (i % 251) as u8 + 1;
                poll_once_then_drop(sigma_dataplane::write_at(fd, vec![pattern; BLOCK], (i * BLOCK) as u64));
                // Churn the allocator so that a buffer freed too early would
                // be reused and overwritten before the kernel reads it.
                let churn: Vec<Vec<u8>> = (0..4).map(|_| vec![0xEE; BLOCK]).collect();
                drop(churn);
                if i % 512 == 0 {
                    sigma_dataplane::yield_now().await;
                }
            }
            settle().await;
            assert_eq!(sigma_dataplane::stats().unwrap().ops_in_flight, 0, "{backend}");
        });
        use std::os::unix::fs::FileExt;
        let mut contents = vec![0u8; BLOCK * N];
        file.read_exact_at(&mut contents, 0).unwrap();
        let mut written = 0;
        for (i, block) in contents.chunks(BLOCK).enumerate() {
            let pattern = (i % 251) as u8 + 1;
            let whole = block.iter().all(|&b| b == pattern);
            let untouched = block.iter().all(|&b| b == 0);
            assert!(
                whole || untouched,
                "block {i} is corrupt ({backend}): {:?}",
                &block[..8]
            );
            written += usize::from(whole);
        }
        eprintln!("{backend}: {written} of {N} dropped writes had completed");
    }
}

/// A stream dropped as `block_on` returns is closed then, not at the core's
/// next use: its peer sees EOF while the core sits unused (its receive's
/// cancel is submitted and run before `block_on` returns).
#[test]
fn a_stream_dropped_when_block_on_returns_is_closed_before_the_core_is_used_again() {
    use std::io::Read;
    for backend in common::backends() {
        let core = common::core(backend);
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        core.block_on(async move {
            let s = sigma_dataplane::net::UnixStream::from_owned(ours.into()).unwrap();
            let mut chunks = s.recv_stream();
            // Arms the receive (and, on a parking core, its wake poll).
            assert!(poll_once_then_drop(chunks.next()));
        });
        peer.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 8];
        match peer.read(&mut buf) {
            Ok(0) => {}
            other => panic!("{backend}: the peer saw {other:?}, not EOF, with the core idle after block_on"),
        }
        drop(core);
    }
}
