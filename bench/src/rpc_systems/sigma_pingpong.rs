//! `sigma-pingpong`: the floor for RPC, σ's raw transport with no RPC layer.
//!
//! * `rpc-seq-64B` is the `peers` suite's `sigma` ping-pong (64 B over one σ TCP connection,
//!   multishot recv into the buffer ring, the server echoing each chunk back).
//! * With handler work (`rpc-seq-work-300us`) the server works that long on each message before
//!   echoing it, and the client core spins through every wait (its spin budget outlasts the
//!   work): no wake-up on either side, the floor for a client waiting on a working server.
//! * `rpc-pipelined-64B` keeps as many 64 B messages in flight on one σ TCP connection as the RPC
//!   clients keep calls: one client task sends the first batch, then on every received chunk
//!   matches the echoed bytes to the oldest outstanding messages (FIFO, like `loadgen.rs`) and
//!   sends as many new messages in one `send_all`. The server echoes each chunk as it arrives.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use sigma_dataplane::net::{TcpListener, TcpStream};
use sigma_dataplane::{Backend, Core};

use super::{busy, FifoMatcher, PipeClock, PipelinedResult, RpcPipeSpec, RpcSeqSpec, RpcSystem};
use crate::systems::{self, payload, run_pair, Endpoint, Measured, RttRecorder};

/// σ's raw TCP echo on io_uring, one σ core per end.
#[derive(Debug)]
pub struct SigmaPingPong;

/// Spin budget of the floor's client when the server works: longer than any wait, so it never
/// parks.
const SPIN_THROUGH: Duration = Duration::from_millis(50);

fn uring_core() -> Result<Core> {
    uring_core_with(Core::builder())
}

fn uring_core_with(builder: sigma_dataplane::CoreBuilder) -> Result<Core> {
    if let Some(why) = &sigma_dataplane::probe::support().unavailable {
        bail!("io_uring unavailable: {why}");
    }
    let core = builder
        .backend(Backend::Uring)
        .build()
        .context("starting a σ core on io_uring")?;
    if core.backend() != Backend::Uring {
        bail!("asked for io_uring, got {}", core.backend());
    }
    Ok(core)
}

/// Echoes one connection's chunks back until EOF, each after `work` per whole message of
/// `msg_bytes` it completes (no work: each chunk goes straight back).
async fn serve_one(bind: Endpoint, ready: &mut dyn FnMut(Endpoint), msg_bytes: usize, work: Duration) -> Result<()> {
    let Endpoint::Tcp(addr) = bind else {
        bail!("TCP only");
    };
    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    ready(Endpoint::Tcp(l.local_addr()?));
    let s = l.accept().await.context("accept")?;
    let mut chunks = s.recv_stream();
    let mut partial = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("recv")?;
        if !work.is_zero() {
            partial += chunk.len();
            while partial >= msg_bytes {
                partial -= msg_bytes;
                busy(work);
            }
        }
        s.send_all(chunk).await.0.context("send")?;
    }
    Ok(())
}

async fn connect(ep: Endpoint) -> Result<TcpStream> {
    let Endpoint::Tcp(addr) = ep else {
        bail!("TCP only");
    };
    TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))
}

/// Sequential messages to a working server, each sent once the previous one's echo is back.
async fn seq_client(ep: Endpoint, spec: &RpcSeqSpec) -> Result<Measured> {
    let s = connect(ep).await?;
    let mut chunks = s.recv_stream();
    let msg = Bytes::from(payload(spec.payload_bytes));
    let mut fifo = FifoMatcher::new(msg.to_vec(), 1);
    let mut rec = RttRecorder::new(&spec.pingpong());
    for i in 0..rec.total() {
        let t0 = Instant::now();
        fifo.issued(1, t0);
        s.send_all(msg.clone()).await.0.context("send")?;
        while fifo.outstanding() > 0 {
            let chunk = match chunks.next().await {
                Some(chunk) => chunk.context("recv")?,
                None => bail!("server closed the connection"),
            };
            fifo.received(&chunk, |_| {})?;
        }
        rec.record(i, t0);
    }
    Ok(rec.finish())
}

async fn pipelined_client(ep: Endpoint, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
    let s = connect(ep).await?;
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
        format!(
            "floor: raw σ TCP echo on io_uring (multishot recv + buf ring, spin {spin}us), no RPC layer; with handler work the client spins through every wait ({}ms budget)",
            SPIN_THROUGH.as_millis()
        )
    }

    fn seq(&self, spec: &RpcSeqSpec) -> Result<Measured> {
        if spec.work.is_zero() {
            let sigma = systems::by_name("sigma").ok_or_else(|| anyhow!("the peers suite has no 'sigma' system"))?;
            return sigma.pingpong(&spec.pingpong());
        }
        let (server_spec, client_spec) = (spec.clone(), spec.clone());
        run_pair(
            &spec.pingpong(),
            "sigma-pingpong",
            move |bind, ready| {
                uring_core()?.block_on(serve_one(bind, ready, server_spec.payload_bytes, server_spec.work))
            },
            move |ep, _| {
                uring_core_with(Core::builder().spin(SPIN_THROUGH))?
                    .block_on(async move { seq_client(ep, &client_spec).await })
            },
        )
    }

    fn pipelined(&self, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
        let pspec = spec.clone();
        let msg_bytes = spec.payload_bytes;
        run_pair(
            &spec.pair(),
            "sigma-pingpong",
            move |bind, ready| uring_core()?.block_on(serve_one(bind, ready, msg_bytes, Duration::ZERO)),
            move |ep, _| uring_core()?.block_on(async move { pipelined_client(ep, &pspec).await }),
        )
    }
}
