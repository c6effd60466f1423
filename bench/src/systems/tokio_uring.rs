//! tokio-uring: `tokio_uring::start` per core (an io_uring driven from tokio's epoll loop), owned buffers.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Result};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream, UnixStream};

use super::{check_echo, payload, run_pair, Endpoint, Measured, PingPongSpec, RttRecorder, System, Waits};
use crate::affinity::pin_current_thread;

/// tokio-uring 0.5, one runtime per pinned thread.
#[derive(Debug)]
pub struct TokioUring;

/// tokio-uring's TCP and Unix streams share no trait; this gives them one.
trait Stream {
    async fn read_buf(&self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>);
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (std::io::Result<usize>, tokio_uring::buf::Slice<Vec<u8>>);
    async fn write_all_buf(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>);
}

macro_rules! impl_stream {
    ($t:ty) => {
        impl Stream for $t {
            async fn read_buf(&self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
                self.read(buf).await
            }
            async fn read_into(
                &self,
                buf: tokio_uring::buf::Slice<Vec<u8>>,
            ) -> (std::io::Result<usize>, tokio_uring::buf::Slice<Vec<u8>>) {
                self.read(buf).await
            }
            async fn write_all_buf(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
                self.write_all(buf).await
            }
        }
    };
}

impl_stream!(TcpStream);
impl_stream!(UnixStream);

async fn echo<S: Stream>(s: S) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (r, b) = s.read_buf(buf).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
        let (r, b) = s.write_all_buf(buf).await;
        buf = b;
        r?;
    }
}

async fn client<S: Stream>(s: S, spec: &PingPongSpec) -> Result<Measured> {
    let n = spec.payload_bytes;
    let mut rec = RttRecorder::new(spec);
    let expect = payload(n);
    let mut out = expect.clone();
    let mut back: Vec<u8> = Vec::with_capacity(n);
    for i in 0..rec.total() {
        let t0 = Instant::now();
        let (r, b) = s.write_all_buf(out).await;
        out = b;
        r?;
        back.clear();
        let mut got = 0;
        while got < n {
            let (r, sl) = s.read_into(back.slice(got..n)).await;
            back = sl.into_inner();
            match r? {
                0 => bail!("unexpected EOF after {got} of {n} bytes"),
                k => got += k,
            }
        }
        rec.record(i, t0);
        check_echo(&expect, &back[..n])?;
    }
    Ok(rec.finish())
}

impl System for TokioUring {
    fn name(&self) -> &'static str {
        "tokio-uring"
    }

    fn note(&self) -> String {
        "tokio_uring::start per core (ring polled via tokio's epoll), owned buffers, parks when idle (unix listener: std accept + from_std, see source); no spinning variant: no documented spin option, and yielding does not make it poll: it submits queued SQEs only when tokio parks the thread (its on_thread_park hook); tried: reads spinning by yield_now for 50 us took 57 us per 64 B ping-pong against 61-68 us parked, with both cores busy (quick runs, 2026-11-26)".to_string()
    }

    fn waits(&self) -> Waits {
        Waits::Park
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        run_pair(
            spec,
            "tokio-uring",
            |bind, ready| {
                tokio_uring::start(async move {
                    match bind {
                        Endpoint::Tcp(a) => {
                            let l = TcpListener::bind(a)?;
                            ready(Endpoint::Tcp(l.local_addr()?));
                            let (s, _) = l.accept().await?;
                            s.set_nodelay(true)?;
                            echo(s).await
                        }
                        Endpoint::Unix(p) => {
                            // tokio-uring's UnixListener::bind always sets SO_REUSEPORT, which
                            // Linux rejects on AF_UNIX sockets (EOPNOTSUPP on 6.18), and it has
                            // no from_std. So accept with std (outside the measured path) and
                            // hand the connection to tokio-uring.
                            let l = std::os::unix::net::UnixListener::bind(&p)?;
                            ready(Endpoint::Unix(p));
                            let (s, _) = l.accept()?;
                            echo(UnixStream::from_std(s)).await
                        }
                    }
                })
            },
            |ep, spec| {
                tokio_uring::start(async move {
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
        tokio_uring::start(async move {
            let l = TcpListener::bind(addr)?;
            ready();
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        s.set_nodelay(true)?;
                        tokio_uring::spawn(async move {
                            let _ = echo(s).await;
                        });
                    }
                    Err(e) => eprintln!("tokio-uring echo: accept: {e}"),
                }
            }
        })
    }
}
