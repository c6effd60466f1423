//! `vfork-exec`: the floor. `std::process::Command` (posix_spawn, which glibc does with
//! `clone(CLONE_VM | CLONE_VFORK)` + execve) of the same static binary with stdin, stdout and
//! stderr on /dev/null, then waitpid: no namespaces, no cgroups, no jail, no seccomp.
//!
//! Cold: the binary is first copied from the store into the cache (the least a start from a
//! store must do), and the copy is run; no digest is checked.
//!
//! Cold from S3 (`cold-start-s3`): the least a start from S3 must do. An S3 server of its own
//! (`sigma_tests::s3`, s3s-fs in this process on 127.0.0.1, as `sigma`'s S3 side), to which
//! each start first PUTs new bytes (the big proc with 8 bytes of its own) under a new key (not
//! timed), then a plain signed GET of the whole object on one connection made before the clock
//! starts ([`bare_s3`]), its body read 256 KiB at a time into a file in the cache, chmod, and
//! the file run; no digest is checked, no part is fetched in parallel.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

use std::path::{Path, PathBuf};

use sigma_tests::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};

use super::bare_s3::BareS3;
use super::{now_ns, Env, Proc, Sample, Start, Starter, Steps, Store};

/// The floor's S3 bucket.
const S3_BUCKET: &str = "sigmabench-floor";

struct VforkExec {
    trivial: PathBuf,
    big: PathBuf,
    store: Store,
    /// Its S3 server and a client of it, opened on the first start from S3.
    s3: OnceLock<std::result::Result<(S3Server, BareS3), String>>,
}

pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    Ok(Arc::new(VforkExec {
        trivial: env.trivial.clone(),
        big: env.big.clone(),
        store: env.store.clone(),
        s3: OnceLock::new(),
    }))
}

impl VforkExec {
    /// The S3 server and its client, opened on first use.
    fn s3(&self) -> Result<&(S3Server, BareS3)> {
        self.s3
            .get_or_init(|| {
                let server = S3Server::start(&[S3_BUCKET]).map_err(|e| e.to_string())?;
                let client =
                    BareS3::new(&server.endpoint, REGION, ACCESS_KEY, SECRET_KEY).map_err(|e| format!("{e:#}"))?;
                Ok((server, client))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A cold start from S3: new bytes PUT under a new key (not timed), then GET into the cache,
    /// chmod and run (timed); the object and the copy removed (not timed).
    fn cold_s3(&self, seq: u64) -> Result<Sample> {
        let (_, client) = self.s3()?;
        let mut bytes =
            std::fs::read(&self.store.big).with_context(|| format!("reading {}", self.store.big.display()))?;
        bytes.extend_from_slice(&(seq ^ now_ns()).to_le_bytes());
        let key = format!("big-cold-{seq}");
        client.put(S3_BUCKET, &key, &bytes)?;
        drop(bytes);
        let to = self.store.cache.join(format!("vfork-s3-{seq}"));
        let conn = client.connect()?;
        let t0 = now_ns();
        let fetched = (|| -> Result<()> {
            let mut file = std::fs::File::create(&to).with_context(|| format!("creating {}", to.display()))?;
            client.get_into(conn, S3_BUCKET, &key, &mut file)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o755))
                .context("chmod of the copy")?;
            Ok(())
        })();
        let r = match fetched {
            Ok(()) => run_fetched(t0, &to),
            Err(e) => {
                let _ = std::fs::remove_file(&to);
                Err(e)
            }
        };
        let _ = client.delete(S3_BUCKET, &key);
        r
    }
}

/// Runs the copy `to` fetched since `t0`, then removes it: the sample, its fetch step up to now.
fn run_fetched(t0: u64, to: &Path) -> Result<Sample> {
    let t1 = now_ns();
    let r = run(to);
    let t2 = now_ns();
    let _ = std::fs::remove_file(to);
    r?;
    Ok(Sample {
        total_ns: t2 - t0,
        steps: Steps {
            fetch: Some(t1 - t0),
            ..Steps::default()
        },
    })
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
                run_fetched(t0, &to)
            }
            Start::ColdS3 => {
                if proc != Proc::Big {
                    bail!("cold starts are of the big proc only");
                }
                self.cold_s3(seq)
            }
        }
    }

    fn note(&self, how: Start) -> String {
        match how {
            Start::Warm => "std::process::Command spawn + wait of the binary (posix_spawn: vfork + execve), stdio on /dev/null; no sandbox: the floor".into(),
            Start::Cold => "copy of the binary from the store into the cache (fetch_us), then Command spawn + wait of the copy; no digest, no sandbox: the floor".into(),
            Start::ColdS3 => format!("from an S3 server of its own (s3s-fs 0.14.1, sigma_tests::s3, in sigmabench's process on 127.0.0.1, plain HTTP, bucket {S3_BUCKET}; the same server as sigma's S3 side, GetObject bodies read 1 MiB at a time): the big proc with 8 bytes of its own PUT under a new key just before (not timed), then one signed GET (SigV4, UNSIGNED-PAYLOAD) of the whole object on one HTTP/1.1 connection made before the clock starts, its body read 256 KiB at a time into a file in the cache (fetch_us, with the chmod), then Command spawn + wait of the copy; no digest, no parallel parts, no sandbox: the floor of a start from S3"),
        }
    }
}
