//! `tonic`: gRPC over HTTP/2 (hyper + h2) on tokio, the way tonic's examples write it.
//!
//! `proto/echo.proto` defines a unary `Echo(EchoRequest{bytes}) -> EchoReply{bytes}`; `build.rs`
//! generates the client and server with `tonic-prost-build` (default settings, so `bytes` fields
//! are `Vec<u8>`). Each end runs a tokio `current_thread` runtime on its pinned thread. The
//! server is `Server::builder().add_service(EchoServer::new(..))` on a `TcpIncoming` with
//! TCP_NODELAY (tonic's default for `serve`); the client is an `EchoClient` on one `Channel`
//! (TCP_NODELAY is the channel's default too). Pipelined calls are concurrent requests on that
//! one channel, multiplexed as HTTP/2 streams on one connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use super::{busy, PacedClock, PipeClock, PipelinedResult, RpcPacedSpec, RpcPipeSpec, RpcSeqSpec, RpcSystem};
use crate::paced::{PacedResult, STALL_TIMEOUT};
use crate::systems::{check_echo, payload, run_pair, Endpoint, Measured, PingPongSpec, RttRecorder};

/// The code `tonic-prost-build` generated from `proto/echo.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("sigmabench.echo");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

/// tonic, one `current_thread` runtime per pinned thread.
#[derive(Debug)]
pub struct Tonic;

/// The handler: works `work` (busy), then replies with the request's payload (moved, not
/// copied).
#[derive(Debug, Default)]
struct EchoService {
    work: Duration,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> std::result::Result<Response<EchoReply>, Status> {
        busy(self.work);
        Ok(Response::new(EchoReply {
            payload: request.into_inner().payload,
        }))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Serves the echo service until `stop` fires (or its sender is dropped) and the client's
/// connection has closed.
fn serve(bind: Endpoint, ready: &mut dyn FnMut(Endpoint), stop: oneshot::Receiver<()>, work: Duration) -> Result<()> {
    let Endpoint::Tcp(addr) = bind else {
        bail!("TCP only");
    };
    runtime()?.block_on(async move {
        let incoming = TcpIncoming::bind(addr)
            .with_context(|| format!("bind {addr}"))?
            .with_nodelay(Some(true));
        ready(Endpoint::Tcp(incoming.local_addr()?));
        Server::builder()
            .add_service(EchoServer::new(EchoService { work }))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop.await;
            })
            .await
            .context("tonic server")
    })
}

async fn connect(ep: Endpoint) -> Result<EchoClient<Channel>> {
    let Endpoint::Tcp(addr) = ep else {
        bail!("TCP only");
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect {addr}"))?;
    Ok(EchoClient::new(channel))
}

async fn seq_client(ep: Endpoint, spec: PingPongSpec) -> Result<Measured> {
    let mut client = connect(ep).await?;
    let mut rec = RttRecorder::new(&spec);
    let out = payload(spec.payload_bytes);
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let reply = client
            .echo(EchoRequest { payload: out.clone() })
            .await
            .context("Echo call")?
            .into_inner();
        rec.record(i, t0);
        check_echo(&out, &reply.payload)?;
    }
    Ok(rec.finish())
}

/// One call on its own client handle (a clone of the one channel), handed back with the result
/// so that the next call reuses it.
async fn call(
    mut client: EchoClient<Channel>,
    payload: Vec<u8>,
    issued: Instant,
) -> (
    EchoClient<Channel>,
    Instant,
    std::result::Result<Response<EchoReply>, Status>,
) {
    let r = client.echo(EchoRequest { payload }).await;
    (client, issued, r)
}

async fn pipelined_client(ep: Endpoint, spec: RpcPipeSpec) -> Result<PipelinedResult> {
    let client = connect(ep).await?;
    let out = payload(spec.payload_bytes);
    let mut clock = PipeClock::start(&spec);
    let mut calls = FuturesUnordered::new();
    let t = Instant::now();
    for _ in 0..spec.in_flight {
        calls.push(call(client.clone(), out.clone(), t));
    }
    while let Some((client, issued, r)) = calls.next().await {
        let reply = r.context("Echo call")?.into_inner();
        let t = Instant::now();
        check_echo(&out, &reply.payload)?;
        clock.complete(issued, t);
        // Past the window, issue nothing more and let the calls in flight finish.
        if !clock.over(t) {
            calls.push(call(client, out.clone(), t));
        }
    }
    clock.finish()
}

/// Calls issued at their due times, each its own task on the client's runtime (so calls overlap
/// as HTTP/2 streams on the one channel when the server is slow). The client paces by spinning:
/// it yields to tokio (which polls epoll with a zero timeout) until the next call is due, since
/// tokio's timers have millisecond resolution and the gaps here are a fraction of that.
async fn paced_client(ep: Endpoint, spec: RpcPacedSpec) -> Result<PacedResult> {
    let client = connect(ep).await?;
    let out = payload(spec.payload_bytes);
    let clock = std::sync::Arc::new(std::sync::Mutex::new(PacedClock::start(&spec)));
    let total = clock.lock().unwrap_or_else(|e| e.into_inner()).total();
    let mut calls = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = clock.lock().unwrap_or_else(|e| e.into_inner()).due(k);
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .issuing(k, Instant::now());
        // Reap what has finished, so that a failed call stops the run early.
        while let Some(r) = calls.try_join_next() {
            r.context("call task")??;
        }
        let (mut client, out, clock) = (client.clone(), out.clone(), clock.clone());
        calls.spawn(async move {
            let reply = client
                .echo(EchoRequest { payload: out.clone() })
                .await
                .context("Echo call")?
                .into_inner();
            let done = Instant::now();
            check_echo(&out, &reply.payload)?;
            clock.lock().unwrap_or_else(|e| e.into_inner()).complete(due, done);
            Ok::<(), anyhow::Error>(())
        });
    }
    let drained = tokio::time::timeout(STALL_TIMEOUT, async {
        while let Some(r) = calls.join_next().await {
            r.context("call task")??;
        }
        Ok::<(), anyhow::Error>(())
    })
    .await;
    match drained {
        Ok(r) => r?,
        Err(_) => bail!("{} call(s) unanswered after {STALL_TIMEOUT:?}", calls.len()),
    }
    let clock = std::sync::Arc::try_unwrap(clock).map_err(|_| anyhow::anyhow!("calls still hold the clock"))?;
    clock.into_inner().unwrap_or_else(|e| e.into_inner()).finish()
}

/// Runs `client` on a fresh runtime, then drops the runtime (closing the connection) and only
/// then `stop`, which ends the server.
fn client_then_stop<T, F>(stop: oneshot::Sender<()>, client: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let rt = runtime()?;
    let r = rt.block_on(client);
    drop(rt);
    drop(stop);
    r
}

impl RpcSystem for Tonic {
    fn name(&self) -> &'static str {
        "tonic"
    }

    fn note(&self) -> String {
        "tonic 0.14 gRPC unary over HTTP/2, prost, tokio current_thread runtime per core, default settings, TCP_NODELAY; pipelined: concurrent calls (FuturesUnordered) on one Channel, i.e. HTTP/2 streams on one connection"
            .to_string()
    }

    fn seq(&self, spec: &RpcSeqSpec) -> Result<Measured> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let work = spec.work;
        run_pair(
            &spec.pingpong(),
            "tonic",
            move |bind, ready| serve(bind, ready, stop_rx, work),
            move |ep, pspec| client_then_stop(stop_tx, seq_client(ep, pspec)),
        )
    }

    fn pipelined(&self, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let rspec = spec.clone();
        run_pair(
            &spec.pair(),
            "tonic",
            move |bind, ready| serve(bind, ready, stop_rx, Duration::ZERO),
            move |ep, _| client_then_stop(stop_tx, pipelined_client(ep, rspec)),
        )
    }

    fn paces(&self) -> bool {
        true
    }

    fn paced(&self, spec: &RpcPacedSpec) -> Result<PacedResult> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let rspec = spec.clone();
        run_pair(
            &spec.pair(),
            "tonic",
            move |bind, ready| serve(bind, ready, stop_rx, Duration::ZERO),
            move |ep, _| client_then_stop(stop_tx, paced_client(ep, rspec)),
        )
    }
}
