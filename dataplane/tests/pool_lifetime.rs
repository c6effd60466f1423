//! A received chunk holds no reference count on its core's buffer pool
//! (issue #9: no per-chunk shared count bouncing between cores), so the
//! pool's lifetime rests on the pool counting its buffers back. This binary
//! holds one test, so that the process-wide count of live pools it reads is
//! its own.

mod common;

use common::within;

use bytes::Bytes;
use sigma_dataplane::net::UnixStream;
use sigma_dataplane::{receive_pools_alive, Core};
use std::sync::mpsc;
use std::time::Duration;

/// A chunk kept after its core stopped keeps the pool memory (and reads its
/// bytes); dropping it frees the pool. Chunks dropped on other threads
/// while their core stops are all counted back: no pool is freed early and
/// none is left behind.
#[test]
fn the_last_chunk_back_frees_the_pool_never_earlier() {
    assert_eq!(receive_pools_alive(), 0);
    for backend in common::backends() {
        let kept = within(Duration::from_secs(20), &format!("{backend}: receiving"), move || {
            let core = Core::builder().backend(backend).recv_buffers(4, 64).build().unwrap();
            core.block_on(async move {
                let (a, b) = UnixStream::pair().unwrap();
                a.send_all(Bytes::from_static(b"kept past the end")).await.0.unwrap();
                let mut stream = b.recv_stream();
                stream.next().await.unwrap().unwrap()
            })
        });
        if receive_pools_alive() != 1 {
            // Dropping the chunk would touch the freed pool.
            std::mem::forget(kept);
            panic!("{backend}: the pool of a held chunk was freed");
        }
        assert_eq!(&kept[..], b"kept past the end", "{backend}");
        let clone = kept.slice(5..9);
        drop(kept);
        assert_eq!(
            receive_pools_alive(),
            1,
            "{backend}: freed while a clone of the chunk lives"
        );
        assert_eq!(&clone[..], b"past", "{backend}");
        drop(clone);
        assert_eq!(
            receive_pools_alive(),
            0,
            "{backend}: the last chunk back did not free the pool"
        );

        for round in 0..50 {
            let (to_dropper, batches) = mpsc::channel::<Vec<Bytes>>();
            let dropper = std::thread::spawn(move || {
                for batch in batches {
                    assert!(batch.iter().all(|c| c.iter().all(|&b| b == 7)));
                    // Dropped at a varying moment around the core's end.
                    std::thread::sleep(Duration::from_micros(50 * (batch.len() as u64 % 3)));
                    drop(batch);
                }
            });
            within(
                Duration::from_secs(20),
                &format!("{backend} round {round}"),
                move || {
                    let core = Core::builder().backend(backend).recv_buffers(8, 64).build().unwrap();
                    core.block_on(async move {
                        let (a, b) = UnixStream::pair().unwrap();
                        let mut stream = b.recv_stream();
                        for _ in 0..4 {
                            a.send_all(Bytes::from(vec![7u8; 64])).await.0.unwrap();
                            let mut batch = Vec::new();
                            let mut got = 0;
                            while got < 64 {
                                let chunk = stream.next().await.unwrap().unwrap();
                                got += chunk.len();
                                batch.push(chunk);
                            }
                            to_dropper.send(batch).unwrap();
                        }
                    });
                },
            );
            dropper.join().unwrap();
            assert_eq!(
                receive_pools_alive(),
                0,
                "{backend} round {round}: a pool was left behind"
            );
        }
    }
}
