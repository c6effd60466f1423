//! tokio with a `current_thread` runtime per core (tokio's thread-per-core setup; epoll underneath).

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Result;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{check_echo, payload, run_pair, Endpoint, PingPongSpec, RttRecorder, System};
use crate::affinity::pin_current_thread;

/// tokio, one `current_thread` runtime per pinned thread.
#[derive(Debug)]
pub struct Tokio;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
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

impl System for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn note(&self) -> String {
        "current_thread runtime per core".to_string()
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        run_pair(
            spec,
            "tokio",
            |bind, ready| {
                runtime()?.block_on(async move {
                    match bind {
                        Endpoint::Tcp(a) => {
                            let l = TcpListener::bind(a).await?;
                            ready(Endpoint::Tcp(l.local_addr()?));
                            let (s, _) = l.accept().await?;
                            s.set_nodelay(true)?;
                            echo(s).await
                        }
                        Endpoint::Unix(p) => {
                            let l = UnixListener::bind(&p)?;
                            ready(Endpoint::Unix(p));
                            let (s, _) = l.accept().await?;
                            echo(s).await
                        }
                    }
                })
            },
            |ep, spec| {
                runtime()?.block_on(async move {
                    match ep {
                        Endpoint::Tcp(a) => {
                            let s = TcpStream::connect(a).await?;
                            s.set_nodelay(true)?;
                            client(s, &spec).await
                        }
                        Endpoint::Unix(p) => client(UnixStream::connect(&p).await?, &spec).await,
                    }
                })
            },
        )
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        pin_current_thread(core)?;
        runtime()?.block_on(async move {
            let l = TcpListener::bind(addr).await?;
            ready();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        tokio::spawn(async move {
                            let _ = echo(s).await;
                        });
                    }
                    Err(e) => eprintln!("tokio echo: accept: {e}"),
                }
            }
        })
    }
}
