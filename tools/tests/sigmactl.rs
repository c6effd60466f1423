//! sigmactl under misuse: the real binary against a real sigmad (or, where
//! sigmad cannot be made to misbehave, a stand-in on a Unix socket), fed
//! oversize, empty and non-UTF-8 input; its exit codes against the table in
//! its help and the README; names that would forge output; `/~root`; and
//! `--json` with bytes that are not UTF-8.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{run_ctl, to_os, Daemon};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An RPC file served on a data-plane core of this test process: answers
/// with `reply(request)`.
fn serve_rpc_file<F>(reply: F) -> std::net::SocketAddr
where
    F: Fn(&[u8]) -> Result<Vec<u8>, sigma_dataplane::rpc::Status> + Send + 'static,
{
    struct File<F>(F);
    impl<F: Fn(&[u8]) -> Result<Vec<u8>, sigma_dataplane::rpc::Status>> sigma_control::client::RpcFile for File<F> {
        async fn write_read(
            &self,
            _rest: &[String],
            request: bytes::Bytes,
            out: &mut bytes::BytesMut,
        ) -> Result<(), sigma_dataplane::rpc::Status> {
            out.extend_from_slice(&(self.0)(&request)?);
            Ok(())
        }
    }
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let core = sigma_dataplane::Core::builder().build().unwrap();
        core.block_on(async move {
            let listener = sigma_dataplane::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let service = std::rc::Rc::new(sigma_control::client::FileService(File(reply)));
            loop {
                let stream = listener.accept().await.unwrap();
                let service = service.clone();
                sigma_dataplane::spawn(async move {
                    let _ = sigma_dataplane::rpc::serve(&stream, &*service).await;
                });
            }
        });
    });
    addr_rx.recv().unwrap()
}

/// A stand-in for sigmad on a Unix socket that answers every call with
/// `answer`: for what a real sigmad cannot be made to say on demand.
fn fake_sigmad(sock: &Path, answer: sigma_dataplane::rpc::Status) {
    struct Fake(sigma_dataplane::rpc::Status);
    impl sigma_dataplane::rpc::Service for Fake {
        async fn call(
            &self,
            _method: u32,
            _request: bytes::Bytes,
            _out: &mut bytes::BytesMut,
        ) -> Result<sigma_dataplane::rpc::Reply, sigma_dataplane::rpc::Status> {
            Err(self.0.clone())
        }
    }
    let sock = sock.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let core = sigma_dataplane::Core::builder().build().unwrap();
        core.block_on(async move {
            let listener = sigma_dataplane::net::UnixListener::bind(&sock).unwrap();
            ready_tx.send(()).unwrap();
            let service = std::rc::Rc::new(Fake(answer));
            loop {
                let stream = listener.accept().await.unwrap();
                let service = service.clone();
                sigma_dataplane::spawn(async move {
                    let _ = sigma_dataplane::rpc::serve(&stream, &*service).await;
                });
            }
        });
    });
    ready_rx.recv().unwrap();
}

/// A peer on a Unix socket that is not sigmad: it answers anything with HTTP.
fn not_sigmad(sock: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 64];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        }
    });
}

const KIB: usize = 1024;

/// Finding 4: no input makes sigmactl panic. Every subcommand, with each of
/// its arguments in turn replaced by an empty, an oversize, a non-UTF-8 and
/// a control-character value, and with empty, oversize and non-UTF-8 stdin
/// where it reads stdin: the exit code is one of the table's, never 101, and
/// a failure says what went wrong on stderr.
#[test]
fn no_input_makes_sigmactl_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "t"]);
    d.ok(&["realm", "create", "gone"]);
    d.ok(&["ns", "-r", "t", "put", "/f", "--data", "x"]);
    d.ok(&["ns", "-r", "t", "mount", "/m", "tcp:127.0.0.1:1"]);

    // A template's slots: (placeholder, good value).
    let templates: &[&[&str]] = &[
        &["realm", "create", "R"],
        &["realm", "rm", "R"],
        &["realm", "ls"],
        &["ns", "-r", "R", "ls", "P"],
        &["ns", "-r", "R", "cat", "P"],
        &["ns", "-r", "R", "put", "P", "--data", "D"],
        &["ns", "-r", "R", "put", "P"],
        &["ns", "-r", "R", "mkdir", "P"],
        &["ns", "-r", "R", "rm", "P"],
        &["ns", "-r", "R", "mv", "P", "P"],
        &["ns", "-r", "R", "stat", "P"],
        &["ns", "-r", "R", "mount", "P", "E"],
        &["ns", "-r", "R", "call", "P", "--data", "D"],
        &["ns", "-r", "R", "call", "P"],
        &["ns", "-r", "R", "watch", "P", "--timeout", "T"],
    ];
    let good = |slot: &str| -> OsString {
        match slot {
            "R" => "t".into(),
            "P" => "/f".into(),
            "D" => "y".into(),
            "E" => "tcp:127.0.0.1:1".into(),
            "T" => "0".into(),
            other => other.into(),
        }
    };
    let bad: Vec<(&str, OsString)> = vec![
        ("empty", OsString::new()),
        ("oversize", OsString::from("a".repeat(100 * KIB))),
        ("oversize path", OsString::from(format!("/{}", "a".repeat(100 * KIB)))),
        ("oversize number", OsString::from("9".repeat(100))),
        ("u64::MAX", OsString::from(u64::MAX.to_string())),
        ("non-UTF-8", OsString::from_vec(vec![b'/', 0xff, 0xfe, b'x'])),
        ("control characters", OsString::from("/a\nb\u{1b}[2J\u{9b}")),
    ];
    let stdins: Vec<(&str, Vec<u8>)> = vec![
        ("empty stdin", Vec::new()),
        ("10 MiB stdin", vec![0u8; 10 * KIB * KIB]),
        ("non-UTF-8 stdin", vec![0xff, 0xfe, 0x80, 0]),
    ];

    let mut failures = Vec::new();
    let mut runs = 0;
    let mut check = |what: String, args: Vec<OsString>, stdin: Option<&[u8]>| {
        runs += 1;
        let out = run_ctl(&d.sock, &args, stdin);
        let err = stderr(&out);
        let code = out.status.code();
        let fine = match code {
            Some(0) => true,
            Some(1..=3) => !err.trim().is_empty() && !err.contains("panicked"),
            _ => false,
        };
        if !fine {
            failures.push(format!("{what}: exit {code:?}, stderr {:?}", cut(&err)));
        }
    };
    for template in templates {
        let slots: Vec<usize> = (0..template.len())
            .filter(|&i| ["R", "P", "D", "E", "T"].contains(&template[i]))
            .collect();
        for &slot in &slots {
            for (name, value) in &bad {
                let args: Vec<OsString> = template
                    .iter()
                    .enumerate()
                    .map(|(i, s)| if i == slot { value.clone() } else { good(s) })
                    .collect();
                check(format!("{template:?} with {} {name}", template[slot]), args, None);
            }
        }
        let reads_stdin = template.last() == Some(&"P") && (template.contains(&"put") || template.contains(&"call"));
        if reads_stdin {
            for (name, input) in &stdins {
                let args: Vec<OsString> = template.iter().map(|s| good(s)).collect();
                check(format!("{template:?} with {name}"), args, Some(input));
            }
        }
    }
    assert!(runs > 150, "{runs} runs");
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn cut(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Finding 4: size limits are checked before anything is encoded, and the
/// error names what the limit is for and its value.
#[test]
fn limit_errors_say_what_the_limit_is_and_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "t"]);
    /// Arguments, stdin, and what the error must say.
    type Case = (Vec<OsString>, Option<Vec<u8>>, &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            to_os(&["ns", "-r", "t", "put", "/big"]),
            Some(vec![7u8; 10 * KIB * KIB]),
            &["524288-byte limit", "FILE_BYTES_MAX", "file"],
        ),
        (
            to_os(&["ns", "-r", "t", "put", "/big"]),
            Some(vec![7u8; KIB * KIB]),
            &["524288-byte limit", "FILE_BYTES_MAX"],
        ),
        (
            to_os(&["ns", "-r", "t", "call", "/m"]),
            Some(vec![7u8; 10 * KIB * KIB]),
            &["-byte limit", "WRITE_READ_BYTES_MAX"],
        ),
        (to_os(&["realm", "create", &"a".repeat(5 * KIB)]), None, &["1-64"]),
        (
            to_os(&["ns", "-r", "t", "mkdir", &format!("/{}", "a/".repeat(600))]),
            None,
            &["1024-byte limit", "PATH_BYTES_MAX"],
        ),
        (
            to_os(&["ns", "-r", "t", "mkdir", &format!("/{}", "a".repeat(300))]),
            None,
            &["255-byte limit", "NAME_BYTES_MAX"],
        ),
        (
            to_os(&["ns", "-r", "t", "mkdir", &"/a".repeat(40)]),
            None,
            &["32-component limit", "PATH_DEPTH_MAX"],
        ),
        (
            to_os(&["ns", "-r", "t", "watch", "/w", "--timeout", &u64::MAX.to_string()]),
            None,
            &["3600", "WATCH_TIMEOUT_MAX"],
        ),
    ];
    for (args, stdin, wanted) in cases {
        let started = Instant::now();
        let out = run_ctl(&d.sock, &args, stdin.as_deref());
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{:?}: {}",
            cut(&format!("{args:?}")),
            cut(&err)
        );
        for w in wanted {
            assert!(
                err.contains(w),
                "{}: wanted {w:?} in {err:?}",
                cut(&format!("{args:?}"))
            );
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(d.ctl(&["ns", "-r", "t", "ls", "/"]).stdout, b"");
}

/// Finding 5: every realm reads the root realm under `/~root`, from sigmactl too.
#[test]
fn root_view_is_readable_from_sigmactl() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "a"]);
    d.ok(&["ns", "-r", "root", "mkdir", "/shared"]);
    d.ok(&["ns", "-r", "root", "put", "/shared/cfg", "--data", "from root"]);
    assert!(d.ok(&["ns", "-r", "a", "ls", "/~root"]).contains(" shared\n"));
    assert!(d.ok(&["ns", "-r", "a", "ls", "/~root/shared"]).contains(" cfg\n"));
    assert_eq!(d.ok(&["ns", "-r", "a", "cat", "/~root/shared/cfg"]), "from root");
    assert!(d
        .ok(&["ns", "-r", "a", "stat", "/~root/shared/cfg"])
        .starts_with("file "));
    assert!(d
        .ok(&["ns", "-r", "a", "watch", "/~root/shared/cfg", "--timeout", "1"])
        .contains("cfg"));
    // Read-only: sigmad refuses changes (exit 1, it says why).
    let out = d.ctl(&["ns", "-r", "a", "put", "/~root/shared/cfg", "--data", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    // Other `~` names stay reserved.
    let out = d.ctl(&["ns", "-r", "a", "ls", "/~rootx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
}

/// Finding 6: names with control characters are refused; names already in
/// the store (made before the rule) print escaped, never raw.
#[test]
fn names_cannot_forge_output() {
    let dir = tempfile::tempdir().unwrap();
    let forged = "x\nfile 644        0 v1 forged\u{1b}]0;pwned\u{7}\u{1b}[2J";
    {
        // An entry made before the rule, written straight into the store.
        use sigma_control::ns::store::{Change, Store};
        use sigma_control::ns::{Entry, EntryKind, Namespace};
        let store = sigma_control::ns::embedded::EmbeddedStore::open(&dir.path().join("ns.redb")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ns = Namespace::new(store, "m").await.unwrap();
            ns.create_realm("old").await.unwrap();
            let entry = Entry {
                kind: EntryKind::File,
                perm: 0o644,
                data: bytes::Bytes::from_static(b"v"),
                lease: None,
            };
            let put = Change::Put {
                key: format!("old:/{forged}"),
                value: entry.encode(),
                lease: None,
            };
            assert!(ns.store().txn(&[], &[put]).await.unwrap());
        });
    }
    let d = Daemon::start(dir.path());
    d.ok(&["ns", "-r", "old", "put", "/plain", "--data", "p"]);
    let ls = d.ok(&["ns", "-r", "old", "ls", "/"]);
    assert_eq!(ls.lines().count(), 2, "one line per entry: {ls:?}");
    assert!(
        !ls.bytes().any(|b| b == 0x1b || b == 0x07),
        "no escape reaches the terminal: {ls:?}"
    );
    assert!(ls.contains(r"x\nfile 644"), "the newline prints escaped: {ls:?}");
    // JSON carries the name exactly.
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "ns", "-r", "old", "ls", "/"])).unwrap();
    assert!(json.as_array().unwrap().iter().any(|e| e["name"] == forged), "{json}");

    // New names with control characters are refused, naming the character.
    d.ok(&["realm", "create", "new"]);
    for (name, char_name) in [
        ("/a\nb", "U+000A"),
        ("/a\u{1b}[31m", "U+001B"),
        ("/a\u{7f}", "U+007F"),
        ("/a\u{9b}x", "U+009B"),
    ] {
        let out = d.ctl(&["ns", "-r", "new", "mkdir", name]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("control character") && err.contains(char_name),
            "{name:?}: {err}"
        );
        assert!(
            !err.bytes().any(|b| b == 0x1b || b == b'\x7f'),
            "the error prints escaped: {err:?}"
        );
    }
    assert_eq!(d.ok(&["ns", "-r", "new", "ls", "/"]), "");
}

/// The exit-code table as `sigmactl --help` prints it: (code, meaning).
fn help_table() -> Vec<(u8, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_sigmactl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let table = help
        .split_once("Exit status:")
        .unwrap_or_else(|| panic!("no exit status table in --help:\n{help}"))
        .1;
    table
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (code, meaning) = l.split_once(char::is_whitespace)?;
            Some((code.parse().ok()?, meaning.trim().to_string()))
        })
        .collect()
}

/// The exit-code table in the README's "Running σ's namespace".
fn readme_table() -> Vec<(u8, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split_once("## Running σ's namespace").unwrap().1;
    let section = section.split_once("\n## ").map_or(section, |(s, _)| s);
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            if cells.len() != 4 {
                return None;
            }
            Some((cells[1].parse().ok()?, cells[2].replace('`', "")))
        })
        .collect()
}

/// Finding 7: one table of exit codes, in `--help` and the README, and the
/// code follows it.
#[test]
fn exit_codes_follow_the_one_table() {
    let help = help_table();
    assert_eq!(help.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3], "{help:?}");
    assert_eq!(readme_table(), help, "the README's table is --help's");

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let code = |out: &Output| out.status.code();
    // 0: done.
    assert_eq!(code(&d.ctl(&["realm", "create", "x"])), Some(0));
    // 1: refused by sigmad or the store.
    let out = d.ctl(&["ns", "-r", "x", "cat", "/missing"]);
    assert_eq!(code(&out), Some(1));
    // 1: a watch that timed out, with a kind of its own.
    let out = d.ctl(&["--json", "ns", "-r", "x", "watch", "/never", "--timeout", "1"]);
    assert_eq!(code(&out), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"], "timed-out", "{err}");
    // 1: the server mounted over the path refuses.
    let refusing = serve_rpc_file(|_| Err(sigma_dataplane::rpc::Status::handler("denied: not today")));
    d.ok(&["ns", "-r", "x", "mount", "/no", &format!("tcp:{refusing}")]);
    let out = d.ctl(&["ns", "-r", "x", "call", "/no", "--data", "q"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not today"), "{}", stderr(&out));
    // 1: the server mounted over the path cannot be reached (sigmad answered);
    // the message names the mount, and does not look like sigmad is gone.
    d.ok(&["ns", "-r", "x", "mount", "/dead", "tcp:127.0.0.1:1"]);
    let out = d.ctl(&["--json", "ns", "-r", "x", "call", "/dead", "--data", "q"]);
    assert_eq!(code(&out), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"], "mount-unavailable", "{err}");
    assert!(err["message"].as_str().unwrap().contains("mounted at /dead"), "{err}");
    // 2: usage.
    assert_eq!(code(&d.ctl(&["ns", "-r", "x", "cat", "relative"])), Some(2));
    assert_eq!(code(&d.ctl(&["no-such-command"])), Some(2));
    // 2: sigmad cannot be reached; the message names sigmad and its socket.
    let gone = dir.path().join("nobody-here.sock");
    let out = run_ctl(&gone, &to_os(&["realm", "ls"]), None);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("sigmad") && stderr(&out).contains(&*gone.to_string_lossy()));
    // 2: the peer at the socket is not sigmad.
    let other = dir.path().join("http.sock");
    not_sigmad(&other);
    let out = run_ctl(&other, &to_os(&["realm", "ls"]), None);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sigmad") && err.contains(&*other.to_string_lossy()),
        "{err}"
    );
    assert!(!err.contains("unix fd"), "{err}");
    // 3: outcome unknown (a stand-in sigmad says so).
    let unsure = dir.path().join("unsure.sock");
    fake_sigmad(
        &unsure,
        sigma_dataplane::rpc::Status::handler(
            "outcome-unknown: /k: the store did not answer; the change may or may not have been applied",
        ),
    );
    let out = run_ctl(&unsure, &to_os(&["ns", "-r", "x", "mkdir", "/k"]), None);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("may or may not"), "{}", stderr(&out));
}

/// Standard base64, decoded (the test's own, to check sigmactl's).
fn unbase64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = acc << 6 | value(c);
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// `--json` carries bytes that are not UTF-8 as base64, and says so.
#[test]
fn json_round_trips_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.ok(&["realm", "create", "j"]);
    let binary: Vec<u8> = vec![0xff, 0xfe, 0x00, b'a', 0xc3, 0x28, 0x80];
    let out = run_ctl(&d.sock, &to_os(&["ns", "-r", "j", "put", "/bin"]), Some(&binary));
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "ns", "-r", "j", "cat", "/bin"])).unwrap();
    assert_eq!(json["encoding"], "base64", "{json}");
    assert_eq!(unbase64(json["data"].as_str().unwrap()), binary);
    // Bytes given as an argument (which cannot hold NUL) go through unchanged as well.
    let arg: Vec<u8> = binary.iter().copied().filter(|&b| b != 0).collect();
    let mut args = to_os(&["ns", "-r", "j", "put", "/arg", "--data"]);
    args.push(OsString::from_vec(arg.clone()));
    let out = run_ctl(&d.sock, &args, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let raw = d.ctl(&["ns", "-r", "j", "cat", "/arg"]);
    assert_eq!(raw.stdout, arg);
    // UTF-8 stays text, and says so.
    d.ok(&["ns", "-r", "j", "put", "/text", "--data", "héllo\n"]);
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--json", "ns", "-r", "j", "cat", "/text"])).unwrap();
    assert_eq!(json, serde_json::json!({ "encoding": "utf-8", "data": "héllo\n" }));
    // A mounted server's reply too.
    let echo = serve_rpc_file(|request| Ok(request.iter().rev().copied().collect()));
    d.ok(&["ns", "-r", "j", "mount", "/echo", &format!("tcp:{echo}")]);
    let out = run_ctl(
        &d.sock,
        &to_os(&["--json", "ns", "-r", "j", "call", "/echo"]),
        Some(&binary),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["encoding"], "base64", "{json}");
    let reversed: Vec<u8> = binary.iter().rev().copied().collect();
    assert_eq!(unbase64(json["reply"].as_str().unwrap()), reversed);
}

/// The README's limits table states the code's values.
#[test]
fn readme_limits_are_the_codes() {
    use sigma_control::ns::path::{NAME_BYTES_MAX, PATH_BYTES_MAX, PATH_DEPTH_MAX, REALM_BYTES_MAX};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let limits = readme.split_once("### Limits").expect("a Limits section").1;
    let limits = limits.split_once("\n## ").map_or(limits, |(s, _)| s);
    let grouped = |n: u64| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    for (constant, value) in [
        (
            "`FILE_BYTES_MAX`",
            format!("{} bytes", grouped(sigma_control::ns::FILE_BYTES_MAX as u64)),
        ),
        ("`PATH_BYTES_MAX`", format!("{} bytes", grouped(PATH_BYTES_MAX as u64))),
        ("`PATH_DEPTH_MAX`", format!("{PATH_DEPTH_MAX} components")),
        ("`NAME_BYTES_MAX`", format!("{NAME_BYTES_MAX} bytes")),
        ("`REALM_BYTES_MAX`", format!("1–{REALM_BYTES_MAX} bytes")),
        (
            "`READDIR_ENTRIES_MAX`",
            grouped(sigma_control::ns::READDIR_ENTRIES_MAX as u64),
        ),
        (
            "`WRITE_READ_BYTES_MAX`",
            format!("{} bytes", grouped(sigma_control::client::WRITE_READ_BYTES_MAX as u64)),
        ),
        (
            "`FRAME_BYTES_MAX`",
            format!("{} MiB", sigma_ep::limits::FRAME_BYTES_MAX >> 20),
        ),
        (
            "`CALL_TIMEOUT`",
            format!(
                "{} s; the client waits {} s longer",
                sigma_control::admin::CALL_TIMEOUT.as_secs(),
                sigma_control::admin::REPLY_MARGIN.as_secs()
            ),
        ),
        (
            "`WATCH_TIMEOUT_MAX`",
            format!("{} s", grouped(sigma_control::admin::WATCH_TIMEOUT_MAX.as_secs())),
        ),
    ] {
        let row = limits
            .lines()
            .find(|l| l.starts_with('|') && l.contains(constant))
            .unwrap_or_else(|| panic!("no row for {constant}"));
        assert!(row.contains(&value), "{constant}: wanted {value:?} in {row}");
    }
}
