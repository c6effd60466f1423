//! monoio with its io_uring driver (`RuntimeBuilder::<IoUringDriver>`), one runtime per core, owned
//! buffers: `monoio`, which parks as monoio does, and `monoio-spin`.
//!
//! Both set up their ring with COOP_TASKRUN | TASKRUN_FLAG (see [`runtime`]).
//!
//! monoio documents no spin or busy-poll option, and has no public `yield_now`. A task that
//! wakes itself is queued again, and while a task is queued monoio's `block_on` loop submits and
//! reaps the ring without waiting (`driver.submit()`, runtime.rs) instead of parking. `monoio-spin`
//! is built on that: each read that would wait yields that way and polls again for up to the spin
//! budget, then is awaited normally.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream, UnixListener, UnixStream};
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

use super::{
    check_echo, payload, run_pair, spin_then_park, Endpoint, Measured, PingPongSpec, RttRecorder, System, Variant,
    Waits,
};
use crate::affinity::pin_current_thread;

const RING_ENTRIES: u32 = 256;

/// monoio 0.2, io_uring driver, one runtime per pinned thread; reads spin first or not.
#[derive(Debug, Clone, Copy)]
pub struct Monoio(Variant);

impl Monoio {
    /// monoio as it comes: parks when nothing is ready.
    pub const PARKS: Monoio = Monoio(Variant::parks("monoio"));
    /// Reads spin (yield and poll again) for the spin budget before parking.
    pub const SPINS: Monoio = Monoio(Variant::spins("monoio-spin"));
}

/// The ring is set up with COOP_TASKRUN | TASKRUN_FLAG through monoio's documented
/// `RuntimeBuilder::uring_builder`: without them completions reach a thread by task-work
/// signals, and on this kernel a spinning monoio then took 38–42 µs per 64 B ping-pong instead
/// of 9, and a parking monoio served pipelined load 1.2–1.5× slower (quick runs, 2026-11-26).
fn runtime() -> Result<Runtime<IoUringDriver>> {
    let mut urb = io_uring_06::IoUring::builder();
    urb.setup_coop_taskrun().setup_taskrun_flag();
    Ok(RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(urb)
        .build()?)
}

async fn echo<S: AsyncReadRent + AsyncWriteRent>(mut s: S, spin: Duration) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (r, b) = spin_then_park(s.read(buf), spin, sigma_dataplane::yield_now).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        let (r, b) = s.write_all(buf).await;
        buf = b;
        r?;
    }
}

async fn client<S: AsyncReadRent + AsyncWriteRent>(mut s: S, spec: &PingPongSpec, spin: Duration) -> Result<Measured> {
    let mut rec = RttRecorder::new(spec);
    let expect = payload(spec.payload_bytes);
    let mut out = expect.clone();
    let mut back: Box<[u8]> = vec![0u8; spec.payload_bytes].into_boxed_slice();
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let (r, b) = s.write_all(out).await;
        out = b;
        r?;
        let (r, b) = spin_then_park(s.read_exact(back), spin, sigma_dataplane::yield_now).await;
        back = b;
        let n = r?;
        rec.record(i, t0);
        ensure!(n == expect.len(), "short read");
        check_echo(&expect, &back)?;
    }
    Ok(rec.finish())
}

impl System for Monoio {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn note(&self) -> String {
        if self.0.spins {
            format!(
                "IoUringDriver runtime per core, {RING_ENTRIES} entries, COOP_TASKRUN|TASKRUN_FLAG via uring_builder, owned buffers; no documented spin option: each read that would wait re-queues its task (the runtime submits and reaps the ring without waiting) and polls again for {} us, then parks",
                self.0.budget().as_micros()
            )
        } else {
            format!("IoUringDriver runtime per core, {RING_ENTRIES} entries, COOP_TASKRUN|TASKRUN_FLAG via uring_builder, owned buffers, parks when idle")
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
                            let l = TcpListener::bind(a)?;
                            ready(Endpoint::Tcp(l.local_addr()?));
                            let (s, _) = l.accept().await?;
                            s.set_nodelay(true)?;
                            echo(s, spin).await
                        }
                        Endpoint::Unix(p) => {
                            // The default ListenerOpts set SO_REUSEPORT, which Linux rejects on
                            // AF_UNIX sockets (EOPNOTSUPP on 6.18), so turn it off.
                            let opts = ListenerOpts::new().reuse_port(false);
                            let l = UnixListener::bind_with_config(&p, &opts)?;
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
            let l = TcpListener::bind(addr)?;
            ready();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        monoio::spawn(async move {
                            let _ = echo(s, spin).await;
                        });
                    }
                    Err(e) => eprintln!("monoio echo: accept: {e}"),
                }
            }
        })
    }
}
