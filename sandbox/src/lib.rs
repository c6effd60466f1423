//! σcontainer: the sandbox a proc runs in (namespaces, a pivot_root jail
//! holding only its binary, a seccomp allow-list, cgroup limits, rlimits).
//!
//! It depends on nothing of ours. Nothing is built here yet: the sandbox
//! arrives with the proc-spawn issue, and until then this crate exports no
//! API, so nothing can mistake it for a working sandbox.
