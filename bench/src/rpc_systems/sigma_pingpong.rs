//! `sigma-pingpong`: the floor for RPC, σ's raw transport with no RPC layer.
//!
//! * `rpc-seq-64B` is the `peers` suite's `sigma` ping-pong (64 B over one σ TCP connection,
//!   multishot recv into the buffer ring, the server echoing each chunk back).
//! * `rpc-pipelined-64B` keeps as many 64 B messages in flight on one σ TCP connection as the RPC
//!   clients keep calls: one client task sends the first batch, then on every received chunk
//!   matches the echoed bytes to the oldest outstanding messages (FIFO, like `loadgen.rs`) and
//!   sends as many new messages in one `send_all`. The server echoes each chunk as it arrives.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use sigma_dataplane::net::{TcpListener, TcpStream};
use sigma_dataplane::{Backend, Core};

use super::{FifoMatcher, PipeClock, PipelinedResult, RpcPipeSpec, RpcSeqSpec, RpcSystem};
use crate::systems::{self, payload, run_pair, Endpoint};

/// σ's raw TCP echo on io_uring, one σ core per end.
#[derive(Debug)]
pub struct SigmaPingPong;

fn uring_core() -> Result<Core> {
    if let Some(why) = &sigma_dataplane::probe::support().unavailable {
        bail!("io_uring unavailable: {why}");
    }
    let core = Core::builder()
        .backend(Backend::Uring)
        .build()
        .context("starting a σ core on io_uring")?;
    if core.backend() != Backend::Uring {
        bail!("asked for io_uring, got {}", core.backend());
    }
    Ok(core)
}

/// Echoes one connection's chunks back until EOF.
async fn serve_one(bind: Endpoint, ready: &mut dyn FnMut(Endpoint)) -> Result<()> {
    let Endpoint::Tcp(addr) = bind else {
        bail!("TCP only");
    };
    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    ready(Endpoint::Tcp(l.local_addr()?));
    let s = l.accept().await.context("accept")?;
    let mut chunks = s.recv_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("recv")?;
        s.send_all(chunk).await.0.context("send")?;
    }
    Ok(())
}

async fn pipelined_client(ep: Endpoint, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
    let Endpoint::Tcp(addr) = ep else {
        bail!("TCP only");
    };
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let mut chunks = s.recv_stream();
    let msg = payload(spec.payload_bytes);
    let len = msg.len();
    // Every message is the same bytes, so any prefix of `batch` is a run of whole messages.
    let batch = Bytes::from(msg.repeat(spec.in_flight));
    let mut fifo = FifoMatcher::new(msg, spec.in_flight);
    let mut clock = PipeClock::start(spec);

    fifo.issued(spec.in_flight, Instant::now());
    s.send_all(batch.clone()).await.0.context("send")?;
    loop {
        let chunk = match chunks.next().await {
            Some(chunk) => chunk.context("recv")?,
            None => bail!("server closed the connection"),
        };
        let t = Instant::now();
        let n = fifo.received(&chunk, |issued| clock.complete(issued, t))?;
        drop(chunk);
        if clock.over(t) {
            // Issue nothing more; collect what is still in flight so the server ends cleanly.
            if fifo.outstanding() == 0 {
                break;
            }
            continue;
        }
        if n > 0 {
            fifo.issued(n, t);
            s.send_all(batch.slice(..n * len)).await.0.context("send")?;
        }
    }
    drop(chunks);
    drop(s);
    clock.finish()
}

impl RpcSystem for SigmaPingPong {
    fn name(&self) -> &'static str {
        "sigma-pingpong"
    }

    fn note(&self) -> String {
        let spin =
            std::env::var("SIGMA_SPIN_US").unwrap_or_else(|_| sigma_dataplane::limits::SPIN_US_DEFAULT.to_string());
        format!("floor: raw σ TCP echo on io_uring (multishot recv + buf ring, spin {spin}us), no RPC layer")
    }

    fn seq(&self, spec: &RpcSeqSpec) -> Result<Histogram<u64>> {
        let sigma = systems::by_name("sigma").ok_or_else(|| anyhow!("the peers suite has no 'sigma' system"))?;
        sigma.pingpong(&spec.pingpong())
    }

    fn pipelined(&self, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
        let pspec = spec.clone();
        run_pair(
            &spec.pair(),
            "sigma-pingpong",
            |bind, ready| uring_core()?.block_on(serve_one(bind, ready)),
            move |ep, _| uring_core()?.block_on(async move { pipelined_client(ep, &pspec).await }),
        )
    }
}
