//! Every bound of the sandbox, named, with units last. Relations between
//! them are checked at compile time.

/// Longest realm name or proc id, in bytes. Both become cgroup directory
/// names and environment values, so they are short and plain
/// (`[A-Za-z0-9_.-]`, not starting with `.`).
pub const NAME_BYTES_MAX: usize = 64;

/// Most arguments a proc may be given (`argv[0]` excluded).
pub const ARGS_COUNT_MAX: usize = 256;

/// Most caller-given environment variables (the three `SIGMA_*` ones are
/// added on top).
pub const ENV_COUNT_MAX: usize = 256;

/// Most bytes of arguments and environment together, NULs included. Well
/// under the kernel's own `ARG_MAX` (a quarter of the 8 MiB stack limit).
pub const ARGV_ENVP_BYTES_MAX: usize = 128 * 1024;

/// Smallest and largest memory limit of one proc, in MiB. Below 8 MiB a
/// static Rust binary cannot start.
pub const PROC_MEM_MIB_MIN: u64 = 8;
/// See [`PROC_MEM_MIB_MIN`].
pub const PROC_MEM_MIB_MAX: u64 = 1 << 20;

/// Largest `pids.max` of one proc (its threads and children together).
pub const PROC_PIDS_MAX: u64 = 1 << 16;

/// Largest `mcpu` an LC proc may declare (milli-cores): 256 cores, which
/// maps to the kernel's largest `cpu.shares`.
pub const PROC_MCPU_MAX: u64 = 256 * 1000;

/// cgroup v1 `cpu.shares` of one full core: the kernel's default weight.
pub const CPU_SHARES_PER_CORE: u64 = 1024;
/// The kernel clamps `cpu.shares` to `[2, 262144]`.
pub const CPU_SHARES_MIN: u64 = 2;
/// See [`CPU_SHARES_MIN`].
pub const CPU_SHARES_MAX: u64 = 262_144;

/// The `RLIMIT_NOFILE` (soft and hard) of every proc, unless the caller's
/// own hard limit is lower (raising it needs CAP_SYS_RESOURCE).
pub const PROC_NOFILE_MAX: u64 = 1024;

/// Most warm cgroup sets a realm keeps per class (see
/// `Config::warm_cgroups`).
pub const WARM_CGROUPS_PER_CLASS_MAX: usize = 256;

/// Most warm sandboxes a realm holds (see `Config::warm_sandboxes`): each
/// is a waiting process with its own pid, mount, UTS and IPC namespaces
/// and a 64 KiB stack.
pub const WARM_SANDBOXES_PER_REALM_MAX: usize = 64;

/// Most realms one sandbox serves at once, and so the largest uid range it
/// asks for: one uid (and the same gid) per realm.
pub const REALMS_MAX: u32 = 4096;

/// Lowest uid a realm may be given: below this live system accounts.
pub const REALM_UID_MIN: u32 = 1000;

/// Bytes of the tmpfs that is the root of each proc's jail: it holds two
/// empty inodes (the mount points of the binary and of /proc), so one page
/// is plenty.
pub const JAIL_TMPFS_BYTES: u64 = 4096;
/// Inodes of that tmpfs: its root, `init`, `proc`, and a little slack.
pub const JAIL_TMPFS_INODES: u64 = 8;

/// Stack of the cloned child between clone and exec, in bytes. The child
/// runs one function of raw system calls with a few small locals.
pub const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Child stacks kept for reuse (each costs [`CHILD_STACK_BYTES`] plus a
/// guard page); more concurrent spawns than this map and unmap their own.
pub const CHILD_STACKS_POOLED_MAX: usize = 8;

/// Timestamps the child takes between clone and exec (see
/// [`crate::Stamps`]).
pub const CHILD_STAMPS_COUNT: usize = 6;

/// How long dropping a [`crate::Child`] that is still running waits for it
/// to die after SIGKILL, in milliseconds, before giving up (and leaving its
/// cgroups behind).
pub const CHILD_DROP_WAIT_MS_MAX: u64 = 2000;

/// Tries at removing a proc's cgroup right after it was reaped (the kernel
/// may still be detaching its last task), each after a yield.
pub const CGROUP_RMDIR_TRIES_MAX: u32 = 1000;
/// Rounds of killing what a dead sandbox left in its cgroups ([`crate::cgroup::reclaim`]).
pub const RECLAIM_KILL_ROUNDS_MAX: u32 = 100;

/// Largest file of cgroup or proc metadata the sandbox reads whole
/// (mountinfo, `/proc/self/cgroup`, `cgroup.controllers`).
pub const METADATA_FILE_BYTES_MAX: u64 = 1 << 20;

const _: () = assert!(PROC_MEM_MIB_MIN < PROC_MEM_MIB_MAX);
const _: () = assert!(PROC_MEM_MIB_MAX < (u64::MAX >> 20));
const _: () = assert!(CPU_SHARES_MIN < CPU_SHARES_PER_CORE && CPU_SHARES_PER_CORE < CPU_SHARES_MAX);
// The largest mcpu maps to shares the kernel accepts without clamping.
const _: () = assert!(PROC_MCPU_MAX * CPU_SHARES_PER_CORE / 1000 <= CPU_SHARES_MAX);
const _: () = assert!(NAME_BYTES_MAX <= 255); // one path component
const _: () = assert!((ARGS_COUNT_MAX + ENV_COUNT_MAX) * 2 <= ARGV_ENVP_BYTES_MAX);
const _: () = assert!(ARGV_ENVP_BYTES_MAX <= 2 * 1024 * 1024);
const _: () = assert!(JAIL_TMPFS_INODES >= 3);
const _: () = assert!(CHILD_STACK_BYTES >= 16 * 1024 && CHILD_STACK_BYTES % 4096 == 0);
const _: () = assert!(CHILD_STAMPS_COUNT >= 2);
const _: () = assert!(REALM_UID_MIN as u64 + REALMS_MAX as u64 <= u32::MAX as u64);
const _: () = assert!(PROC_NOFILE_MAX >= 16);

/// Network namespaces a sandbox makes ahead of need, at most
/// (`Config::netns_pool`).
pub const NETNS_POOL_MAX: usize = 16;

/// After a realm takes a set-up made ahead, the pool makes the next only
/// once no realm has taken one for this long (at once if it ran out): a
/// network namespace and a realm's cgroups take about 1.6 ms of CPU to
/// make, which would otherwise compete on 2 CPUs with the very start that
/// took one (cold starts 0.4–0.9 ms faster in alternated quick runs).
pub const REALM_POOL_REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Held mount namespaces queued for the sandbox's release thread at most
/// (see `Child::release_mount_namespace`); past it, the caller lets go of
/// one itself.
pub const MOUNT_NS_RELEASE_QUEUE_MAX: usize = 256;
