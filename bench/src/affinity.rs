//! CPU pinning of the calling thread (`sched_setaffinity`), shared by every system.

use anyhow::{bail, Result};

/// Number of CPUs this process may use (`available_parallelism`, 1 if unknown).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Pins the calling thread to exactly `core`.
///
/// Threads spawned afterwards by this thread inherit the mask.
pub fn pin_current_thread(core: usize) -> Result<()> {
    let setsize = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if core >= setsize {
        bail!("core {core} is beyond CPU_SETSIZE ({setsize})");
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` < CPU_SETSIZE was checked above, so CPU_SET stays in bounds.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a valid, initialised
    // cpu_set_t of the size we pass.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("sched_setaffinity(core {core}): {err}");
    }
    Ok(())
}
