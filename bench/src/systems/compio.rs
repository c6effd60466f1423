//! compio with its io_uring driver, one `Runtime` per core, owned buffers: `compio`, which parks
//! as compio does, and `compio-spin`.
//!
//! Both rings are built with the options compio's `ProactorBuilder` documents as what
//! "optimize[s] performance for most cases, especially [as] compio is a single thread runtime":
//! `coop_taskrun` with `taskrun_flag` (without them, the spinning variant took 39 µs per 64 B
//! ping-pong instead of 9 in quick runs on 2026-11-26: completions then reach the thread by
//! task-work signals). compio documents no spin option, but its runtime is
//! meant to be driven by hand ("low level API to control the runtime": `Runtime::run`,
//! `poll_with`), and its own `block_on` polls the ring with a zero timeout whenever a task is
//! ready. `compio-spin` is built on that: each read that would wait re-queues its task and polls
//! again for up to the spin budget, then is awaited normally.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use compio::driver::ProactorBuilder;
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use compio::runtime::Runtime;
use compio::BufResult;

use super::{
    check_echo, payload, run_pair, spin_then_park, Endpoint, Measured, PingPongSpec, RttRecorder, System, Variant,
    Waits,
};
use crate::affinity::pin_current_thread;

/// compio 0.19, io_uring driver, one runtime per pinned thread; reads spin first or not.
#[derive(Debug, Clone, Copy)]
pub struct Compio(Variant);

impl Compio {
    /// compio parking when idle.
    pub const PARKS: Compio = Compio(Variant::parks("compio"));
    /// Reads spin (yield and poll again) for the spin budget before parking.
    pub const SPINS: Compio = Compio(Variant::spins("compio-spin"));
}

fn runtime() -> Result<Runtime> {
    let mut proactor = ProactorBuilder::new();
    proactor.coop_taskrun(true).taskrun_flag(true);
    Ok(Runtime::builder().with_proactor(proactor).build()?)
}

/// Runs `fut` as a spawned task of the current runtime. A spawned task that wakes itself goes
/// back on the executor's queue, and `block_on` then polls the ring with a zero timeout; the
/// future `block_on` itself drives would instead be woken through the runtime's notifier (an
/// eventfd write per spin). Both variants run this way alike.
async fn in_task<T: 'static>(fut: impl std::future::Future<Output = Result<T>> + 'static) -> Result<T> {
    compio::runtime::spawn(fut)
        .await
        .map_err(|e| anyhow::anyhow!("compio task: {e:?}"))?
}

async fn echo<S: AsyncRead + AsyncWrite>(mut s: S, spin: Duration) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let BufResult(r, b) = spin_then_park(s.read(buf), spin, sigma_dataplane::yield_now).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        let BufResult(r, b) = s.write_all(buf).await;
        buf = b;
        r?;
    }
}

async fn client<S: AsyncRead + AsyncWrite>(mut s: S, spec: &PingPongSpec, spin: Duration) -> Result<Measured> {
    let mut rec = RttRecorder::new(spec);
    let expect = payload(spec.payload_bytes);
    let mut out = expect.clone();
    let mut back: Vec<u8> = Vec::with_capacity(spec.payload_bytes);
    // read_exact fills the buffer's whole capacity.
    ensure!(back.capacity() == spec.payload_bytes, "unexpected Vec capacity");
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let BufResult(r, b) = s.write_all(out).await;
        out = b;
        r?;
        back.clear();
        let BufResult(r, b) = spin_then_park(s.read_exact(back), spin, sigma_dataplane::yield_now).await;
        back = b;
        r?;
        rec.record(i, t0);
        check_echo(&expect, &back)?;
    }
    Ok(rec.finish())
}

impl System for Compio {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn note(&self) -> String {
        if self.0.spins {
            format!(
                "io_uring Runtime per core, coop_taskrun + taskrun_flag, owned buffers; no documented spin option: each read that would wait re-queues its task (block_on then polls the ring with a zero timeout) and polls again for {} us, then parks",
                self.0.budget().as_micros()
            )
        } else {
            "io_uring Runtime per core, coop_taskrun + taskrun_flag, owned buffers, parks when idle".to_string()
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
                            in_task(async move {
                                let (s, _) = l.accept().await?;
                                s.set_nodelay(true)?;
                                echo(s, spin).await
                            })
                            .await
                        }
                        Endpoint::Unix(p) => {
                            let l = UnixListener::bind(&p).await?;
                            ready(Endpoint::Unix(p));
                            in_task(async move {
                                let (s, _) = l.accept().await?;
                                echo(s, spin).await
                            })
                            .await
                        }
                    }
                })
            },
            move |ep, spec| {
                runtime()?.block_on(in_task(async move {
                    match ep {
                        Endpoint::Tcp(a) => {
                            let s = TcpStream::connect(a).await?;
                            s.set_nodelay(true)?;
                            client(s, &spec, spin).await
                        }
                        Endpoint::Unix(p) => client(UnixStream::connect(&p).await?, &spec, spin).await,
                    }
                }))
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
                        compio::runtime::spawn(async move {
                            let _ = echo(s, spin).await;
                        })
                        .detach();
                    }
                    Err(e) => eprintln!("compio echo: accept: {e}"),
                }
            }
        })
    }
}
