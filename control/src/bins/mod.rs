//! The binary store and sigmad's content-addressed binary cache.
//!
//! PLACEHOLDER: module doc written below once measured.

pub mod cache;
pub mod digest;
pub mod elf;
pub mod error;
pub mod io;
pub mod limits;
pub mod name;
pub mod registry;

pub use cache::{BinCache, CacheStats, CachedBin};
pub use digest::Digest;
pub use error::BinError;
pub use io::{BlockingIo, CacheIo, DataPlaneIo, DataPlaneIoServer};
pub use name::BinName;
pub use registry::{BinRegistry, Record, RegistryStats, StoreConfig};
