//! `sigma`: a proc started through sigmad's proc lifecycle (`sigmactl spawn` / the admin spawn
//! and wait calls), which includes scheduling, the binary store and the sandbox.
//!
//! sigmad has no proc lifecycle in this tree yet, so opening this system fails with that reason
//! and its rows are error rows: nothing is faked. Once sigmad can spawn and wait, this `open`
//! returns a [`Starter`] that starts a sigmad (`crate::sigmad::Sigmad`), spawns through its
//! admin socket, waits for the exit, and fills the breakdown from the timings sigmad reports
//! (`schedule`, `fetch`, `verify` and the sandbox's steps).

use std::sync::Arc;

use anyhow::{bail, Result};

use super::{Env, Starter};

/// Opens the system: not possible until sigmad's proc lifecycle is wired.
pub fn open(_env: &Env) -> Result<Arc<dyn Starter>> {
    bail!(
        "sigmad's proc lifecycle is not wired yet (no spawn/wait in sigmad's admin API or sigmactl in this build); `sigma-sandbox` measures the sandbox alone"
    )
}
