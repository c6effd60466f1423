//! σEP protocol: endpoint addresses, frame and packet headers, RPC framing and
//! the namespace and proc protocol messages.
//!
//! This crate is pure: it performs no IO and contains no `unsafe`. The wire
//! format itself arrives with issue #3; today the crate holds only the limits
//! that the data plane already shares with it.
#![forbid(unsafe_code)]

pub mod limits;
