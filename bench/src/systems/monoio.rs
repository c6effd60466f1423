//! monoio with its io_uring driver (`RuntimeBuilder::<IoUringDriver>`), one runtime per core, owned buffers.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{ensure, Result};
use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream, UnixListener, UnixStream};
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

use super::{check_echo, payload, run_pair, Endpoint, PingPongSpec, RttRecorder, System};
use crate::affinity::pin_current_thread;

const RING_ENTRIES: u32 = 256;

/// monoio 0.2, io_uring driver, one runtime per pinned thread.
#[derive(Debug)]
pub struct Monoio;

fn runtime() -> Result<Runtime<IoUringDriver>> {
    Ok(RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .build()?)
}

async fn echo<S: AsyncReadRent + AsyncWriteRent>(mut s: S) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (r, b) = s.read(buf).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        let (r, b) = s.write_all(buf).await;
        buf = b;
        r?;
    }
}

async fn client<S: AsyncReadRent + AsyncWriteRent>(mut s: S, spec: &PingPongSpec) -> Result<Histogram<u64>> {
    let mut rec = RttRecorder::new(spec);
    let expect = payload(spec.payload_bytes);
    let mut out = expect.clone();
    let mut back: Box<[u8]> = vec![0u8; spec.payload_bytes].into_boxed_slice();
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let (r, b) = s.write_all(out).await;
        out = b;
        r?;
        let (r, b) = s.read_exact(back).await;
        back = b;
        let n = r?;
        rec.record(i, t0);
        ensure!(n == expect.len(), "short read");
        check_echo(&expect, &back)?;
    }
    Ok(rec.finish())
}

impl System for Monoio {
    fn name(&self) -> &'static str {
        "monoio"
    }

    fn note(&self) -> String {
        format!("IoUringDriver runtime per core, {RING_ENTRIES} entries, owned buffers")
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Histogram<u64>> {
        run_pair(
            spec,
            "monoio",
            |bind, ready| {
                runtime()?.block_on(async move {
                    match bind {
                        Endpoint::Tcp(a) => {
                            let l = TcpListener::bind(a)?;
                            ready(Endpoint::Tcp(l.local_addr()?));
                            let (s, _) = l.accept().await?;
                            s.set_nodelay(true)?;
                            echo(s).await
                        }
                        Endpoint::Unix(p) => {
                            // The default ListenerOpts set SO_REUSEPORT, which Linux rejects on
                            // AF_UNIX sockets (EOPNOTSUPP on 6.18), so turn it off.
                            let opts = ListenerOpts::new().reuse_port(false);
                            let l = UnixListener::bind_with_config(&p, &opts)?;
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
            let l = TcpListener::bind(addr)?;
            ready();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        monoio::spawn(async move {
                            let _ = echo(s).await;
                        });
                    }
                    Err(e) => eprintln!("monoio echo: accept: {e}"),
                }
            }
        })
    }
}
