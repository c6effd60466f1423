//! sigmad's admin API: the namespace protocol (`sigma_ep::ns`) served over
//! σ RPC on a Unix socket, and the client `sigmactl` uses.
//!
//! The service runs on a data-plane core and calls the namespace directly:
//! the embedded store is safe to use from any thread (its lease sweeper runs
//! on the control thread), and the etcd store hands each request to its own
//! tokio thread. Requests on one connection are answered in
//! order, so a watch holds its connection until it ends or times out.

use crate::ns::entry::{EntryKind, Stat};
use crate::ns::path::{check_realm, PATH_BYTES_MAX, REALM_BYTES_MAX};
use crate::ns::service::{root_view_rest, Namespace, Opened, Resolved, ROOT_VIEW};
use crate::ns::{NsError, NsPath, Store, FILE_BYTES_MAX};
use bytes::{Bytes, BytesMut};
use sigma_dataplane::buf::BufResult;
use sigma_dataplane::net::{Gather, UnixStream};
use sigma_dataplane::rpc::{Client, ClientConfig, Reply, Service, Status, Transport};
use sigma_ep::limits::FRAME_PAYLOAD_BYTES_MAX;
use sigma_ep::ns::{
    decode_strings, encode_strings, NsRequest, WireOpened, WireResolved, WireStat, DATA_BYTES_MAX, STRING_BYTES_MAX,
};
use sigma_ep::proc::ProcRequest;
use sigma_ep::StatusCode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a watch request may wait.
pub const WATCH_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

/// The longest any other request may take in sigmad. A request is several
/// store round trips (each bounded by the store, e.g. 5 s for etcd); this
/// bounds the whole call, so that a slow store gives an error, never a hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than sigmad's own bound a client waits for an answer.
pub const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// The kind of an error whose change may or may not have been applied: a
/// change that timed out, in sigmad or in the client, or whose connection
/// was lost after it was sent. Read before retrying.
pub const OUTCOME_UNKNOWN: &str = "outcome-unknown";

/// A stable token per error kind, carried at the start of error messages
/// so that clients get the kind back.
fn token(e: &NsError) -> &'static str {
    match e {
        NsError::InvalidPath { .. } => "invalid-path",
        NsError::InvalidRealm(_) => "invalid-realm",
        NsError::UnknownRealm(_) => "unknown-realm",
        NsError::RealmExists(_) => "realm-exists",
        NsError::NotFound { .. } => "not-found",
        NsError::Exists { .. } => "exists",
        NsError::NotDir { .. } => "not-dir",
        NsError::IsDir { .. } => "is-dir",
        NsError::NotEmpty { .. } => "not-empty",
        NsError::TooLarge { .. } => "too-large",
        NsError::LeaseExpired(_) => "lease-expired",
        NsError::Denied(_) => "denied",
        NsError::Unresolvable { .. } => "unresolvable",
        NsError::TimedOut { .. } => "timed-out",
        NsError::Conflict { .. } => "conflict",
        NsError::Store(_) => "store",
        NsError::OutcomeUnknown(_) => OUTCOME_UNKNOWN,
    }
}

/// The status a namespace error travels as.
pub fn to_status(e: &NsError) -> Status {
    Status::handler(format!("{}: {e}", token(e)))
}

/// The kind of an error that says the peer at sigmad's socket does not
/// speak sigmad's namespace protocol (it is not sigmad, or not of this version).
pub const PROTOCOL: &str = "protocol";

/// A namespace error as a client sees it: the kind, and the server's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    /// The error kind's token (`not-found`, `exists`, `timed-out`, ...), or
    /// the RPC status (`unavailable`, `deadline-exceeded`, ...) if the call
    /// itself failed; [`PROTOCOL`] if the peer is not sigmad, `too-large`
    /// for a request beyond a limit the client checks before sending.
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl From<Status> for AdminError {
    fn from(status: Status) -> AdminError {
        let (kind, message) = sigma_ep::codec::error_kind(status.code, &status.message);
        AdminError {
            kind,
            message: message.to_string(),
        }
    }
}

fn wire_stat(s: &Stat) -> WireStat {
    WireStat {
        name: s.name.clone(),
        kind: s.kind as u8,
        perm: s.perm,
        len: s.len,
        version: s.version,
        lease: s.lease.unwrap_or(0),
    }
}

fn wire_resolved(r: Resolved) -> WireResolved {
    WireResolved {
        mount: r.mount.to_string(),
        endpoint: r.endpoint,
        rest: r.rest,
    }
}

fn kind_of(k: u8) -> Result<EntryKind, NsError> {
    match k {
        1 => Ok(EntryKind::Dir),
        2 => Ok(EntryKind::File),
        3 => Ok(EntryKind::Mount),
        other => Err(NsError::Denied(format!("unknown entry kind {other}"))),
    }
}

fn lease_of(l: u64) -> Option<u64> {
    (l != 0).then_some(l)
}

/// The admin service over a namespace on any store.
#[derive(Debug)]
pub struct AdminService<S: Store> {
    ns: Namespace<S>,
    call_timeout: Duration,
    procs: Option<crate::procs::Procs>,
}

impl<S: Store> AdminService<S> {
    /// The procs served, if any.
    pub fn procs(&self) -> Option<&crate::procs::Procs> {
        self.procs.as_ref()
    }

    /// Also serves the proc protocol (`sigma_ep::proc`) with `procs`.
    pub fn with_procs(mut self, procs: crate::procs::Procs) -> AdminService<S> {
        self.procs = Some(procs);
        self
    }

    /// A proc request: the realm must exist; the call is bounded by the
    /// proc layer's own deadlines (a spawn's, a wait's).
    async fn proc_call(&self, req: ProcRequest, out: &mut BytesMut, bound: bool) -> Result<Reply, Status> {
        let Some(procs) = &self.procs else {
            return Err(Status::handler("unavailable: this sigmad does not serve procs"));
        };
        if req.self_pid().is_some() && !bound {
            return Err(Status::handler(
                "denied: started, exited and wait-evict come only from a proc, on its own connection (its fd 3)",
            ));
        }
        // A spawn and a ps name a realm that must exist. Every other call
        // names a pid, which the proc table finds only in its own realm: the
        // realm is looked up only when the pid is not found, to say which.
        if let ProcRequest::Spawn { realm, .. } | ProcRequest::Ps { realm } = &req {
            self.ns.check_realm_exists(realm).await.map_err(|e| to_status(&e))?;
        }
        let realm = req.realm().map(str::to_string);
        match procs.handle(req, out).await {
            Ok(()) => Ok(Reply::Written),
            Err(e) => {
                out.clear();
                if let (Some(realm), "not-found") = (&realm, e.kind) {
                    self.ns.check_realm_exists(realm).await.map_err(|e| to_status(&e))?;
                }
                Err(Status::handler(e.to_string()))
            }
        }
    }

    /// A namespace request, bounded by the call deadline unless it is a watch.
    async fn ns_call(&self, req: NsRequest, out: &mut BytesMut) -> Result<Reply, Status> {
        let changes = !req.is_read_only();
        let result = if req.watch_timeout_ms().is_some() {
            self.handle(req, out).await
        } else {
            match sigma_dataplane::timeout(self.call_timeout, self.handle(req, out)).await {
                Ok(r) => r,
                Err(_) => {
                    out.clear();
                    let what = format!(
                        "the namespace call did not finish within {:?} (sigmad's call deadline; is the store slow or unreachable?)",
                        self.call_timeout
                    );
                    if changes {
                        // The store may have committed it just before the deadline.
                        return Err(to_status(&NsError::OutcomeUnknown(what)));
                    }
                    return Err(Status::new(StatusCode::DeadlineExceeded, what));
                }
            }
        };
        match result {
            Ok(()) => Ok(Reply::Written),
            Err(e) => {
                out.clear();
                Err(to_status(&e))
            }
        }
    }

    /// Serves `ns`, bounding each call that is not a watch by [`CALL_TIMEOUT`].
    pub fn new(ns: Namespace<S>) -> AdminService<S> {
        AdminService::with_call_timeout(ns, CALL_TIMEOUT)
    }

    /// Serves `ns`, bounding each call that is not a watch by `call_timeout`.
    pub fn with_call_timeout(ns: Namespace<S>, call_timeout: Duration) -> AdminService<S> {
        AdminService {
            ns,
            call_timeout,
            procs: None,
        }
    }

    /// The namespace served.
    pub fn namespace(&self) -> &Namespace<S> {
        &self.ns
    }

    async fn watch<F: std::future::Future<Output = Result<T, NsError>>, T>(
        path: &str,
        timeout_ms: u64,
        f: F,
    ) -> Result<T, NsError> {
        let limit = Duration::from_millis(timeout_ms).min(WATCH_TIMEOUT_MAX);
        match sigma_dataplane::timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(NsError::TimedOut {
                path: path.to_string(),
                waited: limit,
            }),
        }
    }

    async fn handle(&self, req: NsRequest, out: &mut BytesMut) -> Result<(), NsError> {
        match req {
            NsRequest::CreateRealm { realm } => self.ns.create_realm(&realm).await,
            NsRequest::RemoveRealm { realm } => self.ns.remove_realm(&realm).await,
            NsRequest::ListRealms => {
                encode_strings(&self.ns.realms().await?, out);
                Ok(())
            }
            NsRequest::Create {
                realm,
                path,
                perm,
                kind,
                data,
                lease,
            } => {
                let st = self
                    .ns
                    .realm(&realm)
                    .await?
                    .create(&path, perm, kind_of(kind)?, data, lease_of(lease))
                    .await?;
                wire_stat(&st).encode(out);
                Ok(())
            }
            NsRequest::Read { realm, path } => {
                out.extend_from_slice(&self.ns.realm(&realm).await?.read(&path).await?);
                Ok(())
            }
            NsRequest::Write {
                realm,
                path,
                data,
                if_version,
            } => {
                let st = self
                    .ns
                    .realm(&realm)
                    .await?
                    .write(&path, data, lease_of(if_version))
                    .await?;
                wire_stat(&st).encode(out);
                Ok(())
            }
            NsRequest::Remove { realm, path } => self.ns.realm(&realm).await?.remove(&path).await,
            NsRequest::Rename { realm, from, to } => self.ns.realm(&realm).await?.rename(&from, &to).await,
            NsRequest::Stat { realm, path } => {
                wire_stat(&self.ns.realm(&realm).await?.stat(&path).await?).encode(out);
                Ok(())
            }
            NsRequest::Readdir { realm, path } => {
                let stats: Vec<WireStat> = self
                    .ns
                    .realm(&realm)
                    .await?
                    .readdir(&path)
                    .await?
                    .iter()
                    .map(wire_stat)
                    .collect();
                WireStat::encode_list(&stats, out);
                Ok(())
            }
            NsRequest::Mount {
                realm,
                path,
                endpoint,
                lease,
            } => {
                wire_stat(
                    &self
                        .ns
                        .realm(&realm)
                        .await?
                        .mount(&path, endpoint, lease_of(lease))
                        .await?,
                )
                .encode(out);
                Ok(())
            }
            NsRequest::Resolve { realm, path } => {
                wire_resolved(self.ns.realm(&realm).await?.resolve(&path).await?).encode(out);
                Ok(())
            }
            NsRequest::Open { realm, path } => {
                let opened = match self.ns.realm(&realm).await?.open(&path).await? {
                    Opened::Entry(st) => WireOpened::Entry(wire_stat(&st)),
                    Opened::Mount(r) => WireOpened::Mount(wire_resolved(r)),
                };
                opened.encode(out);
                Ok(())
            }
            NsRequest::OpenWatch {
                realm,
                path,
                timeout_ms,
            } => {
                let r = self.ns.realm(&realm).await?;
                let st = Self::watch(&path, timeout_ms, r.open_watch(&path)).await?;
                wire_stat(&st).encode(out);
                Ok(())
            }
            NsRequest::WatchDir {
                realm,
                path,
                timeout_ms,
            } => {
                let r = self.ns.realm(&realm).await?;
                Self::watch(&path, timeout_ms, r.watch_dir(&path)).await
            }
            NsRequest::WatchRemove {
                realm,
                path,
                timeout_ms,
            } => {
                let r = self.ns.realm(&realm).await?;
                Self::watch(&path, timeout_ms, r.watch_remove(&path)).await
            }
            NsRequest::LeaseGrant { realm, ttl_ms } => {
                let lease = self
                    .ns
                    .realm(&realm)
                    .await?
                    .lease_grant(Duration::from_millis(ttl_ms.max(1)))
                    .await?;
                out.extend_from_slice(&lease.to_le_bytes());
                Ok(())
            }
            NsRequest::LeaseKeepAlive { realm, lease } => self.ns.realm(&realm).await?.lease_keep_alive(lease).await,
            NsRequest::LeaseRevoke { realm, lease } => self.ns.realm(&realm).await?.lease_revoke(lease).await,
        }
    }
}

/// A request on sigmad's admin socket, decoded once.
enum AdminRequest {
    Ns(NsRequest),
    Proc(ProcRequest),
}

impl AdminRequest {
    fn decode(method: u32, request: Bytes) -> Result<AdminRequest, Status> {
        let (decoded, what) = if ProcRequest::is_proc_method(method) {
            (ProcRequest::decode(method, request).map(AdminRequest::Proc), "proc")
        } else {
            (NsRequest::decode(method, request).map(AdminRequest::Ns), "namespace")
        };
        decoded.map_err(|e| match e {
            sigma_ep::DecodeError::MethodOutOfRange(m) => Status::unknown_method(m),
            e => Status::new(StatusCode::Malformed, format!("{what} request: {e}")),
        })
    }

    /// The realm it acts in; `None` for realm-level and binary-store requests.
    fn realm(&self) -> Option<&str> {
        match self {
            AdminRequest::Ns(r) => r.realm(),
            AdminRequest::Proc(r) => r.realm(),
        }
    }
}

impl<S: Store> Service for AdminService<S> {
    async fn call(&self, method: u32, request: Bytes, out: &mut BytesMut) -> Result<Reply, Status> {
        match AdminRequest::decode(method, request)? {
            AdminRequest::Ns(req) => self.ns_call(req, out).await,
            AdminRequest::Proc(req) => self.proc_call(req, out, false).await,
        }
    }
}

/// The admin service as one proc sees it on its control connection (its
/// fd 3): bound to the proc's realm. A request that names another realm,
/// or acts on realms themselves or on the binary store, is refused; the
/// proc cannot choose whom it speaks for.
#[derive(Debug)]
pub struct BoundService<'a, S: Store> {
    inner: &'a AdminService<S>,
    realm: &'a str,
    pid: u64,
    /// The leases this proc was granted and has not revoked: revoked when
    /// its connection ends ([`end`](Self::end)), with the ephemeral
    /// entries attached to them.
    leases: std::sync::Mutex<Vec<u64>>,
}

/// Leases one proc may hold at once, at most.
pub const PROC_LEASES_MAX: usize = 1024;

impl<'a, S: Store> BoundService<'a, S> {
    /// `inner` as proc `pid` of `realm` may use it.
    pub fn new(inner: &'a AdminService<S>, realm: &'a str, pid: u64) -> BoundService<'a, S> {
        BoundService {
            inner,
            realm,
            pid,
            leases: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The proc's connection ended (the proc exited, or closed its fd 3):
    /// revokes the leases it still holds, so that its ephemeral entries go.
    pub async fn end(&self) {
        let leases = std::mem::take(&mut *self.leases());
        for lease in leases {
            let req = NsRequest::LeaseRevoke {
                realm: self.realm.to_string(),
                lease,
            };
            let mut out = BytesMut::new();
            match self.inner.ns_call(req, &mut out).await {
                Ok(_) => tracing::debug!(pid = self.pid, lease, "revoked an ended proc's lease"),
                // Expired or revoked meanwhile by another proc of the realm.
                Err(e) => tracing::debug!(pid = self.pid, lease, error = %e, "revoking an ended proc's lease"),
            }
        }
    }
}

impl<S: Store> Service for BoundService<'_, S> {
    async fn call(&self, method: u32, request: Bytes, out: &mut BytesMut) -> Result<Reply, Status> {
        let req = AdminRequest::decode(method, request)?;
        if let AdminRequest::Proc(r) = &req {
            if let Some(pid) = r.self_pid().filter(|&pid| pid != self.pid) {
                return Err(Status::handler(format!(
                    "denied: proc {} spoke for proc {pid}; a proc speaks only for itself",
                    self.pid
                )));
            }
        }
        match req.realm() {
            Some(realm) if realm == self.realm => {}
            Some(realm) => {
                return Err(Status::handler(format!(
                    "denied: proc {} of realm {:?} asked to act in realm {realm:?}; a proc acts only in its own realm",
                    self.pid, self.realm
                )))
            }
            None => {
                return Err(Status::handler(format!(
                    "denied: proc {} of realm {:?}: realms and the binary store are not open to procs",
                    self.pid, self.realm
                )))
            }
        }
        match req {
            AdminRequest::Ns(NsRequest::LeaseGrant { realm, ttl_ms }) => {
                if self.leases().len() >= PROC_LEASES_MAX {
                    return Err(Status::handler(format!(
                        "busy: proc {} holds {PROC_LEASES_MAX} leases (PROC_LEASES_MAX); revoke one first",
                        self.pid
                    )));
                }
                let reply = self.inner.ns_call(NsRequest::LeaseGrant { realm, ttl_ms }, out).await?;
                if let Ok(id) = <[u8; 8]>::try_from(&out[..]) {
                    self.leases().push(u64::from_le_bytes(id));
                }
                Ok(reply)
            }
            AdminRequest::Ns(NsRequest::LeaseRevoke { realm, lease }) => {
                let reply = self.inner.ns_call(NsRequest::LeaseRevoke { realm, lease }, out).await?;
                self.leases().retain(|&l| l != lease);
                Ok(reply)
            }
            AdminRequest::Ns(req) => self.inner.ns_call(req, out).await,
            AdminRequest::Proc(req) => self.inner.proc_call(req, out, true).await,
        }
    }
}

/// What a resolve call returns.
pub type ResolvedReply = WireResolved;

/// sigmad's socket as the RPC client sees it: errors name sigmad and the
/// socket's path, not an fd number.
#[derive(Debug)]
struct SigmadStream {
    stream: UnixStream,
    peer: String,
}

impl Transport for SigmadStream {
    async fn recv_buf(&self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        self.stream.recv_buf(buf).await
    }
    async fn send_all_gather(&self, gather: Gather) -> BufResult<(), Gather> {
        self.stream.send_all_gather(gather).await
    }
    fn peer(&self) -> String {
        self.peer.clone()
    }
    fn shutdown_both(&self) -> std::io::Result<()> {
        self.stream.shutdown_both()
    }
}

/// The admin client (what sigmactl uses), on the current data-plane core.
#[derive(Debug)]
pub struct AdminClient {
    rpc: Client<SigmadStream>,
    sock: PathBuf,
    scratch: std::cell::RefCell<BytesMut>,
}

impl AdminClient {
    /// Connects to sigmad's admin socket.
    pub async fn connect(sock: &Path) -> Result<AdminClient, AdminError> {
        let stream = UnixStream::connect(sock).await.map_err(|e| AdminError {
            kind: "unavailable".into(),
            message: format!(
                "cannot reach sigmad at {}: {e} (is sigmad running? see --sock)",
                sock.display()
            ),
        })?;
        let stream = SigmadStream {
            stream,
            peer: format!("sigmad at {}", sock.display()),
        };
        Ok(AdminClient {
            rpc: Client::new(stream, ClientConfig::default()),
            sock: sock.to_path_buf(),
            scratch: std::cell::RefCell::new(BytesMut::new()),
        })
    }

    /// Sends one request and returns the reply payload. The request is
    /// checked against every limit first ([`check_request`]). Without a
    /// `deadline`, the client waits [`REPLY_MARGIN`] longer than sigmad may
    /// take: [`CALL_TIMEOUT`], or for a watch, the watch's own timeout.
    pub async fn call(&self, req: &NsRequest, deadline: Option<Duration>) -> Result<Bytes, AdminError> {
        check_request(req)?;
        let deadline = deadline.unwrap_or_else(|| {
            let bound = match req.watch_timeout_ms() {
                Some(ms) => Duration::from_millis(ms).min(WATCH_TIMEOUT_MAX),
                None => CALL_TIMEOUT,
            };
            bound + REPLY_MARGIN
        });
        self.send(
            req.method(),
            |buf| req.encode(buf),
            deadline,
            !req.is_read_only(),
            "the change may or may not have been applied: read before retrying",
        )
        .await
    }

    /// Sends one encoded request with `deadline`. For a request that
    /// `changes` something, a failure after it may have been sent is
    /// `outcome-unknown`, with `advice` on what to do.
    async fn send(
        &self,
        method: u32,
        encode: impl FnOnce(&mut BytesMut),
        deadline: Duration,
        changes: bool,
        advice: &str,
    ) -> Result<Bytes, AdminError> {
        let payload = {
            let mut buf = self.scratch.borrow_mut();
            encode(&mut buf);
            buf.split().freeze()
        };
        // A connection already gone never sends the request.
        let unsent = self.rpc.is_closed();
        match self.rpc.call(method, payload, Some(deadline)).await {
            Ok(reply) => Ok(reply),
            Err(status) if changes && fate_unknown(&status, unsent) => {
                let e = self.error(status);
                Err(AdminError {
                    kind: OUTCOME_UNKNOWN.into(),
                    message: format!("{}; {advice}", e.message),
                })
            }
            Err(status) => Err(self.error(status)),
        }
    }

    /// Sends one proc request; the reply payload. Checked against the
    /// protocol's limits first. Without a `deadline`, the client waits for
    /// a spawn's deadline, or a wait's own timeout, plus [`REPLY_MARGIN`].
    /// A spawn whose answer never came may have started its proc.
    pub async fn call_proc(&self, req: &ProcRequest, deadline: Option<Duration>) -> Result<Bytes, AdminError> {
        req.check().map_err(|message| AdminError {
            kind: "too-large".into(),
            message,
        })?;
        let deadline = deadline.unwrap_or_else(|| {
            let bound = match req {
                ProcRequest::WaitExit { timeout_ms, .. } | ProcRequest::WaitStart { timeout_ms, .. } => {
                    Duration::from_millis(*timeout_ms).min(crate::procs::WAIT_TIMEOUT_MAX)
                }
                ProcRequest::Logs { .. } | ProcRequest::Spawn { .. } => crate::procs::SPAWN_TIMEOUT,
                _ => CALL_TIMEOUT,
            };
            bound + REPLY_MARGIN
        });
        let changes = matches!(
            req,
            ProcRequest::Spawn { .. } | ProcRequest::BinPut { .. } | ProcRequest::BinRemove { .. }
        );
        self.send(
            req.method(),
            |buf| req.encode(buf),
            deadline,
            changes,
            "it may or may not have happened: look (`ps`, `bin ls`) before retrying",
        )
        .await
    }

    /// Decodes a proc reply with `decode`, naming sigmad if it does not decode.
    pub fn decode_proc<T>(
        &self,
        reply: Bytes,
        decode: impl FnOnce(Bytes) -> Result<T, sigma_ep::DecodeError>,
    ) -> Result<T, AdminError> {
        decode(reply).map_err(|e| self.malformed(e))
    }

    /// Whether the connection to sigmad is gone (a call would fail
    /// `unavailable` without sending anything).
    pub fn is_closed(&self) -> bool {
        self.rpc.is_closed()
    }

    /// A failed call's status as an error that names sigmad and its socket.
    fn error(&self, status: Status) -> AdminError {
        let here = format!("sigmad at {}", self.sock.display());
        match status.code {
            StatusCode::Handler => AdminError::from(status),
            // The peer sent what sigmad never sends, or does not know
            // sigmad's methods: whatever is at the socket is not sigmad.
            StatusCode::Malformed | StatusCode::UnknownMethod => {
                let detail = status
                    .message
                    .strip_prefix(&format!("{here}: "))
                    .unwrap_or(&status.message);
                AdminError {
                    kind: PROTOCOL.into(),
                    message: format!(
                        "{here}: the peer does not speak sigmad's namespace protocol ({detail}); is --sock sigmad's socket, and sigmad of this version?"
                    ),
                }
            }
            _ => {
                let mut e = AdminError::from(status);
                if !e.message.starts_with(&here) {
                    e.message = format!("{here}: {}", e.message);
                }
                e
            }
        }
    }

    fn malformed(&self, e: sigma_ep::DecodeError) -> AdminError {
        AdminError {
            kind: PROTOCOL.into(),
            message: format!(
                "sigmad at {}: the reply does not decode ({e}); is --sock sigmad's socket, and sigmad of this version?",
                self.sock.display()
            ),
        }
    }

    /// Calls and decodes a stat reply.
    pub async fn call_stat(&self, req: &NsRequest) -> Result<WireStat, AdminError> {
        WireStat::decode(self.call(req, None).await?).map_err(|e| self.malformed(e))
    }

    /// Calls and decodes a stat-list reply.
    pub async fn call_stats(&self, req: &NsRequest) -> Result<Vec<WireStat>, AdminError> {
        WireStat::decode_list(self.call(req, None).await?).map_err(|e| self.malformed(e))
    }

    /// Calls and decodes a string-list reply.
    pub async fn call_strings(&self, req: &NsRequest) -> Result<Vec<String>, AdminError> {
        decode_strings(self.call(req, None).await?).map_err(|e| self.malformed(e))
    }

    /// Calls and decodes a resolve reply.
    pub async fn call_resolve(&self, req: &NsRequest) -> Result<ResolvedReply, AdminError> {
        WireResolved::decode(self.call(req, None).await?).map_err(|e| self.malformed(e))
    }

    /// Decodes a stat reply of a call made with [`call`](Self::call).
    pub fn decode_stat(&self, reply: Bytes) -> Result<WireStat, AdminError> {
        WireStat::decode(reply).map_err(|e| self.malformed(e))
    }
}

/// The longest path a request may carry: one in the root realm's view.
const REQUEST_PATH_BYTES_MAX: usize = ROOT_VIEW.len() + PATH_BYTES_MAX;
const _: () = assert!(REQUEST_PATH_BYTES_MAX <= STRING_BYTES_MAX);
const _: () = assert!(REALM_BYTES_MAX <= STRING_BYTES_MAX);
const _: () = assert!(FILE_BYTES_MAX <= DATA_BYTES_MAX);
// The largest request `check_request` lets through (a create: realm, path,
// perm, kind, contents, lease; a rename: two paths) fits one frame, so the
// encoder's asserts and the RPC client's size check never fire on it.
const _: () = assert!(
    2 + REALM_BYTES_MAX + 2 * (2 + REQUEST_PATH_BYTES_MAX) + 4 + 1 + 4 + FILE_BYTES_MAX + 8 <= FRAME_PAYLOAD_BYTES_MAX
);

fn too_large(what: &str, len: usize, limit_on: &str) -> AdminError {
    AdminError {
        kind: "too-large".into(),
        message: format!("{what} of {len} bytes exceed the {FILE_BYTES_MAX}-byte limit on {limit_on} (FILE_BYTES_MAX)"),
    }
}

/// Checks a request against every limit and rule the client can check
/// before sending it (realm names, paths, sizes), with the functions sigmad
/// itself uses, so that nothing sigmad would accept is refused here. What
/// passes fits one frame.
pub fn check_request(req: &NsRequest) -> Result<(), AdminError> {
    let realm = |realm: &str| {
        check_realm(realm).map_err(|e| AdminError {
            kind: token(&e).into(),
            message: e.to_string(),
        })
    };
    match req {
        NsRequest::ListRealms => Ok(()),
        NsRequest::CreateRealm { realm: r }
        | NsRequest::RemoveRealm { realm: r }
        | NsRequest::LeaseGrant { realm: r, .. }
        | NsRequest::LeaseKeepAlive { realm: r, .. }
        | NsRequest::LeaseRevoke { realm: r, .. } => realm(r),
        NsRequest::Read { realm: r, path }
        | NsRequest::Remove { realm: r, path }
        | NsRequest::Stat { realm: r, path }
        | NsRequest::Readdir { realm: r, path }
        | NsRequest::Resolve { realm: r, path }
        | NsRequest::Open { realm: r, path }
        | NsRequest::OpenWatch { realm: r, path, .. }
        | NsRequest::WatchDir { realm: r, path, .. }
        | NsRequest::WatchRemove { realm: r, path, .. } => {
            realm(r)?;
            check_path(path)
        }
        NsRequest::Rename { realm: r, from, to } => {
            realm(r)?;
            check_path(from)?;
            check_path(to)
        }
        NsRequest::Create {
            realm: r, path, data, ..
        }
        | NsRequest::Write {
            realm: r, path, data, ..
        } => {
            realm(r)?;
            check_path(path)?;
            if data.len() > FILE_BYTES_MAX {
                return Err(too_large("file contents", data.len(), "a file"));
            }
            Ok(())
        }
        NsRequest::Mount {
            realm: r,
            path,
            endpoint,
            ..
        } => {
            realm(r)?;
            check_path(path)?;
            if endpoint.len() > FILE_BYTES_MAX {
                return Err(too_large("an endpoint", endpoint.len(), "a mount's endpoint"));
            }
            Ok(())
        }
    }
}

/// Whether a change that failed with `status` may have been applied: its
/// answer did not come in time (the client's deadline, or sigmad's
/// handler finished late), or the connection was lost after it was sent.
fn fate_unknown(status: &Status, unsent: bool) -> bool {
    match status.code {
        StatusCode::DeadlineExceeded => true,
        StatusCode::Unavailable => !unsent,
        _ => false,
    }
}

/// Checks a path on the client side too, for a clear error before any IO.
/// It accepts every path sigmad accepts in some request: its own realm's
/// paths and the root realm's under `/~root`, with `~any`/`~local`
/// selectors (a request that may not use them, or may not change the root
/// realm, is refused by sigmad, which says why).
pub fn check_path(path: &str) -> Result<(), AdminError> {
    NsPath::parse_with(root_view_rest(path).unwrap_or(path), true)
        .map(drop)
        .map_err(|e| AdminError {
            kind: token(&e).into(),
            message: e.to_string(),
        })
}
