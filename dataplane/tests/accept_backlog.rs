//! A listener's `incoming()` pulls at most one connection into an fd ahead
//! of its consumer: its accept is single-shot (one completion per
//! connection, which the core's completion bound counts) and is kept across
//! dropped `next()` futures, so later connections wait in the kernel's
//! listen backlog. Every connection is still accepted once the consumer
//! catches up, and a connection accepted for an `incoming()` dropped
//! meanwhile is closed, not leaked. Its own test binary: it counts this
//! process's open fds.

mod common;

use common::{open_fds, poll_once_and_drop as poll_once};

use sigma_dataplane::net::TcpListener;
use std::io::Write;
use std::time::Duration;

#[test]
fn incoming_pulls_one_connection_ahead_of_its_consumer_and_leaks_none() {
    const BURST: usize = 150;
    const CLIENTS: usize = 6 * BURST;
    // Client and server ends of every connection live in this process.
    let nofile = common::raise_nofile(8192);
    assert!(nofile >= 2 * CLIENTS as u64 + 100, "RLIMIT_NOFILE {nofile} too low");
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let mut incoming = listener.incoming();
            // Arm the accept: the first connection is taken at once.
            let first = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
            let taken = incoming.next().await.unwrap();
            let first = first.join().unwrap();
            drop(taken);
            drop(first);
            sigma_dataplane::sleep(Duration::from_millis(20)).await;
            // Arm the accept again and drop the future waiting on it, as a
            // select loop does: the accept stays in flight for the next call.
            poll_once(incoming.next()).await;

            let before = open_fds();
            // Bursts of connections, while nobody accepts; the core parks
            // between them and runs the kernel's accepts for the armed
            // multishot meanwhile.
            let clients = std::thread::spawn(move || {
                let mut clients = Vec::new();
                for _ in 0..CLIENTS / BURST {
                    for _ in 0..BURST {
                        clients.push(std::net::TcpStream::connect(addr).unwrap());
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
                clients
            });
            for _ in 0..30 {
                sigma_dataplane::sleep(Duration::from_millis(10)).await;
            }
            let mut clients = clients.join().unwrap();
            sigma_dataplane::sleep(Duration::from_millis(50)).await;
            let held = open_fds() - before - CLIENTS;
            assert!(
                held <= 1,
                "{backend}: {held} of {CLIENTS} connections pulled into fds for a consumer that took none (bound 1)"
            );
            // Every connection is still accepted, in full working order.
            let mut accepted = Vec::new();
            for _ in 0..CLIENTS {
                accepted.push(incoming.next().await.unwrap());
            }
            for (i, client) in clients.iter_mut().enumerate() {
                client.write_all(&(i as u32).to_le_bytes()).unwrap();
            }
            let mut seen = vec![false; CLIENTS];
            for stream in &accepted {
                let mut got = Vec::new();
                while got.len() < 4 {
                    let (res, buf) = stream.recv(Vec::with_capacity(4 - got.len())).await;
                    assert!(res.unwrap() > 0, "{backend}: a connection closed early");
                    got.extend_from_slice(&buf);
                }
                let i = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
                assert!(!seen[i], "{backend}: client {i} seen twice");
                seen[i] = true;
            }
            assert!(seen.iter().all(|&s| s), "{backend}: a client was never accepted");
            drop(accepted);
            drop(clients);

            // An accept that took a connection nobody took from it when its
            // `incoming()` is dropped: the connection is closed (the client
            // sees EOF), not leaked.
            poll_once(incoming.next()).await;
            let (connected_tx, connected_rx) = std::sync::mpsc::channel();
            let client = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                connected_tx.send(()).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut b = [0u8; 1];
                std::io::Read::read(&mut c, &mut b)
            });
            while connected_rx.try_recv().is_err() {
                sigma_dataplane::sleep(Duration::from_millis(5)).await;
            }
            // The core runs the armed accept while it sleeps.
            sigma_dataplane::sleep(Duration::from_millis(50)).await;
            drop(incoming);
            if backend == sigma_dataplane::Backend::Uring {
                let mut waited = 0;
                while !client.is_finished() && waited < 500 {
                    sigma_dataplane::sleep(Duration::from_millis(10)).await;
                    waited += 1;
                }
                assert!(
                    client.is_finished(),
                    "{backend}: the orphaned connection was never closed"
                );
            }
            // (epoll: nothing was in flight; the connection waits in the
            // backlog until the listener goes.)
            drop(listener);
            let end = client.join().unwrap();
            assert!(matches!(end, Ok(0) | Err(_)), "{backend}: the client read {end:?}");
            sigma_dataplane::sleep(Duration::from_millis(20)).await;
            assert!(
                open_fds() <= before,
                "{backend}: fds leaked: {} open, {before} before",
                open_fds()
            );
        });
    }
}
