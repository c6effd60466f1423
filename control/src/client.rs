//! The namespace client: one realm's view of named, with σOS's file API.
//!
//! An [`NsClient`] is bound to one realm when it connects; every call it
//! makes names that realm, so nothing it does reaches another realm's
//! entries. It speaks the namespace protocol (`sigma_ep::ns`) to sigmad's
//! admin socket over σ RPC, on the current data-plane core.
//!
//! **Files and fds.** [`open`](NsClient::open) returns an [`Fd`]. An fd on a
//! directory or file names it by path, as σOS's named does: [`read`] and
//! [`write`] go to whatever is at that path when they run, and the fd's
//! mode decides which of them are allowed. Files are small values (at most
//! [`FILE_BYTES_MAX`](crate::ns::FILE_BYTES_MAX)): a read returns the whole
//! contents and a write replaces them.
//!
//! **RPC through a file.** When the path is a mount or goes through one,
//! `open` resolves the mount once (one round trip to sigmad) and connects to
//! the mount's endpoint; [`write_read`] then sends the request straight to
//! that server as a [`WRITE_READ`](sigma_ep::ns::method::WRITE_READ) call
//! carrying the rest of the path, without touching sigmad. A server
//! publishes such a file by serving a [`RpcFile`] through [`FileService`] on
//! a listener and mounting the listener's address, usually under a lease so
//! that the name goes with the server. Connections to endpoints are shared
//! by every fd of a client that resolves to the same endpoint.
//!
//! **Watches** (`open_watch`, `watch_dir`, `watch_remove`) each run on a
//! connection of their own, so a long wait never holds up other calls.
//!
//! If sigmad goes away (a restart), the next call reconnects: a read, or a
//! change the broken connection never sent, is asked again on the new
//! connection; a change that was sent fails with `outcome-unknown` (it may
//! or may not have been applied) and later calls use the new connection.
//! A change whose answer does not come within its deadline is
//! `outcome-unknown` too; a read that times out is `deadline-exceeded`.
//!
//! Every call has a deadline: sigmad bounds a call by
//! [`CALL_TIMEOUT`], and the client waits
//! [`REPLY_MARGIN`](crate::admin::REPLY_MARGIN) longer than that for the
//! answer (for watches, the watch's own timeout plus that margin).
//!
//! [`read`]: NsClient::read
//! [`write`]: NsClient::write
//! [`write_read`]: NsClient::write_read

use crate::admin::{AdminClient, AdminError, CALL_TIMEOUT, OUTCOME_UNKNOWN};
use crate::ns::path::{check_realm, PATH_BYTES_MAX, PATH_DEPTH_MAX};
use bytes::{Bytes, BytesMut};
use sigma_dataplane::buf::BufResult;
use sigma_dataplane::net::{Gather, TcpStream, UnixStream};
use sigma_dataplane::rpc::{Client, ClientConfig, Reply, Service, Status, Transport};
use sigma_ep::limits::FRAME_PAYLOAD_BYTES_MAX;
use sigma_ep::ns::{method, Endpoint, NsRequest, WireOpened, WireResolved, WireStat, WriteRead};
use sigma_ep::StatusCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// A namespace call's error: the kind (`not-found`, `exists`, `bad-fd`,
/// `unavailable`, ...) and what happened.
pub type Error = AdminError;

/// The kind of an error that says the server mounted over a path cannot be
/// reached, or its connection broke (sigmad itself answered): distinct from
/// `unavailable`, which says sigmad cannot be reached.
pub const MOUNT_UNAVAILABLE: &str = "mount-unavailable";

/// The longest request [`NsClient::write_read`] sends, whatever the path:
/// a frame's payload less the most the path below the mount can take (a
/// count, and per component a length, within [`PATH_BYTES_MAX`] bytes).
pub const WRITE_READ_BYTES_MAX: usize = FRAME_PAYLOAD_BYTES_MAX - (4 + 2 * PATH_DEPTH_MAX + PATH_BYTES_MAX);

fn err(kind: &str, message: impl Into<String>) -> Error {
    AdminError {
        kind: kind.to_string(),
        message: message.into(),
    }
}

fn malformed(what: &str, e: sigma_ep::DecodeError) -> Error {
    err("malformed", format!("{what} reply does not decode: {e}"))
}

/// An open file, directory or RPC file of an [`NsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fd(u32);

impl std::fmt::Display for Fd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd {}", self.0)
    }
}

/// What an fd may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `read` only.
    Read,
    /// `write` only.
    Write,
    /// Both.
    ReadWrite,
}

impl Mode {
    fn reads(self) -> bool {
        matches!(self, Mode::Read | Mode::ReadWrite)
    }
    fn writes(self) -> bool {
        matches!(self, Mode::Write | Mode::ReadWrite)
    }
}

/// A connection to a mounted server.
#[derive(Debug)]
pub enum EndpointStream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Transport for EndpointStream {
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        match self {
            EndpointStream::Tcp(s) => s.recv_buf(buf).await,
            EndpointStream::Unix(s) => s.recv_buf(buf).await,
        }
    }
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather> {
        match self {
            EndpointStream::Tcp(s) => s.send_all_gather(gather).await,
            EndpointStream::Unix(s) => s.send_all_gather(gather).await,
        }
    }
    fn peer(&self) -> String {
        match self {
            EndpointStream::Tcp(s) => s.peer(),
            EndpointStream::Unix(s) => s.peer(),
        }
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        match self {
            EndpointStream::Tcp(s) => s.shutdown_both(),
            EndpointStream::Unix(s) => s.shutdown_both(),
        }
    }
}

type EndpointClient = Rc<Client<EndpointStream>>;

#[derive(Debug)]
enum OpenFile {
    Entry {
        path: String,
        mode: Mode,
        stat: WireStat,
    },
    Rpc {
        path: String,
        resolved: WireResolved,
        endpoint: Endpoint,
        rpc: EndpointClient,
    },
}

/// One realm's namespace, on the current data-plane core.
#[derive(Debug)]
pub struct NsClient {
    sock: PathBuf,
    realm: String,
    admin: RefCell<Rc<AdminClient>>,
    fds: RefCell<Vec<Option<OpenFile>>>,
    endpoints: RefCell<HashMap<Endpoint, EndpointClient>>,
}

const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;

impl NsClient {
    /// Connects to sigmad at `sock` and binds to `realm`, which must exist.
    pub async fn connect(sock: &Path, realm: &str) -> Result<NsClient, Error> {
        check_realm(realm).map_err(|e| err("invalid-realm", e.to_string()))?;
        let admin = AdminClient::connect(sock).await?;
        let client = NsClient {
            sock: sock.to_path_buf(),
            realm: realm.to_string(),
            admin: RefCell::new(Rc::new(admin)),
            fds: RefCell::new(Vec::new()),
            endpoints: RefCell::new(HashMap::new()),
        };
        // Fail here, not at the first call, if the realm is not there.
        client.stat("/").await?;
        Ok(client)
    }

    /// The realm this client is bound to.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn r(&self) -> String {
        self.realm.clone()
    }

    async fn call(&self, req: &NsRequest) -> Result<Bytes, Error> {
        let admin = self.admin.borrow().clone();
        match admin.call(req, None).await {
            // sigmad went away (restarted, say) and the request was not sent
            // (a change that was sent fails `outcome-unknown` instead):
            // reconnect, ask again, and use the new connection from now on.
            Err(e) if e.kind == "unavailable" => {
                let Ok(fresh) = AdminClient::connect(&self.sock).await else {
                    return Err(e);
                };
                let fresh = Rc::new(fresh);
                *self.admin.borrow_mut() = fresh.clone();
                fresh.call(req, None).await
            }
            Err(e) if e.kind == OUTCOME_UNKNOWN && admin.is_closed() => {
                // The connection broke after the change was sent: later
                // calls use a new one, this one says what it knows.
                if let Ok(fresh) = AdminClient::connect(&self.sock).await {
                    *self.admin.borrow_mut() = Rc::new(fresh);
                }
                Err(e)
            }
            other => other,
        }
    }

    async fn call_stat(&self, req: &NsRequest) -> Result<WireStat, Error> {
        WireStat::decode(self.call(req).await?).map_err(|e| malformed("stat", e))
    }

    /// What is known about the entry at `path`.
    pub async fn stat(&self, path: &str) -> Result<WireStat, Error> {
        self.call_stat(&NsRequest::Stat {
            realm: self.r(),
            path: path.into(),
        })
        .await
    }

    /// The entries of a directory, sorted by name.
    pub async fn readdir(&self, path: &str) -> Result<Vec<WireStat>, Error> {
        let reply = self
            .call(&NsRequest::Readdir {
                realm: self.r(),
                path: path.into(),
            })
            .await?;
        WireStat::decode_list(reply).map_err(|e| malformed("readdir", e))
    }

    /// Creates a directory.
    pub async fn mkdir(&self, path: &str, perm: u32) -> Result<WireStat, Error> {
        self.create_entry(path, perm, KIND_DIR, Bytes::new(), None).await
    }

    /// Creates a file holding `data`; with a lease, the file goes when the lease ends.
    pub async fn put(&self, path: &str, perm: u32, data: Bytes, lease: Option<u64>) -> Result<WireStat, Error> {
        self.create_entry(path, perm, KIND_FILE, data, lease).await
    }

    async fn create_entry(
        &self,
        path: &str,
        perm: u32,
        kind: u8,
        data: Bytes,
        lease: Option<u64>,
    ) -> Result<WireStat, Error> {
        self.call_stat(&NsRequest::Create {
            realm: self.r(),
            path: path.into(),
            perm,
            kind,
            data,
            lease: lease.unwrap_or(0),
        })
        .await
    }

    /// Creates an empty file and opens it (`exists` if something is there).
    pub async fn create(&self, path: &str, perm: u32, mode: Mode) -> Result<Fd, Error> {
        let stat = self.put(path, perm, Bytes::new(), None).await?;
        Ok(self.install(OpenFile::Entry {
            path: path.to_string(),
            mode,
            stat,
        }))
    }

    /// A file's whole contents, by path.
    pub async fn get(&self, path: &str) -> Result<Bytes, Error> {
        self.call(&NsRequest::Read {
            realm: self.r(),
            path: path.into(),
        })
        .await
    }

    /// Removes an entry (a directory only when empty).
    pub async fn remove(&self, path: &str) -> Result<(), Error> {
        self.call(&NsRequest::Remove {
            realm: self.r(),
            path: path.into(),
        })
        .await
        .map(drop)
    }

    /// Renames atomically; `to` must not exist.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.call(&NsRequest::Rename {
            realm: self.r(),
            from: from.into(),
            to: to.into(),
        })
        .await
        .map(drop)
    }

    /// Mounts `endpoint` at `path`; with a lease, the mount goes when the lease ends.
    pub async fn mount(&self, path: &str, endpoint: &Endpoint, lease: Option<u64>) -> Result<WireStat, Error> {
        self.call_stat(&NsRequest::Mount {
            realm: self.r(),
            path: path.into(),
            endpoint: Bytes::from(endpoint.to_string()),
            lease: lease.unwrap_or(0),
        })
        .await
    }

    /// The mount `path` goes through, its endpoint and the rest of the path
    /// (`~any` and `~local` pick an instance).
    pub async fn resolve(&self, path: &str) -> Result<WireResolved, Error> {
        let reply = self
            .call(&NsRequest::Resolve {
                realm: self.r(),
                path: path.into(),
            })
            .await?;
        WireResolved::decode(reply).map_err(|e| malformed("resolve", e))
    }

    /// Opens `path`: a directory or file (checked against `mode`), or, when
    /// the path is or goes through a mount, an RPC file on the mount's
    /// server, connected now (`write_read` only).
    pub async fn open(&self, path: &str, mode: Mode) -> Result<Fd, Error> {
        let reply = self
            .call(&NsRequest::Open {
                realm: self.r(),
                path: path.into(),
            })
            .await?;
        match WireOpened::decode(reply).map_err(|e| malformed("open", e))? {
            WireOpened::Entry(stat) => {
                if stat.kind == KIND_DIR && mode.writes() {
                    return Err(err(
                        "is-dir",
                        format!("{path}: is a directory (open it with Mode::Read)"),
                    ));
                }
                Ok(self.install(OpenFile::Entry {
                    path: path.to_string(),
                    mode,
                    stat,
                }))
            }
            WireOpened::Mount(resolved) => {
                let endpoint = Endpoint::parse(&resolved.endpoint).map_err(|e| {
                    err(
                        "unresolvable",
                        format!("{path}: the mount {} holds no usable endpoint: {e}", resolved.mount),
                    )
                })?;
                let rpc = self.endpoint(&endpoint, &resolved.mount).await?;
                Ok(self.install(OpenFile::Rpc {
                    path: path.to_string(),
                    resolved,
                    endpoint,
                    rpc,
                }))
            }
        }
    }

    /// Waits until `path` exists, then opens it (`timed-out` if nothing
    /// appears within `timeout`).
    pub async fn open_watch(&self, path: &str, mode: Mode, timeout: Duration) -> Result<Fd, Error> {
        self.watch(NsRequest::OpenWatch {
            realm: self.r(),
            path: path.into(),
            timeout_ms: millis(timeout),
        })
        .await?;
        self.open(path, mode).await
    }

    /// Waits for the next change among a directory's entries.
    pub async fn watch_dir(&self, path: &str, timeout: Duration) -> Result<(), Error> {
        self.watch(NsRequest::WatchDir {
            realm: self.r(),
            path: path.into(),
            timeout_ms: millis(timeout),
        })
        .await
        .map(drop)
    }

    /// Waits until `path` is gone.
    pub async fn watch_remove(&self, path: &str, timeout: Duration) -> Result<(), Error> {
        self.watch(NsRequest::WatchRemove {
            realm: self.r(),
            path: path.into(),
            timeout_ms: millis(timeout),
        })
        .await
        .map(drop)
    }

    /// Runs a watch on a connection of its own.
    async fn watch(&self, req: NsRequest) -> Result<Bytes, Error> {
        AdminClient::connect(&self.sock).await?.call(&req, None).await
    }

    /// A lease of `ttl` for ephemeral entries; keep it alive or it ends.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<u64, Error> {
        let reply = self
            .call(&NsRequest::LeaseGrant {
                realm: self.r(),
                ttl_ms: millis(ttl).max(1),
            })
            .await?;
        let bytes: [u8; 8] = reply[..]
            .try_into()
            .map_err(|_| err("malformed", format!("lease grant reply of {} bytes", reply.len())))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Extends a lease by its ttl.
    pub async fn lease_keep_alive(&self, lease: u64) -> Result<(), Error> {
        self.call(&NsRequest::LeaseKeepAlive { realm: self.r(), lease })
            .await
            .map(drop)
    }

    /// Ends a lease now; its entries go.
    pub async fn lease_revoke(&self, lease: u64) -> Result<(), Error> {
        self.call(&NsRequest::LeaseRevoke { realm: self.r(), lease })
            .await
            .map(drop)
    }

    fn install(&self, file: OpenFile) -> Fd {
        let mut fds = self.fds.borrow_mut();
        match fds.iter().position(Option::is_none) {
            Some(i) => {
                fds[i] = Some(file);
                Fd(i as u32)
            }
            None => {
                fds.push(Some(file));
                Fd((fds.len() - 1) as u32)
            }
        }
    }

    fn bad_fd(fd: Fd) -> Error {
        err("bad-fd", format!("{fd} is not open"))
    }

    /// Closes an fd. Its endpoint connection stays (shared, cached) until
    /// the client drops.
    pub fn close(&self, fd: Fd) -> Result<(), Error> {
        let mut fds = self.fds.borrow_mut();
        match fds.get_mut(fd.0 as usize).and_then(Option::take) {
            Some(_) => Ok(()),
            None => Err(Self::bad_fd(fd)),
        }
    }

    /// How many fds are open.
    pub fn open_fds(&self) -> usize {
        self.fds.borrow().iter().filter(|f| f.is_some()).count()
    }

    /// The path an fd was opened with.
    pub fn path_of(&self, fd: Fd) -> Result<String, Error> {
        match self.fds.borrow().get(fd.0 as usize) {
            Some(Some(OpenFile::Entry { path, .. } | OpenFile::Rpc { path, .. })) => Ok(path.clone()),
            _ => Err(Self::bad_fd(fd)),
        }
    }

    /// The file's path and mode, or why the fd cannot be read or written.
    fn entry_of(&self, fd: Fd, writing: bool) -> Result<(String, Mode), Error> {
        let fds = self.fds.borrow();
        match fds.get(fd.0 as usize) {
            Some(Some(OpenFile::Entry { path, mode, stat })) => {
                if stat.kind == KIND_DIR {
                    return Err(err("is-dir", format!("{path}: is a directory (use readdir)")));
                }
                if writing && !mode.writes() {
                    return Err(err("denied", format!("{fd} on {path} is not open for writing")));
                }
                if !writing && !mode.reads() {
                    return Err(err("denied", format!("{fd} on {path} is not open for reading")));
                }
                Ok((path.clone(), *mode))
            }
            Some(Some(OpenFile::Rpc { path, resolved, .. })) => Err(err(
                "denied",
                format!(
                    "{path}: served by the server mounted at {} (use write_read)",
                    resolved.mount
                ),
            )),
            _ => Err(Self::bad_fd(fd)),
        }
    }

    /// The file's whole contents.
    pub async fn read(&self, fd: Fd) -> Result<Bytes, Error> {
        let (path, _) = self.entry_of(fd, false)?;
        self.get(&path).await
    }

    /// Replaces the file's contents.
    pub async fn write(&self, fd: Fd, data: Bytes) -> Result<WireStat, Error> {
        self.write_inner(fd, data, false).await
    }

    /// Replaces the file's contents only if nobody changed the file since
    /// this fd last saw it (its open or its last write): `conflict` if someone did.
    pub async fn write_if_unchanged(&self, fd: Fd, data: Bytes) -> Result<WireStat, Error> {
        self.write_inner(fd, data, true).await
    }

    async fn write_inner(&self, fd: Fd, data: Bytes, cas: bool) -> Result<WireStat, Error> {
        let (path, _) = self.entry_of(fd, true)?;
        let if_version = if cas {
            match self.fds.borrow().get(fd.0 as usize) {
                Some(Some(OpenFile::Entry { stat, .. })) => stat.version,
                _ => return Err(Self::bad_fd(fd)),
            }
        } else {
            0
        };
        let stat = self
            .call_stat(&NsRequest::Write {
                realm: self.r(),
                path,
                data,
                if_version,
            })
            .await?;
        if let Some(Some(OpenFile::Entry { stat: seen, .. })) = self.fds.borrow_mut().get_mut(fd.0 as usize) {
            *seen = stat.clone();
        }
        Ok(stat)
    }

    /// An RPC through a file: sends `request` (at most
    /// [`WRITE_READ_BYTES_MAX`]) to the server mounted over the fd's path
    /// and returns its reply. The server sees the path below its mount and
    /// the request bytes. If that server cannot be reached or its
    /// connection breaks, the error's kind is [`MOUNT_UNAVAILABLE`].
    pub async fn write_read(&self, fd: Fd, request: &[u8]) -> Result<Bytes, Error> {
        if request.len() > WRITE_READ_BYTES_MAX {
            return Err(err(
                "too-large",
                format!(
                    "a request of {} bytes exceeds the {WRITE_READ_BYTES_MAX}-byte limit on an RPC through a file (WRITE_READ_BYTES_MAX)",
                    request.len()
                ),
            ));
        }
        let (rpc, payload, mount, endpoint) = {
            let fds = self.fds.borrow();
            match fds.get(fd.0 as usize) {
                Some(Some(OpenFile::Rpc {
                    resolved,
                    rpc,
                    endpoint,
                    ..
                })) => {
                    let mut payload = BytesMut::with_capacity(64 + request.len());
                    WriteRead::encode_head(&resolved.rest, &mut payload);
                    payload.extend_from_slice(request);
                    (rpc.clone(), payload.freeze(), resolved.mount.clone(), endpoint.clone())
                }
                Some(Some(OpenFile::Entry { path, .. })) => {
                    return Err(err(
                        "denied",
                        format!("{path}: a file in named, not served by a mounted server (use read and write)"),
                    ))
                }
                _ => return Err(Self::bad_fd(fd)),
            }
        };
        match rpc.call(method::WRITE_READ, payload, Some(CALL_TIMEOUT)).await {
            Ok(reply) => Ok(reply),
            Err(status) => {
                if status.code == StatusCode::Unavailable {
                    // The connection is gone: the next open reconnects.
                    let mut cache = self.endpoints.borrow_mut();
                    if cache.get(&endpoint).is_some_and(|c| Rc::ptr_eq(c, &rpc)) {
                        cache.remove(&endpoint);
                    }
                }
                let unavailable = status.code == StatusCode::Unavailable;
                let mut e = Error::from(status);
                if unavailable {
                    e.kind = MOUNT_UNAVAILABLE.into();
                }
                e.message = format!("the server mounted at {mount} ({endpoint}): {}", e.message);
                Err(e)
            }
        }
    }

    /// A connection to `endpoint` (mounted at `mount`), shared.
    async fn endpoint(&self, endpoint: &Endpoint, mount: &str) -> Result<EndpointClient, Error> {
        if let Some(c) = self.endpoints.borrow().get(endpoint) {
            return Ok(c.clone());
        }
        let unreachable = |e: std::io::Error| {
            err(
                MOUNT_UNAVAILABLE,
                format!("cannot reach {endpoint}, mounted at {mount}: {e} (sigmad answered; the server behind the mount did not)"),
            )
        };
        let stream = match endpoint {
            Endpoint::Tcp(addr) => EndpointStream::Tcp(TcpStream::connect(*addr).await.map_err(unreachable)?),
            Endpoint::Unix(path) => EndpointStream::Unix(UnixStream::connect(path).await.map_err(unreachable)?),
        };
        let client = Rc::new(Client::new(stream, ClientConfig::default()));
        self.endpoints.borrow_mut().insert(endpoint.clone(), client.clone());
        Ok(client)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A server's RPC file: what [`NsClient::write_read`] on a path at or under
/// the server's mount reaches.
#[allow(async_fn_in_trait)] // Core-local futures (thread-per-core).
pub trait RpcFile {
    /// Answers `request`, sent to the path `rest` below the mount, by
    /// appending the reply to `out`.
    async fn write_read(&self, rest: &[String], request: Bytes, out: &mut BytesMut) -> Result<(), Status>;
}

/// Serves an [`RpcFile`] as a σ RPC [`Service`]: run it with
/// `sigma_dataplane::rpc::serve` on each accepted connection.
#[derive(Debug)]
pub struct FileService<F>(pub F);

impl<F: RpcFile> Service for FileService<F> {
    async fn call(&self, method_id: u32, request: Bytes, out: &mut BytesMut) -> Result<Reply, Status> {
        if method_id != method::WRITE_READ {
            return Err(Status::unknown_method(method_id));
        }
        let wr = WriteRead::decode(request)
            .map_err(|e| Status::new(StatusCode::Malformed, format!("write_read request: {e}")))?;
        self.0.write_read(&wr.rest, wr.data, out).await?;
        Ok(Reply::Written)
    }
}
