//! sigmactl: the command-line client of sigmad's admin socket.
//!
//! Human output by default, `--json` for scripts. Exit status: 0 on
//! success, 1 when sigmad refused the request (the message says why),
//! 2 on bad usage or when sigmad cannot be reached.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use sigma_control::admin::{check_path, AdminClient, AdminError};
use sigma_control::client::{Mode, NsClient};
use sigma_ep::ns::{Endpoint, NsRequest, WireStat};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Command-line client of sigmad.
#[derive(Parser, Debug)]
#[command(version)]
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
        realm: String,
        #[command(subcommand)]
        cmd: NsCmd,
    },
}

#[derive(Subcommand, Debug)]
enum RealmCmd {
    /// Create a realm.
    Create { name: String },
    /// List realms.
    Ls,
    /// Remove a realm and everything in it.
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
enum NsCmd {
    /// List a directory.
    Ls {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print a file's contents.
    Cat { path: String },
    /// Write a file (created if missing) from --data or stdin.
    Put {
        path: String,
        /// The contents (default: read stdin).
        #[arg(long)]
        data: Option<String>,
    },
    /// Create a directory.
    Mkdir { path: String },
    /// Remove an entry (a directory only when empty).
    Rm { path: String },
    /// Rename an entry atomically.
    Mv { from: String, to: String },
    /// Show what is known about an entry.
    Stat { path: String },
    /// Mount an endpoint (`tcp:HOST:PORT` or `unix:/PATH`) at a path.
    Mount { path: String, endpoint: String },
    /// RPC through a file: send --data (or stdin) to the server mounted over
    /// PATH (`write_read`) and print its reply.
    Call {
        path: String,
        /// The request (default: read stdin).
        #[arg(long)]
        data: Option<String>,
    },
    /// Wait until a path exists.
    Watch {
        path: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "dir",
        2 => "file",
        3 => "mount",
        _ => "?",
    }
}

fn stat_json(s: &WireStat) -> serde_json::Value {
    serde_json::json!({
        "name": s.name, "kind": kind_name(s.kind), "perm": format!("{:o}", s.perm),
        "len": s.len, "version": s.version, "lease": (s.lease != 0).then_some(s.lease),
    })
}

fn print_stat(s: &WireStat, json: bool) {
    if json {
        println!("{}", stat_json(s));
    } else {
        let lease = if s.lease != 0 {
            format!(" lease {}", s.lease)
        } else {
            String::new()
        };
        println!(
            "{} {:o} {:>8} v{} {}{lease}",
            kind_name(s.kind),
            s.perm,
            s.len,
            s.version,
            s.name
        );
    }
}

async fn run(cli: Cli) -> Result<(), AdminError> {
    if let Cmd::Ns { cmd, .. } = &cli.cmd {
        match cmd {
            NsCmd::Ls { path }
            | NsCmd::Cat { path }
            | NsCmd::Put { path, .. }
            | NsCmd::Mkdir { path }
            | NsCmd::Rm { path }
            | NsCmd::Stat { path }
            | NsCmd::Call { path, .. }
            | NsCmd::Watch { path, .. } => check_path(path)?,
            NsCmd::Mount { path, endpoint } => {
                check_path(path)?;
                Endpoint::parse(endpoint.as_bytes()).map_err(|e| AdminError {
                    kind: "usage".into(),
                    message: format!("endpoint {endpoint:?}: {e}"),
                })?;
            }
            NsCmd::Mv { from, to } => {
                check_path(from)?;
                check_path(to)?;
            }
        }
    }
    let client = AdminClient::connect(&cli.sock).await?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Realm { cmd } => match cmd {
            RealmCmd::Create { name } => {
                client
                    .call(&NsRequest::CreateRealm { realm: name.clone() }, None)
                    .await?;
                if json {
                    println!("{}", serde_json::json!({ "created": name }));
                }
            }
            RealmCmd::Ls => {
                let realms = client.call_strings(&NsRequest::ListRealms).await?;
                if json {
                    println!("{}", serde_json::json!(realms));
                } else {
                    realms.iter().for_each(|r| println!("{r}"));
                }
            }
            RealmCmd::Rm { name } => {
                client
                    .call(&NsRequest::RemoveRealm { realm: name.clone() }, None)
                    .await?;
                if json {
                    println!("{}", serde_json::json!({ "removed": name }));
                }
            }
        },
        Cmd::Ns { realm, cmd } => match cmd {
            NsCmd::Ls { path } => {
                let stats = client.call_stats(&NsRequest::Readdir { realm, path }).await?;
                if json {
                    println!("{}", serde_json::Value::Array(stats.iter().map(stat_json).collect()));
                } else {
                    stats.iter().for_each(|s| print_stat(s, false));
                }
            }
            NsCmd::Cat { path } => {
                let data = client.call(&NsRequest::Read { realm, path }, None).await?;
                if json {
                    println!("{}", serde_json::json!({ "data": String::from_utf8_lossy(&data) }));
                } else {
                    let _ = std::io::stdout().write_all(&data);
                }
            }
            NsCmd::Put { path, data } => {
                let data = data_or_stdin(data)?;
                let write = NsRequest::Write {
                    realm: realm.clone(),
                    path: path.clone(),
                    data: data.clone(),
                    if_version: 0,
                };
                let stat = match client.call_stat(&write).await {
                    Err(e) if e.kind == "not-found" => {
                        client
                            .call_stat(&NsRequest::Create {
                                realm,
                                path,
                                perm: 0o644,
                                kind: 2,
                                data,
                                lease: 0,
                            })
                            .await?
                    }
                    other => other?,
                };
                if json {
                    print_stat(&stat, true);
                }
            }
            NsCmd::Mkdir { path } => {
                let stat = client
                    .call_stat(&NsRequest::Create {
                        realm,
                        path,
                        perm: 0o755,
                        kind: 1,
                        data: Bytes::new(),
                        lease: 0,
                    })
                    .await?;
                if json {
                    print_stat(&stat, true);
                }
            }
            NsCmd::Rm { path } => {
                client.call(&NsRequest::Remove { realm, path }, None).await?;
            }
            NsCmd::Mv { from, to } => {
                client.call(&NsRequest::Rename { realm, from, to }, None).await?;
            }
            NsCmd::Mount { path, endpoint } => {
                let stat = client
                    .call_stat(&NsRequest::Mount {
                        realm,
                        path,
                        endpoint: Bytes::from(endpoint),
                        lease: 0,
                    })
                    .await?;
                if json {
                    print_stat(&stat, true);
                }
            }
            NsCmd::Call { path, data } => {
                let request = data_or_stdin(data)?;
                let ns = NsClient::connect(&cli.sock, &realm).await?;
                let fd = ns.open(&path, Mode::ReadWrite).await?;
                let reply = ns.write_read(fd, &request).await?;
                if json {
                    println!("{}", serde_json::json!({ "reply": String::from_utf8_lossy(&reply) }));
                } else {
                    let _ = std::io::stdout().write_all(&reply);
                }
            }
            NsCmd::Stat { path } => print_stat(&client.call_stat(&NsRequest::Stat { realm, path }).await?, json),
            NsCmd::Watch { path, timeout } => {
                let req = NsRequest::OpenWatch {
                    realm,
                    path,
                    timeout_ms: timeout.saturating_mul(1000),
                };
                let stat = WireStat::decode(client.call(&req, Some(Duration::from_secs(timeout + 5))).await?).map_err(
                    |e| AdminError {
                        kind: "malformed".into(),
                        message: e.to_string(),
                    },
                )?;
                print_stat(&stat, json);
            }
        },
    }
    Ok(())
}

/// `data`, or all of stdin.
fn data_or_stdin(data: Option<String>) -> Result<Bytes, AdminError> {
    match data {
        Some(d) => Ok(Bytes::from(d)),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| AdminError {
                kind: "usage".into(),
                message: format!("reading stdin: {e}"),
            })?;
            Ok(Bytes::from(buf))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    // A CLI should not burn a core: park as soon as there is nothing to do.
    let core = match sigma_dataplane::Core::builder().spin(Duration::ZERO).build() {
        Ok(core) => core,
        Err(e) => {
            eprintln!("sigmactl: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match core.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e.kind, "message": e.message }));
            } else {
                eprintln!("sigmactl: {e}");
            }
            if matches!(
                e.kind.as_str(),
                "unavailable" | "usage" | "invalid-path" | "invalid-realm"
            ) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
