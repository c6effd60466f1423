//! What the running kernel's io_uring supports, probed once per process on a
//! throwaway ring. Tests use it to skip, with a message, where a feature is
//! missing.

use io_uring::{IoUring, Probe};
use std::sync::OnceLock;

/// The result of probing io_uring.
#[derive(Debug)]
pub struct Support {
    /// Why io_uring is unusable, if it is.
    pub unavailable: Option<String>,
    opcodes: Vec<u8>,
}

impl Support {
    /// Whether `opcode` (an io-uring crate `opcode::X::CODE`) is supported.
    pub fn has_opcode(&self, opcode: u8) -> bool {
        self.opcodes.contains(&opcode)
    }

    /// Whether a core ring with SINGLE_ISSUER | DEFER_TASKRUN can be used.
    pub fn usable(&self) -> bool {
        self.unavailable.is_none()
    }
}

/// Probes once and caches the result.
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let ring: IoUring = match IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(8) {
            Ok(ring) => ring,
            Err(e) => {
                return Support {
                    unavailable: Some(format!("io_uring_setup: {e}")),
                    opcodes: Vec::new(),
                }
            }
        };
        let mut probe = Probe::new();
        if let Err(e) = ring.submitter().register_probe(&mut probe) {
            return Support {
                unavailable: Some(format!("register_probe: {e}")),
                opcodes: Vec::new(),
            };
        }
        let opcodes = (0..=u8::MAX).filter(|op| probe.is_supported(*op)).collect();
        Support {
            unavailable: None,
            opcodes,
        }
    })
}
