//! `docker`: `docker run --rm --network none` of a `FROM scratch` image holding the same static
//! binary: Docker's fastest start (no image pull, no network set-up; `--network none` is also
//! what a σ proc gets: its realm's netns, no veth per proc). Timed as the wall time of the
//! `docker` command, from its start to its exit (the container created, started, exited and
//! removed).
//!
//! Opened once per suite run: checks that an engine answers (`docker version`), then builds two
//! images with `docker build` from temporary directories (nothing can be pulled here): the warm
//! image (`COPY big /big`) and the cold one (`big` and a marker file in one `COPY`, so that its
//! layer is not the warm image's), saves the cold one to a tar in the store and removes it.
//! Warm: run the warm image. Cold: `docker load` of the cold image's tar (the local store),
//! then run it; afterwards (not timed) `docker rmi`, so that the next cold start loads its layer
//! again. Every image is removed when the system is dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{now_ns, run_cmd, Env, Proc, Sample, Start, Starter, Steps, NO_S3};

/// The long-lived daemons whose CPU a start is charged (the per-container shim and runc come and
/// go with the container, so their CPU is not counted).
const DAEMONS: &[&str] = &["dockerd", "containerd"];

/// How long `docker version` may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a build, save, load or removal may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

struct Docker {
    warm_tag: String,
    cold_tag: String,
    cold_tar: std::path::PathBuf,
    /// Tags that may exist and must go when the system is dropped.
    tags: Mutex<Vec<String>>,
    server: String,
}

fn docker() -> Command {
    Command::new("docker")
}

/// Builds `tag` from a context holding `big` (and `extra` files) with `dockerfile`.
fn build(dir: &Path, big: &Path, extra: &[(&str, &str)], dockerfile: &str, tag: &str) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::copy(big, dir.join("big")).with_context(|| format!("copying {} into the build context", big.display()))?;
    for (name, text) in extra {
        std::fs::write(dir.join(name), text)?;
    }
    std::fs::write(dir.join("Dockerfile"), dockerfile)?;
    run_cmd(docker().args(["build", "-q", "-t", tag]).arg(dir), CMD_TIMEOUT)
        .with_context(|| format!("docker build of {tag}"))?;
    Ok(())
}

pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    let server = match run_cmd(
        docker().args(["version", "--format", "{{.Server.Version}}"]),
        PROBE_TIMEOUT,
    ) {
        Ok(v) => v.trim().to_string(),
        Err(e) => {
            let socket = Path::new("/var/run/docker.sock");
            bail!(
                "no Docker engine answers ({}): {e:#}",
                if socket.exists() {
                    "/var/run/docker.sock exists"
                } else {
                    "no /var/run/docker.sock"
                }
            )
        }
    };
    let id = format!("{}-{}", std::process::id(), now_ns() % 1_000_000);
    let d = Docker {
        warm_tag: format!("sigma-bench-spawn-warm:{id}"),
        cold_tag: format!("sigma-bench-spawn-cold:{id}"),
        cold_tar: env.dir.path().join("store").join("docker-cold.tar"),
        tags: Mutex::new(Vec::new()),
        server,
    };
    // Registered first, so that a failed build is cleaned up too.
    d.tags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([d.warm_tag.clone(), d.cold_tag.clone()]);
    build(
        &env.dir.path().join("docker-warm"),
        &env.big,
        &[],
        "FROM scratch\nCOPY big /big\nENTRYPOINT [\"/big\"]\n",
        &d.warm_tag,
    )?;
    build(
        &env.dir.path().join("docker-cold"),
        &env.big,
        &[("cold", "a layer of its own\n")],
        "FROM scratch\nCOPY big cold /\nENTRYPOINT [\"/big\"]\n",
        &d.cold_tag,
    )?;
    run_cmd(
        docker().args(["save", "-o"]).arg(&d.cold_tar).arg(&d.cold_tag),
        CMD_TIMEOUT,
    )
    .context("docker save of the cold image")?;
    d.rmi(&d.cold_tag)?;
    Ok(Arc::new(d))
}

impl Docker {
    fn rmi(&self, tag: &str) -> Result<()> {
        run_cmd(docker().args(["rmi", "-f", tag]), CMD_TIMEOUT)
            .with_context(|| format!("docker rmi {tag}"))
            .map(|_| ())
    }

    /// `docker run --rm --network none TAG`, timed; the container must exit 0.
    fn run(&self, tag: &str) -> Result<u64> {
        let t0 = now_ns();
        let out = docker()
            .args(["run", "--rm", "--network", "none", tag])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running `docker run`")?;
        let took = now_ns() - t0;
        if !out.status.success() {
            bail!(
                "docker run {tag} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }
}

impl Starter for Docker {
    fn start(&self, how: Start, proc: Proc, _seq: u64) -> Result<Sample> {
        if proc != Proc::Big {
            bail!("the docker system runs the big proc only");
        }
        match how {
            Start::Warm => Ok(Sample {
                total_ns: self.run(&self.warm_tag)?,
                steps: Steps::default(),
            }),
            Start::Cold => {
                let t0 = now_ns();
                run_cmd(docker().args(["load", "-q", "-i"]).arg(&self.cold_tar), CMD_TIMEOUT)
                    .context("docker load of the cold image")?;
                let load = now_ns() - t0;
                let run = self.run(&self.cold_tag);
                let removed = self.rmi(&self.cold_tag);
                let run = run?;
                removed?;
                Ok(Sample {
                    total_ns: load + run,
                    steps: Steps {
                        fetch: Some(load),
                        ..Steps::default()
                    },
                })
            }
            Start::ColdS3 => bail!("{NO_S3}"),
        }
    }

    fn cpu_counted(&self) -> bool {
        false
    }

    fn close(&self) {
        let tags = std::mem::take(&mut *self.tags.lock().unwrap_or_else(|e| e.into_inner()));
        for tag in tags {
            // The cold image is usually gone already; a missing image is fine.
            let _ = run_cmd(docker().args(["rmi", "-f", &tag]), CMD_TIMEOUT);
        }
    }

    fn daemon_cpu_ns(&self) -> Option<u64> {
        super::processes_cpu_ns(DAEMONS)
    }

    fn note(&self, how: Start) -> String {
        let what = match how {
            Start::Warm => "`docker run --rm --network none` of a FROM-scratch image holding the binary (image already present), wall time of the docker command",
            Start::Cold => "`docker load` of a FROM-scratch image's tar from the local store (fetch_us; its layer not on the machine), then `docker run --rm --network none` of it, wall time of both docker commands; the image removal afterwards is not timed",
            Start::ColdS3 => NO_S3,
        };
        format!(
            "{what}; Docker engine {}; cpu_us_per_op not given: most of the CPU is in dockerd, containerd, the per-container shim and runc, outside this process tree; the daemons counted below are dockerd and containerd (the shim and runc come and go with each container)",
            self.server
        )
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.close();
    }
}
