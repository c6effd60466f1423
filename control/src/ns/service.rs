//! The namespace API on top of any [`Store`], bound to one realm per handle.
//!
//! Keys are `"{realm}:{path}"`; a realm's existence is the key
//! `"!realm/{name}"` (realm names cannot contain `:` or `!`). A [`RealmNs`]
//! builds every key from its own realm's prefix, so nothing it does can
//! read, change, watch or even name an entry of another realm.

use super::entry::{Entry, EntryKind, Stat};
use super::path::{check_realm, excerpt, NsPath, ANY, LOCAL};
use super::store::{Change, Compare, LeaseId, Record, Store, WatchEvent};
use super::{NsError, FILE_BYTES_MAX, READDIR_ENTRIES_MAX};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

/// The realm that holds shared services.
pub const ROOT_REALM: &str = "root";

fn realm_key(realm: &str) -> String {
    format!("!realm/{realm}")
}

/// The path prefix under which every realm sees the root realm, read-only.
pub const ROOT_VIEW: &str = "/~root";

/// For a path under [`ROOT_VIEW`], the path in the root realm it names
/// (`/~root` is `/`, `/~root/a` is `/a`); `None` for any other path.
pub fn root_view_rest(path: &str) -> Option<&str> {
    match path.strip_prefix(ROOT_VIEW)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

fn lease_key(lease: LeaseId) -> String {
    format!("!lease/{lease}")
}

fn key(realm: &str, path: &NsPath) -> String {
    format!("{realm}:{path}")
}

/// The prefix of every key strictly below `dir`.
fn children_prefix(realm: &str, dir: &NsPath) -> String {
    if dir.is_root() {
        format!("{realm}:/")
    } else {
        format!("{realm}:{dir}/")
    }
}

/// What `open` finds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A directory or file.
    Entry(Stat),
    /// A mount on the way (or at the end): the path is served by its endpoint.
    Mount(Resolved),
}

/// The namespace service.
#[derive(Debug)]
pub struct Namespace<S: Store> {
    store: S,
    /// This machine's name, for `~local`.
    machine: String,
    /// What this namespace last saw of entries, by key: lets a change
    /// compare-and-swap against the version it saw instead of reading the
    /// entry first (one store round trip instead of two). A stale hint only
    /// makes the swap fail, and the call then takes the reading path.
    hints: std::sync::Mutex<HashMap<String, Hint>>,
    /// Bounds watches being set up at once (`WATCH_SETUPS_MAX`).
    watch_setups: tokio::sync::Semaphore,
}

/// An entry's header at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hint {
    kind: EntryKind,
    perm: u32,
    lease: Option<LeaseId>,
    version: u64,
}

/// Hints kept at most; when full, they are all dropped (they are only hints).
const HINTS_MAX: usize = 65_536;

/// Where a path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The mount the path goes through (with selectors replaced).
    pub mount: NsPath,
    /// The mount's endpoint.
    pub endpoint: Bytes,
    /// What is left of the path below the mount.
    pub rest: Vec<String>,
}

impl<S: Store> Namespace<S> {
    /// A namespace over `store`; `machine` names this machine for `~local`.
    /// Creates the root realm if it is missing.
    pub async fn new(store: S, machine: &str) -> Result<Namespace<S>, NsError> {
        let ns = Namespace {
            store,
            machine: machine.to_string(),
            hints: std::sync::Mutex::new(HashMap::new()),
            watch_setups: tokio::sync::Semaphore::new(super::WATCH_SETUPS_MAX),
        };
        match ns.create_realm(ROOT_REALM).await {
            Ok(()) | Err(NsError::RealmExists(_)) => Ok(ns),
            Err(e) => Err(e),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A turn to set up a watch (`WATCH_SETUPS_MAX` at once).
    async fn watch_setup(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.watch_setups
            .acquire()
            .await
            .expect("the watch-setup semaphore is never closed")
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hint>> {
        self.hints.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hint(&self, key: &str) -> Option<Hint> {
        self.hints().get(key).copied()
    }

    fn remember(&self, key: &str, entry: &Entry, version: u64) {
        let mut hints = self.hints();
        if hints.len() >= HINTS_MAX && !hints.contains_key(key) {
            hints.clear();
        }
        let hint = Hint {
            kind: entry.kind,
            perm: entry.perm,
            lease: entry.lease,
            version,
        };
        match hints.get_mut(key) {
            Some(h) => *h = hint,
            None => {
                hints.insert(key.to_string(), hint);
            }
        }
    }

    fn forget(&self, key: &str) {
        self.hints().remove(key);
    }

    /// Creates a realm with an empty root directory.
    pub async fn create_realm(&self, realm: &str) -> Result<(), NsError> {
        check_realm(realm)?;
        let root = Entry {
            kind: EntryKind::Dir,
            perm: 0o755,
            data: Bytes::new(),
            lease: None,
        };
        let root_key = key(realm, &NsPath::root());
        let ok = self
            .store
            .txn(
                &[Compare::Absent(realm_key(realm)), Compare::Absent(root_key.clone())],
                &[
                    Change::Put {
                        key: realm_key(realm),
                        value: Bytes::new(),
                        lease: None,
                    },
                    Change::Put {
                        key: root_key,
                        value: root.encode(),
                        lease: None,
                    },
                ],
            )
            .await?;
        if ok {
            Ok(())
        } else {
            Err(NsError::RealmExists(realm.to_string()))
        }
    }

    /// The realms, sorted.
    pub async fn realms(&self) -> Result<Vec<String>, NsError> {
        let keys = self.store.scan("!realm/").await?;
        Ok(keys
            .into_iter()
            .map(|(k, _)| k["!realm/".len()..].to_string())
            .collect())
    }

    /// `UnknownRealm` unless `realm` exists (one store read).
    pub async fn check_realm_exists(&self, realm: &str) -> Result<(), NsError> {
        check_realm(realm)?;
        match self.store.get(&realm_key(realm)).await? {
            Some(_) => Ok(()),
            None => Err(NsError::UnknownRealm(realm.to_string())),
        }
    }

    /// Removes a realm and everything in it. The root realm stays.
    pub async fn remove_realm(&self, realm: &str) -> Result<(), NsError> {
        check_realm(realm)?;
        if realm == ROOT_REALM {
            return Err(NsError::Denied("the root realm cannot be removed".into()));
        }
        if self.store.get(&realm_key(realm)).await?.is_none() {
            return Err(NsError::UnknownRealm(realm.to_string()));
        }
        // One transaction whatever the realm holds: its marker and a range
        // delete of its keys (in etcd, two operations however many keys).
        let changes = [
            Change::Delete { key: realm_key(realm) },
            Change::DeletePrefix {
                prefix: format!("{realm}:"),
            },
        ];
        self.store.txn(&[], &changes).await?;
        Ok(())
    }

    /// A handle bound to `realm`. Whether the realm exists is checked by
    /// the calls themselves (a realm's root directory is there exactly while
    /// the realm is), so a handle costs no round trip to the store; calls
    /// on a missing realm fail with `UnknownRealm`.
    pub async fn realm(&self, realm: &str) -> Result<RealmNs<'_, S>, NsError> {
        check_realm(realm)?;
        Ok(RealmNs {
            ns: self,
            realm: realm.to_string(),
        })
    }
}

/// The namespace of one realm.
#[derive(Debug)]
pub struct RealmNs<'a, S: Store> {
    ns: &'a Namespace<S>,
    realm: String,
}

fn stat_of(path: &NsPath, entry: &Entry, version: u64) -> Stat {
    Stat {
        name: path.name().to_string(),
        kind: entry.kind,
        perm: entry.perm,
        len: entry.data.len() as u64,
        version,
        lease: entry.lease,
    }
}

impl<S: Store> RealmNs<'_, S> {
    /// The realm this handle is bound to.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn store(&self) -> &S {
        &self.ns.store
    }

    /// Where a path points: this realm, or the root realm's tree for paths
    /// under `/~root` (which every realm may read and none but root may change).
    fn locate(&self, path: &str) -> Result<(&str, NsPath), NsError> {
        match root_view_rest(path) {
            Some(rest) => Ok((ROOT_REALM, NsPath::parse(rest)?)),
            None => Ok((&self.realm, NsPath::parse(path)?)),
        }
    }

    /// Refuses changes under `/~root`: the root realm is read-only from other realms.
    fn check_writable(&self, path: &str) -> Result<(), NsError> {
        if root_view_rest(path).is_some() {
            return Err(NsError::Denied(format!(
                "{}: the root realm is read-only from realm {}",
                excerpt(path),
                self.realm
            )));
        }
        Ok(())
    }

    async fn load(&self, path: &NsPath) -> Result<(Entry, Record), NsError> {
        self.load_in(&self.realm, path).await
    }

    async fn load_in(&self, realm: &str, path: &NsPath) -> Result<(Entry, Record), NsError> {
        let k = key(realm, path);
        match self.store().get(&k).await? {
            Some(record) => {
                let entry = Entry::decode(&record.value)?;
                self.ns.remember(&k, &entry, record.version);
                Ok((entry, record))
            }
            None => {
                self.ns.forget(&k);
                Err(self.not_found(realm, path).await)
            }
        }
    }

    /// The parent directory's version for a create under it: from the hint
    /// if there is one (a stale hint fails the create's swap, which then
    /// re-reads), else read.
    /// Returns the version and whether it came from a hint.
    async fn parent_version(&self, parent: &NsPath, use_hint: bool) -> Result<(u64, bool), NsError> {
        if use_hint {
            if let Some(h) = self.ns.hint(&key(&self.realm, parent)) {
                if h.kind == EntryKind::Dir {
                    return Ok((h.version, true));
                }
            }
        }
        let (parent_entry, parent_record) = self.load(parent).await?;
        if parent_entry.kind != EntryKind::Dir {
            return Err(NsError::NotDir {
                path: parent.to_string(),
            });
        }
        Ok((parent_record.version, false))
    }

    /// `NotFound` for `path`, or `UnknownRealm` if the whole realm is gone.
    async fn not_found(&self, realm: &str, path: &NsPath) -> NsError {
        match self.store().get(&realm_key(realm)).await {
            Ok(Some(_)) => NsError::NotFound { path: path.to_string() },
            Ok(None) => NsError::UnknownRealm(realm.to_string()),
            Err(e) => e,
        }
    }

    /// Creates an entry: a directory, a file with `data`, or a mount whose
    /// data is an endpoint. With a lease, the entry goes when the lease ends.
    pub async fn create(
        &self,
        path: &str,
        perm: u32,
        kind: EntryKind,
        data: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Stat, NsError> {
        self.check_writable(path)?;
        let path = NsPath::parse(path)?;
        let Some(parent) = path.parent() else {
            return Err(NsError::Exists { path: path.to_string() });
        };
        if kind == EntryKind::Dir && !data.is_empty() {
            return Err(NsError::IsDir { path: path.to_string() });
        }
        if data.len() > FILE_BYTES_MAX {
            return Err(NsError::TooLarge {
                what: path.to_string(),
                len: data.len(),
                max: FILE_BYTES_MAX,
                limit: "bytes of a file (FILE_BYTES_MAX)",
            });
        }
        let (mut parent_version, mut hinted) = self.parent_version(&parent, true).await?;
        if let Some(lease) = lease {
            self.check_lease(lease).await?;
        }
        let entry = Entry {
            kind,
            perm,
            data,
            lease,
        };
        let k = key(&self.realm, &path);
        let parent_key = key(&self.realm, &parent);
        let value = entry.encode();
        loop {
            let revision = self
                .store()
                .txn_revision(
                    // The parent must still be the directory we saw: a concurrent
                    // remove of the parent must not leave an orphan.
                    &[
                        Compare::Absent(k.clone()),
                        Compare::Version(parent_key.clone(), parent_version),
                    ],
                    &[Change::Put {
                        key: k.clone(),
                        value: value.clone(),
                        lease,
                    }],
                )
                .await?;
            if let Some(version) = revision {
                self.ns.remember(&k, &entry, version);
                return Ok(stat_of(&path, &entry, version));
            }
            if hinted {
                // The hint may be stale: read the parent and try once more.
                self.ns.forget(&parent_key);
                (parent_version, hinted) = self.parent_version(&parent, false).await?;
                continue;
            }
            return match self.store().get(&k).await? {
                Some(_) => Err(NsError::Exists { path: path.to_string() }),
                None => Err(NsError::Conflict { path: path.to_string() }),
            };
        }
    }

    /// What is known about an entry.
    pub async fn stat(&self, path: &str) -> Result<Stat, NsError> {
        let (realm, path) = self.locate(path)?;
        let (entry, record) = self.load_in(realm, &path).await?;
        Ok(stat_of(&path, &entry, record.version))
    }

    /// A file's contents (or a mount's endpoint).
    pub async fn read(&self, path: &str) -> Result<Bytes, NsError> {
        let (realm, path) = self.locate(path)?;
        let (entry, _) = self.load_in(realm, &path).await?;
        if entry.kind == EntryKind::Dir {
            return Err(NsError::IsDir { path: path.to_string() });
        }
        Ok(entry.data)
    }

    /// Replaces a file's contents; with `if_version`, only if the file is
    /// still at that version (compare-and-swap).
    pub async fn write(&self, path: &str, data: Bytes, if_version: Option<u64>) -> Result<Stat, NsError> {
        self.check_writable(path)?;
        let path = NsPath::parse(path)?;
        if data.len() > FILE_BYTES_MAX {
            return Err(NsError::TooLarge {
                what: path.to_string(),
                len: data.len(),
                max: FILE_BYTES_MAX,
                limit: "bytes of a file (FILE_BYTES_MAX)",
            });
        }
        let k = key(&self.realm, &path);
        // Fast path: swap against the version last seen, without reading.
        if let Some(h) = self.ns.hint(&k) {
            if h.kind == EntryKind::File && if_version.is_none_or(|v| v == h.version) {
                let entry = Entry {
                    kind: EntryKind::File,
                    perm: h.perm,
                    data: data.clone(),
                    lease: h.lease,
                };
                if let Some(version) = self.replace_if(&k, h.version, &entry).await? {
                    return Ok(stat_of(&path, &entry, version));
                }
                // Changed since: read it and decide below.
                self.ns.forget(&k);
            }
        }
        let (mut entry, record) = self.load(&path).await?;
        match entry.kind {
            EntryKind::Dir => return Err(NsError::IsDir { path: path.to_string() }),
            EntryKind::Mount => return Err(NsError::Denied(format!("{path}: a mount is changed by mounting again"))),
            EntryKind::File => {}
        }
        if if_version.is_some_and(|v| v != record.version) {
            return Err(NsError::Conflict { path: path.to_string() });
        }
        entry.data = data;
        let Some(version) = self.replace_if(&k, record.version, &entry).await? else {
            return Err(NsError::Conflict { path: path.to_string() });
        };
        Ok(stat_of(&path, &entry, version))
    }

    /// Puts `entry` at `k` if `k` is still at `version`; the new version, or
    /// `None` if it was not. Remembers what it wrote.
    async fn replace_if(&self, k: &str, version: u64, entry: &Entry) -> Result<Option<u64>, NsError> {
        let revision = self
            .store()
            .txn_revision(
                &[Compare::Version(k.to_string(), version)],
                &[Change::Put {
                    key: k.to_string(),
                    value: entry.encode(),
                    lease: entry.lease,
                }],
            )
            .await?;
        if let Some(v) = revision {
            self.ns.remember(k, entry, v);
        }
        Ok(revision)
    }

    /// The entries of a directory, sorted by name.
    pub async fn readdir(&self, path: &str) -> Result<Vec<Stat>, NsError> {
        let (realm, path) = self.locate(path)?;
        let (entry, _) = self.load_in(realm, &path).await?;
        if entry.kind != EntryKind::Dir {
            return Err(NsError::NotDir { path: path.to_string() });
        }
        let prefix = children_prefix(realm, &path);
        let mut out = Vec::new();
        for (k, record) in self.store().scan(&prefix).await? {
            let name = &k[prefix.len()..];
            if name.is_empty() || name.contains('/') {
                continue;
            }
            if out.len() >= READDIR_ENTRIES_MAX {
                return Err(NsError::TooLarge {
                    what: format!("{path} listing"),
                    len: out.len() + 1,
                    max: READDIR_ENTRIES_MAX,
                    limit: "entries in a listing (READDIR_ENTRIES_MAX)",
                });
            }
            let entry = Entry::decode(&record.value)?;
            out.push(Stat {
                name: name.to_string(),
                kind: entry.kind,
                perm: entry.perm,
                len: entry.data.len() as u64,
                version: record.version,
                lease: entry.lease,
            });
        }
        Ok(out)
    }

    async fn has_children(&self, path: &NsPath) -> Result<bool, NsError> {
        self.store().any_under(&children_prefix(&self.realm, path)).await
    }

    /// Removes an entry (a directory only when empty).
    pub async fn remove(&self, path: &str) -> Result<(), NsError> {
        self.check_writable(path)?;
        let path = NsPath::parse(path)?;
        if path.is_root() {
            return Err(NsError::Denied("the root directory cannot be removed".into()));
        }
        let k = key(&self.realm, &path);
        // Fast path for files and mounts: swap against the version last seen.
        if let Some(h) = self.ns.hint(&k) {
            if h.kind != EntryKind::Dir {
                let removed = self
                    .store()
                    .txn(
                        &[Compare::Version(k.clone(), h.version)],
                        &[Change::Delete { key: k.clone() }],
                    )
                    .await?;
                self.ns.forget(&k);
                if removed {
                    return Ok(());
                }
            }
        }
        let (entry, record) = self.load(&path).await?;
        if entry.kind == EntryKind::Dir && self.has_children(&path).await? {
            return Err(NsError::NotEmpty { path: path.to_string() });
        }
        let removed = self
            .store()
            .txn(
                &[Compare::Version(k.clone(), record.version)],
                &[Change::Delete { key: k.clone() }],
            )
            .await?;
        self.ns.forget(&k);
        if !removed {
            return Err(NsError::Conflict { path: path.to_string() });
        }
        Ok(())
    }

    /// Renames atomically: the entry is at `from` or at `to`, never both or
    /// neither. `to` must not exist; a directory must be empty.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), NsError> {
        self.check_writable(from)?;
        self.check_writable(to)?;
        let from = NsPath::parse(from)?;
        let to = NsPath::parse(to)?;
        if from.is_root() || to.is_root() || from.contains(&to) {
            return Err(NsError::Denied(format!("cannot rename {from} to {to}")));
        }
        let (entry, record) = self.load(&from).await?;
        if entry.kind == EntryKind::Dir && self.has_children(&from).await? {
            return Err(NsError::NotEmpty { path: from.to_string() });
        }
        let to_parent = to.parent().expect("not root");
        let (parent_entry, parent_record) = self.load(&to_parent).await?;
        if parent_entry.kind != EntryKind::Dir {
            return Err(NsError::NotDir {
                path: to_parent.to_string(),
            });
        }
        let (kf, kt) = (key(&self.realm, &from), key(&self.realm, &to));
        self.ns.forget(&kf);
        let ok = self
            .store()
            .txn(
                &[
                    Compare::Version(kf.clone(), record.version),
                    Compare::Absent(kt.clone()),
                    Compare::Version(key(&self.realm, &to_parent), parent_record.version),
                ],
                &[
                    Change::Delete { key: kf },
                    Change::Put {
                        key: kt,
                        value: entry.encode(),
                        lease: entry.lease,
                    },
                ],
            )
            .await?;
        if !ok {
            return match self.store().get(&key(&self.realm, &to)).await? {
                Some(_) => Err(NsError::Exists { path: to.to_string() }),
                None => Err(NsError::Conflict { path: from.to_string() }),
            };
        }
        Ok(())
    }

    /// Mounts `endpoint` at `path` (a name for a σEP), optionally under a lease.
    pub async fn mount(&self, path: &str, endpoint: Bytes, lease: Option<LeaseId>) -> Result<Stat, NsError> {
        self.create(path, 0o444, EntryKind::Mount, endpoint, lease).await
    }

    /// Finds the mount a path goes through. `~any` picks any mount in a
    /// directory of replicas, `~local` the one named after this machine.
    pub async fn resolve(&self, path: &str) -> Result<Resolved, NsError> {
        let via_root = root_view_rest(path);
        let (realm, view) = match via_root {
            Some(rest) => (ROOT_REALM, rest),
            None => (self.realm.as_str(), path),
        };
        let in_view = |p: &NsPath| {
            if via_root.is_some() {
                format!("{ROOT_VIEW}{p}")
            } else {
                p.to_string()
            }
        };
        let parsed = NsPath::parse_with(view, true)?;
        let mut at = NsPath::root();
        let components: Vec<String> = parsed.components().map(str::to_string).collect();
        for (i, component) in components.iter().enumerate() {
            let next = match component.as_str() {
                ANY | LOCAL => {
                    let replicas = self.readdir(&in_view(&at)).await?;
                    let pick = if component == LOCAL {
                        replicas.iter().find(|s| s.name == self.ns.machine)
                    } else {
                        // Spread load: pick by a cheap clock-derived index.
                        let n = replicas.len().max(1);
                        let i = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.subsec_nanos() as usize)
                            % n;
                        replicas.get(i)
                    };
                    match pick {
                        Some(stat) => at.join(&stat.name)?,
                        None => {
                            return Err(NsError::Unresolvable {
                                path: path.to_string(),
                                why: format!("no instance for {component} in {at}"),
                            })
                        }
                    }
                }
                name => at.join(name)?,
            };
            let (entry, _) = self.load_in(realm, &next).await?;
            match entry.kind {
                EntryKind::Mount => {
                    return Ok(Resolved {
                        mount: next,
                        endpoint: entry.data,
                        rest: components[i + 1..].to_vec(),
                    });
                }
                EntryKind::File if i + 1 < components.len() => return Err(NsError::NotDir { path: next.to_string() }),
                _ => at = next,
            }
        }
        Err(NsError::Unresolvable {
            path: path.to_string(),
            why: "no mount on the path".into(),
        })
    }

    /// What a path names: the directory or file there, or, if the path is a
    /// mount or goes through one, the mount (whose server serves the rest).
    /// One store read for a plain path; a walk only when the path is not
    /// there as such or uses `~any`/`~local`.
    pub async fn open(&self, path: &str) -> Result<Opened, NsError> {
        match self.locate(path) {
            Ok((realm, parsed)) => {
                if let Some(record) = self.store().get(&key(realm, &parsed)).await? {
                    let entry = Entry::decode(&record.value)?;
                    if entry.kind != EntryKind::Mount {
                        return Ok(Opened::Entry(stat_of(&parsed, &entry, record.version)));
                    }
                    // A mount: resolve (below) reports it.
                }
            }
            // Selectors (`~any`, `~local`) do not parse as a plain path.
            Err(NsError::InvalidPath { .. }) => {}
            Err(e) => return Err(e),
        }
        self.resolve(path).await.map(Opened::Mount)
    }

    /// Waits until `path` exists (returns at once if it does). Runs on any
    /// executor; bound the wait with that executor's timeout.
    pub async fn open_watch(&self, path: &str) -> Result<Stat, NsError> {
        let (realm, parsed) = self.locate(path)?;
        let k = key(realm, &parsed);
        // The setup (the store watch and the first check) takes a turn; the
        // wait for the event does not.
        let mut setup = Some(self.ns.watch_setup().await);
        let mut events = self.store().watch(&k).await?;
        loop {
            match self.stat(path).await {
                Ok(stat) => return Ok(stat),
                Err(NsError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            drop(setup.take());
            loop {
                match events.recv().await {
                    // The event carries the entry: no read back.
                    Some(WatchEvent::Put(key, record)) if key == k => {
                        let entry = Entry::decode(&record.value)?;
                        return Ok(stat_of(&parsed, &entry, record.version));
                    }
                    Some(_) => {}
                    // The watcher lagged: re-watch and re-check.
                    None => {
                        setup = Some(self.ns.watch_setup().await);
                        events = self.store().watch(&k).await?;
                        break;
                    }
                }
            }
        }
    }

    /// Waits for the next change among a directory's entries.
    pub async fn watch_dir(&self, path: &str) -> Result<(), NsError> {
        let (realm, parsed) = self.locate(path)?;
        let setup = self.ns.watch_setup().await;
        let (entry, _) = self.load_in(realm, &parsed).await?;
        if entry.kind != EntryKind::Dir {
            return Err(NsError::NotDir {
                path: parsed.to_string(),
            });
        }
        let prefix = children_prefix(realm, &parsed);
        let mut events = self.store().watch(&prefix).await?;
        drop(setup);
        loop {
            match events.recv().await {
                Some(WatchEvent::Put(k, _) | WatchEvent::Delete(k)) => {
                    if !k[prefix.len()..].contains('/') {
                        return Ok(());
                    }
                }
                // The watcher lagged, so something changed.
                None => return Ok(()),
            }
        }
    }

    /// Waits until `path` is gone (returns at once if it is).
    pub async fn watch_remove(&self, path: &str) -> Result<(), NsError> {
        let (realm, parsed) = self.locate(path)?;
        let k = key(realm, &parsed);
        let mut setup = Some(self.ns.watch_setup().await);
        let mut events = self.store().watch(&k).await?;
        loop {
            if self.store().get(&k).await?.is_none() {
                return Ok(());
            }
            drop(setup.take());
            loop {
                match events.recv().await {
                    Some(WatchEvent::Delete(key)) if key == k => return Ok(()),
                    Some(_) => {}
                    None => {
                        setup = Some(self.ns.watch_setup().await);
                        events = self.store().watch(&k).await?;
                        break;
                    }
                }
            }
        }
    }

    /// A lease for ephemeral entries, owned by this realm.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, NsError> {
        let lease = self.store().lease_grant(ttl).await?;
        // The owner record lives under the lease itself, so it goes with it.
        let owner = Change::Put {
            key: lease_key(lease),
            value: Bytes::from(self.realm.clone()),
            lease: Some(lease),
        };
        self.store().txn(&[], &[owner]).await?;
        Ok(lease)
    }

    /// Fails unless `lease` is alive and this realm's: another realm's lease
    /// looks exactly like an expired one.
    async fn check_lease(&self, lease: LeaseId) -> Result<(), NsError> {
        match self.store().get(&lease_key(lease)).await? {
            Some(record) if record.value == self.realm.as_bytes() => Ok(()),
            _ => Err(NsError::LeaseExpired(lease)),
        }
    }

    /// Keeps a lease alive.
    pub async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), NsError> {
        self.check_lease(lease).await?;
        self.store().lease_keep_alive(lease).await
    }

    /// Ends a lease and its entries now.
    pub async fn lease_revoke(&self, lease: LeaseId) -> Result<(), NsError> {
        self.check_lease(lease).await?;
        self.store().lease_revoke(lease).await
    }
}
