//! Typed messages: how a Rust value becomes a payload and back.
//!
//! Messages of σ's own services are plain `#[repr(C)]` structs read and
//! written in place with zerocopy ([`Pod`]); a service may use raw bytes
//! ([`bytes::Bytes`]) or any other encoding by implementing [`Message`].

use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A value that can travel as a frame payload.
pub trait Message: Sized {
    /// Appends the encoded value to `out`.
    fn encode(&self, out: &mut BytesMut);
    /// Decodes a payload; an error if the bytes do not parse.
    fn decode(payload: Bytes) -> Result<Self, DecodeError>;
}

impl Message for Bytes {
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(self);
    }
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        Ok(payload)
    }
}

impl Message for () {
    fn encode(&self, _out: &mut BytesMut) {}
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        if payload.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadMessage {
                type_name: "()",
                have: payload.len(),
                need: 0,
            })
        }
    }
}

/// A fixed-layout struct sent as its bytes (zerocopy): no parsing beyond a
/// length check, and every bit pattern is a valid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pod<T>(pub T);

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Message for Pod<T> {
    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(self.0.as_bytes());
    }
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        T::read_from_bytes(&payload)
            .map(Pod)
            .map_err(|_| DecodeError::BadMessage {
                type_name: std::any::type_name::<T>(),
                have: payload.len(),
                need: std::mem::size_of::<T>(),
            })
    }
}
