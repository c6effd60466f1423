//! σ's own systems: `sigma` (the io_uring data plane) and `sigma-epoll`
//! (the same code on its epoll fallback).
//!
//! Both ends run on a σ core each. Receives use `recv_stream`: one multishot
//! recv stays armed for the whole connection and each chunk arrives as a
//! `Bytes` in the core's provided buffer ring; the server echoes that very
//! `Bytes` back (no copy). Sends move an owned buffer in and get it back.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use sigma_dataplane::net::{RecvStream, TcpListener, TcpStream, UnixListener, UnixStream};
use sigma_dataplane::{Backend, Core};

use super::{check_echo, payload, run_pair, Endpoint, PingPongSpec, RttRecorder, System};

/// σ on io_uring.
#[derive(Debug)]
pub struct Sigma;

/// σ on its epoll fallback.
#[derive(Debug)]
pub struct SigmaEpoll;

fn core(backend: Backend, pin: Option<usize>) -> Result<Core> {
    let mut builder = Core::builder().backend(backend);
    if let Some(cpu) = pin {
        builder = builder.pin(cpu);
    }
    let core = builder
        .build()
        .with_context(|| format!("starting a σ core on {backend}"))?;
    if core.backend() != backend {
        bail!("asked for {backend}, got {}", core.backend());
    }
    Ok(core)
}

fn note(backend: Backend) -> String {
    let spin = std::env::var("SIGMA_SPIN_US").unwrap_or_else(|_| sigma_dataplane::limits::SPIN_US_DEFAULT.to_string());
    match backend {
        Backend::Uring => format!("SINGLE_ISSUER|DEFER_TASKRUN, multishot recv + buf ring, spin {spin}us"),
        Backend::Epoll => format!("epoll edge-triggered, spin {spin}us"),
    }
}

/// Echoes every chunk back until EOF.
async fn echo(mut chunks: RecvStream<'_>, send: impl AsyncSendAll) -> Result<()> {
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("recv")?;
        send.send_all_bytes(chunk).await.context("send")?;
    }
    Ok(())
}

/// The one send the echo needs, over either stream type.
trait AsyncSendAll {
    async fn send_all_bytes(&self, bytes: bytes::Bytes) -> std::io::Result<()>;
}

impl AsyncSendAll for &TcpStream {
    async fn send_all_bytes(&self, bytes: bytes::Bytes) -> std::io::Result<()> {
        self.send_all(bytes).await.0
    }
}

impl AsyncSendAll for &UnixStream {
    async fn send_all_bytes(&self, bytes: bytes::Bytes) -> std::io::Result<()> {
        self.send_all(bytes).await.0
    }
}

async fn client(
    chunks: &mut RecvStream<'_>,
    send: impl AsyncSendAll + Copy,
    spec: &PingPongSpec,
) -> Result<Histogram<u64>>
where
{
    let mut rec = RttRecorder::new(spec);
    let out = bytes::Bytes::from(payload(spec.payload_bytes));
    let mut back = Vec::with_capacity(spec.payload_bytes);
    for i in 0..rec.total() {
        let t0 = Instant::now();
        send.send_all_bytes(out.clone()).await.context("send")?;
        back.clear();
        while back.len() < out.len() {
            match chunks.next().await {
                Some(chunk) => back.extend_from_slice(&chunk.context("recv")?),
                None => bail!("server closed the connection"),
            }
        }
        rec.record(i, t0);
        check_echo(&out, &back)?;
    }
    Ok(rec.finish())
}

fn pingpong(backend: Backend, name: &'static str, spec: &PingPongSpec) -> Result<Histogram<u64>> {
    run_pair(
        spec,
        name,
        move |bind, ready| {
            core(backend, None)?.block_on(async move {
                match bind {
                    Endpoint::Tcp(a) => {
                        let l = TcpListener::bind(a)?;
                        ready(Endpoint::Tcp(l.local_addr()?));
                        let s = l.accept().await?;
                        echo(s.recv_stream(), &s).await
                    }
                    Endpoint::Unix(p) => {
                        let l = UnixListener::bind(&p)?;
                        ready(Endpoint::Unix(p));
                        let s = l.accept().await?;
                        echo(s.recv_stream(), &s).await
                    }
                }
            })
        },
        move |ep, spec| {
            core(backend, None)?.block_on(async move {
                match ep {
                    Endpoint::Tcp(a) => {
                        let s = TcpStream::connect(a).await?;
                        let mut chunks = s.recv_stream();
                        client(&mut chunks, &s, &spec).await
                    }
                    Endpoint::Unix(p) => {
                        let s = UnixStream::connect(&p).await?;
                        let mut chunks = s.recv_stream();
                        client(&mut chunks, &s, &spec).await
                    }
                }
            })
        },
    )
}

fn serve_echo(backend: Backend, addr: SocketAddr, core_index: usize, ready: &mut dyn FnMut()) -> Result<()> {
    let core = core(backend, Some(core_index))?;
    core.block_on(async move {
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        ready();
        let mut incoming = l.incoming();
        loop {
            match incoming.next().await {
                Ok(s) => {
                    sigma_dataplane::spawn(async move {
                        let _ = echo(s.recv_stream(), &s).await;
                    });
                }
                Err(e) => eprintln!("sigma echo: accept: {e}"),
            }
        }
    })
}

impl System for Sigma {
    fn name(&self) -> &'static str {
        "sigma"
    }

    fn note(&self) -> String {
        note(Backend::Uring)
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        if let Some(why) = &sigma_dataplane::probe::support().unavailable {
            return Err(anyhow!("io_uring unavailable: {why}"));
        }
        pingpong(Backend::Uring, "sigma", spec)
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        serve_echo(Backend::Uring, addr, core, ready)
    }
}

impl System for SigmaEpoll {
    fn name(&self) -> &'static str {
        "sigma-epoll"
    }

    fn note(&self) -> String {
        note(Backend::Epoll)
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        pingpong(Backend::Epoll, "sigma-epoll", spec)
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        serve_echo(Backend::Epoll, addr, core, ready)
    }
}
