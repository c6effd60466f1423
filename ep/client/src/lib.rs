//! The proc client library: what a Rust proc uses to talk to σ.
//!
//! A proc's identity is its control socket, fd 3 (`SIGMA_CTL_FD`): a Unix
//! socket to sigmad that sigmad has bound to the proc's realm and σ pid.
//! Every request on it acts in that realm; requests naming another realm,
//! realm-level requests and the binary store are refused by sigmad, not by
//! this library. [`Proc::from_env`] takes the socket and the proc's
//! identity (`SIGMA_PID`, `SIGMA_REALM`) from the environment sigmad gave
//! it.
//!
//! ```no_run
//! let mut p = sigma_proc::Proc::from_env()?;
//! p.started()?;
//! p.put("/counter", b"0")?;
//! let child = p.spawn(&sigma_proc::Spawn::new("trivial"))?;
//! let status = p.wait_exit(child, std::time::Duration::from_secs(10))?;
//! p.exited(if status == sigma_proc::Status::Ok { status } else { sigma_proc::Status::Error(1) })?;
//! # Ok::<(), sigma_proc::Error>(())
//! ```
//!
//! The calls are blocking and made one at a time: sigmad answers a
//! connection's requests in order, so a long wait (`wait_exit`,
//! `wait_evict`) holds the connection until it returns. A proc that works
//! and must notice an eviction polls with `wait_evict(Duration::ZERO)`
//! between steps, or leaves the blocking wait to the end of its work.
//!
//! The library uses only `read(2)` and `write(2)` on the socket (never
//! recvfrom/sendto): it stays inside the proc seccomp allow-list
//! (`sandbox/src/policy.rs`).

use bytes::{Bytes, BytesMut};
use sigma_ep::limits::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use sigma_ep::ns::{NsRequest, WireStat};
use sigma_ep::proc::{ProcRequest, WireClass, WireProc};
use sigma_ep::{Header, Kind};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub use sigma_ep::proc::WireStatus as Status;

/// Entry kinds on the wire (the namespace's `EntryKind`).
const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;

/// The control socket's fd when `SIGMA_CTL_FD` is not set.
pub const CTL_FD_DEFAULT: RawFd = 3;

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The environment does not describe a proc (not started by sigmad?).
    Env(String),
    /// The control socket failed (sigmad gone: it closed the connection).
    Io(std::io::Error),
    /// sigmad refused or failed the call: its kind token (`denied`,
    /// `not-found`, `timed-out`, ...) and message.
    Sigmad {
        /// sigmad's kind token (`denied`, `timed-out`, ...), or the RPC
        /// status (`unknown-method`, ...) if the call itself failed.
        kind: String,
        /// sigmad's whole message.
        message: String,
    },
    /// A reply this library cannot parse.
    Protocol(String),
}

impl Error {
    /// The kind token of a refusal from sigmad (`denied`, `timed-out`, ...).
    pub fn kind(&self) -> Option<&str> {
        match self {
            Error::Sigmad { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Env(why) => write!(f, "not a σ proc: {why}"),
            Error::Io(e) => write!(f, "the control socket to sigmad: {e}"),
            Error::Sigmad { message, .. } => write!(f, "sigmad: {message}"),
            Error::Protocol(why) => write!(f, "a reply from sigmad: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// What a call returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A proc to start: program, arguments, environment, class, memory.
#[derive(Debug, Clone)]
pub struct Spawn {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    class: WireClass,
    mem_mib: u32,
}

impl Spawn {
    /// Program `NAME[@VERSION]` from the binary store, as a BE proc with the
    /// default memory limit and no arguments.
    pub fn new(program: impl Into<String>) -> Spawn {
        Spawn {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            class: WireClass::Be,
            mem_mib: 0,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Spawn {
        self.args.push(arg.into());
        self
    }

    /// Adds an environment variable (`SIGMA_*` names are σ's own and refused).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Spawn {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Latency-critical, reserving `mcpu` milli-cores.
    pub fn lc(mut self, mcpu: u32) -> Spawn {
        self.class = WireClass::Lc { mcpu };
        self
    }

    /// Best-effort (the default).
    pub fn be(mut self) -> Spawn {
        self.class = WireClass::Be;
        self
    }

    /// Memory limit in MiB (0: sigmad's default).
    pub fn mem_mib(mut self, mib: u32) -> Spawn {
        self.mem_mib = mib;
        self
    }
}

/// This proc, as σ knows it: its pid, realm and control socket.
#[derive(Debug)]
pub struct Proc {
    /// The control socket, as a `File`: its reads and writes are read(2)
    /// and write(2) (a `UnixStream` reads with recvfrom(2), which the proc
    /// seccomp policy does not allow).
    conn: std::fs::File,
    pid: u64,
    realm: String,
    next_request: u64,
    buf: BytesMut,
}

impl Proc {
    /// The proc sigmad started: fd `SIGMA_CTL_FD` (default 3), `SIGMA_PID`
    /// and `SIGMA_REALM`. Takes ownership of the fd; call it once.
    pub fn from_env() -> Result<Proc> {
        let var = |name: &str| std::env::var(name).map_err(|_| Error::Env(format!("{name} is not set")));
        let pid = var("SIGMA_PID")?
            .parse::<u64>()
            .map_err(|_| Error::Env("SIGMA_PID is not a number".into()))?;
        let realm = var("SIGMA_REALM")?;
        let fd = match std::env::var("SIGMA_CTL_FD") {
            Ok(v) => v
                .parse::<RawFd>()
                .map_err(|_| Error::Env("SIGMA_CTL_FD is not an fd number".into()))?,
            Err(_) => CTL_FD_DEFAULT,
        };
        if fd < 0 {
            return Err(Error::Env(format!("SIGMA_CTL_FD {fd} is not an fd")));
        }
        // SAFETY: the fd is this process's control socket, inherited from
        // sigmad and owned by nothing else in the process; `from_env` is
        // documented to take it over (call it once).
        let conn = unsafe { std::fs::File::from_raw_fd(fd) };
        Ok(Proc::with_conn(conn, pid, realm))
    }

    /// A proc over `conn`, for a proc that got its socket another way (and
    /// for tests): `pid` of `realm`.
    pub fn with_socket(conn: UnixStream, pid: u64, realm: String) -> Proc {
        Proc::with_conn(std::fs::File::from(std::os::fd::OwnedFd::from(conn)), pid, realm)
    }

    fn with_conn(conn: std::fs::File, pid: u64, realm: String) -> Proc {
        Proc {
            conn,
            pid,
            realm,
            next_request: 1,
            buf: BytesMut::new(),
        }
    }

    /// This proc's σ pid.
    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// This proc's realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// One request, its reply payload.
    fn call(&mut self, method: u32, payload: &[u8]) -> Result<Bytes> {
        if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
            return Err(Error::Protocol(format!(
                "a request of {} bytes exceeds FRAME_PAYLOAD_BYTES_MAX ({FRAME_PAYLOAD_BYTES_MAX})",
                payload.len()
            )));
        }
        let id = self.next_request;
        self.next_request += 1;
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        let mut header = [0u8; FRAME_HEADER_BYTES];
        Header::request(id, method, payload.len() as u32, 0).encode(&mut header);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        self.conn.write_all(&frame)?;
        let mut head = [0u8; FRAME_HEADER_BYTES];
        self.conn.read_exact(&mut head)?;
        let reply = Header::decode(&head).map_err(|e| Error::Protocol(e.to_string()))?;
        if reply.len as usize > FRAME_PAYLOAD_BYTES_MAX {
            return Err(Error::Protocol(format!("a reply of {} bytes", reply.len)));
        }
        self.buf.clear();
        self.buf.resize(reply.len as usize, 0);
        self.conn.read_exact(&mut self.buf)?;
        let body = self.buf.split().freeze();
        if reply.request_id != id && reply.request_id != 0 {
            return Err(Error::Protocol(format!(
                "the reply to request {} came for request {id}",
                reply.request_id
            )));
        }
        match reply.kind {
            Kind::Response => Ok(body),
            Kind::Error => {
                let message = sigma_ep::codec::decode_error_message(&body)
                    .map(str::to_string)
                    .unwrap_or_else(|e| format!("(unreadable error message: {e})"));
                // The kind by sigmad's one rule (sigmactl's too).
                let status = reply.status.unwrap_or(sigma_ep::StatusCode::Handler);
                let (kind, _) = sigma_ep::codec::error_kind(status, &message);
                Err(Error::Sigmad { kind, message })
            }
            other => Err(Error::Protocol(format!("a {other:?} frame instead of a reply"))),
        }
    }

    fn proc_call(&mut self, req: ProcRequest) -> Result<Bytes> {
        req.check().map_err(Error::Protocol)?;
        let mut payload = BytesMut::new();
        req.encode(&mut payload);
        self.call(req.method(), &payload)
    }

    fn ns_call(&mut self, req: NsRequest) -> Result<Bytes> {
        let mut payload = BytesMut::new();
        req.encode(&mut payload);
        self.call(req.method(), &payload)
    }

    fn decoded<T>(reply: Bytes, decode: impl FnOnce(Bytes) -> Result<T, sigma_ep::DecodeError>) -> Result<T> {
        decode(reply).map_err(|e| Error::Protocol(e.to_string()))
    }

    fn wait_ms(d: Duration) -> u64 {
        d.as_millis().min(u128::from(u64::MAX)) as u64
    }

    // ---- This proc's own lifecycle ----

    /// Tells σ this proc has started: `wait_start` on it returns.
    pub fn started(&mut self) -> Result<()> {
        let (realm, pid) = (self.realm.clone(), self.pid);
        self.proc_call(ProcRequest::Started { realm, pid }).map(drop)
    }

    /// Declares the status this proc ends with when it exits normally
    /// (`Status::Ok` or `Status::Error(code)`); exiting is still the
    /// proc's to do.
    pub fn exited(&mut self, status: Status) -> Result<()> {
        let (realm, pid) = (self.realm.clone(), self.pid);
        self.proc_call(ProcRequest::Exited { realm, pid, status }).map(drop)
    }

    /// Waits until this proc is evicted, at most `timeout`: true if it was
    /// (it then has sigmad's grace period, `EVICT_GRACE`, to exit), false
    /// if the time ran out. `Duration::ZERO` only looks. From the first
    /// call on, an eviction gives this proc the grace period instead of an
    /// immediate kill.
    pub fn wait_evict(&mut self, timeout: Duration) -> Result<bool> {
        let (realm, pid) = (self.realm.clone(), self.pid);
        match self.proc_call(ProcRequest::WaitEvict {
            realm,
            pid,
            timeout_ms: Self::wait_ms(timeout),
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Some("timed-out") => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- Other procs of this realm ----

    /// Starts a proc in this realm; its σ pid once it has exec'd.
    pub fn spawn(&mut self, spawn: &Spawn) -> Result<u64> {
        let reply = self.proc_call(ProcRequest::Spawn {
            realm: self.realm.clone(),
            program: spawn.program.clone(),
            args: spawn.args.clone(),
            env: spawn.env.clone(),
            class: spawn.class,
            mem_mib: spawn.mem_mib,
        })?;
        let pid: [u8; 8] = reply[..]
            .try_into()
            .map_err(|_| Error::Protocol(format!("a spawn reply of {} bytes", reply.len())))?;
        Ok(u64::from_le_bytes(pid))
    }

    /// Waits until proc `pid` of this realm says it started or ends (at
    /// most `timeout`); its status then (`Running` if it started).
    pub fn wait_start(&mut self, pid: u64, timeout: Duration) -> Result<Status> {
        let reply = self.proc_call(ProcRequest::WaitStart {
            realm: self.realm.clone(),
            pid,
            timeout_ms: Self::wait_ms(timeout),
        })?;
        Self::decoded(reply, Status::decode)
    }

    /// Waits until proc `pid` of this realm ends (at most `timeout`); how.
    pub fn wait_exit(&mut self, pid: u64, timeout: Duration) -> Result<Status> {
        let reply = self.proc_call(ProcRequest::WaitExit {
            realm: self.realm.clone(),
            pid,
            timeout_ms: Self::wait_ms(timeout),
        })?;
        Self::decoded(reply, Status::decode)
    }

    /// Kills proc `pid` of this realm.
    pub fn kill(&mut self, pid: u64) -> Result<()> {
        let realm = self.realm.clone();
        self.proc_call(ProcRequest::Kill { realm, pid }).map(drop)
    }

    /// Evicts proc `pid` of this realm.
    pub fn evict(&mut self, pid: u64) -> Result<()> {
        let realm = self.realm.clone();
        self.proc_call(ProcRequest::Evict { realm, pid }).map(drop)
    }

    /// The procs of this realm on this machine.
    pub fn ps(&mut self) -> Result<Vec<WireProc>> {
        let realm = self.realm.clone();
        let reply = self.proc_call(ProcRequest::Ps { realm })?;
        Self::decoded(reply, WireProc::decode_list)
    }

    // ---- This realm's namespace ----

    /// Creates file `path` holding `data` (an error if it exists).
    pub fn put(&mut self, path: &str, data: &[u8]) -> Result<WireStat> {
        self.create(path, data, None)
    }

    /// Creates file `path` holding `data`, attached to `lease` if given:
    /// it goes when the lease does (and this proc's leases go when it
    /// exits).
    pub fn create(&mut self, path: &str, data: &[u8], lease: Option<u64>) -> Result<WireStat> {
        let reply = self.ns_call(NsRequest::Create {
            realm: self.realm.clone(),
            path: path.into(),
            perm: 0o644,
            kind: KIND_FILE,
            data: Bytes::copy_from_slice(data),
            lease: lease.unwrap_or(0),
        })?;
        Self::decoded(reply, WireStat::decode)
    }

    /// Creates directory `path` (an error if it exists).
    pub fn mkdir(&mut self, path: &str) -> Result<WireStat> {
        let reply = self.ns_call(NsRequest::Create {
            realm: self.realm.clone(),
            path: path.into(),
            perm: 0o755,
            kind: KIND_DIR,
            data: Bytes::new(),
            lease: 0,
        })?;
        Self::decoded(reply, WireStat::decode)
    }

    /// The contents of file `path`.
    pub fn read(&mut self, path: &str) -> Result<Bytes> {
        self.ns_call(NsRequest::Read {
            realm: self.realm.clone(),
            path: path.into(),
        })
    }

    /// Replaces the contents of file `path` (if `if_version` is not 0, only
    /// if the file is at that version).
    pub fn write(&mut self, path: &str, data: &[u8], if_version: u64) -> Result<WireStat> {
        let reply = self.ns_call(NsRequest::Write {
            realm: self.realm.clone(),
            path: path.into(),
            data: Bytes::copy_from_slice(data),
            if_version,
        })?;
        Self::decoded(reply, WireStat::decode)
    }

    /// Removes `path`.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        self.ns_call(NsRequest::Remove {
            realm: self.realm.clone(),
            path: path.into(),
        })
        .map(drop)
    }

    /// What `path` is.
    pub fn stat(&mut self, path: &str) -> Result<WireStat> {
        let reply = self.ns_call(NsRequest::Stat {
            realm: self.realm.clone(),
            path: path.into(),
        })?;
        Self::decoded(reply, WireStat::decode)
    }

    /// The entries of directory `path`.
    pub fn readdir(&mut self, path: &str) -> Result<Vec<WireStat>> {
        let reply = self.ns_call(NsRequest::Readdir {
            realm: self.realm.clone(),
            path: path.into(),
        })?;
        Self::decoded(reply, WireStat::decode_list)
    }

    /// A lease that expires `ttl` after its last keep-alive; entries
    /// attached to it go with it. sigmad revokes this proc's leases when
    /// it exits.
    pub fn lease_grant(&mut self, ttl: Duration) -> Result<u64> {
        let reply = self.ns_call(NsRequest::LeaseGrant {
            realm: self.realm.clone(),
            ttl_ms: Self::wait_ms(ttl),
        })?;
        let id: [u8; 8] = reply[..]
            .try_into()
            .map_err(|_| Error::Protocol(format!("a lease reply of {} bytes", reply.len())))?;
        Ok(u64::from_le_bytes(id))
    }

    /// Keeps `lease` alive for another ttl.
    pub fn lease_keep_alive(&mut self, lease: u64) -> Result<()> {
        let realm = self.realm.clone();
        self.ns_call(NsRequest::LeaseKeepAlive { realm, lease }).map(drop)
    }

    /// Revokes `lease` (its entries go).
    pub fn lease_revoke(&mut self, lease: u64) -> Result<()> {
        let realm = self.realm.clone();
        self.ns_call(NsRequest::LeaseRevoke { realm, lease }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sigmad on the other end of a socket pair: answers each request
    /// with `answer(header, payload)`.
    fn fake(answer: impl Fn(Header, Vec<u8>) -> (Header, Vec<u8>) + Send + 'static) -> Proc {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut s = theirs;
            loop {
                let mut head = [0u8; FRAME_HEADER_BYTES];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let h = Header::decode(&head).unwrap();
                let mut payload = vec![0u8; h.len as usize];
                s.read_exact(&mut payload).unwrap();
                let (rh, rp) = answer(h, payload);
                let mut out = [0u8; FRAME_HEADER_BYTES];
                rh.encode(&mut out);
                s.write_all(&out).unwrap();
                s.write_all(&rp).unwrap();
            }
        });
        Proc::with_socket(ours, 7, "blue".into())
    }

    #[test]
    fn requests_name_this_procs_realm_and_pid() {
        let mut p = fake(|h, payload| {
            let req = ProcRequest::decode(h.method, Bytes::from(payload)).unwrap();
            assert_eq!(req.realm(), Some("blue"));
            assert_eq!(req.self_pid(), Some(7));
            (Header::response(h.request_id, h.method, 0), Vec::new())
        });
        p.started().unwrap();
        p.exited(Status::Error(3)).unwrap();
    }

    #[test]
    fn refusals_carry_sigmads_kind_and_message() {
        let mut p = fake(|h, _| {
            let msg = b"denied: proc 7 of realm \"blue\" asked to act in realm \"red\"".to_vec();
            (
                Header::error(h.request_id, h.method, sigma_ep::StatusCode::Handler, msg.len() as u32),
                msg,
            )
        });
        let e = p.kill(3).unwrap_err();
        assert_eq!(e.kind(), Some("denied"));
        assert!(e.to_string().contains("asked to act in realm"), "{e}");
    }

    #[test]
    fn wait_evict_tells_evicted_from_timed_out() {
        let mut p = fake(|h, payload| {
            let ProcRequest::WaitEvict { timeout_ms, .. } =
                ProcRequest::decode(h.method, Bytes::from(payload)).unwrap()
            else {
                panic!("not a wait-evict");
            };
            if timeout_ms == 0 {
                let msg = b"timed-out: proc 7 was not evicted within 0ns".to_vec();
                (
                    Header::error(h.request_id, h.method, sigma_ep::StatusCode::Handler, msg.len() as u32),
                    msg,
                )
            } else {
                (Header::response(h.request_id, h.method, 0), Vec::new())
            }
        });
        assert!(!p.wait_evict(Duration::ZERO).unwrap());
        assert!(p.wait_evict(Duration::from_secs(1)).unwrap());
    }

    #[test]
    fn a_spawn_reply_is_the_pid_and_a_short_one_is_a_protocol_error() {
        let mut p = fake(|h, _| {
            let body = if h.request_id == 1 {
                42u64.to_le_bytes().to_vec()
            } else {
                vec![1, 2]
            };
            (Header::response(h.request_id, h.method, body.len() as u32), body)
        });
        assert_eq!(p.spawn(&Spawn::new("trivial").arg("3")).unwrap(), 42);
        assert!(matches!(p.spawn(&Spawn::new("trivial")), Err(Error::Protocol(_))));
    }

    #[test]
    fn a_closed_socket_is_an_io_error_not_a_hang() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut p = Proc::with_socket(ours, 1, "r".into());
        assert!(matches!(p.started(), Err(Error::Io(_))));
    }

    #[test]
    fn from_env_says_what_is_missing() {
        // The test process has no SIGMA_PID unless someone set it.
        if std::env::var_os("SIGMA_PID").is_none() {
            let e = Proc::from_env().unwrap_err();
            assert!(e.to_string().contains("SIGMA_PID is not set"), "{e}");
        }
    }
}
