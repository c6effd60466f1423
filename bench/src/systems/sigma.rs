//! σ's own systems: `sigma` (the io_uring data plane as it runs by default),
//! `sigma-nospin` (the same with its spin and early wakes off: σ's runtime
//! when it parks like the parking peers), `sigma-epoll` (the default
//! settings on its epoll fallback) and `sigma-epoll-nospin` (the epoll
//! fallback parking at once).
//!
//! Both ends run on a σ core each. Receives use `recv_stream`: one multishot
//! recv stays armed for the whole connection and each chunk arrives as a
//! `Bytes` in the core's provided buffer ring; the server echoes that very
//! `Bytes` back (no copy). Sends move an owned buffer in and get it back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sigma_dataplane::net::{RecvStream, TcpListener, TcpStream, UnixListener, UnixStream};
use sigma_dataplane::{Backend, Core};

use super::{check_echo, payload, run_pair, Endpoint, Measured, PingPongSpec, RttRecorder, System, Waits};

/// One configuration of σ's data plane.
#[derive(Debug, Clone, Copy)]
pub struct Sigma {
    name: &'static str,
    backend: Backend,
    /// Park at once (spin 0) with early wakes off; otherwise σ's defaults (`SIGMA_SPIN_US`,
    /// `SIGMA_EARLY_WAKE`).
    nospin: bool,
}

impl Sigma {
    /// σ on io_uring, default settings.
    pub const DEFAULT: Sigma = Sigma {
        name: "sigma",
        backend: Backend::Uring,
        nospin: false,
    };
    /// σ on io_uring with spin 0 and early wakes off.
    pub const NOSPIN: Sigma = Sigma {
        name: "sigma-nospin",
        backend: Backend::Uring,
        nospin: true,
    };
    /// σ on its epoll fallback, default settings.
    pub const EPOLL: Sigma = Sigma {
        name: "sigma-epoll",
        backend: Backend::Epoll,
        nospin: false,
    };
    /// σ on its epoll fallback with spin 0 and early wakes off.
    pub const EPOLL_NOSPIN: Sigma = Sigma {
        name: "sigma-epoll-nospin",
        backend: Backend::Epoll,
        nospin: true,
    };

    fn core(&self, pin: Option<usize>) -> Result<Core> {
        let backend = self.backend;
        let mut builder = Core::builder().backend(backend);
        if let Some(cpu) = pin {
            builder = builder.pin(cpu);
        }
        if self.nospin {
            builder = builder.spin(Duration::ZERO).early_wake(false);
        }
        let core = builder
            .build()
            .with_context(|| format!("starting a σ core on {backend}"))?;
        if core.backend() != backend {
            bail!("asked for {backend}, got {}", core.backend());
        }
        Ok(core)
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

async fn client(chunks: &mut RecvStream<'_>, send: impl AsyncSendAll + Copy, spec: &PingPongSpec) -> Result<Measured> {
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

fn pingpong(sys: Sigma, spec: &PingPongSpec) -> Result<Measured> {
    run_pair(
        spec,
        sys.name,
        move |bind, ready| {
            sys.core(None)?.block_on(async move {
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
            sys.core(None)?.block_on(async move {
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

fn serve_echo(sys: &Sigma, addr: SocketAddr, core_index: usize, ready: &mut dyn FnMut()) -> Result<()> {
    let core = sys.core(Some(core_index))?;
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
        self.name
    }

    fn note(&self) -> String {
        let how = match self.backend {
            Backend::Uring => "SINGLE_ISSUER|DEFER_TASKRUN, multishot recv + buf ring",
            Backend::Epoll => "epoll edge-triggered",
        };
        if self.nospin {
            let wake = match (self.backend, std::env::var("SIGMA_WAKE_POLL").as_deref()) {
                (Backend::Epoll, _) => "",
                (_, Ok("0" | "off")) => ", wake polls off (SIGMA_WAKE_POLL)",
                _ => ", Unix streams with a wake poll (on a wake ring)",
            };
            format!("{how}, spin 0 and early wakes off: parks at once{wake}")
        } else {
            let early = match std::env::var("SIGMA_EARLY_WAKE").as_deref() {
                Ok("0" | "off") => "early wakes off (SIGMA_EARLY_WAKE)",
                _ => "early wakes on",
            };
            format!(
                "{how}, spins {} us before parking, {early}",
                super::spin_budget().as_micros()
            )
        }
    }

    fn waits(&self) -> Waits {
        if self.nospin {
            Waits::Park
        } else {
            Waits::Spin
        }
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        if self.backend == Backend::Uring {
            if let Some(why) = &sigma_dataplane::probe::support().unavailable {
                return Err(anyhow!("io_uring unavailable: {why}"));
            }
        }
        pingpong(*self, spec)
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        serve_echo(self, addr, core, ready)
    }
}
