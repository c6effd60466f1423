//! Adversarial stress on two cores, on every back end: many connections
//! opened, used, dropped mid-operation and re-opened at random; receive
//! buffers held and dropped on other threads; the multishot accept dropped
//! and re-armed. Afterwards no fd is leaked, no byte reached the wrong
//! connection, and every receive buffer is back in its ring.
//!
//! One test in its own binary, so that counting `/proc/self/fd` sees only
//! this test's descriptors. `SIGMA_STRESS_SECS` sets the time per back end
//! (default 10).

mod common;

use common::{open_fds, poll_once_and_drop, Rng};

use bytes::Bytes;
use sigma_dataplane::net::{TcpListener, TcpStream};
use sigma_dataplane::{spawn, Backend, Core};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Client connections alive at once.
const CLIENTS: usize = 24;
/// Receive buffers per core: few, so the rings run dry often.
const RING: u16 = 16;
/// The id a client sends to tell the server to stop.
const STOP: u64 = u64::MAX;

/// A message: connection id, sequence number, length, then bytes derived
/// from all three (so a message on the wrong connection, or torn, shows).
fn message(conn: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + len);
    m.extend_from_slice(&conn.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u64).to_le_bytes());
    m.extend((0..len).map(|i| (conn as usize * 31 + seq as usize * 7 + i) as u8));
    m
}

/// The server core: accepts (re-arming the multishot accept now and then),
/// echoes with multishot receives, sometimes hands chunks to a thread that
/// drops them later, sometimes drops a connection mid-receive. Returns the
/// number of connections served and the free buffers once all are gone.
fn server(backend: Backend, seed: u64, ready: mpsc::Sender<SocketAddr>) -> (u64, u32) {
    let core = Core::builder()
        .backend(backend)
        .recv_buffers(RING, 256)
        .spin(Duration::from_micros(5))
        .build()
        .unwrap();
    core.block_on(async move {
        let rng = Rc::new(Rng::new(seed));
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        ready.send(listener.local_addr().unwrap()).unwrap();
        let (to_holder, held) = mpsc::channel::<Bytes>();
        let holder = std::thread::spawn(move || {
            let mut batch = Vec::new();
            while let Ok(chunk) = held.recv() {
                batch.push(chunk);
                if batch.len() >= 3 {
                    std::thread::sleep(Duration::from_micros(300));
                    batch.clear();
                }
            }
        });
        let live = Rc::new(Cell::new(0u32));
        // Set by the echo of the connection that asks the server to stop; the
        // client then opens one more connection so that the accept returns.
        let stop = Rc::new(Cell::new(false));
        let mut served = 0u64;
        'accepting: loop {
            let mut incoming = listener.incoming();
            // Re-arm the multishot accept every few connections: dropping it
            // must close whatever it accepted that nobody took.
            for _ in 0..(1 + rng.below(64)) {
                let stream = incoming.next().await.unwrap();
                if stop.get() {
                    break 'accepting;
                }
                served += 1;
                let (rng, live, to_holder, stop) = (rng.clone(), live.clone(), to_holder.clone(), stop.clone());
                live.set(live.get() + 1);
                spawn(async move {
                    echo(&stream, &rng, &to_holder, &stop).await;
                    live.set(live.get() - 1);
                });
            }
        }
        drop(listener);
        drop(to_holder);
        // The clients have finished: every echo ends at their EOF.
        let t0 = Instant::now();
        while live.get() > 0 && t0.elapsed() < Duration::from_secs(10) {
            sigma_dataplane::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(live.get(), 0, "echo tasks still alive 10 s after the clients stopped");
        holder.join().unwrap();
        for _ in 0..100 {
            sigma_dataplane::sleep(Duration::from_micros(200)).await;
            if sigma_dataplane::free_receive_buffers() == Some(u32::from(RING)) {
                break;
            }
        }
        (served, sigma_dataplane::free_receive_buffers().unwrap())
    })
}

/// What the server answers a stop request with before it closes the connection.
const STOP_ACK: &[u8] = b"stopping";

/// Echoes one connection until EOF or a random drop; sets `stop` (and
/// acknowledges) if the peer asked the server to stop. The first chunk is
/// always read: a random drop before it could swallow a stop request, and the
/// client could not tell that from an acknowledged one.
async fn echo(stream: &TcpStream, rng: &Rng, to_holder: &mpsc::Sender<Bytes>, stop: &Cell<bool>) {
    let mut chunks = stream.recv_stream();
    let mut first = true;
    loop {
        // Now and then drop the receive mid-flight and the connection with it.
        if !first && rng.below(200) == 0 {
            poll_once_and_drop(chunks.next()).await;
            return;
        }
        let Some(Ok(chunk)) = chunks.next().await else { return };
        if first && chunk.len() >= 8 && chunk[..8] == STOP.to_le_bytes() {
            stop.set(true);
            let _ = stream.send_all(STOP_ACK.to_vec()).await;
            return;
        }
        first = false;
        let (res, _) = stream.send_all(chunk.clone()).await;
        if res.is_err() {
            return;
        }
        if rng.below(4) == 0 {
            let _ = to_holder.send(chunk);
        }
    }
}

thread_local! {
    /// What each client task of this (client) core is doing, since when, on
    /// which connection: a task stuck for over a second is reported, so that
    /// a lost wake-up names its operation before the watchdog fails the test.
    static PHASES: std::cell::RefCell<Vec<(&'static str, Instant, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that client task `task` entered `what` on connection `conn`
/// ("" once it is done).
fn phase(task: usize, what: &'static str, conn: u64) {
    PHASES.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() <= task {
            p.resize(task + 1, ("", Instant::now(), 0));
        }
        p[task] = (what, Instant::now(), conn);
    });
}

/// Reports client tasks stuck in one phase for over a second, until `until`.
async fn report_stalls(until: Instant) {
    while Instant::now() < until {
        sigma_dataplane::sleep(Duration::from_millis(250)).await;
        PHASES.with(|p| {
            for (task, (what, at, conn)) in p.borrow().iter().enumerate() {
                if !what.is_empty() && at.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "stalled: client task {task} in {what} on connection {conn} for {:?}",
                        at.elapsed()
                    );
                }
            }
        });
    }
}

/// One client connection's life: messages echoed and checked, or dropped
/// mid-operation at random. Returns messages checked.
async fn client_conn(addr: SocketAddr, conn: u64, rng: &Rng, task: usize) -> Result<u64, String> {
    phase(task, "a connect", conn);
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut checked = 0;
    for seq in 0..(1 + rng.below(20)) {
        let msg = message(conn, seq, rng.below(300) as usize);
        match rng.below(12) {
            // A send dropped after one poll: the connection is abandoned.
            0 => {
                phase(task, "a send dropped after one poll", conn);
                poll_once_and_drop(stream.send_all(msg)).await;
                return Ok(checked);
            }
            // A receive cut short by a tiny deadline: abandoned too.
            1 => {
                phase(task, "a send before a cut-short receive", conn);
                // A failed send: the server dropped this connection at random.
                if stream.send_all(msg.clone()).await.0.is_err() {
                    return Ok(checked);
                }
                phase(task, "a receive with a tiny deadline", conn);
                let deadline = Duration::from_micros(rng.below(100));
                if sigma_dataplane::timeout(deadline, stream.recv_exact(Vec::with_capacity(msg.len()), msg.len()))
                    .await
                    .is_err()
                {
                    return Ok(checked);
                }
            }
            _ => {
                phase(task, "a send", conn);
                if stream.send_all(msg.clone()).await.0.is_err() {
                    return Ok(checked);
                }
                phase(task, "a receive", conn);
                let (res, back) = stream.recv_exact(Vec::with_capacity(msg.len()), msg.len()).await;
                match res {
                    Ok(()) if back == msg => checked += 1,
                    Ok(()) => {
                        return Err(format!(
                            "connection {conn} message {seq}: got {:?}… for {:?}…",
                            &back[..24.min(back.len())],
                            &msg[..24.min(msg.len())]
                        ))
                    }
                    // The server dropped this connection at random.
                    Err(_) => return Ok(checked),
                }
            }
        }
    }
    Ok(checked)
}

/// The client core: `CLIENTS` tasks opening connection after connection
/// until `duration` is up, then one last connection asking the server to stop.
fn clients(backend: Backend, seed: u64, addr: SocketAddr, duration: Duration) -> Result<(u64, u64), String> {
    let core = Core::builder()
        .backend(backend)
        .spin(Duration::from_micros(5))
        .build()
        .unwrap();
    core.block_on(async move {
        let next_conn = Rc::new(Cell::new(0u64));
        let checked = Rc::new(Cell::new(0u64));
        let end = Instant::now() + duration;
        let mut tasks = Vec::new();
        for t in 0..CLIENTS {
            let (next_conn, checked) = (next_conn.clone(), checked.clone());
            tasks.push(spawn(async move {
                let rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while Instant::now() < end {
                    let conn = next_conn.get();
                    next_conn.set(conn + 1);
                    checked.set(checked.get() + client_conn(addr, conn, &rng, t).await?);
                }
                phase(t, "", 0);
                Ok::<(), String>(())
            }));
        }
        spawn(report_stalls(end + Duration::from_secs(60)));
        for t in tasks {
            t.await?;
        }
        // Ask the server to stop: it acknowledges and closes the connection,
        // and the next connection wakes its accept.
        let stop = TcpStream::connect(addr).await.map_err(|e| format!("stop: {e}"))?;
        let (res, _) = stop.send_all(message(STOP, 0, 0)).await;
        res.map_err(|e| format!("stop: {e}"))?;
        let (res, ack) = stop
            .recv_exact(Vec::with_capacity(STOP_ACK.len()), STOP_ACK.len())
            .await;
        if res.is_err() || ack != STOP_ACK {
            return Err(format!("the stop request was not acknowledged: {res:?}, {ack:?}"));
        }
        let (res, _) = stop.recv(Vec::with_capacity(8)).await;
        if !matches!(res, Ok(0)) {
            return Err(format!("the stop connection was not closed: {res:?}"));
        }
        drop(TcpStream::connect(addr).await.map_err(|e| format!("poke: {e}"))?);
        Ok((next_conn.get(), checked.get()))
    })
}

#[test]
fn connections_dropped_mid_operation_leak_nothing_and_cross_nothing() {
    let secs: u64 = std::env::var("SIGMA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    for backend in common::backends() {
        if let Ok(only) = std::env::var("SIGMA_STRESS_BACKEND") {
            if only != backend.to_string() {
                continue;
            }
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let fds_before = open_fds();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let _ = done_tx.send(server(backend, seed, addr_tx));
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("server listening");
        // A core that never wakes again fails the test with its seed instead
        // of hanging the suite.
        let (conns, checked) = common::within(
            Duration::from_secs(secs + 60),
            &format!("{backend}, seed {seed}: the client core"),
            move || clients(backend, seed, addr, Duration::from_secs(secs)),
        )
        .unwrap_or_else(|e| panic!("{backend}, seed {seed}: {e}"));
        let (served, free) = match done_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(done) => done,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let panic = server.join().expect_err("the server core ended without a result");
                panic!(
                    "{backend}, seed {seed}: the server core panicked: {}",
                    sigma_dataplane::panic_message(&*panic)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{backend}, seed {seed}: the server core is not done 60 s after its clients")
            }
        };
        eprintln!("{backend}: {conns} connections, {checked} echoes checked, {served} accepted, seed {seed}");
        assert!(
            checked > 100,
            "{backend}, seed {seed}: too little traffic to mean anything ({checked} echoes)"
        );
        assert_eq!(
            free,
            u32::from(RING),
            "{backend}, seed {seed}: receive buffers missing from the ring"
        );
        let fds_after = open_fds();
        assert_eq!(fds_after, fds_before, "{backend}, seed {seed}: fds leaked");
    }
}
