//! The example procs of `tests/procs/*.rs` (`trivial`, `sleeper`, `spinner`, `big`), built at
//! run time into sigmabench's own cache directory with `rustc` as static binaries.
//!
//! They are single-file programs outside every Cargo workspace, so sigmabench builds them itself:
//! `rustc -O -C target-feature=+crt-static -C strip=symbols -C panic=abort --edition 2021`, into
//! `<target dir>/sigma-procs/` (the directory above the one sigmabench runs from) or
//! `$SIGMA_PROCS_DIR`. A binary is rebuilt when its source is newer; a build writes a private
//! file and renames it into place, so concurrent runs never see half a binary. The sources are
//! `tests/procs/` of the tree sigmabench was built from, or `$SIGMA_PROCS_SRC`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Names the cache directory instead of `<target dir>/sigma-procs`.
pub const PROCS_DIR_ENV: &str = "SIGMA_PROCS_DIR";
/// Names the source directory instead of the tree's `tests/procs`.
pub const PROCS_SRC_ENV: &str = "SIGMA_PROCS_SRC";

/// The directory of the procs' sources.
pub fn source_dir() -> PathBuf {
    match std::env::var_os(PROCS_SRC_ENV) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/procs"),
    }
}

/// The cache directory the procs are built into.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(PROCS_DIR_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding the sigmabench executable")?;
    // target/release/sigmabench, or target/release/deps/<test> for unit tests.
    let mut dir = exe.parent().context("the sigmabench executable has no directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let target = dir.parent().context("the profile directory has no parent")?;
    Ok(target.join("sigma-procs"))
}

/// The rustc to build with: `$RUSTC`, else `rustc` on the PATH.
fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string())
}

/// The static binary of example proc `name`, built first if it is missing or older than its
/// source.
pub fn binary(name: &str) -> Result<PathBuf> {
    let src = source_dir().join(format!("{name}.rs"));
    let src_time = std::fs::metadata(&src)
        .and_then(|m| m.modified())
        .with_context(|| format!("example proc source {} (set {PROCS_SRC_ENV})", src.display()))?;
    let dir = cache_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(name);
    let fresh = std::fs::metadata(&out)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= src_time);
    if fresh {
        return Ok(out);
    }
    let tmp = dir.join(format!(
        ".{name}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let rustc = rustc();
    let output = Command::new(&rustc)
        .args([
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
            "-C",
            "panic=abort",
            "--edition",
            "2021",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{rustc}` not found: building the example proc {name} from {} needs rustc (install a Rust toolchain or set RUSTC)",
            src.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("running `{rustc}`")),
    };
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "`{rustc}` failed to build the example proc {name} from {} ({}): {}",
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_builds_static_and_exits_with_its_argument() {
        let bin = binary("trivial").unwrap();
        let again = binary("trivial").unwrap();
        assert_eq!(bin, again);
        let status = Command::new(&bin).arg("7").status().unwrap();
        assert_eq!(status.code(), Some(7));
        let bytes = std::fs::read(&bin).unwrap();
        assert!(!has_interpreter(&bytes), "dynamic: {}", bin.display());
    }

    /// Whether an ELF64 little-endian file has a PT_INTERP program header (a static binary
    /// has none).
    fn has_interpreter(elf: &[u8]) -> bool {
        assert_eq!(&elf[..4], b"\x7fELF");
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        (0..phnum).any(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
        })
    }
}
