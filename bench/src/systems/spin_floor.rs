//! The syscall floor: non-blocking sockets, both ends spin on `recv`/`send`, nobody ever sleeps.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{
    check_echo, payload, run_pair, Measured, PingPongSpec, RttRecorder, StdListener, StdStream, System, Waits,
    STALL_TIMEOUT,
};
use crate::affinity::pin_current_thread;

/// Busy-polling non-blocking sockets (no runtime): the lowest RTT the kernel can give.
#[derive(Debug)]
pub struct SpinFloor;

/// Tracks the time since the last progress so that a spin loop cannot spin forever.
struct Stall {
    last: Instant,
    spins: u32,
}

impl Stall {
    fn new() -> Self {
        Stall {
            last: Instant::now(),
            spins: 0,
        }
    }

    fn progress(&mut self) {
        self.spins = 0;
        self.last = Instant::now();
    }

    /// Called on every idle spin; fails after [`STALL_TIMEOUT`] without progress.
    fn idle(&mut self, what: &str) -> Result<()> {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins % 4096 == 0 && self.last.elapsed() > STALL_TIMEOUT {
            bail!("no progress for {STALL_TIMEOUT:?} while spinning on {what}");
        }
        Ok(())
    }
}

/// Writes all of `buf`, spinning on `WouldBlock`.
fn spin_write_all(s: &mut impl Write, mut buf: &[u8], stall: &mut Stall) -> Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => bail!("send returned 0"),
            Ok(n) => {
                buf = &buf[n..];
                stall.progress();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => stall.idle("send")?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One `recv`, spinning on `WouldBlock`; returns 0 at EOF.
fn spin_read(s: &mut impl Read, buf: &mut [u8], stall: &mut Stall) -> Result<usize> {
    loop {
        match s.read(buf) {
            Ok(n) => {
                stall.progress();
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => stall.idle("recv")?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One connection of the spinning echo server.
struct Conn {
    s: TcpStream,
    /// Bytes read but not yet echoed back.
    pending: Vec<u8>,
    done: bool,
}

impl System for SpinFloor {
    fn name(&self) -> &'static str {
        "spin-floor"
    }

    fn note(&self) -> String {
        "non-blocking sockets, both ends busy-poll recv/send".to_string()
    }

    fn waits(&self) -> Waits {
        Waits::Floor
    }

    fn pingpong(&self, spec: &PingPongSpec) -> Result<Measured> {
        run_pair(
            spec,
            "spin-floor",
            |bind, ready| {
                let (l, actual) = StdListener::bind(&bind)?;
                l.set_nonblocking(true)?;
                ready(actual);
                let mut stall = Stall::new();
                let mut s = loop {
                    match l.accept() {
                        Ok(s) => break s,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => stall.idle("accept")?,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e).context("accept"),
                    }
                };
                s.set_nonblocking(true)?;
                stall.progress();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = spin_read(&mut s, &mut buf, &mut stall)?;
                    if n == 0 {
                        return Ok(());
                    }
                    spin_write_all(&mut s, &buf[..n], &mut stall)?;
                }
            },
            |ep, spec| {
                let mut s = StdStream::connect(&ep)?;
                s.set_nonblocking(true)?;
                let mut stall = Stall::new();
                let mut rec = RttRecorder::new(&spec);
                let out = payload(spec.payload_bytes);
                let n = out.len();
                let mut back = vec![0u8; n];
                for i in 0..rec.total() {
                    let t0 = Instant::now();
                    spin_write_all(&mut s, &out, &mut stall)?;
                    let mut got = 0;
                    while got < n {
                        match spin_read(&mut s, &mut back[got..], &mut stall)? {
                            0 => bail!("unexpected EOF after {got} of {n} bytes"),
                            k => got += k,
                        }
                    }
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
        l.set_nonblocking(true)?;
        ready();
        let mut conns: Vec<Conn> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nodelay(true)?;
                    s.set_nonblocking(true)?;
                    conns.push(Conn {
                        s,
                        pending: Vec::new(),
                        done: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => eprintln!("spin-floor echo: accept: {e}"),
            }
            for c in &mut conns {
                if c.pending.is_empty() {
                    match c.s.read(&mut buf) {
                        Ok(0) => c.done = true,
                        Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                        Err(_) => c.done = true,
                    }
                }
                if !c.pending.is_empty() {
                    match c.s.write(&c.pending) {
                        Ok(n) => {
                            c.pending.drain(..n);
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                        Err(_) => c.done = true,
                    }
                }
            }
            conns.retain(|c| !c.done);
            std::hint::spin_loop();
        }
    }
}
