//! Bad peers (resets mid-read, oversized frames, stalls) each lose their own
//! connection, with an error, while the core keeps serving everyone else.

mod common;

use sigma_dataplane::net::{TcpListener, TcpStream};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const FRAME_BYTES_MAX: u32 = 1024;
const DEADLINE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Clean,
    Reset,
    TooLarge,
    Stalled,
    Other(String),
}

/// A length-prefixed echo: each frame is a little-endian u32 length and that
/// many bytes, read under a deadline and echoed back.
async fn serve(stream: TcpStream) -> Outcome {
    loop {
        let header = match sigma_dataplane::timeout(DEADLINE, stream.recv_exact(Vec::with_capacity(4), 4)).await {
            Err(_) => return Outcome::Stalled,
            Ok((Err(e), _)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Outcome::Clean,
            Ok((Err(e), _)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Outcome::Reset,
            Ok((Err(e), _)) => return Outcome::Other(e.to_string()),
            Ok((Ok(()), h)) => h,
        };
        let len = u32::from_le_bytes(header[..4].try_into().unwrap());
        if len > FRAME_BYTES_MAX {
            return Outcome::TooLarge;
        }
        let body = match sigma_dataplane::timeout(
            DEADLINE,
            stream.recv_exact(Vec::with_capacity(len as usize), len as usize),
        )
        .await
        {
            Err(_) => return Outcome::Stalled,
            Ok((Err(e), _))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Outcome::Reset
            }
            Ok((Err(e), _)) => return Outcome::Other(e.to_string()),
            Ok((Ok(()), b)) => b,
        };
        let (res, _) = stream.send_vectored(vec![header, body]).await;
        if let Err(e) = res {
            return Outcome::Other(e.to_string());
        }
    }
}

fn good_client(addr: SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    for i in 0..50u32 {
        let body = vec![i as u8; 100];
        s.write_all(&100u32.to_le_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut back = [0u8; 104];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back[4..], &body[..]);
    }
}

fn resetting_client(addr: SocketAddr) {
    let s = std::net::TcpStream::connect(addr).unwrap();
    (&s).write_all(&100u32.to_le_bytes()).unwrap();
    (&s).write_all(&[1u8; 10]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // SO_LINGER 0: close sends RST instead of FIN.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: passes a pointer to a live linger struct with its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
}

fn oversized_client(addr: SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&(1u32 << 20).to_le_bytes()).unwrap();
    let mut rest = Vec::new();
    // The server closes the connection instead of reading a megabyte.
    let _ = s.read_to_end(&mut rest);
}

fn stalling_client(addr: SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&[7u8, 0]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn bad_peers_lose_only_their_own_connection() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let outcomes = Rc::new(RefCell::new(Vec::new()));
            let clients = std::thread::spawn(move || {
                let mut threads = Vec::new();
                for i in 0..40 {
                    let f: fn(SocketAddr) = match i % 8 {
                        0 => resetting_client,
                        1 => oversized_client,
                        2 => stalling_client,
                        _ => good_client,
                    };
                    threads.push(std::thread::spawn(move || f(addr)));
                }
                for t in threads {
                    t.join().expect("a good client failed");
                }
            });
            let mut incoming = listener.incoming();
            let mut tasks = Vec::new();
            for _ in 0..40 {
                let stream = incoming.next().await.unwrap();
                let outcomes = outcomes.clone();
                tasks.push(sigma_dataplane::spawn(async move {
                    let outcome = serve(stream).await;
                    outcomes.borrow_mut().push(outcome);
                }));
            }
            for t in tasks {
                t.await;
            }
            clients.join().unwrap();
            let outcomes = outcomes.borrow();
            let count = |o: &Outcome| outcomes.iter().filter(|x| *x == o).count();
            assert_eq!(count(&Outcome::Clean), 25, "{backend}: {outcomes:?}");
            assert_eq!(count(&Outcome::Reset), 5, "{backend}: {outcomes:?}");
            assert_eq!(count(&Outcome::TooLarge), 5, "{backend}: {outcomes:?}");
            assert_eq!(count(&Outcome::Stalled), 5, "{backend}: {outcomes:?}");
        });
    }
}
