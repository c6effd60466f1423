//! σcontainer: the sandbox a proc runs in.
//!
//! (Documentation of the spawn sequence: see below; filled in once it runs.)

pub mod cgroup;
mod child;
mod error;
pub mod limits;
pub mod policy;
mod sandbox;

pub use child::{Stamps, Step};
pub use error::{Error, ProcRef, Result};
pub use sandbox::{Child, Class, Config, ExitStatus, RealmHandle, Sandbox, SpawnSpec, SpawnTimes};
