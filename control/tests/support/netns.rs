//! Network-namespace "hosts" for tests: one switch namespace holding a
//! bridge, and one namespace per host joined to it by a veth pair, with
//! `10.233.S.N/24` addresses. Everything lives in namespaces this module
//! creates (both ends of every veth are created directly inside them), so
//! the root namespace gains no link, address or route; dropping the [`Net`]
//! deletes the namespaces, and with them every link in them.
//!
//! Names are `sgt-<pid>-<tag>-<host>`, so parallel test processes (and
//! tests within one process, by their tags) never clash.
//!
//! A test process sits in the root namespace and cannot reach these
//! addresses; [`Net::run_in`] runs a closure on a thread that has joined a
//! host's namespace (`setns` changes only the calling thread's network
//! namespace, and threads it spawns inherit it).

#![allow(dead_code)] // Each test file uses its own part of this.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::process::{Command, Output, Stdio};

mod sys {
    use std::os::raw::c_int;
    extern "C" {
        /// setns(2), from the C library std already links.
        pub fn setns(fd: c_int, nstype: c_int) -> c_int;
    }
}

/// Stack of a [`Net::run_in`] thread.
const THREAD_STACK_BYTES: usize = 32 << 20;

/// `CLONE_NEWNET` from `<sched.h>`.
const CLONE_NEWNET: c_int = 0x4000_0000;

/// One host: a namespace with `eth0` on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host's name within the [`Net`] (`h1`, `client`, ...).
    pub name: String,
    /// The namespace (`sgt-<pid>-<tag>-<name>`).
    pub ns: String,
    /// The address of its `eth0`.
    pub addr: Ipv4Addr,
    /// Its port on the bridge, in the switch namespace.
    port: String,
}

/// A switch namespace with a bridge and hosts on it; all deleted on drop.
#[derive(Debug)]
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
    /// Namespaces created so far, to delete on drop (also after a failure half-way).
    created: Vec<String>,
}

/// Why the kernel or the tools cannot give a test network namespaces.
#[derive(Debug)]
pub struct Unsupported(pub String);

fn ip(args: &[&str]) -> io::Result<Output> {
    Command::new("ip").args(args).stdin(Stdio::null()).output()
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
fn ip_ok(args: &[&str]) {
    let out = ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The third octet of this net's subnet: from the pid and the tag, so
/// that concurrent nets use different subnets (not needed for isolation —
/// each net is its own set of namespaces — but it keeps captures and logs
/// of parallel runs apart).
fn subnet(tag: &str) -> u8 {
    let mut h = std::process::id();
    for b in tag.bytes() {
        h = h.wrapping_mul(31).wrapping_add(u32::from(b));
    }
    (h % 254) as u8 + 1
}

impl Net {
    /// Creates the switch and one host per name, at `10.233.S.1`, `.2`, ...
    /// in the order given. `Err` only when namespaces are unavailable (no
    /// `ip` binary, or the kernel refuses with EPERM); any other failure
    /// panics, after deleting what was created.
    pub fn create(tag: &str, names: &[&str]) -> Result<Net, Unsupported> {
        match ip(&["-V"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(Unsupported(format!("`ip -V` failed: {}", out.status))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Unsupported("no `ip` binary (iproute2)".to_string()))
            }
            Err(e) => return Err(Unsupported(format!("cannot run `ip`: {e}"))),
        }
        sweep_stale();
        let base = format!("sgt-{}-{tag}", std::process::id());
        let mut net = Net {
            switch: format!("{base}-sw"),
            hosts: Vec::new(),
            created: Vec::new(),
        };
        let out = ip(&["netns", "add", &net.switch]).expect("run ip netns add");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if err.contains("Operation not permitted") || err.contains("Permission denied") {
                return Err(Unsupported(format!("`ip netns add` refused: {err}")));
            }
            panic!("ip netns add {} failed: {err}", net.switch);
        }
        net.created.push(net.switch.clone());
        let sw = net.switch.clone();
        ip_ok(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &sw, "link", "set", "br0", "up"]);
        let s = subnet(tag);
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{base}-{name}");
            ip_ok(&["netns", "add", &ns]);
            net.created.push(ns.clone());
            let port = format!("p{i}");
            // Both ends are created inside their namespaces: nothing ever
            // appears in the root namespace.
            ip_ok(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &sw,
            ]);
            ip_ok(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &sw, "link", "set", &port, "up"]);
            let addr = Ipv4Addr::new(10, 233, s, u8::try_from(i + 1).expect("at most 254 hosts"));
            ip_ok(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            net.hosts.push(Host {
                name: name.to_string(),
                ns,
                addr,
                port,
            });
        }
        Ok(net)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?}"))
    }

    /// `program` to run inside `host`'s namespace (`ip netns exec`, which
    /// execs the program: the child's pid is the program's).
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(host).ns, program]);
        c
    }

    /// Cuts `host` off the bridge (its switch port goes down: packets to and
    /// from it are dropped, no connection is reset — a partition).
    pub fn cut(&self, host: &str) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.host(host).port, "down"]);
    }

    /// Joins `host` to the bridge again.
    pub fn heal(&self, host: &str) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.host(host).port, "up"]);
    }

    /// Runs `f` on a new thread inside `host`'s network namespace and returns
    /// its result; a panic in `f` continues in the caller. Threads `f`
    /// spawns, and the sockets they open, are in that namespace too.
    pub fn run_in<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.host(host).ns.clone();
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name(format!("in-{host}"))
                // Room for the large futures of unoptimised async test code.
                .stack_size(THREAD_STACK_BYTES)
                .spawn_scoped(s, move || {
                    enter(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
                    f()
                })
                .expect("spawn a thread");
            match thread.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Deletes namespaces left by test processes that died without running
/// their destructors (`sgt-<pid>-...` whose pid is gone). Their etcd
/// members died with them (parent-death signal), so nothing holds them.
fn sweep_stale() {
    let Ok(out) = ip(&["netns", "list"]) else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name.strip_prefix("sgt-").and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netns: deleting {name}, left by dead process {pid}");
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Moves the calling thread into the named network namespace.
fn enter(ns: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns only reads the descriptor, which `f` keeps open for the
    // call, and changes the calling thread's network namespace; no memory is
    // shared with the kernel.
    let rc = unsafe { sys::setns(f.as_raw_fd(), CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Hosts first, then the switch: deleting a namespace destroys its
        // links, and a veth goes with either of its ends.
        for ns in self.created.iter().rev() {
            match ip(&["netns", "del", ns]) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "netns: deleting {ns} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("netns: deleting {ns}: {e}"),
            }
        }
    }
}
