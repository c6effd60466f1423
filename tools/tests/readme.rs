//! The README's "Running σ's namespace" blocks run as written (issue #10,
//! finding 9): the embedded block, then the etcd block while the embedded
//! sigmad still runs, in a fresh directory, with the binaries under test
//! standing in for `target/release/` and etcd's ports moved to free ones.

use std::process::Command;

/// The shell blocks of the README section `heading`, in order.
fn blocks(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split_once(heading).unwrap().1;
    let section = section.split_once("\n## ").map_or(section, |(s, _)| s);
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split_once("```").unwrap().0.to_string())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_namespace_blocks_run_as_written() {
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("skipping: etcd is not installed (scripts/setup.sh installs it)");
        return;
    }
    let blocks = blocks("## Running σ's namespace");
    assert!(blocks.len() >= 2, "the embedded and the etcd block");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sigmad")).parent().unwrap();
    let local = |b: &str| {
        b.lines()
            .filter(|l| !l.starts_with("cargo build"))
            .map(|l| l.replace("target/release/", &format!("{}/", bin.display())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (client, peer) = (free_port(), free_port());
    let etcd_block = local(&blocks[1])
        .lines()
        .map(|l| {
            if l.starts_with("CLIENT=") {
                format!("CLIENT=127.0.0.1:{client} PEER=127.0.0.1:{peer}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    // Both blocks in one shell, stopping at the first failing command; the
    // embedded sigmad (left running by its block) is stopped at the end.
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{}\n{}\n",
        local(&blocks[0]),
        etcd_block
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's blocks failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("beta"), "the etcd block's realm ls: {stdout}");
}

#[test]
fn the_procs_block_runs_as_written() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        eprintln!("skipping: procs need root and the cgroup v1 memory controller here");
        return;
    }
    let blocks = blocks("## Running procs");
    assert_eq!(blocks.len(), 1);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sigmad")).parent().unwrap();
    let repo = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let dir = tempfile::tempdir().unwrap();
    let block: String = blocks[0]
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .map(|l| {
            l.replace("target/release/", &format!("{}/", bin.display()))
                .replace("tests/procs/", &format!("{}/tests/procs/", repo.display()))
                .replace("/tmp/trivial", &format!("{}/trivial", dir.path().display()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let script = format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{block}\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's procs block failed:\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("error(3)") && stdout.contains("exit 3"), "{stdout}");
}
