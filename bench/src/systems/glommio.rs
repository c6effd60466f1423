//! glommio: a `LocalExecutor` per core (`Placement::Fixed`), its own sockets, default scheduling:
//! `glommio`, which parks at once (glommio's default), and `glommio-spin`, with glommio's
//! documented `LocalExecutorBuilder::spin_before_park` set to the spin budget.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, Result};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use super::{check_echo, payload, run_pair, Endpoint, Measured, PingPongSpec, RttRecorder, System, Variant, Waits};
use crate::affinity::pin_current_thread;

/// Registered I/O memory per executor. glommio's default (10 MiB) exceeds the 8 MiB
/// `ulimit -l` of the VMs; 1 MiB is plenty for sockets (glommio only uses it for file DMA).
const IO_MEMORY: usize = 1 << 20;

/// glommio 0.9, one executor per pinned thread, spinning before it parks or not.
#[derive(Debug, Clone, Copy)]
pub struct Glommio(Variant);

impl Glommio {
    /// glommio's defaults: parks at once.
    pub const PARKS: Glommio = Glommio(Variant::parks("glommio"));
    /// `spin_before_park(spin budget)`.
    pub const SPINS: Glommio = Glommio(Variant::spins("glommio-spin"));

    fn executor(self, core: usize) -> Result<LocalExecutor> {
        let mut b = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name("sigmabench")
            .io_memory(IO_MEMORY);
        if self.0.spins {
            b = b.spin_before_park(self.0.budget());
        }
        b.make().map_err(gerr)
    }
}

fn gerr<T: std::fmt::Debug>(e: glommio::GlommioError<T>) -> anyhow::Error {
    anyhow!("glommio: {e}")
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn client<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, spec: &PingPongSpec) -> Result<Measured> {
    let mut rec = RttRecorder::new(spec);
    let out = payload(spec.payload_bytes);
    let mut back = vec![0u8; spec.payload_bytes];
    for i in 0..rec.total() {
        let t0 = Instant::now();
        s.write_all(&out).await?;
        s.read_exact(&mut back).await?;
        rec.record(i, t0);
        check_echo(&out, &back)?;
    }
    Ok(rec.finish())
}

impl System for Glommio {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn note(&self) -> String {
        if self.0.spins {
            format!(
                "LocalExecutor per core, Placement::Fixed, io_memory 1 MiB, spin_before_park({} us) (glommio's documented spin option)",
                self.0.budget().as_micros()
            )
        } else {
            "LocalExecutor per core, Placement::Fixed, io_memory 1 MiB, parks at once (glommio's default)".to_string()
        }
    }

    fn waits(&self) -> Waits {
        self.0.waits()
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        let (server_core, client_core) = (spec.server_core, spec.client_core);
        let sys = *self;
        run_pair(
            spec,
            self.0.name,
            move |bind, ready| {
                sys.executor(server_core)?.run(async move {
                    match bind {
                        Endpoint::Tcp(a) => {
                            let l = TcpListener::bind(a).map_err(gerr)?;
                            ready(Endpoint::Tcp(l.local_addr().map_err(gerr)?));
                            let s = l.accept().await.map_err(gerr)?;
                            s.set_nodelay(true).map_err(gerr)?;
                            echo(s).await
                        }
                        Endpoint::Unix(p) => {
                            let l = UnixListener::bind(&p).map_err(gerr)?;
                            ready(Endpoint::Unix(p));
                            let s = l.accept().await.map_err(gerr)?;
                            echo(s).await
                        }
                    }
                })
            },
            move |ep, spec| {
                sys.executor(client_core)?.run(async move {
                    match ep {
                        Endpoint::Tcp(a) => {
                            let s = TcpStream::connect(a).await.map_err(gerr)?;
                            s.set_nodelay(true).map_err(gerr)?;
                            client(s, &spec).await
                        }
                        Endpoint::Unix(p) => {
                            let s = UnixStream::connect(&p).await.map_err(gerr)?;
                            client(s, &spec).await
                        }
                    }
                })
            },
        )
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        pin_current_thread(core)?;
        self.executor(core)?.run(async move {
            let l = TcpListener::bind(addr).map_err(gerr)?;
            ready();
            loop {
                match l.accept().await {
                    Ok(s) => {
                        s.set_nodelay(true).map_err(gerr)?;
                        glommio::spawn_local(async move {
                            let _ = echo(s).await;
                        })
                        .detach();
                    }
                    Err(e) => eprintln!("glommio echo: accept: {e}"),
                }
            }
        })
    }
}
