//! The proc protocol: spawning, waiting for, killing and listing procs, and
//! reading their logs, as RPC payloads on sigmad's admin socket. The same
//! encoding rules as the namespace protocol ([`crate::ns`]): little-endian
//! fields, u16-length UTF-8 strings, u32-length byte strings, a message
//! consumed exactly. Decoders never panic.

use crate::error::DecodeError;
use crate::ns::{Reader, Writer, STRING_BYTES_MAX};
use bytes::{Bytes, BytesMut};

/// Arguments of one proc, at most.
pub const ARGS_MAX: usize = 256;
/// Environment variables given to one proc, at most (beyond σ's own).
pub const ENV_MAX: usize = 256;
/// Bytes of a program name (`NAME` or `NAME@VERSION`), at most.
pub const PROGRAM_BYTES_MAX: usize = 255;
/// Procs one `ps` reply lists, at most.
pub const PS_ENTRIES_MAX: usize = 100_000;
/// Bytes one `logs` reply carries, at most.
pub const LOG_CHUNK_BYTES_MAX: u32 = 512 * 1024;

/// Method ids of the proc protocol (300–399).
pub mod method {
    /// Start a proc.
    pub const SPAWN: u32 = 300;
    /// Wait until a proc has exited; its status.
    pub const WAIT_EXIT: u32 = 301;
    /// Kill a proc (SIGKILL to its pid namespace).
    pub const KILL: u32 = 302;
    /// Evict a proc (it is told, then killed after a grace period).
    pub const EVICT: u32 = 303;
    /// List a realm's procs.
    pub const PS: u32 = 304;
    /// Read a proc's log from an offset.
    pub const LOGS: u32 = 305;
    /// Wait until a proc has said it started (or has ended).
    pub const WAIT_START: u32 = 306;
    /// Where a proc's start went, step by step.
    pub const START_TIMES: u32 = 307;
    /// From a proc, on its own connection: it has started.
    pub const STARTED: u32 = 310;
    /// From a proc, on its own connection: the status it ends with.
    pub const EXITED: u32 = 311;
    /// From a proc, on its own connection: wait until it is asked to leave
    /// (evicted). A proc that waits is given a grace period to exit.
    pub const WAIT_EVICT: u32 = 312;
    /// Upload a piece of a binary; the last piece puts it in the store.
    pub const BIN_PUT: u32 = 320;
    /// List the binaries in the store.
    pub const BIN_LIST: u32 = 321;
    /// Remove a binary from the store.
    pub const BIN_REMOVE: u32 = 322;
}

/// Bytes of one `BinPut` piece, at most.
pub const BIN_PIECE_BYTES_MAX: usize = 512 * 1024;

/// A proc's scheduling class on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireClass {
    /// Latency-critical, with the milli-cores it reserves.
    Lc {
        /// Milli-cores (1..=1_000_000).
        mcpu: u32,
    },
    /// Best-effort.
    Be,
}

impl WireClass {
    fn write(self, w: &mut Writer<'_>) {
        match self {
            WireClass::Lc { mcpu } => w.u8(1).u32(mcpu),
            WireClass::Be => w.u8(2).u32(0),
        };
    }

    fn read(r: &mut Reader) -> Result<WireClass, DecodeError> {
        match (r.u8()?, r.u32()?) {
            (1, mcpu) => Ok(WireClass::Lc { mcpu }),
            (2, 0) => Ok(WireClass::Be),
            (2, _) => Err(DecodeError::BadField("milli-cores given for a BE proc")),
            _ => Err(DecodeError::BadField("unknown proc class")),
        }
    }
}

/// A request of the proc protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ProcRequest {
    Spawn {
        realm: String,
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        class: WireClass,
        mem_mib: u32,
    },
    WaitExit {
        realm: String,
        pid: u64,
        timeout_ms: u64,
    },
    WaitStart {
        realm: String,
        pid: u64,
        timeout_ms: u64,
    },
    /// Only on a proc's own connection, naming itself.
    Started {
        realm: String,
        pid: u64,
    },
    /// Only on a proc's own connection, naming itself: the status to report
    /// when it exits normally (`Ok` or `Error(code)`).
    Exited {
        realm: String,
        pid: u64,
        status: WireStatus,
    },
    /// Only on a proc's own connection, naming itself: answers once the
    /// proc is evicted (an error at `timeout_ms`). A proc that has waited
    /// is killed only after a grace period, to exit on its own.
    WaitEvict {
        realm: String,
        pid: u64,
        timeout_ms: u64,
    },
    Kill {
        realm: String,
        pid: u64,
    },
    /// Where the start of proc `pid` went ([`WireStartTimes`]).
    StartTimes {
        realm: String,
        pid: u64,
    },
    Evict {
        realm: String,
        pid: u64,
    },
    Ps {
        realm: String,
    },
    Logs {
        realm: String,
        pid: u64,
        offset: u64,
        max_bytes: u32,
    },
    /// A piece of binary `name` of `total` bytes at `offset`, in the upload
    /// `upload` (a number the client picks); the piece that ends at `total`
    /// puts the binary in the store.
    BinPut {
        name: String,
        upload: u64,
        offset: u64,
        total: u64,
        data: Bytes,
    },
    BinList,
    BinRemove {
        name: String,
    },
}

fn count(r: &mut Reader, max: usize) -> Result<usize, DecodeError> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(DecodeError::TooLarge { len: n, max });
    }
    Ok(n)
}

impl ProcRequest {
    /// The method id this request travels under.
    pub fn method(&self) -> u32 {
        use method::*;
        match self {
            ProcRequest::Spawn { .. } => SPAWN,
            ProcRequest::WaitExit { .. } => WAIT_EXIT,
            ProcRequest::WaitStart { .. } => WAIT_START,
            ProcRequest::Started { .. } => STARTED,
            ProcRequest::Exited { .. } => EXITED,
            ProcRequest::WaitEvict { .. } => WAIT_EVICT,
            ProcRequest::Kill { .. } => KILL,
            ProcRequest::StartTimes { .. } => START_TIMES,
            ProcRequest::Evict { .. } => EVICT,
            ProcRequest::Ps { .. } => PS,
            ProcRequest::Logs { .. } => LOGS,
            ProcRequest::BinPut { .. } => BIN_PUT,
            ProcRequest::BinList => BIN_LIST,
            ProcRequest::BinRemove { .. } => BIN_REMOVE,
        }
    }

    /// The realm the request acts in (none for the binary store's requests).
    pub fn realm(&self) -> Option<&str> {
        match self {
            ProcRequest::Spawn { realm, .. }
            | ProcRequest::WaitExit { realm, .. }
            | ProcRequest::WaitStart { realm, .. }
            | ProcRequest::Started { realm, .. }
            | ProcRequest::Exited { realm, .. }
            | ProcRequest::WaitEvict { realm, .. }
            | ProcRequest::Kill { realm, .. }
            | ProcRequest::StartTimes { realm, .. }
            | ProcRequest::Evict { realm, .. }
            | ProcRequest::Ps { realm }
            | ProcRequest::Logs { realm, .. } => Some(realm),
            ProcRequest::BinPut { .. } | ProcRequest::BinList | ProcRequest::BinRemove { .. } => None,
        }
    }

    /// For the requests only a proc may make about itself (`Started`,
    /// `Exited`, `WaitEvict`), the pid it names.
    pub fn self_pid(&self) -> Option<u64> {
        match self {
            ProcRequest::Started { pid, .. } | ProcRequest::Exited { pid, .. } | ProcRequest::WaitEvict { pid, .. } => {
                Some(*pid)
            }
            _ => None,
        }
    }

    /// Whether `method` belongs to this protocol.
    pub fn is_proc_method(method: u32) -> bool {
        (300..400).contains(&method)
    }

    /// Checks what the encoder would otherwise assert: the request's sizes
    /// are within this protocol's limits. The error names the limit.
    pub fn check(&self) -> Result<(), String> {
        let str_ok = |what: &str, s: &str| {
            if s.len() > STRING_BYTES_MAX {
                Err(format!(
                    "{what} of {} bytes exceeds {STRING_BYTES_MAX} (STRING_BYTES_MAX)",
                    s.len()
                ))
            } else {
                Ok(())
            }
        };
        str_ok("the realm name", self.realm().unwrap_or(""))?;
        if let ProcRequest::BinPut { name, data, .. } = self {
            str_ok("the binary's name", name)?;
            if data.len() > BIN_PIECE_BYTES_MAX {
                return Err(format!(
                    "a piece of {} bytes exceeds {BIN_PIECE_BYTES_MAX} (BIN_PIECE_BYTES_MAX)",
                    data.len()
                ));
            }
        }
        if let ProcRequest::BinRemove { name } = self {
            str_ok("the binary's name", name)?;
        }
        if let ProcRequest::Spawn { program, args, env, .. } = self {
            if program.len() > PROGRAM_BYTES_MAX {
                return Err(format!(
                    "a program name of {} bytes exceeds {PROGRAM_BYTES_MAX} (PROGRAM_BYTES_MAX)",
                    program.len()
                ));
            }
            if args.len() > ARGS_MAX {
                return Err(format!("{} arguments exceed {ARGS_MAX} (ARGS_MAX)", args.len()));
            }
            if env.len() > ENV_MAX {
                return Err(format!(
                    "{} environment variables exceed {ENV_MAX} (ENV_MAX)",
                    env.len()
                ));
            }
            for a in args {
                str_ok("an argument", a)?;
            }
            for (k, v) in env {
                str_ok("an environment variable's name", k)?;
                str_ok("an environment variable's value", v)?;
            }
        }
        Ok(())
    }

    /// Appends the payload. Panics if a limit is exceeded: call
    /// [`check`](Self::check) first on anything a user typed.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = Writer(out);
        match self {
            ProcRequest::Spawn {
                realm,
                program,
                args,
                env,
                class,
                mem_mib,
            } => {
                assert!(program.len() <= PROGRAM_BYTES_MAX && args.len() <= ARGS_MAX && env.len() <= ENV_MAX);
                w.str(realm).str(program);
                class.write(&mut w);
                w.u32(*mem_mib).u32(args.len() as u32);
                for a in args {
                    w.str(a);
                }
                w.u32(env.len() as u32);
                for (k, v) in env {
                    w.str(k).str(v);
                }
            }
            ProcRequest::WaitExit { realm, pid, timeout_ms }
            | ProcRequest::WaitStart { realm, pid, timeout_ms }
            | ProcRequest::WaitEvict { realm, pid, timeout_ms } => {
                w.str(realm).u64(*pid).u64(*timeout_ms);
            }
            ProcRequest::Started { realm, pid } => {
                w.str(realm).u64(*pid);
            }
            ProcRequest::Exited { realm, pid, status } => {
                w.str(realm).u64(*pid);
                status.encode(w.0);
            }
            ProcRequest::Kill { realm, pid }
            | ProcRequest::Evict { realm, pid }
            | ProcRequest::StartTimes { realm, pid } => {
                w.str(realm).u64(*pid);
            }
            ProcRequest::Ps { realm } => {
                w.str(realm);
            }
            ProcRequest::Logs {
                realm,
                pid,
                offset,
                max_bytes,
            } => {
                w.str(realm).u64(*pid).u64(*offset).u32(*max_bytes);
            }
            ProcRequest::BinPut {
                name,
                upload,
                offset,
                total,
                data,
            } => {
                assert!(data.len() <= BIN_PIECE_BYTES_MAX);
                w.str(name).u64(*upload).u64(*offset).u64(*total).bytes(data);
            }
            ProcRequest::BinList => {}
            ProcRequest::BinRemove { name } => {
                w.str(name);
            }
        }
    }

    /// Parses the payload of `method`.
    pub fn decode(method: u32, payload: Bytes) -> Result<ProcRequest, DecodeError> {
        use method::*;
        let mut r = Reader::new(payload);
        let req = match method {
            SPAWN => {
                let realm = r.str()?;
                let program = r.str()?;
                if program.len() > PROGRAM_BYTES_MAX {
                    return Err(DecodeError::TooLarge {
                        len: program.len(),
                        max: PROGRAM_BYTES_MAX,
                    });
                }
                let class = WireClass::read(&mut r)?;
                let mem_mib = r.u32()?;
                let n = count(&mut r, ARGS_MAX)?;
                let mut args = Vec::with_capacity(n);
                for _ in 0..n {
                    args.push(r.str()?);
                }
                let n = count(&mut r, ENV_MAX)?;
                let mut env = Vec::with_capacity(n);
                for _ in 0..n {
                    env.push((r.str()?, r.str()?));
                }
                ProcRequest::Spawn {
                    realm,
                    program,
                    args,
                    env,
                    class,
                    mem_mib,
                }
            }
            WAIT_EXIT => ProcRequest::WaitExit {
                realm: r.str()?,
                pid: r.u64()?,
                timeout_ms: r.u64()?,
            },
            WAIT_START => ProcRequest::WaitStart {
                realm: r.str()?,
                pid: r.u64()?,
                timeout_ms: r.u64()?,
            },
            STARTED => ProcRequest::Started {
                realm: r.str()?,
                pid: r.u64()?,
            },
            EXITED => ProcRequest::Exited {
                realm: r.str()?,
                pid: r.u64()?,
                status: WireStatus::read(&mut r)?,
            },
            WAIT_EVICT => ProcRequest::WaitEvict {
                realm: r.str()?,
                pid: r.u64()?,
                timeout_ms: r.u64()?,
            },
            KILL => ProcRequest::Kill {
                realm: r.str()?,
                pid: r.u64()?,
            },
            EVICT => ProcRequest::Evict {
                realm: r.str()?,
                pid: r.u64()?,
            },
            START_TIMES => ProcRequest::StartTimes {
                realm: r.str()?,
                pid: r.u64()?,
            },
            PS => ProcRequest::Ps { realm: r.str()? },
            LOGS => ProcRequest::Logs {
                realm: r.str()?,
                pid: r.u64()?,
                offset: r.u64()?,
                max_bytes: r.u32()?,
            },
            BIN_PUT => {
                let (name, upload, offset, total, data) = (r.str()?, r.u64()?, r.u64()?, r.u64()?, r.bytes()?);
                if data.len() > BIN_PIECE_BYTES_MAX {
                    return Err(DecodeError::TooLarge {
                        len: data.len(),
                        max: BIN_PIECE_BYTES_MAX,
                    });
                }
                ProcRequest::BinPut {
                    name,
                    upload,
                    offset,
                    total,
                    data,
                }
            }
            BIN_LIST => ProcRequest::BinList,
            BIN_REMOVE => ProcRequest::BinRemove { name: r.str()? },
            other => return Err(DecodeError::MethodOutOfRange(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

/// How a proc ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireStatus {
    /// Still starting or running.
    Running,
    /// Exited with code 0.
    Ok,
    /// Evicted.
    Evicted,
    /// Exited with a non-zero code.
    Error(i32),
    /// Killed by a signal it did not ask for (a crash, an OOM kill, a kill).
    Crashed(i32),
    /// Its binary could not be fetched; why.
    FetchFailed(String),
    /// It was refused (a bad program, a sandbox step that failed); why.
    Denied(String),
    /// Its sigmad died (killed with -9, crashed) while it ran; the next
    /// sigmad on the same data directory killed it. Why.
    Lost(String),
}

impl WireStatus {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = Writer(out);
        match self {
            WireStatus::Running => w.u8(0).u32(0).str(""),
            WireStatus::Ok => w.u8(1).u32(0).str(""),
            WireStatus::Evicted => w.u8(2).u32(0).str(""),
            WireStatus::Error(code) => w.u8(3).u32(*code as u32).str(""),
            WireStatus::Crashed(sig) => w.u8(4).u32(*sig as u32).str(""),
            WireStatus::FetchFailed(why) => w.u8(5).u32(0).str(cut(why)),
            WireStatus::Denied(why) => w.u8(6).u32(0).str(cut(why)),
            WireStatus::Lost(why) => w.u8(7).u32(0).str(cut(why)),
        };
    }

    fn read(r: &mut Reader) -> Result<WireStatus, DecodeError> {
        let (kind, n, why) = (r.u8()?, r.u32()?, r.str()?);
        let plain = |s: WireStatus| {
            if n == 0 && why.is_empty() {
                Ok(s)
            } else {
                Err(DecodeError::BadField("extra fields in a proc status"))
            }
        };
        match kind {
            0 => plain(WireStatus::Running),
            1 => plain(WireStatus::Ok),
            2 => plain(WireStatus::Evicted),
            3 | 4 if !why.is_empty() => Err(DecodeError::BadField("a message in an exit status")),
            3 => Ok(WireStatus::Error(n as i32)),
            4 => Ok(WireStatus::Crashed(n as i32)),
            5..=7 if n != 0 => Err(DecodeError::BadField("a code in a refusal status")),
            5 => Ok(WireStatus::FetchFailed(why)),
            6 => Ok(WireStatus::Denied(why)),
            7 => Ok(WireStatus::Lost(why)),
            _ => Err(DecodeError::BadField("unknown proc status")),
        }
    }

    /// Parses a status reply.
    pub fn decode(payload: Bytes) -> Result<WireStatus, DecodeError> {
        let mut r = Reader::new(payload);
        let s = WireStatus::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    /// The exit code `sigmactl wait` ends with: the proc's own code, 128 +
    /// the signal for a crash, and 1 for a proc that never ran.
    pub fn exit_code(&self) -> i32 {
        match self {
            WireStatus::Running | WireStatus::Ok => 0,
            WireStatus::Error(code) => *code,
            WireStatus::Crashed(sig) => 128 + sig,
            WireStatus::Evicted | WireStatus::FetchFailed(_) | WireStatus::Denied(_) | WireStatus::Lost(_) => 1,
        }
    }
}

impl std::fmt::Display for WireStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireStatus::Running => write!(f, "running"),
            WireStatus::Ok => write!(f, "ok"),
            WireStatus::Evicted => write!(f, "evicted"),
            WireStatus::Error(code) => write!(f, "error({code})"),
            WireStatus::Crashed(sig) => write!(f, "crashed(signal {sig})"),
            WireStatus::FetchFailed(why) => write!(f, "fetch-failed: {why}"),
            WireStatus::Denied(why) => write!(f, "denied: {why}"),
            WireStatus::Lost(why) => write!(f, "lost: {why}"),
        }
    }
}

/// A message cut to [`STRING_BYTES_MAX`] at a character boundary.
fn cut(s: &str) -> &str {
    crate::codec::truncate_at(s, STRING_BYTES_MAX)
}

/// One line of `ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireProc {
    /// σ pid (unique on this machine).
    pub pid: u64,
    /// The program it runs.
    pub program: String,
    /// LC or BE.
    pub class: WireClass,
    /// Memory limit, MiB.
    pub mem_mib: u32,
    /// Running, or how it ended.
    pub status: WireStatus,
}

impl WireProc {
    /// Appends a list of procs.
    pub fn encode_list(procs: &[WireProc], out: &mut BytesMut) {
        assert!(procs.len() <= PS_ENTRIES_MAX);
        Writer(out).u32(procs.len() as u32);
        for p in procs {
            let mut w = Writer(out);
            w.u64(p.pid).str(cut(&p.program));
            p.class.write(&mut w);
            w.u32(p.mem_mib);
            p.status.encode(out);
        }
    }

    /// Parses a list of procs.
    pub fn decode_list(payload: Bytes) -> Result<Vec<WireProc>, DecodeError> {
        let mut r = Reader::new(payload);
        let n = count(&mut r, PS_ENTRIES_MAX)?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let pid = r.u64()?;
            let program = r.str()?;
            let class = WireClass::read(&mut r)?;
            let mem_mib = r.u32()?;
            let status = WireStatus::read(&mut r)?;
            out.push(WireProc {
                pid,
                program,
                class,
                mem_mib,
                status,
            });
        }
        r.finish()?;
        Ok(out)
    }
}

/// A binary in the store, as `bin ls` and `bin put` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBin {
    /// `NAME@VERSION`.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its digest, as text (`blake3:` and hex digits).
    pub digest: String,
}

impl WireBin {
    /// Appends a list of binaries.
    pub fn encode_list(bins: &[WireBin], out: &mut BytesMut) {
        assert!(bins.len() <= PS_ENTRIES_MAX);
        Writer(out).u32(bins.len() as u32);
        for b in bins {
            Writer(out).str(cut(&b.name)).u64(b.bytes).str(cut(&b.digest));
        }
    }

    /// Parses a list of binaries.
    pub fn decode_list(payload: Bytes) -> Result<Vec<WireBin>, DecodeError> {
        let mut r = Reader::new(payload);
        let n = count(&mut r, PS_ENTRIES_MAX)?;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(WireBin {
                name: r.str()?,
                bytes: r.u64()?,
                digest: r.str()?,
            });
        }
        r.finish()?;
        Ok(out)
    }
}

/// Where one proc's start went, in µs, as sigmad measured it: from the
/// spawn request's arrival to the reply, split into its steps. The sandbox
/// steps are those of `sigma_sandbox::SpawnSteps`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStartTimes {
    /// The request's arrival to its reply being ready.
    pub total_us: u64,
    /// Getting the binary's path from the cache (a fetch from the store
    /// and its digest when cold).
    pub fetch_us: u64,
    /// The binary ready to the sandbox's first step: the hop to a spawner
    /// thread, the realm's set-up if it is new on this machine, the log
    /// pipe, control socket and live record.
    pub schedule_us: u64,
    /// Sandbox: clone with new namespaces, joining the realm's netns.
    pub namespaces_us: u64,
    /// Sandbox: the proc's cgroups, made and joined.
    pub cgroups_us: u64,
    /// Sandbox: the jail, fds, rlimits, credentials, capabilities.
    pub jail_us: u64,
    /// Sandbox: installing the seccomp filter.
    pub seccomp_us: u64,
    /// Sandbox: the filter installed to the exec seen by the spawner.
    pub exec_us: u64,
    /// The exec seen to the reply ready (the hop back from the spawner).
    pub reply_us: u64,
    /// A warm sandbox started it: its namespaces, jail, credentials and
    /// filter were made ahead (those steps read 0), and `cgroups_us` is
    /// the spawner writing the limits and sending the request.
    pub warm: bool,
}

impl WireStartTimes {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = Writer(out);
        for v in [
            self.total_us,
            self.fetch_us,
            self.schedule_us,
            self.namespaces_us,
            self.cgroups_us,
            self.jail_us,
            self.seccomp_us,
            self.exec_us,
            self.reply_us,
        ] {
            w.u64(v);
        }
        w.u8(u8::from(self.warm));
    }

    /// Parses a start-times reply.
    pub fn decode(payload: Bytes) -> Result<WireStartTimes, DecodeError> {
        let mut r = Reader::new(payload);
        let t = WireStartTimes {
            total_us: r.u64()?,
            fetch_us: r.u64()?,
            schedule_us: r.u64()?,
            namespaces_us: r.u64()?,
            cgroups_us: r.u64()?,
            jail_us: r.u64()?,
            seccomp_us: r.u64()?,
            exec_us: r.u64()?,
            reply_us: r.u64()?,
            warm: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::BadField("warm is neither 0 nor 1")),
            },
        };
        r.finish()?;
        Ok(t)
    }
}

/// A piece of a proc's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireLogChunk {
    /// The offset after these bytes (ask from there next).
    pub next_offset: u64,
    /// Whether the log is complete (the proc has ended and all was read).
    pub done: bool,
    /// The bytes, from the offset asked for.
    pub data: Bytes,
}

impl WireLogChunk {
    /// Appends the encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        assert!(self.data.len() <= LOG_CHUNK_BYTES_MAX as usize);
        Writer(out)
            .u64(self.next_offset)
            .u8(u8::from(self.done))
            .bytes(&self.data);
    }

    /// Parses a log reply.
    pub fn decode(payload: Bytes) -> Result<WireLogChunk, DecodeError> {
        let mut r = Reader::new(payload);
        let next_offset = r.u64()?;
        let done = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::BadField("done is not 0 or 1")),
        };
        let data = r.bytes()?;
        if data.len() > LOG_CHUNK_BYTES_MAX as usize {
            return Err(DecodeError::TooLarge {
                len: data.len(),
                max: LOG_CHUNK_BYTES_MAX as usize,
            });
        }
        r.finish()?;
        Ok(WireLogChunk {
            next_offset,
            done,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(req: ProcRequest) {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        assert_eq!(ProcRequest::decode(req.method(), out.freeze()).unwrap(), req);
    }

    #[test]
    fn requests_round_trip() {
        round_trip(ProcRequest::Spawn {
            realm: "r".into(),
            program: "trivial@1".into(),
            args: vec!["a".into(), "".into()],
            env: vec![("K".into(), "V".into())],
            class: WireClass::Lc { mcpu: 500 },
            mem_mib: 64,
        });
        round_trip(ProcRequest::Spawn {
            realm: "r".into(),
            program: "x".into(),
            args: vec![],
            env: vec![],
            class: WireClass::Be,
            mem_mib: 0,
        });
        round_trip(ProcRequest::WaitExit {
            realm: "r".into(),
            pid: 7,
            timeout_ms: 9,
        });
        round_trip(ProcRequest::Kill {
            realm: "r".into(),
            pid: 7,
        });
        round_trip(ProcRequest::Evict {
            realm: "r".into(),
            pid: 7,
        });
        round_trip(ProcRequest::Ps { realm: "r".into() });
        round_trip(ProcRequest::Logs {
            realm: "r".into(),
            pid: 1,
            offset: 2,
            max_bytes: 3,
        });
        round_trip(ProcRequest::BinPut {
            name: "x@1".into(),
            upload: 9,
            offset: 0,
            total: 3,
            data: Bytes::from_static(b"abc"),
        });
        round_trip(ProcRequest::BinList);
        round_trip(ProcRequest::WaitStart {
            realm: "r".into(),
            pid: 4,
            timeout_ms: 5,
        });
        round_trip(ProcRequest::Started {
            realm: "r".into(),
            pid: 4,
        });
        round_trip(ProcRequest::Exited {
            realm: "r".into(),
            pid: 4,
            status: WireStatus::Error(2),
        });
        round_trip(ProcRequest::WaitEvict {
            realm: "r".into(),
            pid: 4,
            timeout_ms: 6,
        });
        round_trip(ProcRequest::StartTimes {
            realm: "r".into(),
            pid: 9,
        });
        round_trip(ProcRequest::BinRemove { name: "x".into() });
    }

    #[test]
    fn start_times_round_trip_and_a_short_one_is_refused() {
        let t = WireStartTimes {
            total_us: 1,
            fetch_us: 2,
            schedule_us: 3,
            namespaces_us: 4,
            cgroups_us: 5,
            jail_us: 6,
            seccomp_us: 7,
            exec_us: 8,
            reply_us: 9,
            warm: true,
        };
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(WireStartTimes::decode(out.clone().freeze()).unwrap(), t);
        assert!(WireStartTimes::decode(out.clone().freeze().slice(1..)).is_err());
        let mut bad = out.to_vec();
        *bad.last_mut().unwrap() = 2;
        assert!(WireStartTimes::decode(Bytes::from(bad)).is_err());
    }

    #[test]
    fn statuses_and_lists_round_trip() {
        for s in [
            WireStatus::Running,
            WireStatus::Ok,
            WireStatus::Evicted,
            WireStatus::Error(-3),
            WireStatus::Crashed(9),
            WireStatus::FetchFailed("gone".into()),
            WireStatus::Denied("no".into()),
            WireStatus::Lost("sigmad was killed".into()),
        ] {
            let mut out = BytesMut::new();
            s.encode(&mut out);
            assert_eq!(WireStatus::decode(out.freeze()).unwrap(), s);
        }
        let procs = vec![WireProc {
            pid: 3,
            program: "p".into(),
            class: WireClass::Be,
            mem_mib: 5,
            status: WireStatus::Crashed(11),
        }];
        let mut out = BytesMut::new();
        WireProc::encode_list(&procs, &mut out);
        assert_eq!(WireProc::decode_list(out.freeze()).unwrap(), procs);
    }

    #[test]
    fn check_names_the_limit() {
        let req = ProcRequest::Spawn {
            realm: "r".into(),
            program: "p".repeat(PROGRAM_BYTES_MAX + 1),
            args: vec![],
            env: vec![],
            class: WireClass::Be,
            mem_mib: 0,
        };
        assert!(req.check().unwrap_err().contains("PROGRAM_BYTES_MAX"));
    }
}
