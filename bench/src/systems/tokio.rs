//! tokio with a `current_thread` runtime per core (tokio's thread-per-core setup; epoll underneath):
//! `tokio`, which parks as tokio does, and `tokio-spin`.
//!
//! tokio documents no spin or busy-poll option (its runtime `Builder` has none; `event_interval`
//! and `global_queue_interval` only order work). Its public API does let a user poll without
//! blocking: `tokio::task::yield_now` makes a `current_thread` runtime poll its I/O driver with a
//! zero timeout before it runs the task again. `tokio-spin` is built on that: each read that
//! would wait is polled again between yields for up to the spin budget, then awaited normally.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{
    check_echo, payload, run_pair, spin_then_park, Endpoint, Measured, PingPongSpec, RttRecorder, System, Variant,
    Waits,
};
use crate::affinity::pin_current_thread;

/// tokio, one `current_thread` runtime per pinned thread; reads spin first or not.
#[derive(Debug, Clone, Copy)]
pub struct Tokio(Variant);

impl Tokio {
    /// tokio as it comes: parks when nothing is ready.
    pub const PARKS: Tokio = Tokio(Variant::parks("tokio"));
    /// Reads spin (yield and poll again) for the spin budget before parking.
    pub const SPINS: Tokio = Tokio(Variant::spins("tokio-spin"));
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, spin: Duration) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = spin_then_park(s.read(&mut buf), spin, tokio::task::yield_now).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn client<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, spec: &PingPongSpec, spin: Duration) -> Result<Measured> {
    let mut rec = RttRecorder::new(spec);
    let out = payload(spec.payload_bytes);
    let mut back = vec![0u8; spec.payload_bytes];
    for i in 0..rec.total() {
        let t0 = Instant::now();
        s.write_all(&out).await?;
        spin_then_park(s.read_exact(&mut back), spin, tokio::task::yield_now).await?;
        rec.record(i, t0);
        check_echo(&out, &back)?;
    }
    Ok(rec.finish())
}

impl System for Tokio {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn note(&self) -> String {
        if self.0.spins {
            format!(
                "current_thread runtime per core; no documented spin option: each read that would wait yields (tokio::task::yield_now, the runtime polls epoll with a zero timeout) and polls again for {} us, then parks",
                self.0.budget().as_micros()
            )
        } else {
            "current_thread runtime per core, parks when idle".to_string()
        }
    }

    fn waits(&self) -> Waits {
        self.0.waits()
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        let spin = self.0.budget();
        run_pair(
            spec,
            self.0.name,
            move |bind, ready| {
                runtime()?.block_on(async move {
                    match bind {
                        Endpoint::Tcp(a) => {
                            let l = TcpListener::bind(a).await?;
                            ready(Endpoint::Tcp(l.local_addr()?));
                            let (s, _) = l.accept().await?;
                            s.set_nodelay(true)?;
                            echo(s, spin).await
                        }
                        Endpoint::Unix(p) => {
                            let l = UnixListener::bind(&p)?;
                            ready(Endpoint::Unix(p));
                            let (s, _) = l.accept().await?;
                            echo(s, spin).await
                        }
                    }
                })
            },
            move |ep, spec| {
                runtime()?.block_on(async move {
                    match ep {
                        Endpoint::Tcp(a) => {
                            let s = TcpStream::connect(a).await?;
                            s.set_nodelay(true)?;
                            client(s, &spec, spin).await
                        }
                        Endpoint::Unix(p) => client(UnixStream::connect(&p).await?, &spec, spin).await,
                    }
                })
            },
        )
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        let spin = self.0.budget();
        pin_current_thread(core)?;
        runtime()?.block_on(async move {
            let l = TcpListener::bind(addr).await?;
            ready();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        tokio::spawn(async move {
                            let _ = echo(s, spin).await;
                        });
                    }
                    Err(e) => eprintln!("tokio echo: accept: {e}"),
                }
            }
        })
    }
}
