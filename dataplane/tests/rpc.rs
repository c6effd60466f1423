//! RPC behaviour on both back ends and both stream types: results, statuses,
//! deadlines, cancellation, many calls in flight, and garbage-sending peers.

mod common;

use bytes::{Bytes, BytesMut};
use sigma_dataplane::net::{TcpListener, TcpStream, UnixStream};
use sigma_dataplane::rpc::{self, Client, ClientConfig, Reply, Service, Status};
use sigma_ep::{Pod, StatusCode};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const ECHO: u32 = 1;
const FAIL: u32 = 2;
const SLOW_ECHO: u32 = 3;
const PANIC: u32 = 4;

/// Echo, a failing method, and an echo that first sleeps for the number of
/// milliseconds in the payload's first byte.
struct TestService;

impl Service for TestService {
    async fn call(&self, method: u32, request: Bytes, _out: &mut BytesMut) -> Result<Reply, Status> {
        match method {
            ECHO => Ok(Reply::Bytes(request)),
            FAIL => Err(Status::handler(format!("refusing {} bytes", request.len()))),
            SLOW_ECHO => {
                let ms = request.first().copied().unwrap_or(0);
                sigma_dataplane::sleep(Duration::from_millis(u64::from(ms))).await;
                Ok(Reply::Bytes(request))
            }
            PANIC => panic!("handler bug on {} bytes", request.len()),
            other => Err(Status::unknown_method(other)),
        }
    }
}

fn serve_unix(stream: UnixStream) {
    sigma_dataplane::spawn(async move {
        let _ = rpc::serve(&stream, &TestService).await;
    });
}

#[test]
fn calls_statuses_and_deadlines_on_both_backends() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            serve_unix(b);
            let client = Client::new(a, ClientConfig::default());
            let reply = client.call(ECHO, Bytes::from_static(b"hello"), None).await.unwrap();
            assert_eq!(&reply[..], b"hello");
            let err = client.call(FAIL, Bytes::from_static(b"abc"), None).await.unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (StatusCode::Handler, "refusing 3 bytes"),
                "{backend}"
            );
            let err = client.call(77, Bytes::new(), None).await.unwrap_err();
            assert_eq!(err.code, StatusCode::UnknownMethod);
            // A handler that panics fails its call with a status; the
            // connection and the core go on.
            let err = client.call(PANIC, Bytes::from_static(b"xy"), None).await.unwrap_err();
            assert_eq!(err.code, StatusCode::Handler, "{backend}");
            assert!(
                err.message.contains("handler bug on 2 bytes"),
                "{backend}: {}",
                err.message
            );
            let err = client
                .call(SLOW_ECHO, Bytes::from_static(&[50]), Some(Duration::from_millis(5)))
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::DeadlineExceeded, "{backend}");
            let err = client
                .call(ECHO, Bytes::from(vec![0u8; 2 << 20]), None)
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::TooLarge);
            let err = client
                .call(sigma_ep::limits::METHOD_ID_MAX + 1, Bytes::new(), None)
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::UnknownMethod);
            // The connection still works after all of that.
            let reply = client
                .call(SLOW_ECHO, Bytes::from_static(&[1, 2, 3]), Some(Duration::from_secs(5)))
                .await
                .unwrap();
            assert_eq!(&reply[..], &[1, 2, 3]);
        });
    }
}

#[test]
fn many_clients_many_calls_random_deadlines_and_cancellations() {
    // Every call completes exactly once, with its own response or an error
    // status, however calls overlap, time out or are dropped.
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            sigma_dataplane::spawn(async move {
                let mut incoming = listener.incoming();
                while let Ok(stream) = incoming.next().await {
                    sigma_dataplane::spawn(async move {
                        let _ = rpc::serve(&stream, &TestService).await;
                    });
                }
            });
            let outcomes = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for c in 0..4u64 {
                let client = Rc::new(Client::new(
                    TcpStream::connect(addr).await.unwrap(),
                    ClientConfig { calls_in_flight: 8 },
                ));
                for i in 0..100u64 {
                    let id = c * 1000 + i;
                    let r = next();
                    let sleep_ms = (r % 6) as u8;
                    let deadline = match r % 3 {
                        0 => None,
                        1 => Some(Duration::from_millis(1 + (r >> 8) % 8)),
                        _ => Some(Duration::from_secs(10)),
                    };
                    let drop_after = (r % 7 == 0).then(|| Duration::from_millis((r >> 16) % 4));
                    let client = client.clone();
                    let outcomes = outcomes.clone();
                    tasks.push(sigma_dataplane::spawn(async move {
                        let mut payload = vec![sleep_ms];
                        payload.extend_from_slice(&id.to_le_bytes());
                        let call = client.call(SLOW_ECHO, Bytes::from(payload.clone()), deadline);
                        let outcome = match drop_after {
                            Some(d) => match sigma_dataplane::timeout(d, call).await {
                                Ok(r) => r,
                                Err(_) => Err(Status::new(StatusCode::Cancelled, "dropped by the caller")),
                            },
                            None => call.await,
                        };
                        match &outcome {
                            Ok(reply) => assert_eq!(&reply[..], &payload[..], "call {id} got another call's reply"),
                            Err(s) => assert!(
                                matches!(s.code, StatusCode::DeadlineExceeded | StatusCode::Cancelled),
                                "call {id}: {s}"
                            ),
                        }
                        outcomes.borrow_mut().push((id, outcome.is_ok()));
                    }));
                }
            }
            for t in tasks {
                t.await;
            }
            let mut ids: Vec<u64> = outcomes.borrow().iter().map(|(id, _)| *id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 400, "{backend}: every call completed exactly once");
            let ok = outcomes.borrow().iter().filter(|(_, ok)| *ok).count();
            assert!(
                ok > 100 && ok < 400,
                "{backend}: {ok} calls succeeded; the mix should have both kinds"
            );
        });
    }
}

#[test]
fn a_garbage_sending_peer_loses_only_its_connection() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let errors = Rc::new(RefCell::new(Vec::new()));
            let errs = errors.clone();
            sigma_dataplane::spawn(async move {
                let mut incoming = listener.incoming();
                while let Ok(stream) = incoming.next().await {
                    let errs = errs.clone();
                    sigma_dataplane::spawn(async move {
                        if let Err(e) = rpc::serve(&stream, &TestService).await {
                            errs.borrow_mut().push(e.to_string());
                        }
                    });
                }
            });
            let good = Client::new(TcpStream::connect(addr).await.unwrap(), ClientConfig::default());
            assert_eq!(
                &good.call(ECHO, Bytes::from_static(b"1"), None).await.unwrap()[..],
                b"1"
            );
            // Wrong magic, a length beyond the limit, a response sent to a server,
            // and a frame cut short at EOF, each on its own connection.
            let mut bad_frames: Vec<Vec<u8>> = Vec::new();
            bad_frames.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n and some more bytes".to_vec());
            let mut big = [0u8; 32];
            sigma_ep::Header::request(1, 1, 0, 0).encode(&mut big);
            big[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            bad_frames.push(big.to_vec());
            let mut resp = [0u8; 32];
            sigma_ep::Header::response(1, 1, 0).encode(&mut resp);
            bad_frames.push(resp.to_vec());
            let mut cut = [0u8; 32];
            sigma_ep::Header::request(1, 1, 100, 0).encode(&mut cut);
            let mut cut = cut.to_vec();
            cut.extend_from_slice(&[0u8; 10]);
            bad_frames.push(cut);
            for bytes in bad_frames {
                let s = TcpStream::connect(addr).await.unwrap();
                let (res, _) = s.send_all(bytes).await;
                res.unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                // Read until the server closes (it may answer with an error frame first).
                let mut buf = Vec::with_capacity(256);
                loop {
                    let (res, b) = s.recv(buf).await;
                    buf = b;
                    if res.unwrap_or(0) == 0 {
                        break;
                    }
                }
                assert_eq!(
                    &good.call(ECHO, Bytes::from_static(b"2"), None).await.unwrap()[..],
                    b"2",
                    "{backend}"
                );
            }
            sigma_dataplane::sleep(Duration::from_millis(10)).await;
            let errors = errors.borrow();
            assert_eq!(errors.len(), 4, "{backend}: {errors:?}");
            assert!(errors.iter().any(|e| e.contains("bad magic")), "{errors:?}");
            assert!(errors.iter().any(|e| e.contains("exceeds the limit")), "{errors:?}");
            assert!(errors.iter().any(|e| e.contains("unexpected Response")), "{errors:?}");
            assert!(errors.iter().any(|e| e.contains("middle of a frame")), "{errors:?}");
        });
    }
}

#[test]
fn a_forged_response_closes_the_client_with_a_clear_status() {
    let core = common::core(common::backends()[0]);
    core.block_on(async {
        let (a, b) = UnixStream::pair().unwrap();
        let client = Rc::new(Client::new(a, ClientConfig::default()));
        let c = client.clone();
        let call = sigma_dataplane::spawn(async move { c.call(ECHO, Bytes::from_static(b"x"), None).await });
        // A "server" that answers a request id nobody issued.
        let mut forged = [0u8; 32];
        sigma_ep::Header::response(1 << 40, ECHO, 0).encode(&mut forged);
        sigma_dataplane::sleep(Duration::from_millis(5)).await;
        let (res, _) = b.send_all(forged.to_vec()).await;
        res.unwrap();
        let err = call.await.unwrap_err();
        assert_eq!(err.code, StatusCode::Malformed);
        assert!(err.message.contains("never issued"), "{err}");
        let err = client.call(ECHO, Bytes::new(), None).await.unwrap_err();
        assert_eq!(err.code, StatusCode::Malformed, "later calls fail with the same reason");
    });
}

sigma_dataplane::rpc_service! {
    /// A typed test service.
    service Arith, server ArithServer, client ArithClient {
        1 => add(Pod<[u64; 2]>) -> Pod<u64>;
        2 => div(Pod<[u64; 2]>) -> Pod<u64>;
        3 => shout(Bytes) -> Bytes;
    }
}

struct ArithImpl;

impl Arith for ArithImpl {
    async fn add(&self, request: Pod<[u64; 2]>) -> Result<Pod<u64>, Status> {
        Ok(Pod(request.0[0] + request.0[1]))
    }
    async fn div(&self, request: Pod<[u64; 2]>) -> Result<Pod<u64>, Status> {
        let [a, b] = request.0;
        a.checked_div(b)
            .map(Pod)
            .ok_or_else(|| Status::handler("division by zero"))
    }
    async fn shout(&self, request: Bytes) -> Result<Bytes, Status> {
        Ok(Bytes::from(request.to_ascii_uppercase()))
    }
}

#[test]
fn typed_services_need_only_their_handlers() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            sigma_dataplane::spawn(async move {
                let _ = rpc::serve(&b, &ArithServer(ArithImpl)).await;
            });
            let client = ArithClient::new(Client::new(a, ClientConfig::default()));
            assert_eq!(client.add(&Pod([2, 40]), None).await.unwrap(), Pod(42));
            assert_eq!(
                client.div(&Pod([1, 0]), None).await.unwrap_err().message,
                "division by zero"
            );
            assert_eq!(
                &client.shout(&Bytes::from_static(b"sigma"), None).await.unwrap()[..],
                b"SIGMA"
            );
            // A request that does not decode is a Malformed status, not a crash.
            let err = client
                .inner()
                .call(1, Bytes::from_static(b"short"), None)
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::Malformed, "{backend}");
        });
    }
}

#[test]
fn a_caller_woken_for_a_slot_that_goes_away_passes_its_turn_on() {
    // One call slot. A freed slot wakes one waiting caller; if that caller is
    // dropped before it takes the slot, the next waiter must get it.
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            serve_unix(b);
            let client = Rc::new(Client::new(a, ClientConfig { calls_in_flight: 1 }));
            let c = client.clone();
            let first = sigma_dataplane::spawn(async move { c.call(SLOW_ECHO, Bytes::from_static(&[30]), None).await });
            sigma_dataplane::yield_now().await;
            // The oldest waiter: polled once, then never again.
            let mut oldest = Box::pin(client.call(ECHO, Bytes::from_static(b"oldest"), None));
            let pending = std::future::poll_fn(|cx| {
                use std::future::Future;
                std::task::Poll::Ready(oldest.as_mut().poll(cx).is_pending())
            })
            .await;
            assert!(pending);
            let mut later = Vec::new();
            for i in 0..2u8 {
                let c = client.clone();
                later.push(sigma_dataplane::spawn(async move {
                    c.call(ECHO, Bytes::from(vec![i]), None).await
                }));
            }
            sigma_dataplane::yield_now().await;
            first.await.unwrap();
            // The slot is free and the oldest waiter was woken for it; it goes away.
            drop(oldest);
            for (i, call) in later.into_iter().enumerate() {
                let reply = sigma_dataplane::timeout(Duration::from_secs(2), call)
                    .await
                    .unwrap_or_else(|_| panic!("{backend}: waiter {i} stranded"))
                    .unwrap();
                assert_eq!(&reply[..], &[i as u8]);
            }
        });
    }
}

/// One timer per client serves every call's deadline: a call with a short
/// deadline issued while a call with a long one is in flight still expires
/// at its own deadline (the sweeper re-arms), the long call still gets its
/// reply, and later calls' deadlines still hold.
#[test]
fn a_short_deadline_behind_a_long_one_expires_on_time() {
    for backend in common::backends() {
        let core = common::core(backend);
        core.block_on(async move {
            let (a, b) = UnixStream::pair().unwrap();
            serve_unix(b);
            let client = Rc::new(Client::new(a, ClientConfig::default()));
            // The long call: the server takes 200 ms; its deadline is 10 s.
            let long = {
                let client = client.clone();
                sigma_dataplane::spawn(async move {
                    client
                        .call(SLOW_ECHO, Bytes::from_static(&[200, 1]), Some(Duration::from_secs(10)))
                        .await
                })
            };
            sigma_dataplane::sleep(Duration::from_millis(2)).await;
            // Queued behind the long call on the server: only its own
            // deadline can end it before 200 ms.
            for round in 0..3 {
                let started = std::time::Instant::now();
                let err = client
                    .call(ECHO, Bytes::from_static(b"short"), Some(Duration::from_millis(5)))
                    .await
                    .unwrap_err();
                let took = started.elapsed();
                assert_eq!(err.code, StatusCode::DeadlineExceeded, "{backend} round {round}");
                assert!(
                    took < Duration::from_millis(150),
                    "{backend} round {round}: a 5 ms deadline ended after {took:?}, behind a 10 s one"
                );
            }
            let reply = long.await.unwrap();
            assert_eq!(&reply[..], &[200, 1], "{backend}");
            // After all that, a fresh deadline is armed and holds.
            let err = client
                .call(SLOW_ECHO, Bytes::from_static(&[100]), Some(Duration::from_millis(10)))
                .await
                .unwrap_err();
            assert_eq!(err.code, StatusCode::DeadlineExceeded, "{backend}");
            let reply = client
                .call(ECHO, Bytes::from_static(b"ok"), Some(Duration::from_secs(1)))
                .await;
            assert_eq!(&reply.unwrap()[..], b"ok", "{backend}");
        });
    }
}

#[test]
fn serve_with_closes_half_frames_and_idle_connections_but_not_busy_ones() {
    use rpc::{ConnectionError, ServerConfig};
    use std::time::Instant;
    const IDLE: Duration = Duration::from_millis(100);
    const FRAME: Duration = Duration::from_millis(100);
    let config = ServerConfig {
        idle_timeout: Some(IDLE),
        frame_timeout: Some(FRAME),
    };
    for backend in common::backends() {
        common::within(
            Duration::from_secs(20),
            &format!("{backend}: serve_with timeouts"),
            move || {
                let core = common::core(backend);
                core.block_on(async move {
                    // Half a frame header, then nothing: closed by the frame timeout.
                    let (a, b) = UnixStream::pair().unwrap();
                    let started = Instant::now();
                    let server = sigma_dataplane::spawn(async move { rpc::serve_with(&b, &TestService, config).await });
                    let (res, _) = a.send(vec![0u8; 16]).await;
                    res.unwrap();
                    match server.await {
                        Err(ConnectionError::FrameTimeout {
                            buffered: 16, after, ..
                        }) => assert_eq!(after, FRAME),
                        other => panic!("{backend}: a half frame ended with {other:?}"),
                    }
                    let took = started.elapsed();
                    assert!(
                        took >= FRAME,
                        "{backend}: closed after {took:?}, before the frame timeout"
                    );
                    let (res, _) = a.recv(vec![0u8; 8]).await;
                    assert_eq!(
                        res.unwrap(),
                        0,
                        "{backend}: the peer of a timed-out connection sees EOF"
                    );

                    // A connection that sends nothing: closed by the idle timeout,
                    // between one and two periods.
                    let (a, b) = UnixStream::pair().unwrap();
                    let started = Instant::now();
                    let server = sigma_dataplane::spawn(async move { rpc::serve_with(&b, &TestService, config).await });
                    match server.await {
                        Err(ConnectionError::Idle { after, .. }) => assert_eq!(after, IDLE),
                        other => panic!("{backend}: an idle connection ended with {other:?}"),
                    }
                    let took = started.elapsed();
                    assert!(took >= IDLE, "{backend}: idle connection closed after {took:?}");
                    drop(a);

                    // A call that runs for two and a half idle periods keeps its
                    // connection busy, not idle: it is answered.
                    let (a, b) = UnixStream::pair().unwrap();
                    let server = sigma_dataplane::spawn(async move { rpc::serve_with(&b, &TestService, config).await });
                    let client = Client::new(a, ClientConfig::default());
                    let reply = client.call(SLOW_ECHO, Bytes::from_static(&[250]), None).await.unwrap();
                    assert_eq!(&reply[..], &[250], "{backend}");
                    drop(client);
                    assert!(server.await.is_ok(), "{backend}: a clean close is not an error");
                });
            },
        );
    }
}
