//! Network behaviour on both back ends: echo, multishot accept and recv,
//! buffer exhaustion, fd passing, bad peers.

mod common;

use bytes::Bytes;
use sigma_dataplane::net::{TcpListener, TcpStream, UnixStream};
use sigma_dataplane::{spawn, Backend};
use std::time::Duration;

#[test]
fn tcp_echo_roundtrips_on_every_backend() {
    for backend in common::backends() {
        let core = common::core(backend);
        assert_eq!(core.backend(), backend);
        core.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            spawn(async move {
                let mut incoming = listener.incoming();
                let stream = incoming.next().await.unwrap();
                let mut buf = Vec::with_capacity(4096);
                loop {
                    let (res, b) = stream.recv(buf).await;
                    if res.unwrap() == 0 {
                        break;
                    }
                    let (res, b) = stream.send_all(b).await;
                    res.unwrap();
                    buf = b;
                }
            });
            let client = TcpStream::connect(addr).await.unwrap();
            for i in 0..100u32 {
                let msg = format!("ping {i}").into_bytes();
                let len = msg.len();
                let (res, _) = client.send_all(msg.clone()).await;
                res.unwrap();
                let (res, got) = client.recv_exact(Vec::with_capacity(64), len).await;
                res.unwrap();
                assert_eq!(got, msg, "{backend}");
            }
        });
    }
}

#[test]
fn multishot_recv_survives_buffer_exhaustion_in_order() {
    // 1,000 messages through a ring of 4 buffers whose chunks the receiver
    // holds on to: the ring runs dry again and again, and every byte still
    // arrives, in order.
    for backend in common::backends() {
        let core = sigma_dataplane::Core::builder()
            .backend(backend)
            .recv_buffers(4, 64)
            .build()
            .unwrap();
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            let writer = spawn(async move {
                for i in 0..1000u32 {
                    let (res, _) = a.send_all(i.to_le_bytes().to_vec()).await;
                    res.unwrap();
                    if i % 3 == 0 {
                        sigma_dataplane::yield_now().await;
                    }
                }
                drop(a);
            });
            let mut held: Vec<Bytes> = Vec::new();
            let mut all = Vec::new();
            let mut stream = b.recv_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                assert!(chunk.len() <= 64);
                all.extend_from_slice(&chunk);
                held.push(chunk);
                // Keep every buffer until the pool is empty, then release a
                // few at a time from another task, later.
                if sigma_dataplane::free_receive_buffers() == Some(0) {
                    let release: Vec<Bytes> = std::mem::take(&mut held);
                    spawn(async move {
                        sigma_dataplane::sleep(Duration::from_millis(1)).await;
                        drop(release);
                    });
                }
            }
            writer.await;
            drop(held);
            assert_eq!(all.len(), 4000, "{backend}");
            for (i, word) in all.chunks(4).enumerate() {
                assert_eq!(u32::from_le_bytes(word.try_into().unwrap()), i as u32, "{backend}");
            }
            let stats = sigma_dataplane::stats().unwrap();
            assert!(
                stats.recv_rearms_after_enobufs > 0,
                "the ring never ran dry ({backend}): {stats:?}"
            );
            eprintln!("{backend}: {stats:?}");
        });
    }
}

#[test]
fn fds_pass_over_unix_sockets() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
            use std::os::fd::AsFd;
            let (res, _) = a.send_with_fds(vec![b"fd".to_vec()], &[x.as_fd()]).await;
            assert_eq!(res.unwrap(), 2);
            drop(x);
            let (res, buf) = b.recv_with_fds(Vec::with_capacity(16)).await;
            let (n, fds) = res.unwrap();
            assert_eq!((n, &buf[..]), (2, &b"fd"[..]));
            assert_eq!(fds.len(), 1, "{backend}");
            // The passed fd is a live end of the (x, y) pair.
            let passed = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
            use std::io::{Read, Write};
            (&passed).write_all(b"hi").unwrap();
            let mut got = [0u8; 2];
            (&y).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"hi");
        });
    }
}

#[test]
fn sleep_and_timeout() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let start = std::time::Instant::now();
            sigma_dataplane::sleep(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20), "{backend}");
            let (a, _b) = UnixStream::pair().unwrap();
            let res = sigma_dataplane::timeout(Duration::from_millis(20), a.recv(Vec::with_capacity(8))).await;
            assert!(res.is_err(), "recv with no data must hit the deadline ({backend})");
        });
    }
}

#[test]
fn forced_epoll_reports_epoll() {
    let core = common::core(Backend::Epoll);
    assert_eq!(core.backend(), Backend::Epoll);
}

#[test]
fn a_core_that_never_idles_still_gets_its_completions() {
    // One task is always ready, so the core never parks: completions reach
    // it only through the polls between ticks, which on io_uring skip the
    // kernel unless IORING_SQ_TASKRUN says task work is pending. Data
    // written from another thread must still arrive, every time.
    for backend in common::backends() {
        let core = common::core(backend);
        let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut theirs = theirs;
            let mut ack = [0u8; 1];
            for i in 0..200u8 {
                theirs.write_all(&[i]).unwrap();
                // Wait for the core's ack, so each byte arrives while the
                // core is busy and no receive completes during a park.
                theirs.read_exact(&mut ack).unwrap();
                assert_eq!(ack[0], i);
            }
        });
        core.block_on(async move {
            let stream = UnixStream::from_owned(mine.into()).unwrap();
            let done = std::rc::Rc::new(std::cell::Cell::new(false));
            let busy = {
                let done = done.clone();
                spawn(async move {
                    let mut spins = 0u64;
                    while !done.get() {
                        spins += 1;
                        sigma_dataplane::yield_now().await;
                    }
                    spins
                })
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut chunks = stream.recv_stream();
            let mut got = 0u8;
            while got < 200 {
                let chunk = chunks.next().await.unwrap().unwrap();
                for &b in chunk.iter() {
                    assert_eq!(b, got, "{backend}");
                    got += 1;
                    let (res, _) = stream.send_all(vec![b]).await;
                    res.unwrap();
                }
                assert!(std::time::Instant::now() < deadline, "{backend}: too slow");
            }
            done.set(true);
            assert!(busy.await > 0);
            assert_eq!(sigma_dataplane::stats().unwrap().parks, 0, "{backend}: the core parked");
        });
        writer.join().unwrap();
    }
}

/// A send tries a plain send(2) first on io_uring; it must never overtake
/// the bytes of a ring send of the same socket whose future was dropped
/// while it waited for room, even when the peer made room meanwhile (the
/// dropped send's cancel reaches the kernel before it can move again). The
/// peer must see a prefix of the first send, then the marker, and nothing
/// after it. (Fails when a dropped send is not cancelled.)
#[test]
fn a_send_after_a_dropped_send_never_lets_its_bytes_overtake() {
    use std::io::Read;
    for backend in common::backends() {
        for round in 0..10 {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let reader = std::thread::spawn(move || {
                // A slow reader: the socket keeps filling up and draining.
                let mut theirs = theirs;
                let mut all = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    let n = theirs.read(&mut chunk).unwrap();
                    if n == 0 {
                        break all;
                    }
                    all.extend_from_slice(&chunk[..n]);
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            let core = common::core(backend);
            core.block_on(async move {
                let stream = UnixStream::from_owned(mine.into()).unwrap();
                // Far more than the socket holds: the rest waits in the ring
                // until the timeout drops the future.
                let big = vec![b'A'; 16 << 20];
                let sent = sigma_dataplane::timeout(Duration::from_millis(20), stream.send_all(big)).await;
                assert!(sent.is_err(), "{backend}: 16 MiB went out in 20 ms to a slow reader");
                // The core does not enter the kernel for a while (its ring
                // send stays pending) while the reader makes room.
                std::thread::sleep(Duration::from_millis(5));
                let (res, _) = stream.send_all(b"END".to_vec()).await;
                res.unwrap();
                // Closing makes the reader's read_to_end return.
                drop(stream);
                sigma_dataplane::sleep(Duration::from_millis(1)).await;
            });
            drop(core);
            let all = reader.join().unwrap();
            let end = all.len() - 3;
            assert_eq!(&all[end..], b"END", "{backend} round {round}: the marker is not last");
            assert!(
                all[..end].iter().all(|&b| b == b'A'),
                "{backend} round {round}: bytes of the first send came after the marker"
            );
        }
    }
}

/// A listener removes its socket file on drop, unless another socket has
/// replaced it at that path since (another server's, which must survive).
#[test]
fn a_unix_listener_removes_only_its_own_socket_file() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            drop(sigma_dataplane::net::UnixListener::bind(&path).unwrap());
            assert!(!path.exists(), "{backend:?}: its own socket is removed");

            let first = sigma_dataplane::net::UnixListener::bind(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            let second = std::os::unix::net::UnixListener::bind(&path).unwrap();
            drop(first);
            assert!(path.exists(), "{backend:?}: another listener's socket survives");
            std::os::unix::net::UnixStream::connect(&path).unwrap();
            drop(second);
        });
    }
}
