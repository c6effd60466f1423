//! sigmactl: the command-line client of sigmad's admin socket.
//!
//! Human output by default, `--json` for scripts. The exit status follows
//! one table, [`EXIT_STATUS`], which `--help` prints and the README repeats.
//! Every argument and all input is checked before anything is sent (with
//! the client library's own checks, which are sigmad's), so bad input gets
//! a message that says what is wrong and what the limit is, never a panic.
//! Names print escaped: a name cannot forge a line of output or reach the
//! terminal as an escape sequence.

use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use sigma_control::admin::{
    check_path, check_request, AdminClient, AdminError, OUTCOME_UNKNOWN, PROTOCOL, WATCH_TIMEOUT_MAX,
};
use sigma_control::client::{Mode, NsClient, MOUNT_UNAVAILABLE, WRITE_READ_BYTES_MAX};
use sigma_control::ns::FILE_BYTES_MAX;
use sigma_ep::ns::{Endpoint, NsRequest, WireStat};
use sigma_ep::proc::{ProcRequest, WireBin, WireClass, WireLogChunk, WireProc, WireStartTimes, WireStatus};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The exit codes, as `--help` prints them (the README has the same table;
/// `tools/tests/sigmactl.rs` checks both against what sigmactl does).
const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  refused: sigmad, the store or the server mounted over the path answered with an error (also a watch that timed out, and a mounted server that cannot be reached)
  2  usage (bad arguments, input beyond a limit, output that cannot be written), or sigmad cannot be reached (not running, wrong --sock, not sigmad at the socket)
  3  outcome unknown: a change was sent, but whether it was applied is unknown (read before retrying)
`wait` exits with the proc's own exit code instead (128 + N if signal N ended it, 1 if it never ran).";

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Command-line client of sigmad.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_STATUS)]
struct Cli {
    /// sigmad's admin socket (or $SIGMA_SOCK).
    #[arg(long, global = true, env = "SIGMA_SOCK", default_value = "sigma-data/sigmad.sock")]
    sock: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Realms: create, list, remove.
    Realm {
        #[command(subcommand)]
        cmd: RealmCmd,
    },
    /// The namespace of one realm.
    Ns {
        /// The realm.
        #[arg(long, short)]
        realm: OsString,
        #[command(subcommand)]
        cmd: NsCmd,
    },
    /// Start a proc: NAME[@VERSION] from the binary store, in a σcontainer;
    /// prints its pid once it runs.
    Spawn {
        /// The realm it runs in.
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        /// Latency-critical, reserving this many milli-cores.
        #[arg(long, value_name = "MCPU", conflicts_with = "be")]
        lc: Option<u32>,
        /// Best-effort (the default): runs on what LC procs leave idle.
        #[arg(long)]
        be: bool,
        /// Memory limit, MiB (default 256).
        #[arg(long, value_name = "MIB", default_value_t = 0)]
        mem: u32,
        /// An environment variable for the proc (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<OsString>,
        /// The program.
        program: OsString,
        /// Its arguments (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// List a realm's procs.
    Ps {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
    },
    /// Wait until a proc ends; print its status and exit with its code.
    Wait {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        pid: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Wait only until the proc says it started (or ends): prints
        /// `running` if it started and still runs.
        #[arg(long)]
        start: bool,
    },
    /// Kill a proc (SIGKILL to its whole pid namespace).
    Kill {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        pid: u64,
    },
    /// Evict a proc: it ends with status `evicted`.
    Evict {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        pid: u64,
    },
    /// Where a proc's start went, step by step (µs, as sigmad measured it).
    Times {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        pid: u64,
    },
    /// Print a proc's output (stdout and stderr, bounded).
    Logs {
        #[arg(long, short, default_value = "root")]
        realm: OsString,
        pid: u64,
        /// Keep printing until the proc ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// The binary store: put, list, remove.
    Bin {
        #[command(subcommand)]
        cmd: BinCmd,
    },
}

#[derive(Subcommand, Debug)]
enum BinCmd {
    /// Put a static executable in the store as NAME[@VERSION].
    Put { name: OsString, file: PathBuf },
    /// List the binaries in the store.
    Ls,
    /// Remove a binary from the store.
    Rm { name: OsString },
}

#[derive(Subcommand, Debug)]
enum RealmCmd {
    /// Create a realm.
    Create { name: OsString },
    /// List realms.
    Ls,
    /// Remove a realm and everything in it.
    Rm { name: OsString },
}

#[derive(Subcommand, Debug)]
enum NsCmd {
    /// List a directory.
    Ls {
        #[arg(default_value = "/")]
        path: OsString,
    },
    /// Print a file's contents.
    Cat { path: OsString },
    /// Write a file (created if missing) from --data or stdin.
    Put {
        path: OsString,
        /// The contents, any bytes (default: read stdin).
        #[arg(long)]
        data: Option<OsString>,
    },
    /// Create a directory.
    Mkdir { path: OsString },
    /// Remove an entry (a directory only when empty).
    Rm { path: OsString },
    /// Rename an entry atomically.
    Mv { from: OsString, to: OsString },
    /// Show what is known about an entry.
    Stat { path: OsString },
    /// Mount an endpoint (`tcp:HOST:PORT` or `unix:/PATH`) at a path.
    Mount { path: OsString, endpoint: OsString },
    /// RPC through a file: send --data (or stdin) to the server mounted over
    /// PATH (`write_read`) and print its reply.
    Call {
        path: OsString,
        /// The request, any bytes (default: read stdin).
        #[arg(long)]
        data: Option<OsString>,
    },
    /// Wait until a path exists.
    Watch {
        path: OsString,
        /// Give up after this many seconds (at most 3600).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Who said no: decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// sigmactl itself, before sending anything (or while writing output).
    Local,
    /// sigmad (or the store behind it), or the attempt to reach it.
    Sigmad,
    /// The server mounted over a path, reached directly.
    Mount,
}

#[derive(Debug)]
struct Failure {
    source: Source,
    error: AdminError,
}

impl Failure {
    fn local(error: AdminError) -> Failure {
        Failure {
            source: Source::Local,
            error,
        }
    }
    fn sigmad(error: AdminError) -> Failure {
        Failure {
            source: Source::Sigmad,
            error,
        }
    }
    fn mount(error: AdminError) -> Failure {
        Failure {
            source: Source::Mount,
            error,
        }
    }
    fn usage(message: String) -> Failure {
        Failure::local(AdminError {
            kind: "usage".into(),
            message,
        })
    }

    /// The exit status, by [`EXIT_STATUS`].
    fn exit_code(&self) -> u8 {
        if self.error.kind == OUTCOME_UNKNOWN {
            return EXIT_OUTCOME_UNKNOWN;
        }
        match self.source {
            Source::Local => EXIT_USAGE,
            Source::Mount => EXIT_REFUSED,
            Source::Sigmad => match self.error.kind.as_str() {
                // sigmad cannot be reached, or what answers is not sigmad.
                "unavailable" => EXIT_USAGE,
                k if k == PROTOCOL => EXIT_USAGE,
                // sigmad found the arguments ill-formed: usage, whoever noticed.
                "invalid-path" | "invalid-realm" => EXIT_USAGE,
                _ => EXIT_REFUSED,
            },
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "dir",
        2 => "file",
        3 => "mount",
        _ => "?",
    }
}

/// A name as human output shows it: printable characters as they are,
/// anything else (control characters, DEL, C1, invisible format
/// characters) and the backslash escaped as in Rust source (`\n`,
/// `\u{1b}`, `\\`), so a name is one unambiguous token on one line.
fn shown_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '"' | '\'' => c.to_string(),
            c => c.escape_debug().to_string(),
        })
        .collect()
}

/// A message as stderr shows it: like [`shown_name`], but backslashes stay
/// (a message quotes paths with their own escapes).
fn shown_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\'' | '\\' => c.to_string(),
            c => c.escape_debug().to_string(),
        })
        .collect()
}

/// Bytes for JSON: text if they are UTF-8, else base64; `encoding` says which.
fn json_bytes(field: &str, bytes: &[u8]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            out.insert("encoding".into(), "utf-8".into());
            out.insert(field.into(), text.into());
        }
        Err(_) => {
            out.insert("encoding".into(), "base64".into());
            out.insert(
                field.into(),
                base64::engine::general_purpose::STANDARD.encode(bytes).into(),
            );
        }
    }
    serde_json::Value::Object(out)
}

fn stat_json(s: &WireStat) -> serde_json::Value {
    serde_json::json!({
        "name": s.name, "kind": kind_name(s.kind), "perm": format!("{:o}", s.perm),
        "len": s.len, "version": s.version, "lease": (s.lease != 0).then_some(s.lease),
    })
}

fn stat_line(s: &WireStat, out: &mut Vec<u8>) {
    let lease = if s.lease != 0 {
        format!(" lease {}", s.lease)
    } else {
        String::new()
    };
    let line = format!(
        "{} {:o} {:>8} v{} {}{lease}\n",
        kind_name(s.kind),
        s.perm,
        s.len,
        s.version,
        shown_name(&s.name)
    );
    out.extend_from_slice(line.as_bytes());
}

fn json_line(value: serde_json::Value, out: &mut Vec<u8>) {
    out.extend_from_slice(value.to_string().as_bytes());
    out.push(b'\n');
}

/// An argument as text: names in the namespace are UTF-8.
fn text(arg: OsString, what: &str) -> Result<String, Failure> {
    arg.into_string().map_err(|arg| {
        Failure::usage(format!(
            "{what} {arg:?} is not UTF-8 (names in the namespace are UTF-8 text)"
        ))
    })
}

/// `data` as given, or stdin, at most `limit` bytes (`limit_on` and
/// `limit_name` say what the limit is for, for the error).
fn data_or_stdin(data: Option<OsString>, limit: usize, limit_on: &str, limit_name: &str) -> Result<Bytes, Failure> {
    let bytes = match data {
        Some(d) => d.into_vec(),
        None => {
            let mut buf = Vec::new();
            // Read one byte past the limit, never all of an endless stdin.
            std::io::stdin()
                .take(limit as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
            if buf.len() > limit {
                return Err(Failure::local(AdminError {
                    kind: "too-large".into(),
                    message: format!(
                        "stdin holds more than {limit} bytes: the {limit}-byte limit on {limit_on} ({limit_name})"
                    ),
                }));
            }
            buf
        }
    };
    if bytes.len() > limit {
        return Err(Failure::local(AdminError {
            kind: "too-large".into(),
            message: format!(
                "--data of {} bytes exceeds the {limit}-byte limit on {limit_on} ({limit_name})",
                bytes.len()
            ),
        }));
    }
    Ok(Bytes::from(bytes))
}

async fn connect(cli_sock: &std::path::Path) -> Result<AdminClient, Failure> {
    AdminClient::connect(cli_sock).await.map_err(Failure::sigmad)
}

async fn run(cli: Cli) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let json = cli.json;
    let sock = cli.sock;
    match cli.cmd {
        Cmd::Realm { cmd } => {
            let req = match cmd {
                RealmCmd::Create { name } => NsRequest::CreateRealm {
                    realm: text(name, "the realm name")?,
                },
                RealmCmd::Ls => NsRequest::ListRealms,
                RealmCmd::Rm { name } => NsRequest::RemoveRealm {
                    realm: text(name, "the realm name")?,
                },
            };
            check_request(&req).map_err(Failure::local)?;
            let client = connect(&sock).await?;
            match &req {
                NsRequest::ListRealms => {
                    let realms = client.call_strings(&req).await.map_err(Failure::sigmad)?;
                    if json {
                        json_line(serde_json::json!(realms), &mut out);
                    } else {
                        for r in &realms {
                            out.extend_from_slice(format!("{}\n", shown_name(r)).as_bytes());
                        }
                    }
                }
                NsRequest::CreateRealm { realm } | NsRequest::RemoveRealm { realm } => {
                    client.call(&req, None).await.map_err(Failure::sigmad)?;
                    if json {
                        let verb = if matches!(req, NsRequest::CreateRealm { .. }) {
                            "created"
                        } else {
                            "removed"
                        };
                        json_line(serde_json::json!({ verb: realm }), &mut out);
                    }
                }
                _ => unreachable!("a realm command builds a realm request"),
            }
        }
        Cmd::Ns { realm, cmd } => {
            let realm = text(realm, "the realm name")?;
            run_ns(&sock, realm, cmd, json, &mut out).await?;
        }
        cmd => run_proc(&sock, cmd, json, &mut out).await?,
    }
    Ok(out)
}

/// The exit status `wait` asks for (the proc's own), if any.
static EXIT_WITH: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn status_json(s: &WireStatus) -> serde_json::Value {
    let (kind, detail) = match s {
        WireStatus::Running => ("running", serde_json::Value::Null),
        WireStatus::Ok => ("ok", serde_json::Value::Null),
        WireStatus::Evicted => ("evicted", serde_json::Value::Null),
        WireStatus::Error(code) => ("error", (*code).into()),
        WireStatus::Crashed(sig) => ("crashed", (*sig).into()),
        WireStatus::FetchFailed(why) => ("fetch-failed", why.as_str().into()),
        WireStatus::Denied(why) => ("denied", why.as_str().into()),
        WireStatus::Lost(why) => ("lost", why.as_str().into()),
    };
    serde_json::json!({ "status": kind, "detail": detail })
}

fn class_text(c: &WireClass) -> String {
    match c {
        WireClass::Lc { mcpu } => format!("lc:{mcpu}"),
        WireClass::Be => "be".into(),
    }
}

fn bin_json(b: &WireBin) -> serde_json::Value {
    serde_json::json!({ "name": b.name, "bytes": b.bytes, "digest": b.digest })
}

/// A binary as `bin ls` and `bin put` print it.
fn bin_line(b: &WireBin, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:<40} {:>10} {}\n", shown_name(&b.name), b.bytes, b.digest).as_bytes());
}

/// Bytes of one `bin put` piece.
const PIECE_BYTES: usize = sigma_ep::proc::BIN_PIECE_BYTES_MAX;

async fn run_proc(sock: &std::path::Path, cmd: Cmd, json: bool, out: &mut Vec<u8>) -> Result<(), Failure> {
    let realm = |r: OsString| text(r, "the realm name");
    let sigmad = Failure::sigmad;
    let req = match cmd {
        Cmd::Spawn {
            realm: r,
            lc,
            be: _,
            mem,
            env,
            program,
            args,
        } => {
            let mut vars = Vec::with_capacity(env.len());
            for e in env {
                let e = text(e, "an --env")?;
                let Some((k, v)) = e.split_once('=') else {
                    return Err(Failure::usage(format!("--env {:?}: expected KEY=VALUE", excerpt(&e))));
                };
                vars.push((k.to_string(), v.to_string()));
            }
            let args = args
                .into_iter()
                .map(|a| text(a, "an argument"))
                .collect::<Result<Vec<_>, _>>()?;
            ProcRequest::Spawn {
                realm: realm(r)?,
                program: text(program, "the program name")?,
                args,
                env: vars,
                class: lc.map_or(WireClass::Be, |mcpu| WireClass::Lc { mcpu }),
                mem_mib: mem,
            }
        }
        Cmd::Ps { realm: r } => ProcRequest::Ps { realm: realm(r)? },
        Cmd::Wait {
            realm: r,
            pid,
            timeout,
            start,
        } => {
            let (realm, timeout_ms) = (realm(r)?, timeout.saturating_mul(1000));
            if start {
                ProcRequest::WaitStart { realm, pid, timeout_ms }
            } else {
                ProcRequest::WaitExit { realm, pid, timeout_ms }
            }
        }
        Cmd::Kill { realm: r, pid } => ProcRequest::Kill { realm: realm(r)?, pid },
        Cmd::Evict { realm: r, pid } => ProcRequest::Evict { realm: realm(r)?, pid },
        Cmd::Times { realm: r, pid } => ProcRequest::StartTimes { realm: realm(r)?, pid },
        Cmd::Logs { realm: r, pid, follow } => ProcRequest::Logs {
            realm: realm(r)?,
            pid,
            offset: 0,
            max_bytes: if follow { 0 } else { sigma_ep::proc::LOG_CHUNK_BYTES_MAX },
        },
        Cmd::Bin { cmd: BinCmd::Ls } => ProcRequest::BinList,
        Cmd::Bin {
            cmd: BinCmd::Rm { name },
        } => ProcRequest::BinRemove {
            name: text(name, "the binary's name")?,
        },
        Cmd::Bin {
            cmd: BinCmd::Put { name, file },
        } => {
            let name = text(name, "the binary's name")?;
            return bin_put(sock, name, &file, json, out).await;
        }
        Cmd::Realm { .. } | Cmd::Ns { .. } => unreachable!("handled by run"),
    };
    req.check().map_err(|message| {
        Failure::local(AdminError {
            kind: "too-large".into(),
            message,
        })
    })?;
    let client = connect(sock).await?;
    match req {
        ProcRequest::Spawn { .. } => {
            let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
            let pid = client
                .decode_proc(reply, |b| {
                    <[u8; 8]>::try_from(&b[..])
                        .map(u64::from_le_bytes)
                        .map_err(|_| sigma_ep::DecodeError::BadField("a pid is 8 bytes"))
                })
                .map_err(sigmad)?;
            if json {
                json_line(serde_json::json!({ "pid": pid }), out);
            } else {
                out.extend_from_slice(format!("{pid}\n").as_bytes());
            }
        }
        ProcRequest::Ps { .. } => {
            let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
            let procs = client.decode_proc(reply, WireProc::decode_list).map_err(sigmad)?;
            if json {
                let rows: Vec<_> = procs
                    .iter()
                    .map(|p| {
                        let mut v = status_json(&p.status);
                        v["pid"] = p.pid.into();
                        v["program"] = p.program.as_str().into();
                        v["class"] = class_text(&p.class).into();
                        v["mem_mib"] = p.mem_mib.into();
                        v
                    })
                    .collect();
                json_line(serde_json::Value::Array(rows), out);
            } else {
                for p in &procs {
                    let line = format!(
                        "{:>6} {:<10} {:>6}MiB {:<24} {}\n",
                        p.pid,
                        class_text(&p.class),
                        p.mem_mib,
                        shown_name(&p.program),
                        shown_name(&p.status.to_string())
                    );
                    out.extend_from_slice(line.as_bytes());
                }
            }
        }
        ProcRequest::WaitExit { .. } | ProcRequest::WaitStart { .. } => {
            let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
            let status = client.decode_proc(reply, WireStatus::decode).map_err(sigmad)?;
            if json {
                json_line(status_json(&status), out);
            } else {
                out.extend_from_slice(format!("{}\n", shown_name(&status.to_string())).as_bytes());
            }
            EXIT_WITH.store(
                status.exit_code().clamp(0, 255) as u8,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        ProcRequest::StartTimes { .. } => {
            let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
            let t = client.decode_proc(reply, WireStartTimes::decode).map_err(sigmad)?;
            let fields = [
                ("total_us", t.total_us),
                ("fetch_us", t.fetch_us),
                ("schedule_us", t.schedule_us),
                ("namespaces_us", t.namespaces_us),
                ("cgroups_us", t.cgroups_us),
                ("jail_us", t.jail_us),
                ("seccomp_us", t.seccomp_us),
                ("exec_us", t.exec_us),
                ("reply_us", t.reply_us),
            ];
            if json {
                let mut map: serde_json::Map<String, serde_json::Value> =
                    fields.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                map.insert("warm".into(), t.warm.into());
                json_line(serde_json::Value::Object(map), out);
            } else {
                for (k, v) in fields {
                    out.extend_from_slice(format!("{k:<14} {v}\n").as_bytes());
                }
                out.extend_from_slice(format!("{:<14} {}\n", "warm", t.warm).as_bytes());
            }
        }
        ProcRequest::Kill { .. } | ProcRequest::Evict { .. } | ProcRequest::BinRemove { .. } => {
            client.call_proc(&req, None).await.map_err(sigmad)?;
        }
        ProcRequest::Logs {
            realm, pid, max_bytes, ..
        } => {
            let follow = max_bytes == 0;
            let mut offset = 0;
            loop {
                let req = ProcRequest::Logs {
                    realm: realm.clone(),
                    pid,
                    offset,
                    max_bytes,
                };
                let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
                let chunk = client.decode_proc(reply, WireLogChunk::decode).map_err(sigmad)?;
                offset = chunk.next_offset;
                if follow {
                    // Streamed as it comes.
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&chunk.data)
                        .and_then(|()| stdout.flush())
                        .map_err(|e| Failure::usage(format!("writing the output: {e}")))?;
                } else {
                    out.extend_from_slice(&chunk.data);
                }
                if chunk.done || (!follow && chunk.data.is_empty()) {
                    break;
                }
            }
        }
        ProcRequest::BinList => {
            let reply = client.call_proc(&req, None).await.map_err(sigmad)?;
            let bins = client.decode_proc(reply, WireBin::decode_list).map_err(sigmad)?;
            if json {
                json_line(serde_json::Value::Array(bins.iter().map(bin_json).collect()), out);
            } else {
                bins.iter().for_each(|b| bin_line(b, out));
            }
        }
        ProcRequest::BinPut { .. }
        | ProcRequest::Started { .. }
        | ProcRequest::Exited { .. }
        | ProcRequest::WaitEvict { .. } => unreachable!("sigmactl builds no {req:?} here"),
    }
    Ok(())
}

/// `bin put`: the file in pieces of at most `BIN_PIECE_BYTES_MAX`; the
/// last piece puts it in the store, which checks it is a static executable.
async fn bin_put(
    sock: &std::path::Path,
    name: String,
    file: &std::path::Path,
    json: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let mut f = std::fs::File::open(file).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    let total = f
        .metadata()
        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?
        .len();
    let limit = sigma_control::bins::limits::BIN_BYTES_MAX;
    if total > limit {
        return Err(Failure::local(AdminError {
            kind: "too-large".into(),
            message: format!(
                "{} holds {total} bytes: a binary is at most {limit} bytes (BIN_BYTES_MAX)",
                file.display()
            ),
        }));
    }
    let client = connect(sock).await?;
    let upload = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    let mut offset = 0u64;
    let mut buf = vec![0u8; PIECE_BYTES];
    loop {
        let want = ((total - offset) as usize).min(PIECE_BYTES);
        f.read_exact(&mut buf[..want])
            .map_err(|e| Failure::usage(format!("reading {}: {e}", file.display())))?;
        let req = ProcRequest::BinPut {
            name: name.clone(),
            upload,
            offset,
            total,
            data: Bytes::copy_from_slice(&buf[..want]),
        };
        req.check().map_err(Failure::usage)?;
        let reply = client.call_proc(&req, None).await.map_err(Failure::sigmad)?;
        offset += want as u64;
        if offset >= total {
            let bins = client
                .decode_proc(reply, WireBin::decode_list)
                .map_err(Failure::sigmad)?;
            for b in &bins {
                if json {
                    json_line(bin_json(b), out);
                } else {
                    bin_line(b, out);
                }
            }
            return Ok(());
        }
    }
}

async fn run_ns(
    sock: &std::path::Path,
    realm: String,
    cmd: NsCmd,
    json: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let path = |p: OsString| text(p, "the path");
    // Build the request, check it whole, and only then connect.
    let (req, data) = match cmd {
        NsCmd::Ls { path: p } => (NsRequest::Readdir { realm, path: path(p)? }, None),
        NsCmd::Cat { path: p } => (NsRequest::Read { realm, path: path(p)? }, None),
        NsCmd::Put { path: p, data } => {
            let path = path(p)?;
            check_path(&path).map_err(Failure::local)?;
            let data = data_or_stdin(data, FILE_BYTES_MAX, "a file", "FILE_BYTES_MAX")?;
            let write = NsRequest::Write {
                realm,
                path,
                data,
                if_version: 0,
            };
            (write, None)
        }
        NsCmd::Mkdir { path: p } => (
            NsRequest::Create {
                realm,
                path: path(p)?,
                perm: 0o755,
                kind: 1,
                data: Bytes::new(),
                lease: 0,
            },
            None,
        ),
        NsCmd::Rm { path: p } => (NsRequest::Remove { realm, path: path(p)? }, None),
        NsCmd::Mv { from, to } => (
            NsRequest::Rename {
                realm,
                from: path(from)?,
                to: path(to)?,
            },
            None,
        ),
        NsCmd::Stat { path: p } => (NsRequest::Stat { realm, path: path(p)? }, None),
        NsCmd::Mount { path: p, endpoint } => {
            let path = path(p)?;
            let endpoint = text(endpoint, "the endpoint")?;
            check_path(&path).map_err(Failure::local)?;
            Endpoint::parse(endpoint.as_bytes())
                .map_err(|e| Failure::usage(format!("endpoint {:?}: {e}", excerpt(&endpoint))))?;
            (
                NsRequest::Mount {
                    realm,
                    path,
                    endpoint: Bytes::from(endpoint),
                    lease: 0,
                },
                None,
            )
        }
        NsCmd::Call { path: p, data } => {
            let path = path(p)?;
            check_path(&path).map_err(Failure::local)?;
            let request = data_or_stdin(
                data,
                WRITE_READ_BYTES_MAX,
                "an RPC through a file",
                "WRITE_READ_BYTES_MAX",
            )?;
            (NsRequest::Open { realm, path }, Some(request))
        }
        NsCmd::Watch { path: p, timeout } => {
            if timeout > WATCH_TIMEOUT_MAX.as_secs() {
                return Err(Failure::usage(format!(
                    "--timeout of {timeout} s exceeds the {}-s limit on a watch (WATCH_TIMEOUT_MAX)",
                    WATCH_TIMEOUT_MAX.as_secs()
                )));
            }
            (
                NsRequest::OpenWatch {
                    realm,
                    path: path(p)?,
                    timeout_ms: timeout * 1000,
                },
                None,
            )
        }
    };
    check_request(&req).map_err(Failure::local)?;

    if let (NsRequest::Open { realm, path }, Some(request)) = (&req, data) {
        // An RPC through a file: sigmad resolves the mount, then the
        // server behind it answers; a failure says which of them failed.
        let ns = NsClient::connect(sock, realm).await.map_err(Failure::sigmad)?;
        let fd = ns.open(path, Mode::ReadWrite).await.map_err(|e| {
            if e.kind == MOUNT_UNAVAILABLE {
                Failure::mount(e)
            } else {
                Failure::sigmad(e)
            }
        })?;
        let reply = ns.write_read(fd, &request).await.map_err(Failure::mount)?;
        if json {
            json_line(json_bytes("reply", &reply), out);
        } else {
            out.extend_from_slice(&reply);
        }
        return Ok(());
    }

    let client = connect(sock).await?;
    let sigmad = Failure::sigmad;
    match req {
        NsRequest::Readdir { .. } => {
            let stats = client.call_stats(&req).await.map_err(sigmad)?;
            if json {
                json_line(serde_json::Value::Array(stats.iter().map(stat_json).collect()), out);
            } else {
                stats.iter().for_each(|s| stat_line(s, out));
            }
        }
        NsRequest::Read { .. } => {
            let data = client.call(&req, None).await.map_err(sigmad)?;
            if json {
                json_line(json_bytes("data", &data), out);
            } else {
                out.extend_from_slice(&data);
            }
        }
        NsRequest::Write {
            ref realm,
            ref path,
            ref data,
            ..
        } => {
            let stat = match client.call_stat(&req).await {
                Err(e) if e.kind == "not-found" => client
                    .call_stat(&NsRequest::Create {
                        realm: realm.clone(),
                        path: path.clone(),
                        perm: 0o644,
                        kind: 2,
                        data: data.clone(),
                        lease: 0,
                    })
                    .await
                    .map_err(sigmad)?,
                other => other.map_err(sigmad)?,
            };
            if json {
                json_line(stat_json(&stat), out);
            }
        }
        NsRequest::Create { .. } | NsRequest::Mount { .. } => {
            let stat = client.call_stat(&req).await.map_err(sigmad)?;
            if json {
                json_line(stat_json(&stat), out);
            }
        }
        NsRequest::Remove { .. } | NsRequest::Rename { .. } => {
            client.call(&req, None).await.map_err(sigmad)?;
        }
        NsRequest::Stat { .. } => {
            let stat = client.call_stat(&req).await.map_err(sigmad)?;
            if json {
                json_line(stat_json(&stat), out);
            } else {
                stat_line(&stat, out);
            }
        }
        NsRequest::OpenWatch { .. } => {
            // The client waits for the watch's own timeout plus a margin.
            let reply = client.call(&req, None).await.map_err(sigmad)?;
            let stat = client.decode_stat(reply).map_err(sigmad)?;
            if json {
                json_line(stat_json(&stat), out);
            } else {
                stat_line(&stat, out);
            }
        }
        other => unreachable!("sigmactl builds no {other:?}"),
    }
    Ok(())
}

/// The start of an argument, for an error message.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    // A CLI should not burn a core: park as soon as there is nothing to do.
    let core = match sigma_dataplane::Core::builder().spin(Duration::ZERO).build() {
        Ok(core) => core,
        Err(e) => {
            eprintln!("sigmactl: cannot start: {}", shown_text(&e.to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = core.block_on(run(cli)).and_then(|output| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&output).and_then(|()| stdout.flush()).map_err(|e| {
            Failure::local(AdminError {
                kind: "output".into(),
                message: format!("writing the output: {e}"),
            })
        })
    });
    match result {
        Ok(()) => ExitCode::from(EXIT_WITH.load(std::sync::atomic::Ordering::Relaxed)),
        Err(failure) => {
            let e = &failure.error;
            if json {
                let line = serde_json::json!({ "error": e.kind, "message": e.message });
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            // On stderr in both modes: a script that reads only stdout still
            // leaves the reason in its log.
            let _ = writeln!(std::io::stderr(), "sigmactl: {}", shown_text(&e.message));
            ExitCode::from(failure.exit_code())
        }
    }
}
