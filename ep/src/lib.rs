//! σEP protocol: endpoint addresses, frame and packet headers, RPC framing
//! and the namespace and proc protocol messages.
//!
//! This crate is pure: it performs no IO and contains no `unsafe`. Every
//! decoder returns a [`DecodeError`] for input it cannot parse and never
//! panics; each has a fuzz target (`ep/fuzz`).
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod frame;
pub mod limits;
pub mod message;
pub mod ns;
pub mod proc;

pub use codec::{decode_frame, Frame};
pub use error::DecodeError;
pub use frame::{Header, Kind, StatusCode};
pub use message::{Message, Pod};
