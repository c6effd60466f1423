//! The crate's one error type: a variant per operation that can fail, the
//! cause as `#[source]`, and enough context (realm, proc, pid, path) to say
//! where.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Which proc a spawn error is about: its σ id, its realm, the host pid of
/// the child (0 before there was one) and its binary.
#[derive(Debug, Clone)]
pub struct ProcRef {
    /// The σ proc id (`SIGMA_PID`).
    pub proc_id: String,
    /// The realm (`SIGMA_REALM`).
    pub realm: String,
    /// Host pid of the cloned child, 0 if it was never cloned.
    pub pid: i32,
    /// Host path of the binary.
    pub binary: PathBuf,
}

impl fmt::Display for ProcRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proc {:?} of realm {:?} (pid {}, binary {})",
            self.proc_id,
            self.realm,
            self.pid,
            self.binary.display()
        )
    }
}

/// Everything that can go wrong in the sandbox. Variants named `Child*`
/// are the steps the cloned child runs between clone and exec, one per
/// step, in the order of [`crate::Step`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration given to [`crate::Sandbox::new`] is unusable.
    #[error("invalid sandbox config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A spawn request is malformed or exceeds a limit.
    #[error("invalid spawn of proc {proc_id:?}: {reason}")]
    InvalidSpec {
        /// The proc id as given.
        proc_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A realm name is malformed.
    #[error("invalid realm name {realm:?}: {reason}")]
    InvalidRealm {
        /// The name as given.
        realm: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the kernel's description of the process or its mounts.
    #[error("read {path}")]
    ReadMetadata {
        /// The file read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No cgroup hierarchy offers a controller the sandbox needs.
    #[error("no usable cgroup hierarchy has the {controller} controller (v1 mounts and v2 controllers both checked)")]
    CgroupMissing {
        /// `memory`, `pids` or `cpu`.
        controller: &'static str,
    },
    /// Creating a cgroup directory (including: it already existed, which a
    /// sandbox never accepts, so that it never touches a cgroup it did not
    /// make).
    #[error("create cgroup {path}")]
    CgroupCreate {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a cgroup control file.
    #[error("write {value:?} to {path}")]
    CgroupWrite {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening the file a proc's child joins its cgroup by (v1 `tasks`, v2 `cgroup.procs`).
    #[error("open {path}")]
    CgroupOpen {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory.
    #[error("remove cgroup {path}")]
    CgroupRemove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The seccomp policy did not compile (a bug in the policy table).
    #[error("compile the seccomp policy")]
    SeccompCompile {
        /// The cause.
        #[source]
        source: seccompiler::Error,
    },
    /// The machine's architecture has no policy table.
    #[error("no seccomp policy for architecture {arch}")]
    SeccompArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// Creating the realm's network namespace (once per realm).
    #[error("create the network namespace of realm {realm:?}")]
    NetnsCreate {
        /// The realm.
        realm: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every uid of the configured range is given to a live realm.
    #[error("realm {realm:?}: all {count} uids of the range are in use")]
    UidsExhausted {
        /// The realm that asked.
        realm: String,
        /// Size of the range.
        count: u32,
    },
    /// Creating or removing the (always empty) host directory the jail
    /// template's tmpfs is mounted on, inside the template's own mount
    /// namespace.
    #[error("jail directory {path}")]
    JailDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Making the jail template: a mount namespace whose root is a
    /// read-only tmpfs with the mount points `init` and `proc`.
    #[error("make the jail template on {path}: {step}")]
    JailTemplate {
        /// The host directory its tmpfs was mounted on.
        path: PathBuf,
        /// Which operation failed.
        step: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Cloning the binary as a detached bind mount (open_tree).
    #[error("{proc}: open the binary as a mount")]
    OpenBinary {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening `/dev/null` (every proc's stdin).
    #[error("open /dev/null")]
    DevNull {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Mapping a stack for the cloned child.
    #[error("map a {bytes}-byte child stack")]
    ChildStack {
        /// Its size.
        bytes: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the pipe the child reports on.
    #[error("{proc}: create the report pipe")]
    ReportPipe {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// clone(2) itself failed.
    #[error("{proc}: clone")]
    Clone {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the child's report failed, or it was malformed.
    #[error("{proc}: read the child's report: {reason}")]
    ChildReport {
        /// Which proc.
        proc: ProcRef,
        /// What was wrong.
        reason: String,
    },
    /// Step 1: close the inherited fds no step uses.
    #[error("{proc}: close the fds inherited from the spawner")]
    ChildInherited {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 2: set every signal to its default disposition.
    #[error("{proc}: reset signal dispositions")]
    ChildSignals {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 3: join the proc's cgroups.
    #[error("{proc}: join its cgroups")]
    ChildCgroups {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 4: join the realm's network namespace.
    #[error("{proc}: join the realm's network namespace")]
    ChildNetns {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 5: set the hostname of the new UTS namespace.
    #[error("{proc}: set the hostname")]
    ChildHostname {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 6: enter the jail template and unshare a copy of it.
    #[error("{proc}: enter a copy of the jail's mount namespace")]
    ChildMountNamespace {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 7: attach the binary read-only at `/init`.
    #[error("{proc}: bind the binary read-only into the jail")]
    ChildJailBinary {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 8: mount a fresh /proc of the new pid namespace.
    #[error("{proc}: mount /proc in the jail")]
    ChildJailProc {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 9: put stdin, stdout, stderr and the control fd at 0..=3 and
    /// mark every other fd close-on-exec.
    #[error("{proc}: set up fds 0-3")]
    ChildFds {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 10: lower the rlimits.
    #[error("{proc}: set rlimits")]
    ChildRlimits {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Emptying the calling thread's capability bounding set
    /// ([`crate::Sandbox::empty_thread_bounding_set`]).
    #[error("empty this thread's capability bounding set (capability {cap})")]
    ThreadBoundingSet {
        /// The capability whose drop failed.
        cap: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 11: empty the capability bounding set.
    #[error("{proc}: drop the capability bounding set")]
    ChildBoundingSet {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 12: become the realm's uid and gid, with no supplementary
    /// groups.
    #[error("{proc}: become uid {uid} gid {gid}")]
    ChildCredentials {
        /// Which proc.
        proc: ProcRef,
        /// The realm's uid.
        uid: u32,
        /// The realm's gid.
        gid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 13: clear the remaining capability sets.
    #[error("{proc}: clear capabilities")]
    ChildCapabilities {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 14: set no_new_privs.
    #[error("{proc}: set no_new_privs")]
    ChildNoNewPrivs {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 15: unblock every signal.
    #[error("{proc}: clear the signal mask")]
    ChildSignalMask {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 16: install the seccomp filter.
    #[error("{proc}: install the seccomp filter")]
    ChildSeccomp {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A warm sandbox only, after step 15: receive the spawn's request
    /// (fds 0..=3 and the go-ahead) on its channel.
    #[error("{proc}: warm sandbox: receive the spawn's request")]
    ChildRequest {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Step 17: execve the binary.
    #[error("{proc}: exec")]
    ChildExec {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// waitid on a proc's pidfd failed.
    #[error("{proc}: wait")]
    Wait {
        /// Which proc.
        proc: ProcRef,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending a signal through a proc's pidfd failed.
    #[error("{proc}: send signal {signal}")]
    Signal {
        /// Which proc.
        proc: ProcRef,
        /// The signal.
        signal: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
