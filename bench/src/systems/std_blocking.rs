//! Blocking std sockets, a thread per connection: the "sleep in the kernel on every read" baseline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use anyhow::{Context, Result};

use super::{
    check_echo, payload, run_pair, Measured, PingPongSpec, RttRecorder, StdListener, StdStream, System, Waits,
    STALL_TIMEOUT,
};
use crate::affinity::pin_current_thread;

/// Blocking `read`/`write_all` on std sockets.
#[derive(Debug)]
pub struct StdBlocking;

fn echo(mut s: impl Read + Write) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        s.write_all(&buf[..n])?;
    }
}

impl System for StdBlocking {
    fn name(&self) -> &'static str {
        "std-blocking"
    }

    fn note(&self) -> String {
        "blocking std sockets, thread per connection".to_string()
    }

    fn waits(&self) -> Waits {
        Waits::Park
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        run_pair(
            spec,
            "std-blocking",
            |bind, ready| {
                let (l, actual) = StdListener::bind(&bind)?;
                ready(actual);
                let s = l.accept().context("accept")?;
                s.set_read_timeout(Some(STALL_TIMEOUT))?;
                echo(s)
            },
            |ep, spec| {
                let mut s = StdStream::connect(&ep)?;
                s.set_read_timeout(Some(STALL_TIMEOUT))?;
                let mut rec = RttRecorder::new(&spec);
                let out = payload(spec.payload_bytes);
                let mut back = vec![0u8; spec.payload_bytes];
                for i in 0..rec.total() {
                    let t0 = Instant::now();
                    s.write_all(&out)?;
                    s.read_exact(&mut back)?;
                    rec.record(i, t0);
                    check_echo(&out, &back)?;
                }
                Ok(rec.finish())
            },
        )
    }

    fn serve_echo(&self, addr: SocketAddr, core: usize, ready: &mut dyn FnMut()) -> Result<()> {
        pin_current_thread(core)?;
        let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        ready();
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nodelay(true)?;
                    // Threads inherit this thread's CPU mask (core `core`).
                    std::thread::spawn(move || {
                        let _ = echo(s);
                    });
                }
                Err(e) => eprintln!("std-blocking echo: accept: {e}"),
            }
        }
    }
}
