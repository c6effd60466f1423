//! Owned buffers for IO operations.
//!
//! An operation takes its buffer by value and hands it back with the result
//! (monoio's `BufResult`), so the buffer lives as long as the kernel may use
//! it, even when the future that started the operation is dropped.

use bytes::{Bytes, BytesMut};
use std::io;

/// The result of an operation that owned a buffer: the outcome and the buffer.
pub type BufResult<T, B> = (io::Result<T>, B);

/// A buffer the kernel may read from. Its memory must not move while the
/// value itself is moved (heap memory), which is what makes it safe to hand to
/// an in-flight operation.
///
/// # Safety
///
/// `stable_ptr` must point to `bytes_init` initialized bytes that stay valid
/// and do not move for as long as the value is alive, even if the value is moved.
pub unsafe trait IoBuf: 'static {
    /// Start of the readable bytes.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialized, readable bytes.
    fn bytes_init(&self) -> usize;
}

/// A buffer the kernel may write into.
///
/// # Safety
///
/// `stable_mut_ptr` must point to `bytes_total` writable bytes that stay valid
/// and do not move while the value is alive, even if the value is moved.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable memory.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Capacity in bytes.
    fn bytes_total(&self) -> usize;
    /// Makes the buffer's contents exactly the first `len` bytes of its
    /// memory (what the kernel just wrote; earlier contents are replaced).
    ///
    /// # Safety
    ///
    /// The first `len` bytes must have been written and `len <= bytes_total()`.
    unsafe fn set_init(&mut self, len: usize);
}

// SAFETY: a Vec's heap memory does not move when the Vec value moves.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; the capacity is allocated and writable.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: the caller guarantees the first `len` bytes were written,
        // and `len` is at most the capacity the kernel was given.
        unsafe { self.set_len(len) };
    }
}

// SAFETY: Bytes is immutable shared heap (or static) memory that does not move.
unsafe impl IoBuf for Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: BytesMut's memory is heap memory that does not move with the value.
unsafe impl IoBuf for BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; spare capacity is allocated and writable.
unsafe impl IoBufMut for BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: the caller guarantees the first `len` bytes were written.
        unsafe { self.set_len(len) };
    }
}

// SAFETY: a boxed slice's memory does not move with the box.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: static memory never moves.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}
