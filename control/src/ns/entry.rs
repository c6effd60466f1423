//! What is stored at a path, and its encoding in the store.

use super::NsError;
use bytes::{BufMut, Bytes, BytesMut};

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A directory.
    Dir = 1,
    /// A file of bytes.
    File = 2,
    /// A mount: a name for a σEP endpoint (the contents are the endpoint).
    Mount = 3,
}

/// An entry: its kind, permission bits, contents and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (recorded; enforcement comes with principals).
    pub perm: u32,
    /// File bytes or mount endpoint; empty for directories.
    pub data: Bytes,
    /// The lease the entry lives under, if it is ephemeral.
    pub lease: Option<u64>,
}

/// What `stat` says about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The entry's name.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits.
    pub perm: u32,
    /// Bytes of contents.
    pub len: u64,
    /// Changes on every write (the store's version of the entry).
    pub version: u64,
    /// The lease, if ephemeral.
    pub lease: Option<u64>,
}

const HEADER_BYTES: usize = 1 + 4 + 8;

impl Entry {
    /// The stored form: kind, perm, lease (0 = none), contents.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + self.data.len());
        out.put_u8(self.kind as u8);
        out.put_u32_le(self.perm);
        out.put_u64_le(self.lease.unwrap_or(0));
        out.put_slice(&self.data);
        out.freeze()
    }

    /// Parses the stored form.
    pub fn decode(bytes: &Bytes) -> Result<Entry, NsError> {
        if bytes.len() < HEADER_BYTES {
            return Err(NsError::Store(format!("corrupt entry: {} bytes", bytes.len())));
        }
        let kind = match bytes[0] {
            1 => EntryKind::Dir,
            2 => EntryKind::File,
            3 => EntryKind::Mount,
            k => return Err(NsError::Store(format!("corrupt entry: kind {k}"))),
        };
        let perm = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let lease = u64::from_le_bytes(bytes[5..13].try_into().expect("8 bytes"));
        Ok(Entry {
            kind,
            perm,
            data: bytes.slice(HEADER_BYTES..),
            lease: (lease != 0).then_some(lease),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_an_error() {
        let e = Entry {
            kind: EntryKind::Mount,
            perm: 0o644,
            data: Bytes::from_static(b"tcp:1.2.3.4:5"),
            lease: Some(9),
        };
        assert_eq!(Entry::decode(&e.encode()), Ok(e));
        assert!(Entry::decode(&Bytes::from_static(b"\x09aaaaaaaaaaaaaa")).is_err());
        assert!(Entry::decode(&Bytes::from_static(b"\x01")).is_err());
    }
}
