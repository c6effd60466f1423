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

/// Encoding a frame header, decoding a frame off a receive buffer, and
/// dispatching a decoded request to a typed handler (no IO).
fn rpc_codec_and_dispatch(c: &mut Criterion) {
    use bytes::{BufMut, Bytes, BytesMut};
    use sigma_dataplane::rpc::Service;
    use sigma_ep::{Header, Pod};

    c.bench_function("rpc/encode-header", |b| {
        let mut out = [0u8; 32];
        let mut id = 0u64;
        b.iter(|| {
            id += 1;
            Header::request(id, 1, 64, 0).encode(std::hint::black_box(&mut out));
        })
    });

    c.bench_function("rpc/decode-frame-64B", |b| {
        let mut wire = [0u8; 32];
        Header::request(7, 1, 64, 0).encode(&mut wire);
        let mut buf = BytesMut::with_capacity(1 << 16);
        b.iter(|| {
            if buf.capacity() < 96 {
                buf.reserve(1 << 16);
            }
            buf.put_slice(&wire);
            buf.put_slice(&[0u8; 64]);
            let frame = sigma_ep::decode_frame(&mut buf).unwrap().unwrap();
            std::hint::black_box(frame.payload.len())
        })
    });

    sigma_dataplane::rpc_service! {
        /// A one-method service for the dispatch benchmark.
        service Adder, server AdderServer, client AdderClient {
            1 => add(Pod<[u64; 2]>) -> Pod<u64>;
        }
    }
    struct Impl;
    impl Adder for Impl {
        async fn add(&self, request: Pod<[u64; 2]>) -> Result<Pod<u64>, sigma_dataplane::rpc::Status> {
            Ok(Pod(request.0[0].wrapping_add(request.0[1])))
        }
    }
    let core = Core::builder().backend(Backend::Epoll).build().unwrap();
    let server = AdderServer(Impl);
    let request = Bytes::copy_from_slice(&[1u8; 16]);
    c.bench_function("rpc/dispatch-typed", |b| {
        b.iter_custom(|iters| {
            core.block_on(async {
                let mut out = BytesMut::with_capacity(1 << 16);
                let start = Instant::now();
                for _ in 0..iters {
                    if out.capacity() < 64 {
                        out.reserve(1 << 16);
                    }
                    server.call(1, request.clone(), &mut out).await.unwrap();
                    std::hint::black_box(out.split());
                }
                start.elapsed()
            })
        })
    });
}

criterion_group! {
    name = hotpaths;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = nop, buffer_recycle, cross_core, rpc_codec_and_dispatch
}
criterion_main!(hotpaths);
