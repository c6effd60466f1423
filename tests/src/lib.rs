//! Integration tests of σ live in `tests/`; this library is empty.
