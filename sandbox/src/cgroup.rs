//! cgroups: which hierarchies offer the memory, pids and cpu controllers
//! (detected from /proc/self/mountinfo, never assumed), and the
//! directories the sandbox makes in them.
//!
//! Layout, in every hierarchy used, relative to the calling process's own
//! cgroup there (so that a supervisor's limits on sigmad still hold):
//!
//! ```text
//! <parent>/                 made by Sandbox::new, removed by its drop
//! <parent>/lc/<realm>/<proc>   LC procs: cpu.shares (v2: cpu.weight) from mcpu
//! <parent>/be/              cpu.idle = 1: BE procs yield to every LC proc
//! <parent>/be/<realm>/<proc>   BE procs
//! ```
//!
//! Class comes before realm so that the idle `be` group competes with the
//! `lc` group as a whole: were it `<realm>/be`, a realm's BE procs would get
//! the realm's full share against another realm's LC procs. Each proc gets
//! `memory.limit_in_bytes` (v2: `memory.max`) and `pids.max`.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits;

/// A controller the sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// Memory limit per proc.
    Memory,
    /// Task count limit per proc.
    Pids,
    /// LC shares and BE idleness.
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (or group of controllers).
    V1,
    /// The unified hierarchy, with the controller enabled.
    V2,
}

/// One mounted hierarchy the sandbox uses, with the controllers it takes
/// from it.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// The directory of the calling process's own cgroup in it: the
    /// sandbox's parent goes inside.
    pub own_dir: PathBuf,
    /// Controllers used from this hierarchy.
    pub controllers: Vec<Controller>,
    /// Whether `cpu.idle` exists (checked on the own cgroup when cpu is
    /// here).
    pub cpu_idle: bool,
}

impl Hierarchy {
    fn has(&self, c: Controller) -> bool {
        self.controllers.contains(&c)
    }
}

fn read_small(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut s = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(limits::METADATA_FILE_BYTES_MAX).read_to_string(&mut s))
        .map_err(|source| Error::ReadMetadata {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(s)
}

/// Mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of `own` (a path from /proc/self/cgroup) under a mount
/// whose root is `mount_root` (mountinfo's 4th field) at `mount_point`.
fn own_dir(mount_point: &str, mount_root: &str, own: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        own
    } else {
        own.strip_prefix(mount_root)?
    };
    let rel = rel.trim_start_matches('/');
    let mut p = PathBuf::from(mount_point);
    if !rel.is_empty() {
        p.push(rel);
    }
    Some(p)
}

/// Finds a hierarchy for each of memory, pids and cpu. cgroup v2 is used
/// when its root offers all three controllers; otherwise each comes from
/// the v1 hierarchy that carries it.
pub fn detect() -> Result<Vec<Hierarchy>> {
    let mountinfo = read_small(Path::new("/proc/self/mountinfo"))?;
    let self_cgroup = read_small(Path::new("/proc/self/cgroup"))?;
    // /proc/self/cgroup: "id:controllers:path"; v2 is "0::path".
    let mut own_v1: Vec<(Vec<String>, String)> = Vec::new();
    let mut own_v2: Option<String> = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            own_v2 = Some(path.to_string());
        } else {
            own_v1.push((ctrls.split(',').map(String::from).collect(), path.to_string()));
        }
    }
    let mut v1: Vec<Hierarchy> = Vec::new();
    let mut v2: Option<Hierarchy> = None;
    for line in mountinfo.lines() {
        // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let root = unescape_mountinfo(pre[3]);
        let point = unescape_mountinfo(pre[4]);
        match post[0] {
            "cgroup" => {
                let opts: Vec<&str> = post[2].split(',').collect();
                let ctrls: Vec<Controller> = Controller::ALL
                    .into_iter()
                    .filter(|c| opts.contains(&c.name()))
                    .collect();
                if ctrls.is_empty() || v1.iter().any(|h| ctrls.iter().any(|c| h.has(*c))) {
                    continue;
                }
                let Some((_, own)) = own_v1
                    .iter()
                    .find(|(names, _)| names.iter().any(|n| n == ctrls[0].name()))
                else {
                    continue;
                };
                let Some(dir) = own_dir(&point, &root, own) else {
                    continue;
                };
                let cpu_idle = ctrls.contains(&Controller::Cpu) && dir.join("cpu.idle").exists();
                v1.push(Hierarchy {
                    version: Version::V1,
                    own_dir: dir,
                    controllers: ctrls,
                    cpu_idle,
                });
            }
            "cgroup2" if v2.is_none() => {
                let Some(own) = &own_v2 else { continue };
                let Some(dir) = own_dir(&point, &root, own) else {
                    continue;
                };
                // The controllers the own cgroup's parent lets it use are
                // the ones its children can get.
                let Ok(available) = read_small(&dir.join("cgroup.controllers")) else {
                    continue;
                };
                let names: Vec<&str> = available.split_whitespace().collect();
                let ctrls: Vec<Controller> = Controller::ALL
                    .into_iter()
                    .filter(|c| names.contains(&c.name()))
                    .collect();
                let cpu_idle = dir.join("cpu.idle").exists() || ctrls.contains(&Controller::Cpu);
                v2 = Some(Hierarchy {
                    version: Version::V2,
                    own_dir: dir,
                    controllers: ctrls,
                    cpu_idle,
                });
            }
            _ => {}
        }
    }
    if let Some(h) = v2 {
        if Controller::ALL.iter().all(|c| h.has(*c)) {
            return Ok(vec![h]);
        }
    }
    for c in Controller::ALL {
        if !v1.iter().any(|h| h.has(c)) {
            return Err(Error::CgroupMissing { controller: c.name() });
        }
    }
    Ok(v1)
}

/// A directory the sandbox made, removed when dropped (best effort: a drop
/// cannot report; [`CgroupDir::remove`] does).
#[derive(Debug)]
pub struct CgroupDir {
    path: PathBuf,
    removed: bool,
}

impl CgroupDir {
    /// Makes `path`; fails if it already exists, so that the sandbox never
    /// adopts (and later removes) a cgroup it did not make.
    pub fn create(path: PathBuf) -> Result<CgroupDir> {
        match fs::create_dir(&path) {
            Ok(()) => Ok(CgroupDir { path, removed: false }),
            Err(source) => Err(Error::CgroupCreate { path, source }),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `to`, in the same parent (cgroup v1 only;
    /// fails if `to` exists). It stays this value's to remove.
    pub fn rename_to(&mut self, to: PathBuf) -> io::Result<()> {
        fs::rename(&self.path, &to)?;
        self.path = to;
        Ok(())
    }

    /// Follows a rename of its parent: the directory is now under `parent`.
    pub fn reparent(&mut self, parent: &Path) {
        if let Some(name) = self.path.file_name() {
            self.path = parent.join(name);
        }
    }

    /// Writes `value` to the control file `file` in this directory.
    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        fs::write(&path, value).map_err(|source| Error::CgroupWrite {
            path,
            value: value.to_string(),
            source,
        })
    }

    /// Removes the directory, retrying while the kernel still counts a
    /// task that was just reaped (EBUSY).
    pub fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < limits::CGROUP_RMDIR_TRIES_MAX => {
                    tries += 1;
                    std::thread::yield_now();
                }
                Err(source) => {
                    return Err(Error::CgroupRemove {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// `cpu.shares` of an LC proc declaring `mcpu` milli-cores.
pub fn lc_cpu_shares(mcpu: u64) -> u64 {
    (mcpu * limits::CPU_SHARES_PER_CORE / 1000).clamp(limits::CPU_SHARES_MIN, limits::CPU_SHARES_MAX)
}

/// The cgroup v2 `cpu.weight` equivalent of v1 `cpu.shares` (the kernel's
/// own mapping of [2, 262144] onto [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2)) * 9999 / 262_142
}

/// Reclaims what a sandbox named `cgroup_parent` left behind when its
/// process died without cleaning up (`kill -9`): every process still in
/// its cgroups is killed, then the cgroups are removed, deepest first. Only
/// for a name the caller owns (e.g. one derived from a data directory whose
/// lock it holds): this kills whatever runs under that name. Returns the
/// number of processes killed.
pub fn reclaim(cgroup_parent: &str) -> Result<usize> {
    let mut killed = 0;
    for h in detect()? {
        let root = h.own_dir.join(cgroup_parent);
        if !root.is_dir() {
            continue;
        }
        // Kill until the tree is empty: a dying fork bomb may add tasks.
        for _ in 0..limits::RECLAIM_KILL_ROUNDS_MAX {
            let pids = tree_pids(&root);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill takes no pointers.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        remove_tree(&root)?;
    }
    Ok(killed)
}

/// Every pid in the cgroup tree under `dir`.
fn tree_pids(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree_pids(&e.path()));
            }
        }
    }
    out
}

/// Removes the cgroup tree under `dir`, deepest first.
fn remove_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    let mut d = CgroupDir {
        path: dir.to_path_buf(),
        removed: false,
    };
    d.remove()
}

/// Opens the file of cgroup `dir` that the child writes `0` to, to join:
/// on a v1 hierarchy `tasks`, on v2 `cgroup.procs`.
///
/// Writing to a v1 `cgroup.procs` moves a whole thread group, so the kernel
/// takes `cgroup_threadgroup_rwsem` for writing: every fork, exec and exit
/// on the machine waits while it is held, and the first writer after a
/// quiet spell waits an RCU grace period for it (5–9 ms on this VM, against
/// 0.3 ms for `tasks`: docs/spawn-path.md).
/// `0` written to `tasks` moves the writing thread alone, for which the
/// kernel skips that lock (`cgroup_procs_write_start`: "If we migrate a
/// single thread, we don't care about threadgroup stability"). The child
/// is a single-threaded process (cloned without `CLONE_THREAD`), so moving
/// its thread moves the proc, and every thread the proc makes later starts
/// in its creator's cgroups. A v2 cgroup has no `tasks` (its
/// `cgroup.threads` is for threaded subtrees only) and is joined by
/// `cgroup.procs`.
pub(crate) fn join_file(dir: &Path) -> Result<OwnedFd> {
    let open = |path: &Path| fs::OpenOptions::new().write(true).open(path);
    let tasks = dir.join("tasks");
    let fd = match open(&tasks) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let path = dir.join("cgroup.procs");
            open(&path).map_err(|source| Error::CgroupOpen { path, source })?
        }
        Err(source) => return Err(Error::CgroupOpen { path: tasks, source }),
    };
    Ok(fd.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_dir_joins_mount_and_own_path() {
        assert_eq!(
            own_dir("/sys/fs/cgroup/memory", "/", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
        assert_eq!(
            own_dir("/sys/fs/cgroup/pids", "/", "/"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(own_dir("/c", "/a", "/a/b"), Some(PathBuf::from("/c/b")));
        assert_eq!(own_dir("/c", "/x", "/a/b"), None);
    }

    #[test]
    fn shares_follow_mcpu() {
        assert_eq!(lc_cpu_shares(1000), 1024);
        assert_eq!(lc_cpu_shares(500), 512);
        assert_eq!(lc_cpu_shares(0), limits::CPU_SHARES_MIN);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    /// Each detected hierarchy's proc cgroups are joined by `tasks` on v1
    /// and `cgroup.procs` on v2, and a thread writing `0` to the v1 file
    /// is in the cgroup (and its process listed in `cgroup.procs`).
    #[test]
    fn a_cgroup_is_joined_by_tasks_on_v1_and_cgroup_procs_on_v2() {
        use std::os::fd::AsRawFd;
        let mut dirs: Vec<(PathBuf, Version)> = detect()
            .expect("this machine has cgroups")
            .iter()
            .map(|h| (h.own_dir.clone(), h.version))
            .collect();
        // A v2 mount without controllers is not among the detected ones;
        // it still shows how a v2 cgroup is joined.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if let Some(m) = mounts.lines().find(|l| l.split_whitespace().nth(2) == Some("cgroup2")) {
            let mount = PathBuf::from(m.split_whitespace().nth(1).unwrap());
            if !dirs.iter().any(|(_, v)| *v == Version::V2) {
                dirs.push((mount, Version::V2));
            }
        }
        for (own, version) in dirs {
            let mut dir =
                CgroupDir::create(own.join(format!("sigma-join-test-{}", std::process::id()))).expect("mkdir");
            let fd = join_file(dir.path()).expect("join file");
            let target = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
            let want = match version {
                Version::V1 => "tasks",
                Version::V2 => "cgroup.procs",
            };
            assert!(target.ends_with(want), "{} on {version:?}", target.display());
            if version == Version::V1 {
                let (path, raw) = (dir.path().to_path_buf(), fd.as_raw_fd());
                std::thread::spawn(move || {
                    // SAFETY: writes one byte from a static string to an fd that outlives this thread.
                    assert_eq!(unsafe { libc::write(raw, c"0".as_ptr().cast(), 1) }, 1);
                    // SAFETY: gettid has no arguments and cannot fail.
                    let tid = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
                    let tasks = fs::read_to_string(path.join("tasks")).unwrap();
                    assert!(tasks.lines().any(|l| l == tid), "thread {tid} not in {tasks}");
                    let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap();
                    assert!(procs.lines().any(|l| l == std::process::id().to_string()), "{procs}");
                })
                .join()
                .unwrap();
            }
            drop(fd);
            // The thread has exited, so the cgroup is empty again.
            dir.remove().expect("rmdir");
        }
    }

    #[test]
    fn detects_memory_pids_and_cpu() {
        let hs = detect().expect("this machine has cgroups");
        for c in Controller::ALL {
            assert!(hs.iter().any(|h| h.has(c)), "{c:?} missing");
        }
    }
}
