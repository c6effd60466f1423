//! compio with its io_uring driver, one `Runtime` per core, owned buffers.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{ensure, Result};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use compio::runtime::Runtime;
use compio::BufResult;
use hdrhistogram::Histogram;

use super::{check_echo, payload, run_pair, Endpoint, PingPongSpec, RttRecorder, System};
use crate::affinity::pin_current_thread;

/// compio 0.19, io_uring driver, one runtime per pinned thread.
#[derive(Debug)]
pub struct Compio;

fn runtime() -> Result<Runtime> {
    Ok(Runtime::new()?)
}

async fn echo<S: AsyncRead + AsyncWrite>(mut s: S) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let BufResult(r, b) = s.read(buf).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        let BufResult(r, b) = s.write_all(buf).await;
        buf = b;
        r?;
    }
}

async fn client<S: AsyncRead + AsyncWrite>(mut s: S, spec: &PingPongSpec) -> Result<Histogram<u64>> {
    let mut rec = RttRecorder::new(spec);
    let expect = payload(spec.payload_bytes);
    let mut out = expect.clone();
    let mut back: Vec<u8> = Vec::with_capacity(spec.payload_bytes);
    // read_exact fills the buffer's whole capacity.
    ensure!(back.capacity() == spec.payload_bytes, "unexpected Vec capacity");
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let BufResult(r, b) = s.write_all(out).await;
        out = b;
        r?;
        back.clear();
        let BufResult(r, b) = s.read_exact(back).await;
        back = b;
        r?;
        rec.record(i, t0);
        check_echo(&expect, &back)?;
    }
    Ok(rec.finish())
}

impl System for Compio {
    fn name(&self) -> &'static str {
        "compio"
    }

    fn note(&self) -> String {
        "io_uring Runtime per core (defaults), owned buffers".to_string()
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        run_pair(
            spec,
            "compio",
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
                            let l = UnixListener::bind(&p).await?;
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
                        compio::runtime::spawn(async move {
                            let _ = echo(s).await;
                        })
                        .detach();
                    }
                    Err(e) => eprintln!("compio echo: accept: {e}"),
                }
            }
        })
    }
}
