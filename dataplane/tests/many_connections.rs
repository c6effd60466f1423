//! Thousands of idle connections, each with a receive armed on the core,
//! must not starve new work: a new connection's round trip still completes
//! at once (issue #10: at 300 idle connections sigmad stopped answering,
//! because each receive held one of 256 in-flight slots and new operations
//! waited for room forever). Also checks the completion bound holds: the
//! completion queue never overflowed. Its own test binary: it raises this
//! process's open-file limit.

mod common;

use sigma_dataplane::net::{UnixListener, UnixStream};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Idle connections held open on the core, each with a receive pending.
const IDLE: usize = 5_000;

#[test]
fn thousands_of_idle_receives_leave_room_for_new_work() {
    let have = common::raise_nofile(4 * IDLE as u64);
    if have < 2 * IDLE as u64 + 200 {
        eprintln!(
            "skipping: RLIMIT_NOFILE hard limit {have} is below the {} fds this test needs",
            2 * IDLE + 200
        );
        return;
    }
    for backend in common::backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let path2 = path.clone();
        common::within(
            Duration::from_secs(60),
            &format!("{backend}: idle connections"),
            move || {
                let core = common::core(backend);
                core.block_on(async move {
                    let listener = UnixListener::bind(&path2).unwrap();
                    // Clients on a plain thread: they hold the other ends open
                    // and idle, then one of them asks for an echo.
                    let client_path = path2.clone();
                    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
                    let clients = std::thread::spawn(move || {
                        let idle: Vec<std::os::unix::net::UnixStream> = (0..IDLE)
                            .map(|_| std::os::unix::net::UnixStream::connect(&client_path).unwrap())
                            .collect();
                        go_rx.recv().unwrap();
                        let mut fresh = std::os::unix::net::UnixStream::connect(&client_path).unwrap();
                        fresh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let start = Instant::now();
                        fresh.write_all(b"ping").unwrap();
                        let mut reply = [0u8; 4];
                        let got = fresh.read_exact(&mut reply).map(|()| reply);
                        (idle, got, start.elapsed())
                    });
                    let mut incoming = listener.incoming();
                    let mut served = Vec::new();
                    for _ in 0..IDLE {
                        let stream = std::rc::Rc::new(incoming.next().await.unwrap());
                        let s = stream.clone();
                        // Each idle connection's receive is armed on the core.
                        served.push(sigma_dataplane::spawn(async move {
                            let (res, _buf) = s.recv(vec![0u8; 64]).await;
                            res
                        }));
                        drop(stream);
                    }
                    // Let every receive reach the kernel.
                    sigma_dataplane::sleep(Duration::from_millis(50)).await;
                    go_tx.send(()).unwrap();
                    let fresh: UnixStream = incoming.next().await.unwrap();
                    let (res, buf) = fresh.recv(vec![0u8; 4]).await;
                    assert_eq!(res.unwrap(), 4);
                    let (res, _) = fresh.send(buf).await;
                    res.unwrap();
                    let (idle, got, took) = clients.join().unwrap();
                    assert_eq!(&got.expect("the new connection's echo"), b"ping");
                    eprintln!("{backend}: echo with {IDLE} idle receives armed took {took:?}");
                    // Closing the idle clients ends every pending receive with EOF.
                    drop(idle);
                    for task in served {
                        assert_eq!(task.await.unwrap(), 0);
                    }
                    let stats = sigma_dataplane::stats().expect("on a core");
                    assert_eq!(stats.cq_overflows, 0, "the completion queue overflowed: {stats:?}");
                    eprintln!("{backend}: operations in flight at most {}", stats.ops_in_flight_max);
                });
            },
        );
    }
}
