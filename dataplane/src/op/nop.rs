//! NOP: a round trip through the ring and nothing else (microbenchmarks).

use super::{Op, UringOp};
use io_uring::{opcode, squeue};
use std::io;

pub(crate) struct Nop;

impl UringOp for Nop {
    type Output = io::Result<()>;
    fn entry(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }
    fn complete(self, res: i32, _flags: u32) -> io::Result<()> {
        crate::sys::cqe_result(res).map(drop)
    }
}

/// Submits a NOP and waits for its completion. On the epoll back end it
/// completes at once.
pub async fn nop() -> io::Result<()> {
    if crate::runtime::with_local(|l| l.driver.uring().is_some()) {
        Op::new(Nop).await
    } else {
        Ok(())
    }
}
