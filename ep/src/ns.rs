//! The namespace protocol: sigmad's admin requests and their replies, as
//! RPC payloads. Fields are little-endian; strings carry a u16 length and
//! must be UTF-8, byte strings a u32 length; a message must be consumed
//! exactly (trailing bytes are an error). Decoders never panic.

use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of a string field (path, realm, name), at most.
pub const STRING_BYTES_MAX: usize = 4096;
/// Bytes of a byte-string field (file contents, endpoint), at most.
pub const DATA_BYTES_MAX: usize = 1 << 20;
/// Entries of a list reply, at most.
pub const LIST_ENTRIES_MAX: usize = 100_000;

/// Method ids of the namespace protocol (100–199).
pub mod method {
    /// Create a realm.
    pub const CREATE_REALM: u32 = 100;
    /// Remove a realm.
    pub const REMOVE_REALM: u32 = 101;
    /// List realms.
    pub const LIST_REALMS: u32 = 102;
    /// Create an entry.
    pub const CREATE: u32 = 110;
    /// Read a file.
    pub const READ: u32 = 111;
    /// Replace a file's contents.
    pub const WRITE: u32 = 112;
    /// Remove an entry.
    pub const REMOVE: u32 = 113;
    /// Rename an entry.
    pub const RENAME: u32 = 114;
    /// Stat an entry.
    pub const STAT: u32 = 115;
    /// List a directory.
    pub const READDIR: u32 = 116;
    /// Mount an endpoint.
    pub const MOUNT: u32 = 117;
    /// Resolve a path to a mount.
    pub const RESOLVE: u32 = 118;
    /// Open a path: the entry there, or the mount the path goes through.
    pub const OPEN: u32 = 119;
    /// Wait until a path exists.
    pub const OPEN_WATCH: u32 = 120;
    /// Wait for a change in a directory.
    pub const WATCH_DIR: u32 = 121;
    /// Wait until a path is gone.
    pub const WATCH_REMOVE: u32 = 122;
    /// Grant a lease.
    pub const LEASE_GRANT: u32 = 130;
    /// Keep a lease alive.
    pub const LEASE_KEEP_ALIVE: u32 = 131;
    /// Revoke a lease.
    pub const LEASE_REVOKE: u32 = 132;
    /// An RPC through a file (`write_read`): served by whatever server is
    /// mounted over the path, not by sigmad. Its payload is a [`WriteRead`](super::WriteRead).
    pub const WRITE_READ: u32 = 200;
}

/// A request of the namespace protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NsRequest {
    CreateRealm {
        realm: String,
    },
    RemoveRealm {
        realm: String,
    },
    ListRealms,
    Create {
        realm: String,
        path: String,
        perm: u32,
        kind: u8,
        data: Bytes,
        lease: u64,
    },
    Read {
        realm: String,
        path: String,
    },
    Write {
        realm: String,
        path: String,
        data: Bytes,
        if_version: u64,
    },
    Remove {
        realm: String,
        path: String,
    },
    Rename {
        realm: String,
        from: String,
        to: String,
    },
    Stat {
        realm: String,
        path: String,
    },
    Readdir {
        realm: String,
        path: String,
    },
    Mount {
        realm: String,
        path: String,
        endpoint: Bytes,
        lease: u64,
    },
    Resolve {
        realm: String,
        path: String,
    },
    Open {
        realm: String,
        path: String,
    },
    OpenWatch {
        realm: String,
        path: String,
        timeout_ms: u64,
    },
    WatchDir {
        realm: String,
        path: String,
        timeout_ms: u64,
    },
    WatchRemove {
        realm: String,
        path: String,
        timeout_ms: u64,
    },
    LeaseGrant {
        realm: String,
        ttl_ms: u64,
    },
    LeaseKeepAlive {
        realm: String,
        lease: u64,
    },
    LeaseRevoke {
        realm: String,
        lease: u64,
    },
}

/// Appends fields to a message.
#[derive(Debug)]
pub struct Writer<'a>(pub &'a mut BytesMut);

impl Writer<'_> {
    /// A u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.put_u8(v);
        self
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.put_u32_le(v);
        self
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.put_u64_le(v);
        self
    }
    /// A string (the caller keeps it within STRING_BYTES_MAX).
    pub fn str(&mut self, s: &str) -> &mut Self {
        assert!(s.len() <= STRING_BYTES_MAX, "string field of {} bytes", s.len());
        self.0.put_u16_le(s.len() as u16);
        self.0.put_slice(s.as_bytes());
        self
    }
    /// A byte string (the caller keeps it within DATA_BYTES_MAX).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        assert!(b.len() <= DATA_BYTES_MAX, "byte field of {} bytes", b.len());
        self.0.put_u32_le(b.len() as u32);
        self.0.put_slice(b);
        self
    }
}

/// Reads fields off a message, checking every length against what is left.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    at: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let have = self.buf.len() - self.at;
        if n > have {
            return Err(DecodeError::Truncated { have, need: n });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    /// A u8.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// A u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    /// A u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// A UTF-8 string.
    pub fn str(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        if len > STRING_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len,
                max: STRING_BYTES_MAX,
            });
        }
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| DecodeError::BadField("string is not UTF-8"))
    }
    /// A byte string (a slice of the message, no copy).
    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        if len > DATA_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len,
                max: DATA_BYTES_MAX,
            });
        }
        let start = self.at;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }
    /// A list length, checked against the limit.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > LIST_ENTRIES_MAX {
            return Err(DecodeError::TooLarge {
                len: n,
                max: LIST_ENTRIES_MAX,
            });
        }
        Ok(n)
    }
    /// Succeeds only if the whole message was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::BadField("trailing bytes after the message"))
        }
    }
}

impl NsRequest {
    /// The method id that carries this request.
    pub fn method(&self) -> u32 {
        use method::*;
        match self {
            NsRequest::CreateRealm { .. } => CREATE_REALM,
            NsRequest::RemoveRealm { .. } => REMOVE_REALM,
            NsRequest::ListRealms => LIST_REALMS,
            NsRequest::Create { .. } => CREATE,
            NsRequest::Read { .. } => READ,
            NsRequest::Write { .. } => WRITE,
            NsRequest::Remove { .. } => REMOVE,
            NsRequest::Rename { .. } => RENAME,
            NsRequest::Stat { .. } => STAT,
            NsRequest::Readdir { .. } => READDIR,
            NsRequest::Mount { .. } => MOUNT,
            NsRequest::Resolve { .. } => RESOLVE,
            NsRequest::Open { .. } => OPEN,
            NsRequest::OpenWatch { .. } => OPEN_WATCH,
            NsRequest::WatchDir { .. } => WATCH_DIR,
            NsRequest::WatchRemove { .. } => WATCH_REMOVE,
            NsRequest::LeaseGrant { .. } => LEASE_GRANT,
            NsRequest::LeaseKeepAlive { .. } => LEASE_KEEP_ALIVE,
            NsRequest::LeaseRevoke { .. } => LEASE_REVOKE,
        }
    }

    /// The realm a request acts in; `None` for the realm-level requests
    /// (create, remove, list realms).
    pub fn realm(&self) -> Option<&str> {
        match self {
            NsRequest::CreateRealm { .. } | NsRequest::RemoveRealm { .. } | NsRequest::ListRealms => None,
            NsRequest::Create { realm, .. }
            | NsRequest::Read { realm, .. }
            | NsRequest::Write { realm, .. }
            | NsRequest::Remove { realm, .. }
            | NsRequest::Rename { realm, .. }
            | NsRequest::Stat { realm, .. }
            | NsRequest::Readdir { realm, .. }
            | NsRequest::Mount { realm, .. }
            | NsRequest::Resolve { realm, .. }
            | NsRequest::Open { realm, .. }
            | NsRequest::OpenWatch { realm, .. }
            | NsRequest::WatchDir { realm, .. }
            | NsRequest::WatchRemove { realm, .. }
            | NsRequest::LeaseGrant { realm, .. }
            | NsRequest::LeaseKeepAlive { realm, .. }
            | NsRequest::LeaseRevoke { realm, .. } => Some(realm),
        }
    }

    /// For a watch (`OpenWatch`, `WatchDir`, `WatchRemove`), how long it may wait.
    pub fn watch_timeout_ms(&self) -> Option<u64> {
        match self {
            NsRequest::OpenWatch { timeout_ms, .. }
            | NsRequest::WatchDir { timeout_ms, .. }
            | NsRequest::WatchRemove { timeout_ms, .. } => Some(*timeout_ms),
            _ => None,
        }
    }

    /// Whether the request only reads (changes nothing, so it is safe to ask again).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            NsRequest::Read { .. }
                | NsRequest::Stat { .. }
                | NsRequest::Readdir { .. }
                | NsRequest::Resolve { .. }
                | NsRequest::Open { .. }
                | NsRequest::ListRealms
        )
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = Writer(out);
        match self {
            NsRequest::CreateRealm { realm } | NsRequest::RemoveRealm { realm } => {
                w.str(realm);
            }
            NsRequest::ListRealms => {}
            NsRequest::Create {
                realm,
                path,
                perm,
                kind,
                data,
                lease,
            } => {
                w.str(realm).str(path).u32(*perm).u8(*kind).bytes(data).u64(*lease);
            }
            NsRequest::Read { realm, path }
            | NsRequest::Remove { realm, path }
            | NsRequest::Stat { realm, path }
            | NsRequest::Readdir { realm, path }
            | NsRequest::Resolve { realm, path }
            | NsRequest::Open { realm, path } => {
                w.str(realm).str(path);
            }
            NsRequest::Write {
                realm,
                path,
                data,
                if_version,
            } => {
                w.str(realm).str(path).bytes(data).u64(*if_version);
            }
            NsRequest::Rename { realm, from, to } => {
                w.str(realm).str(from).str(to);
            }
            NsRequest::Mount {
                realm,
                path,
                endpoint,
                lease,
            } => {
                w.str(realm).str(path).bytes(endpoint).u64(*lease);
            }
            NsRequest::OpenWatch {
                realm,
                path,
                timeout_ms,
            }
            | NsRequest::WatchDir {
                realm,
                path,
                timeout_ms,
            }
            | NsRequest::WatchRemove {
                realm,
                path,
                timeout_ms,
            } => {
                w.str(realm).str(path).u64(*timeout_ms);
            }
            NsRequest::LeaseGrant { realm, ttl_ms } => {
                w.str(realm).u64(*ttl_ms);
            }
            NsRequest::LeaseKeepAlive { realm, lease } | NsRequest::LeaseRevoke { realm, lease } => {
                w.str(realm).u64(*lease);
            }
        }
    }

    /// Parses the payload of `method`.
    pub fn decode(method: u32, payload: Bytes) -> Result<NsRequest, DecodeError> {
        use method::*;
        let mut r = Reader::new(payload);
        let req = match method {
            CREATE_REALM => NsRequest::CreateRealm { realm: r.str()? },
            REMOVE_REALM => NsRequest::RemoveRealm { realm: r.str()? },
            LIST_REALMS => NsRequest::ListRealms,
            CREATE => NsRequest::Create {
                realm: r.str()?,
                path: r.str()?,
                perm: r.u32()?,
                kind: r.u8()?,
                data: r.bytes()?,
                lease: r.u64()?,
            },
            READ => NsRequest::Read {
                realm: r.str()?,
                path: r.str()?,
            },
            WRITE => NsRequest::Write {
                realm: r.str()?,
                path: r.str()?,
                data: r.bytes()?,
                if_version: r.u64()?,
            },
            REMOVE => NsRequest::Remove {
                realm: r.str()?,
                path: r.str()?,
            },
            RENAME => NsRequest::Rename {
                realm: r.str()?,
                from: r.str()?,
                to: r.str()?,
            },
            STAT => NsRequest::Stat {
                realm: r.str()?,
                path: r.str()?,
            },
            READDIR => NsRequest::Readdir {
                realm: r.str()?,
                path: r.str()?,
            },
            MOUNT => NsRequest::Mount {
                realm: r.str()?,
                path: r.str()?,
                endpoint: r.bytes()?,
                lease: r.u64()?,
            },
            RESOLVE => NsRequest::Resolve {
                realm: r.str()?,
                path: r.str()?,
            },
            OPEN => NsRequest::Open {
                realm: r.str()?,
                path: r.str()?,
            },
            OPEN_WATCH => NsRequest::OpenWatch {
                realm: r.str()?,
                path: r.str()?,
                timeout_ms: r.u64()?,
            },
            WATCH_DIR => NsRequest::WatchDir {
                realm: r.str()?,
                path: r.str()?,
                timeout_ms: r.u64()?,
            },
            WATCH_REMOVE => NsRequest::WatchRemove {
                realm: r.str()?,
                path: r.str()?,
                timeout_ms: r.u64()?,
            },
            LEASE_GRANT => NsRequest::LeaseGrant {
                realm: r.str()?,
                ttl_ms: r.u64()?,
            },
            LEASE_KEEP_ALIVE => NsRequest::LeaseKeepAlive {
                realm: r.str()?,
                lease: r.u64()?,
            },
            LEASE_REVOKE => NsRequest::LeaseRevoke {
                realm: r.str()?,
                lease: r.u64()?,
            },
            other => return Err(DecodeError::MethodOutOfRange(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

/// What a stat reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WireStat {
    pub name: String,
    pub kind: u8,
    pub perm: u32,
    pub len: u64,
    pub version: u64,
    pub lease: u64,
}

impl WireStat {
    /// Appends the encoded stat.
    pub fn encode(&self, out: &mut BytesMut) {
        Writer(out)
            .str(&self.name)
            .u8(self.kind)
            .u32(self.perm)
            .u64(self.len)
            .u64(self.version)
            .u64(self.lease);
    }

    fn read(r: &mut Reader) -> Result<WireStat, DecodeError> {
        Ok(WireStat {
            name: r.str()?,
            kind: r.u8()?,
            perm: r.u32()?,
            len: r.u64()?,
            version: r.u64()?,
            lease: r.u64()?,
        })
    }

    /// Parses one stat.
    pub fn decode(payload: Bytes) -> Result<WireStat, DecodeError> {
        let mut r = Reader::new(payload);
        let s = WireStat::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    /// Appends a list of stats.
    pub fn encode_list(stats: &[WireStat], out: &mut BytesMut) {
        Writer(out).u32(stats.len() as u32);
        for s in stats {
            s.encode(out);
        }
    }

    /// Parses a list of stats.
    pub fn decode_list(payload: Bytes) -> Result<Vec<WireStat>, DecodeError> {
        let mut r = Reader::new(payload);
        let n = r.count()?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(WireStat::read(&mut r)?);
        }
        r.finish()?;
        Ok(out)
    }
}

/// Appends a list of strings (realm names, path components).
pub fn encode_strings(items: &[String], out: &mut BytesMut) {
    let mut w = Writer(out);
    w.u32(items.len() as u32);
    for s in items {
        w.str(s);
    }
}

/// Parses a list of strings.
pub fn decode_strings(payload: Bytes) -> Result<Vec<String>, DecodeError> {
    let mut r = Reader::new(payload);
    let n = r.count()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(r.str()?);
    }
    r.finish()?;
    Ok(out)
}

/// A resolve reply: the mount, its endpoint, and the rest of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WireResolved {
    pub mount: String,
    pub endpoint: Bytes,
    pub rest: Vec<String>,
}

impl WireResolved {
    /// Appends the encoded reply.
    pub fn encode(&self, out: &mut BytesMut) {
        Writer(out).str(&self.mount).bytes(&self.endpoint);
        encode_strings(&self.rest, out);
    }

    /// Parses the reply.
    pub fn decode(payload: Bytes) -> Result<WireResolved, DecodeError> {
        let mut r = Reader::new(payload);
        let resolved = WireResolved::read(&mut r)?;
        r.finish()?;
        Ok(resolved)
    }

    fn read(r: &mut Reader) -> Result<WireResolved, DecodeError> {
        let mount = r.str()?;
        let endpoint = r.bytes()?;
        let rest = read_strings(r)?;
        Ok(WireResolved { mount, endpoint, rest })
    }
}

fn read_strings(r: &mut Reader) -> Result<Vec<String>, DecodeError> {
    let n = r.count()?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        out.push(r.str()?);
    }
    Ok(out)
}

/// An open reply: the entry at the path, or the mount the path goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireOpened {
    /// A directory or file (tag 1).
    Entry(WireStat),
    /// A mount on the path (tag 2): the path is served by the mount's endpoint.
    Mount(WireResolved),
}

impl WireOpened {
    /// Appends the encoded reply.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            WireOpened::Entry(stat) => {
                Writer(out).u8(1);
                stat.encode(out);
            }
            WireOpened::Mount(resolved) => {
                Writer(out).u8(2);
                resolved.encode(out);
            }
        }
    }

    /// Parses the reply.
    pub fn decode(payload: Bytes) -> Result<WireOpened, DecodeError> {
        let mut r = Reader::new(payload);
        let opened = match r.u8()? {
            1 => WireOpened::Entry(WireStat::read(&mut r)?),
            2 => WireOpened::Mount(WireResolved::read(&mut r)?),
            _ => return Err(DecodeError::BadField("open reply tag is not 1 or 2")),
        };
        r.finish()?;
        Ok(opened)
    }
}

/// The payload of a [`method::WRITE_READ`] call: the path below the mount
/// (its components) and the request bytes, which run to the end of the
/// payload (a slice of the receive buffer, never copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRead {
    /// The path's components below the mount point.
    pub rest: Vec<String>,
    /// The request.
    pub data: Bytes,
}

impl WriteRead {
    /// Appends the path; the caller sends the request bytes after it (as
    /// another gather segment, or appended).
    pub fn encode_head(rest: &[String], out: &mut BytesMut) {
        encode_strings(rest, out);
    }

    /// Parses the payload.
    pub fn decode(payload: Bytes) -> Result<WriteRead, DecodeError> {
        let mut r = Reader::new(payload);
        let rest = read_strings(&mut r)?;
        let data = r.buf.slice(r.at..);
        Ok(WriteRead { rest, data })
    }
}

/// Where a mount points: the address of a σEP, as a mount stores it
/// (`tcp:HOST:PORT` or `unix:/PATH`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// Parses a mount's contents.
    pub fn parse(bytes: &[u8]) -> Result<Endpoint, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadField("endpoint is not UTF-8"))?;
        if let Some(addr) = text.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|_| DecodeError::BadField("endpoint tcp:HOST:PORT has a bad address"));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.starts_with('/') && !path.contains('\0') {
                return Ok(Endpoint::Unix(path.into()));
            }
            return Err(DecodeError::BadField("endpoint unix:PATH needs an absolute path"));
        }
        Err(DecodeError::BadField(
            "endpoint is neither tcp:HOST:PORT nor unix:/PATH",
        ))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}
