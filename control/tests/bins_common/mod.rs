//! What the binary-store tests share: test executables built at test time,
//! the cache IO variants (a real data-plane core, and the blocking pool),
//! and an in-process S3 server (s3s-fs).

#![allow(dead_code)]

use sigma_control::bins::{BlockingIo, CacheIo, DataPlaneIo};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// What the static test binary prints.
pub const HELLO: &str = "hello from a static proc";

fn tmp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bins-tests")
}

/// Builds `out` with `build(tmp_path)` unless it exists; renamed into place
/// so that test processes running at once never see half a file.
fn built(out: &Path, build: impl FnOnce(&Path) -> Result<(), String>) -> PathBuf {
    if out.exists() {
        return out.to_path_buf();
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    build(&tmp).unwrap_or_else(|e| panic!("building {}: {e}", out.display()));
    std::fs::rename(&tmp, out).unwrap();
    out.to_path_buf()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A static-pie Rust executable printing [`HELLO`] (about 5 MB: several
/// cache writes), built once with `rustc -C target-feature=+crt-static`.
pub fn static_rust() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tmp_dir();
        built(&dir.join("hello-static"), |tmp| {
            std::fs::create_dir_all(&dir).unwrap();
            let src = dir.join(format!("hello-{}.rs", std::process::id()));
            std::fs::write(&src, format!("fn main() {{ println!(\"{HELLO}\"); }}\n")).unwrap();
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let r = run(Command::new(rustc)
                .args(["-O", "-C", "target-feature=+crt-static"])
                .arg(&src)
                .arg("-o")
                .arg(tmp));
            let _ = std::fs::remove_file(&src);
            r
        })
    })
    .clone()
}

/// A fixed-address (`ET_EXEC`) executable from `gcc -static`, if gcc and a
/// static libc are there.
pub fn static_c() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tmp_dir();
        let out = dir.join("true-static-c");
        if out.exists() {
            return Some(out);
        }
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("true-{}.c", std::process::id()));
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let ok = run(Command::new("gcc").arg("-static").arg(&src).arg("-o").arg(&tmp)).is_ok();
        let _ = std::fs::remove_file(&src);
        if !ok {
            eprintln!("gcc -static unavailable: skipping the ET_EXEC case");
            return None;
        }
        std::fs::rename(&tmp, &out).unwrap();
        Some(out)
    })
    .clone()
}

/// The cache IO variants every cache test runs with: a data-plane core on
/// a thread of its own (its IO as io_uring operations), and the blocking
/// pool. The core's thread ends when the returned `DataPlaneIo` and its
/// clones are dropped.
pub fn io_variants() -> Vec<(&'static str, Arc<dyn CacheIo>)> {
    let (client, server) = DataPlaneIo::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bins-test-core".into())
        .spawn(move || {
            let core = sigma_dataplane::Core::builder().build().expect("data-plane core");
            let _ = ready_tx.send(format!("{:?}: {}", core.backend(), core.backend_reason()));
            core.block_on(server.run());
        })
        .unwrap();
    let backend = ready_rx.recv().expect("the core thread started");
    eprintln!("data-plane core for cache IO: {backend}");
    vec![
        ("data-plane", Arc::new(client) as Arc<dyn CacheIo>),
        ("blocking", Arc::new(BlockingIo)),
    ]
}

/// Files in `dir` (names), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// An S3 server (s3s-fs) in this process, on 127.0.0.1 and a free port,
/// serving `root` (each directory a bucket) on a thread of its own.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub const ACCESS_KEY: &str = "sigma-test";
pub const SECRET_KEY: &str = "sigma-test-secret";

impl S3Server {
    pub fn start(buckets: &[&str]) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap_or_else(|e| panic!("s3s-fs: {e:?}"));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("s3s-fs".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut b = S3ServiceBuilder::new(fs);
                    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                    let service = b.build();
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => {
                                let Ok((socket, _)) = accepted else { continue };
                                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                                tokio::spawn(async move { let _ = conn.await; });
                            }
                            _ = &mut stop_rx => break,
                        }
                    }
                });
            })
            .unwrap();
        let addr = addr_rx.recv().expect("s3s-fs listening");
        S3Server {
            endpoint: format!("http://{addr}"),
            root,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
