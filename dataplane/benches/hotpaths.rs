//! Microbenchmarks of the data plane's hot paths (`cargo bench -p sigma-dataplane`).
//!
//! These guard against regressions of one code path at a time; the figures
//! that compare σ with other runtimes come from `sigmabench`, never from here.

use criterion::{criterion_group, criterion_main, Criterion};
use sigma_dataplane::channel::channel;
use sigma_dataplane::net::UnixStream;
use sigma_dataplane::{Backend, Core};
use std::time::{Duration, Instant};

fn uring_available() -> bool {
    match &sigma_dataplane::probe::support().unavailable {
        None => true,
        Some(why) => {
            eprintln!("skipping io_uring microbenchmarks: {why}");
            false
        }
    }
}

/// One NOP submitted and completed: the floor of every ring operation.
fn nop(c: &mut Criterion) {
    if !uring_available() {
        return;
    }
    let core = Core::builder().backend(Backend::Uring).build().unwrap();
    c.bench_function("ring/nop-submit-complete", |b| {
        b.iter_custom(|iters| {
            core.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    sigma_dataplane::nop().await.unwrap();
                }
                start.elapsed()
            })
        })
    });
}

/// 64 bytes through a Unix socket pair on one core, received by the armed
/// multishot recv into the buffer ring, the buffer recycled when the chunk
/// drops.
fn buffer_recycle(c: &mut Criterion) {
    for backend in [Backend::Uring, Backend::Epoll] {
        if backend == Backend::Uring && !uring_available() {
            continue;
        }
        let core = Core::builder().backend(backend).build().unwrap();
        c.bench_function(&format!("bufring/send-recv-recycle-64B/{backend}"), |b| {
            b.iter_custom(|iters| {
                core.block_on(async move {
                    let (a, b) = UnixStream::pair().unwrap();
                    let mut chunks = b.recv_stream();
                    let msg = bytes::Bytes::from_static(&[7u8; 64]);
                    let start = Instant::now();
                    for _ in 0..iters {
                        a.send_all(msg.clone()).await.0.unwrap();
                        let mut got = 0;
                        while got < 64 {
                            got += chunks.next().await.unwrap().unwrap().len();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
}

/// A message to another core and its answer back over two SPSC queues,
/// both cores spinning (no park).
fn cross_core(c: &mut Criterion) {
    let backend = if uring_available() {
        Backend::Uring
    } else {
        Backend::Epoll
    };
    let (mut to_peer, mut at_peer) = channel::<u64>(64);
    let (mut to_me, mut at_me) = channel::<u64>(64);
    let peer = std::thread::spawn(move || {
        let core = Core::builder()
            .backend(backend)
            .pin(1)
            .spin(Duration::from_millis(1))
            .build()
            .unwrap();
        core.block_on(async move {
            while let Some(v) = at_peer.recv().await {
                if to_me.send(v).await.is_err() {
                    break;
                }
            }
        })
    });
    let core = Core::builder()
        .backend(backend)
        .pin(0)
        .spin(Duration::from_millis(1))
        .build()
        .unwrap();
    c.bench_function(&format!("channel/cross-core-round-trip/{backend}"), |b| {
        b.iter_custom(|iters| {
            core.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    to_peer.send(i).await.unwrap();
                    assert_eq!(at_me.recv().await, Some(i));
                }
                start.elapsed()
            })
        })
    });
    drop(to_peer);
    peer.join().unwrap();
}

criterion_group! {
    name = hotpaths;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = nop, buffer_recycle, cross_core
}
criterion_main!(hotpaths);
