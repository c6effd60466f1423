//! The control plane of σ: realm naming (named), per-machine scheduling
//! (schedd), proc lifecycle, the binary registry and σEP authorization.
//!
//! Built so far: named — the namespace model, its embedded and etcd stores
//! (`ns`), sigmad's admin protocol (`admin`) and the realm-bound client
//! with σOS's file API (`client`). schedd, the proc lifecycle and the rest
//! come later.

pub mod admin;
pub mod bins;
pub mod client;
pub mod conn_limit;
pub mod log_limit;
pub mod ns;
pub mod procs;
