//! The data plane's modules depend downwards only (issue #9): system calls
//! and bookkeeping, then the driver with its buffer pool and the wake-up
//! of a parked core, then the executor, then the runtime (the core loop
//! and `Local`), then what users call (operations, sockets, RPC). A lower
//! layer that reached up — as the driver and the buffer pool once reached
//! into the runtime's thread-local `Local` — would make this test fail.

use std::path::{Path, PathBuf};

/// The layer of a top-level module of `src/`, lowest first.
fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "sys" | "limits" | "error" | "sync" | "park" | "buf" | "idle" | "channel" => 0,
        "driver" => 1,
        "executor" => 2,
        "runtime" => 3,
        "op" | "net" | "rpc" | "probe" => 4,
        _ => return None,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::NAME` paths a source file names outside comments.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
            rest = &rest[at + 7..];
        }
    }
    found
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let Some(own) = layer(top.trim_end_matches(".rs")) else {
            continue;
        };
        checked += 1;
        let source = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&source) {
            if let Some(theirs) = layer(&name) {
                if theirs > own {
                    violations.push(format!(
                        "{}:{line}: layer {own} names crate::{name} (layer {theirs})",
                        relative.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} source files found under {}",
        src.display()
    );
    assert!(violations.is_empty(), "upward dependencies:\n{}", violations.join("\n"));
}

#[test]
fn the_scanner_sees_paths_and_skips_comments() {
    let found = crate_paths("use crate::runtime::Local; // crate::op\n/// [x](crate::net)\nlet a = crate::sys::f();");
    assert_eq!(found, vec![(1, "runtime".to_string()), (3, "sys".to_string())]);
}
