//! What the sigmabench integration tests share.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sigmad the `ns` and `spawn` suites run, built beside this sigmabench (same target dir and profile).
/// Built every time: a no-op when it is fresh, and a stale sigmad would test old code.
pub fn sigmad() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_sigmabench")).parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "sigma-tools", "--bin", "sigmad"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            build.arg("--release");
        }
        Some("debug") => {}
        other => panic!("sigmabench is not in a debug or release dir: {other:?}"),
    }
    build.arg("--target-dir").arg(dir.parent().unwrap());
    let status = build.status().unwrap();
    assert!(status.success(), "cargo build -p sigma-tools: {status}");
    let sigmad = dir.join("sigmad");
    assert!(sigmad.is_file(), "{} missing after the build", sigmad.display());
    sigmad
}
