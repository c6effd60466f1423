//! Integration tests of σ live in `tests/`; this library holds what tests
//! (and sigmabench) of several crates share:
//!
//! - [`etcd`]: a throwaway single-member etcd server;
//! - [`procs`]: the proc client library's example procs, built static.

pub mod etcd;
pub mod procs;
