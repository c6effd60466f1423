//! Integration tests of σ live in `tests/`; this library holds what tests
//! (and sigmabench) of several crates share:
//!
//! - [`etcd`]: a throwaway single-member etcd server;
//! - [`procs`]: the proc client library's example procs, built static;
//! - [`s3`]: a throwaway S3 server (s3s-fs) in this process.

pub mod etcd;
pub mod procs;
pub mod s3;
