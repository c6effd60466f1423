//! The control plane of σ: realm naming (named), per-machine scheduling
//! (schedd), proc lifecycle, the binary registry and σEP authorization.
//!
//! Built so far: the namespace model and its embedded store (`ns`, part of
//! issue #4). schedd, the proc lifecycle and the rest of named come later.

pub mod admin;
pub mod ns;
