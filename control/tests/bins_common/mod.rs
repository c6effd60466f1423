//! What the binary-store tests share: test executables built at test time,
//! the cache IO variants (a real data-plane core, and the blocking pool),
//! and the in-process S3 server (s3s-fs, `sigma_tests::s3`).

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
    // Two cores, as sigmad has on two CPUs: jobs alternate between them,
    // and a file's hash pieces are spread over both.
    let (client, servers) = DataPlaneIo::with_cores(2);
    let servers: Vec<std::sync::Mutex<Option<_>>> =
        servers.into_iter().map(|s| std::sync::Mutex::new(Some(s))).collect();
    // The cores' threads end when the returned `DataPlaneIo` goes.
    sigma_dataplane::Runtime::start_unpinned("bins-test-core", 2, sigma_dataplane::Core::builder(), move |i| {
        let server = servers[i].lock().unwrap().take();
        async move {
            eprintln!(
                "data-plane core {i} for cache IO: {:?}",
                sigma_dataplane::current_backend()
            );
            if let Some(server) = server {
                server.run().await;
            }
        }
    })
    .expect("data-plane cores");
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

/// The in-process S3 server (s3s-fs) the S3 tests run against: one copy,
/// in sigma-tests, shared with sigmabench's `cold-start-s3` case. (Unused
/// by the tests of the local store, which include this module too.)
#[allow(unused_imports)]
pub use sigma_tests::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
