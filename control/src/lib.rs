//! The control plane of σ: realm naming (named), per-machine scheduling
//! (schedd), proc lifecycle, the binary registry and σEP authorization.
//!
//! Nothing is built here yet: named arrives with issue #4, schedd and the
//! proc lifecycle after it. The crate exists so that the dependency
//! direction `ep ← dataplane ← control ← {tools, bench}` is fixed from the
//! first commit.
