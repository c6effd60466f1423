//! `sigma`: σ's own RPC (`sigma_dataplane::rpc`) over one σ TCP connection,
//! one σ core per end, a trivial echo handler.
//!
//! The handler answers with the request's own `Bytes` (a slice of the
//! server's receive buffer), so the payload goes back without a copy; the
//! client pipelines calls on the one connection, its writer task sending
//! whatever frames are queued in one gather send.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use sigma_dataplane::net::{TcpListener, TcpStream};
use sigma_dataplane::rpc::{self, Client, ClientConfig, Reply, Service, Status};
use sigma_dataplane::{Backend, Core};

use super::{busy, PacedClock, PipeClock, PipelinedResult, RpcPacedSpec, RpcPipeSpec, RpcSeqSpec, RpcSystem};
use crate::paced::{PacedResult, STALL_TIMEOUT};
use crate::systems::{check_echo, payload, run_pair, Endpoint, Measured, RttRecorder};

/// σ's RPC over a σ TCP connection, one σ core per end; the client core's
/// early wakes on (the default) or off.
#[derive(Debug)]
pub struct Sigma {
    name: &'static str,
    early_wake: bool,
}

impl Sigma {
    /// σ as it runs by default.
    pub const DEFAULT: Sigma = Sigma {
        name: "sigma",
        early_wake: true,
    };
    /// σ with the client core's early wakes off: a client whose waits are long parks until
    /// the reply wakes it (what `rpc-seq-work-300us` compares against).
    pub const NO_EARLY_WAKE: Sigma = Sigma {
        name: "sigma-no-early-wake",
        early_wake: false,
    };
}

const ECHO: u32 = 1;

struct EchoService {
    work: Duration,
}

impl Service for EchoService {
    async fn call(&self, method: u32, request: Bytes, _out: &mut BytesMut) -> Result<Reply, Status> {
        match method {
            ECHO => {
                busy(self.work);
                Ok(Reply::Bytes(request))
            }
            other => Err(Status::unknown_method(other)),
        }
    }
}

fn uring_core(early_wake: bool) -> Result<Core> {
    if let Some(why) = &sigma_dataplane::probe::support().unavailable {
        bail!("io_uring unavailable: {why}");
    }
    let core = Core::builder()
        .backend(Backend::Uring)
        .early_wake(early_wake)
        .build()
        .context("starting a σ core on io_uring")?;
    Ok(core)
}

fn serve(bind: Endpoint, ready: &mut dyn FnMut(Endpoint), work: Duration) -> Result<()> {
    uring_core(true)?.block_on(async move {
        let Endpoint::Tcp(addr) = bind else {
            bail!("TCP only");
        };
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        ready(Endpoint::Tcp(listener.local_addr()?));
        let stream = listener.accept().await.context("accept")?;
        rpc::serve(&stream, &EchoService { work }).await.context("serving")?;
        Ok(())
    })
}

async fn connect(ep: Endpoint, in_flight: usize) -> Result<Client<TcpStream>> {
    let Endpoint::Tcp(addr) = ep else {
        bail!("TCP only");
    };
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    Ok(Client::new(
        stream,
        ClientConfig {
            calls_in_flight: in_flight,
        },
    ))
}

impl RpcSystem for Sigma {
    fn name(&self) -> &'static str {
        self.name
    }

    fn note(&self) -> String {
        let spin =
            std::env::var("SIGMA_SPIN_US").unwrap_or_else(|_| sigma_dataplane::limits::SPIN_US_DEFAULT.to_string());
        let wake = if self.early_wake {
            "client core wakes early for long regular waits"
        } else {
            "client core's early wakes off"
        };
        format!("σ RPC over TCP on io_uring (gather send, zero-copy payloads, spin {spin}us, {wake})")
    }

    fn seq(&self, spec: &RpcSeqSpec) -> Result<Measured> {
        let spec = spec.clone();
        let (work, early_wake) = (spec.work, self.early_wake);
        let serve = move |bind, ready: &mut dyn FnMut(Endpoint)| serve(bind, ready, work);
        run_pair(&spec.pingpong(), "sigma-rpc", serve, move |ep, _| {
            uring_core(early_wake)?.block_on(async move {
                let client = connect(ep, 1).await?;
                let out = Bytes::from(payload(spec.payload_bytes));
                let mut rec = RttRecorder::new(&spec.pingpong());
                for i in 0..rec.total() {
                    let t0 = Instant::now();
                    let reply = client.call(ECHO, out.clone(), None).await.context("call")?;
                    rec.record(i, t0);
                    check_echo(&out, &reply)?;
                }
                Ok(rec.finish())
            })
        })
    }

    fn pipelined(&self, spec: &RpcPipeSpec) -> Result<PipelinedResult> {
        let spec = spec.clone();
        let early_wake = self.early_wake;
        let serve = |bind, ready: &mut dyn FnMut(Endpoint)| serve(bind, ready, Duration::ZERO);
        run_pair(&spec.pair(), "sigma-rpc", serve, move |ep, _| {
            uring_core(early_wake)?.block_on(async move {
                let client = Rc::new(connect(ep, spec.in_flight).await?);
                let clock = Rc::new(RefCell::new(PipeClock::start(&spec)));
                let out = Bytes::from(payload(spec.payload_bytes));
                let mut callers = Vec::with_capacity(spec.in_flight);
                for _ in 0..spec.in_flight {
                    let (client, clock, out) = (client.clone(), clock.clone(), out.clone());
                    callers.push(sigma_dataplane::spawn(async move {
                        loop {
                            let issued = Instant::now();
                            if clock.borrow_mut().over(issued) {
                                return Ok::<(), anyhow::Error>(());
                            }
                            let reply = client.call(ECHO, out.clone(), None).await.context("call")?;
                            clock.borrow_mut().complete(issued, Instant::now());
                            check_echo(&out, &reply)?;
                        }
                    }));
                }
                for caller in callers {
                    caller.await?;
                }
                drop(client);
                let clock = Rc::try_unwrap(clock).map_err(|_| anyhow::anyhow!("callers still hold the clock"))?;
                clock.into_inner().finish()
            })
        })
    }

    fn paces(&self) -> bool {
        // The client spins to pace its calls, so its early-wake setting cannot matter.
        self.early_wake
    }

    fn paced(&self, spec: &RpcPacedSpec) -> Result<PacedResult> {
        let spec = spec.clone();
        let serve = |bind, ready: &mut dyn FnMut(Endpoint)| serve(bind, ready, Duration::ZERO);
        run_pair(&spec.pair(), "sigma-rpc", serve, move |ep, _| {
            uring_core(true)?.block_on(async move {
                let client = Rc::new(connect(ep, PACED_IN_FLIGHT).await?);
                let clock = Rc::new(RefCell::new(PacedClock::start(&spec)));
                let out = Bytes::from(payload(spec.payload_bytes));
                let outstanding = Rc::new(std::cell::Cell::new(0usize));
                let failed: Rc<RefCell<Option<anyhow::Error>>> = Rc::new(RefCell::new(None));
                let total = clock.borrow().total();
                for k in 0..total {
                    let due = clock.borrow().due(k);
                    // Pace by spinning: yield to the core (which polls the ring) until due.
                    while Instant::now() < due {
                        sigma_dataplane::yield_now().await;
                    }
                    clock.borrow_mut().issuing(k, Instant::now());
                    if let Some(e) = failed.borrow_mut().take() {
                        return Err(e);
                    }
                    let (client, clock, out, outstanding, failed) = (
                        client.clone(),
                        clock.clone(),
                        out.clone(),
                        outstanding.clone(),
                        failed.clone(),
                    );
                    outstanding.set(outstanding.get() + 1);
                    sigma_dataplane::spawn(async move {
                        let r = client.call(ECHO, out.clone(), None).await;
                        let done = Instant::now();
                        outstanding.set(outstanding.get() - 1);
                        match r.context("call").and_then(|reply| check_echo(&out, &reply)) {
                            Ok(()) => clock.borrow_mut().complete(due, done),
                            Err(e) => *failed.borrow_mut() = Some(e),
                        }
                    });
                }
                let last = Instant::now();
                while outstanding.get() > 0 {
                    if last.elapsed() > STALL_TIMEOUT {
                        bail!("{} call(s) unanswered after {STALL_TIMEOUT:?}", outstanding.get());
                    }
                    sigma_dataplane::yield_now().await;
                }
                if let Some(e) = failed.borrow_mut().take() {
                    return Err(e);
                }
                drop(client);
                let clock = Rc::try_unwrap(clock).map_err(|_| anyhow::anyhow!("calls still hold the clock"))?;
                clock.into_inner().finish()
            })
        })
    }
}

/// Calls a paced client may have outstanding at once (a full client makes the next call wait,
/// and that wait counts: latency runs from the due time).
const PACED_IN_FLIGHT: usize = 256;
