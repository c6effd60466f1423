//! glommio: a `LocalExecutor` per core (`Placement::Fixed`), its own sockets, default scheduling.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, Result};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::{check_echo, payload, run_pair, Endpoint, PingPongSpec, RttRecorder, System};
use crate::affinity::pin_current_thread;

/// Registered I/O memory per executor. glommio's default (10 MiB) exceeds the 8 MiB
/// `ulimit -l` of the VMs; 1 MiB is plenty for sockets (glommio only uses it for file DMA).
const IO_MEMORY: usize = 1 << 20;

/// glommio 0.9, one executor per pinned thread.
#[derive(Debug)]
pub struct Glommio;

fn gerr<T: std::fmt::Debug>(e: glommio::GlommioError<T>) -> anyhow::Error {
    anyhow!("glommio: {e}")
}

fn executor(core: usize) -> Result<LocalExecutor> {
    LocalExecutorBuilder::new(Placement::Fixed(core))
        .name("sigmabench")
        .io_memory(IO_MEMORY)
        .make()
        .map_err(gerr)
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

async fn client<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, spec: &PingPongSpec) -> Result<Histogram<u64>> {
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
        "glommio"
    }

    fn note(&self) -> String {
        "LocalExecutor per core, Placement::Fixed, io_memory 1 MiB, no spin_before_park".to_string()
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        let (server_core, client_core) = (spec.server_core, spec.client_core);
        run_pair(
            spec,
            "glommio",
            move |bind, ready| {
                executor(server_core)?.run(async move {
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
                executor(client_core)?.run(async move {
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
        executor(core)?.run(async move {
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
