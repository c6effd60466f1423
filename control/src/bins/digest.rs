//! The content digest of a binary: BLAKE3, 32 bytes, written as 64
//! lowercase hex digits.

use std::fmt;

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Hex digits in a digest's text.
    pub const HEX_LEN: usize = 64;

    /// The digest of `bytes`, in one pass.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Parses 64 hex digits (either case).
    pub fn parse_hex(text: &str) -> Option<Digest> {
        if text.len() != Self::HEX_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Digest(out))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A digest computed as the bytes stream through.
#[derive(Debug, Default, Clone)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Hasher {
        Hasher(blake3::Hasher::new())
    }

    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

/// What hashing one piece of a file gives: the digest itself where the
/// piece is the whole file, else the piece's BLAKE3 chaining value (a
/// subtree of the file's tree), merged with the others' by
/// [`merge_pieces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceHash {
    /// The whole file's digest.
    Whole(Digest),
    /// One piece's chaining value.
    Subtree([u8; 32]),
}

/// Hashes one piece of a file: the whole file, or the piece of `len` bytes
/// at `offset`, where `len` is a power of two of at least 1 KiB (a BLAKE3
/// chunk) and `offset` a multiple of it, except that the file's last piece
/// may be shorter. Pieces of that shape are whole subtrees of the file's
/// BLAKE3 tree, so they can be hashed apart (on different cores) and merged.
#[derive(Debug, Clone)]
pub struct PieceHasher {
    inner: blake3::Hasher,
    whole: bool,
}

impl PieceHasher {
    /// A hasher for the whole file.
    pub fn whole() -> PieceHasher {
        PieceHasher {
            inner: blake3::Hasher::new(),
            whole: true,
        }
    }

    /// A hasher for the piece at `offset` (see the type's shape rules).
    pub fn piece(offset: u64) -> PieceHasher {
        use blake3::hazmat::HasherExt;
        let mut inner = blake3::Hasher::new();
        inner.set_input_offset(offset);
        PieceHasher { inner, whole: false }
    }

    /// Adds the piece's next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// The piece's hash.
    pub fn finish(&self) -> PieceHash {
        use blake3::hazmat::HasherExt;
        if self.whole {
            PieceHash::Whole(Digest(*self.inner.finalize().as_bytes()))
        } else {
            PieceHash::Subtree(self.inner.finalize_non_root())
        }
    }
}

/// The digest of a file from the chaining values of its pieces, in file
/// order: all of one power-of-two length but the last, which may be
/// shorter and is not empty. At least two pieces (one is hashed whole).
///
/// BLAKE3's tree splits an input at the largest power of two of chunks
/// below its length; with equal power-of-two pieces that is the largest
/// power of two of pieces below their count, so the pieces merge the same
/// way, level by level, with the root merge on top.
pub fn merge_pieces(cvs: &[[u8; 32]]) -> Digest {
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, Mode};
    fn subtree(cvs: &[[u8; 32]]) -> [u8; 32] {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let left = left_pieces(cvs.len());
        merge_subtrees_non_root(&subtree(&cvs[..left]), &subtree(&cvs[left..]), Mode::Hash)
    }
    assert!(cvs.len() >= 2, "a file of one piece is hashed whole");
    let left = left_pieces(cvs.len());
    let root = merge_subtrees_root(&subtree(&cvs[..left]), &subtree(&cvs[left..]), Mode::Hash);
    Digest(*root.as_bytes())
}

/// The largest power of two below `n` (n >= 2): the pieces in a tree's
/// left subtree.
fn left_pieces(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_streaming_equals_one_pass() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let d = Digest::of(&data);
        assert_eq!(Digest::parse_hex(&d.to_string()), Some(d));
        assert_eq!(Digest::parse_hex(&d.to_string().to_uppercase()), Some(d));
        let mut h = Hasher::new();
        for chunk in data.chunks(8191) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), d);
        // The BLAKE3 test vector for the empty input.
        assert_eq!(
            Digest::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"é".repeat(32)] {
            assert_eq!(Digest::parse_hex(bad), None, "{bad:?}");
        }
    }

    /// Pieces hashed apart and merged give the one-pass digest, for every
    /// count of pieces from 2 to 17 with the last piece whole, one chunk,
    /// one byte or a chunk and a byte long.
    #[test]
    fn pieces_merge_to_the_one_pass_digest() {
        const PIECE: usize = 4096;
        let data: Vec<u8> = (0..PIECE * 17 + 2048).map(|i| (i * 131 % 253) as u8).collect();
        for whole_pieces in 1..=16usize {
            for tail in [PIECE, 1024, 1, 1025, PIECE - 1] {
                let len = whole_pieces * PIECE + tail;
                let input = &data[..len];
                let cvs: Vec<[u8; 32]> = input
                    .chunks(PIECE)
                    .enumerate()
                    .map(|(i, piece)| {
                        let mut h = PieceHasher::piece((i * PIECE) as u64);
                        // In reads smaller than a piece, as the cores do.
                        for part in piece.chunks(1000) {
                            h.update(part);
                        }
                        match h.finish() {
                            PieceHash::Subtree(cv) => cv,
                            PieceHash::Whole(_) => unreachable!("a piece hasher gives a subtree"),
                        }
                    })
                    .collect();
                assert_eq!(
                    merge_pieces(&cvs),
                    Digest::of(input),
                    "{len} bytes in {} pieces",
                    cvs.len()
                );
            }
        }
        let mut whole = PieceHasher::whole();
        whole.update(&data[..PIECE]);
        assert_eq!(whole.finish(), PieceHash::Whole(Digest::of(&data[..PIECE])));
        assert_eq!((2..=9).map(left_pieces).collect::<Vec<_>>(), [1, 2, 2, 4, 4, 4, 4, 8]);
    }
}
