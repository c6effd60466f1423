//! `vfork-exec`: the floor. `std::process::Command` (posix_spawn, which glibc does with
//! `clone(CLONE_VM | CLONE_VFORK)` + execve) of the same static binary with stdin, stdout and
//! stderr on /dev/null, then waitpid: no namespaces, no cgroups, no jail, no seccomp.
//!
//! Cold: the binary is first copied from the store into the cache (the least a start from a
//! store must do), and the copy is run; no digest is checked.

use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use std::path::{Path, PathBuf};

use super::{now_ns, Env, Proc, Sample, Start, Starter, Steps, Store, NO_S3};

struct VforkExec {
    trivial: PathBuf,
    big: PathBuf,
    store: Store,
}

pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    Ok(Arc::new(VforkExec {
        trivial: env.trivial.clone(),
        big: env.big.clone(),
        store: env.store.clone(),
    }))
}

fn run(bin: &Path) -> Result<()> {
    let mut busy = 0;
    let status = loop {
        let r = Command::new(bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy < super::TEXT_BUSY_RETRIES => {
                busy += 1;
                std::thread::sleep(super::TEXT_BUSY_PAUSE);
            }
            r => break r.with_context(|| format!("spawning {}", bin.display()))?,
        }
    };
    if !status.success() {
        bail!("{} exited with {status}", bin.display());
    }
    Ok(())
}

impl Starter for VforkExec {
    fn start(&self, how: Start, proc: Proc, seq: u64) -> Result<Sample> {
        match how {
            Start::Warm => {
                let bin = match proc {
                    Proc::Trivial => &self.trivial,
                    Proc::Big => &self.big,
                };
                let t0 = now_ns();
                run(bin)?;
                Ok(Sample {
                    total_ns: now_ns() - t0,
                    steps: Steps::default(),
                })
            }
            Start::Cold => {
                if proc != Proc::Big {
                    bail!("cold starts are of the big proc only");
                }
                let t0 = now_ns();
                let to = self.store.fetch("vfork", seq)?;
                let t1 = now_ns();
                let r = run(&to);
                let t2 = now_ns();
                let _ = std::fs::remove_file(&to);
                r?;
                Ok(Sample {
                    total_ns: t2 - t0,
                    steps: Steps {
                        fetch: Some(t1 - t0),
                        ..Steps::default()
                    },
                })
            }
            Start::ColdS3 => bail!("{NO_S3}"),
        }
    }

    fn note(&self, how: Start) -> String {
        match how {
            Start::Warm => "std::process::Command spawn + wait of the binary (posix_spawn: vfork + execve), stdio on /dev/null; no sandbox: the floor".into(),
            Start::Cold => "copy of the binary from the store into the cache (fetch_us), then Command spawn + wait of the copy; no digest, no sandbox: the floor".into(),
            Start::ColdS3 => NO_S3.into(),
        }
    }
}
