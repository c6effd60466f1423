//! The example procs of the proc client library (`ep/client/examples`:
//! `spawner`, `evictee`), built static (`+crt-static`) by a nested cargo
//! into their own target directory, `<target>/sigma-proc-examples`, so that
//! the flag does not reach the rest of the workspace's build.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

/// The directory holding the built example procs (built or brought up to
/// date on the first call of each process). An error says why the build
/// failed.
pub fn client_examples() -> Result<PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, String> {
    let root = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("sigma-proc-examples");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // An explicit --target keeps the static flag off the host's build
    // scripts and proc macros (which cannot be static).
    let host = host_triple()?;
    let out = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "sigma-proc",
            "--examples",
            "--target",
            &host,
        ])
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .output()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the proc client library's examples static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target.join(&host).join("release").join("examples"))
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("running {rustc} -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| format!("{rustc} -vV printed no host triple"))
}
