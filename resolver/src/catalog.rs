//! The catalog: the winning copies, materialised where PostgreSQL 18 reads natively.
//!
//! PostgreSQL looks for `<element>/extension/<name>.control` and for libraries along
//! `dynamic_library_path`; neither can express `<prefix>/<ext>/<ext>.control` + `sql/`. The
//! catalog is a small writable directory owned by the server, made of immutable generations:
//!
//! ```text
//! <root>/current -> gen-<n>                    the complete generation to use now
//! <root>/gen-<n>/share/extension/<name>.control the winner's control file, plus an absolute
//!                                               `directory` naming its real script directory
//! <root>/gen-<n>/lib/<file>                     symlink to the winning library file
//! <root>/gen-<n>/.stamp                         what the generation was built from
//! <root>/gen-<n>/.inuse                         share-locked by every process using it
//! <root>/.lock                                  held by the one process building a generation
//! ```
//!
//! `<gen>/share` is put first in `extension_control_path` and `<gen>/lib` first in
//! `dynamic_library_path`: each process names one generation, never `current`, so a reader
//! that lists a directory and then opens what it listed (PostgreSQL's `pg_available_extensions`)
//! sees one complete generation, never a mix of two. A sync builds a whole new generation (what
//! did not change is hard-linked from the previous one), flushes it to disk, then renames the
//! `current` link over in one step. Generations no process holds are removed by the next sync,
//! so a sync cut short (a killed backend) leaves nothing behind for long and nothing anyone reads.
//!
//! Scripts, secondary control files and libraries are read from the images themselves; only
//! control files are copied (a few hundred bytes each). `$system` winners are not copied:
//! PostgreSQL finds them itself.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};

use crate::index::Index;
use crate::problem::{Problem, ProblemKind};
use crate::safe_fs::TrustPolicy;
use crate::usable::{library_distrust, usable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    root: PathBuf,
    trust: TrustPolicy,
    /// Flush what a sync writes to disk before the swap (PostgreSQL's `fsync` setting).
    durable: bool,
}

/// What a sync did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Extensions and libraries the catalog serves (not counting `$system`).
    pub extensions: usize,
    pub libraries: usize,
    /// Entries new or changed, and entries dropped, since the previous generation.
    pub written: usize,
    pub removed: usize,
    /// Control files that could not be read or parsed (left out of the catalog).
    pub problems: Vec<Problem>,
    /// Nothing was done: the current generation already served this state (synced by another
    /// process).
    pub unchanged: bool,
    /// Nothing was done: the index is no longer what the catalog must serve.
    pub stale: bool,
    /// The generation that is current after this sync (new, or the unchanged one).
    pub generation: Option<PathBuf>,
    /// Earlier generations (and leftovers of syncs cut short) removed by this sync.
    pub collected: usize,
    /// A claim on `generation`, taken under the catalog's lock: no collection can remove it
    /// before the caller adopts it.
    pub held: Option<std::sync::Arc<InUse>>,
}

/// The element a generation gives `extension_control_path` (PostgreSQL appends `/extension`).
pub fn control_path_element(generation: &Path) -> PathBuf {
    generation.join("share")
}

/// The element a generation gives `dynamic_library_path`.
pub fn library_dir(generation: &Path) -> PathBuf {
    generation.join("lib")
}

fn dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
}

impl Catalog {
    /// A catalog at `root` that refuses untrusted files (owned by neither root nor this
    /// process's user, or writable by group or others).
    pub fn new(root: impl Into<PathBuf>) -> Catalog {
        Catalog { root: root.into(), trust: TrustPolicy::for_this_process(true), durable: true }
    }

    /// Whether syncs flush files and directories to disk (on by default; PostgreSQL's `fsync =
    /// off` turns it off like every other flush of the server).
    pub fn with_durability(mut self, durable: bool) -> Catalog {
        self.durable = durable;
        self
    }

    /// Flushes `path` (a file or a directory) to disk, if this catalog is durable.
    fn flush(&self, path: &Path) -> io::Result<()> {
        if self.durable { fs::File::open(path)?.sync_all() } else { Ok(()) }
    }

    pub fn with_trust(mut self, trust: TrustPolicy) -> Catalog {
        self.trust = trust;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `current` link: what a process names before it has a generation of its own.
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The current generation's directory, if there is one.
    pub fn current(&self) -> Option<PathBuf> {
        let target = fs::read_link(self.current_link()).ok()?;
        let name = target.file_name()?;
        generation_number(name)?;
        Some(self.root.join(name))
    }

    /// The element for `extension_control_path` of the current generation.
    pub fn control_path_element(&self) -> PathBuf {
        control_path_element(&self.current().unwrap_or_else(|| self.current_link()))
    }

    /// The element for `dynamic_library_path` of the current generation.
    pub fn library_dir(&self) -> PathBuf {
        library_dir(&self.current().unwrap_or_else(|| self.current_link()))
    }

    /// Makes the catalog serve exactly the non-`$system` winners of `index`, waiting for another
    /// process's sync to finish first. `force` builds a new generation even when the current one
    /// says it serves this state (files may have changed inside the images without any prefix
    /// changing).
    pub fn sync(&self, index: &Index, force: bool) -> io::Result<SyncReport> {
        self.sync_if(index, force, &|| true)
    }

    /// [`Catalog::sync`], if `still_wanted()` — asked once the catalog is locked — says `index`
    /// is still what this catalog must serve; else nothing is written and the report says
    /// `stale` (a backend that built its index before a reload must not undo it).
    pub fn sync_if(&self, index: &Index, force: bool, still_wanted: &dyn Fn() -> bool) -> io::Result<SyncReport> {
        self.sync_locking(index, Rebuild::forced(force), true, still_wanted).map(|r| r.unwrap_or_default())
    }

    /// [`Catalog::sync`] that never waits: `None` when another process holds the catalog
    /// (the postmaster must never block on a backend).
    pub fn try_sync(&self, index: &Index, force: bool) -> io::Result<Option<SyncReport>> {
        self.sync_locking(index, Rebuild::forced(force), false, &|| true)
    }

    /// [`Catalog::try_sync`] for a server start: the current generation is kept when nothing it
    /// was built from changed — neither the prefixes' entries nor the files and directories of
    /// what it serves (their inode numbers, sizes and change times, see [`files_digest`]) — so a
    /// restart reads and writes nothing of it. A change inside a script directory that leaves
    /// the directory itself as it was (a `chmod` of one script) is seen at `rescan()`.
    pub fn try_sync_if_files_changed(&self, index: &Index) -> io::Result<Option<SyncReport>> {
        self.sync_locking(index, Rebuild::IfFilesChanged, false, &|| true)
    }

    /// Whether this process can take the catalog's lock right now (`None`: another holds it).
    fn lock(&self, wait: bool) -> io::Result<Option<fs::File>> {
        loop {
            dir_builder().create(&self.root)?;
            let path = self.root.join(".lock");
            let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            if wait {
                lock.lock()?;
            } else {
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(fs::TryLockError::Error(e)) => return Err(e),
                }
            }
            // A collection may have removed the catalog (its lock file with it) while this
            // process waited: a lock on a file no longer at the path locks nothing.
            if same_file(&lock, &path) {
                return Ok(Some(lock));
            }
        }
    }

    fn sync_locking(
        &self,
        index: &Index,
        rebuild: Rebuild,
        wait: bool,
        still_wanted: &dyn Fn() -> bool,
    ) -> io::Result<Option<SyncReport>> {
        let Some(_lock) = self.lock(wait)? else { return Ok(None) };
        if !still_wanted() {
            return Ok(Some(SyncReport { stale: true, ..SyncReport::default() }));
        }
        // What the current generation was built from: when another process just built it for
        // the same state (many backends after one change), there is nothing to do.
        // (taken before anything is read: a file changed while the generation is built makes
        // the next start build again; not taken at all when nothing is built or compared)
        let digest = (rebuild == Rebuild::IfFilesChanged).then(|| files_digest(index));
        let files = match rebuild {
            Rebuild::Always => None,
            Rebuild::IfPrefixesChanged => Some(None),
            Rebuild::IfFilesChanged => Some(digest.as_deref()),
        };
        if let Some(files) = files
            && let Some(report) = self.unchanged(&stamp(index, &self.trust), files)
        {
            return Ok(Some(report));
        }
        let digest = digest.unwrap_or_else(|| files_digest(index));
        self.build_generation(index, &digest).map(Some)
    }

    /// The report of a sync with nothing to do, if the current generation was built for `stamp`
    /// (and, when given, from files with digest `files`); the caller holds the lock.
    fn unchanged(&self, stamp: &str, files: Option<&str>) -> Option<SyncReport> {
        let current = self.current()?;
        if fs::read_to_string(current.join(".stamp")).ok()? != stamp {
            return None;
        }
        if let Some(files) = files {
            // what the index names, then the script directories the generation's control files
            // name (an absolute or nested `directory`)
            let watched = fs::read(current.join(".watch")).ok()?;
            let watched: Vec<PathBuf> = watched
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
                .collect();
            if fs::read_to_string(current.join(".files")).ok()? != format!("{files}{}", paths_digest(&watched)) {
                return None;
            }
        }
        let collected = self.collect_locked(Some(&current));
        let held = hold(&current, false).ok().flatten().map(std::sync::Arc::new);
        Some(SyncReport { unchanged: true, generation: Some(current), collected, held, ..SyncReport::default() })
    }

    /// Makes the catalog serve `path` as its prefixes are now, waiting for another process's
    /// sync first; the index is built — under the lock — only when the current generation does
    /// not already serve that state (it is returned then). After a change under a prefix, the
    /// first backend to get here scans and builds; the others wait for it, then find its
    /// generation current and scan nothing.
    pub fn sync_lazily(
        &self,
        path: &crate::SearchPath,
        system: &crate::SystemDirs,
        still_wanted: &dyn Fn() -> bool,
    ) -> io::Result<(SyncReport, Option<Index>)> {
        let _lock = self.lock(true)?.ok_or_else(|| io::Error::other("lock not taken"))?;
        if !still_wanted() {
            return Ok((SyncReport { stale: true, ..SyncReport::default() }, None));
        }
        let fingerprint = crate::index::fingerprint(path, system);
        if let Some(report) = self.unchanged(&stamp_of(path, &fingerprint, &self.trust), None) {
            return Ok((report, None));
        }
        let index = Index::build(path, system);
        let report = self.build_generation(&index, &files_digest(&index))?;
        Ok((report, Some(index)))
    }

    /// Builds a new generation serving `index` and makes it current (the caller holds the lock).
    fn build_generation(&self, index: &Index, digest: &str) -> io::Result<SyncReport> {
        let current = self.current();
        // numbers are never reused, even those of leftovers removed just below
        let next = self.root.join(format!("gen-{}", self.last_generation_number() + 1));
        // what earlier syncs left (cut short, or failed) goes first
        let mut collected = self.collect_locked(current.as_deref());
        // made here and nowhere else: a directory already there would be another builder's
        fs::DirBuilder::new().mode(0o700).create(&next)?;
        let built = self.build_into(index, digest, &next, current.as_deref());
        let (mut report, held) = match built {
            Ok(built) => built,
            Err(e) => {
                let _ = fs::remove_dir_all(&next);
                return Err(e);
            }
        };
        collected += self.collect_locked(Some(&next));
        report.collected = collected;
        report.generation = Some(next);
        report.held = Some(std::sync::Arc::new(held));
        Ok(report)
    }

    /// Writes the generation `next` and makes it current; the claim on it that the caller keeps.
    fn build_into(
        &self,
        index: &Index,
        digest: &str,
        next: &Path,
        current: Option<&Path>,
    ) -> io::Result<(SyncReport, InUse)> {
        let stamp = stamp(index, &self.trust);
        dir_builder().create(control_path_element(next).join("extension"))?;
        dir_builder().create(library_dir(next))?;
        // Held while it is built and until the caller adopts it: no collection takes it.
        let building = hold(next, true)?.ok_or_else(|| io::Error::other("generation removed while built"))?;
        let (report, scripts) = crate::safe_fs::memo::scope(|| self.fill(index, next, current))?;
        fs::write(next.join(".stamp"), &stamp)?;
        let mut watch = Vec::new();
        for dir in &scripts {
            watch.extend_from_slice(dir.as_os_str().as_bytes());
            watch.push(0);
        }
        fs::write(next.join(".watch"), &watch)?;
        fs::write(next.join(".files"), format!("{digest}{}", paths_digest(&scripts)))?;
        for path in [
            next.join(".stamp"),
            next.join(".watch"),
            next.join(".files"),
            control_path_element(next),
            next.to_path_buf(),
        ] {
            self.flush(&path)?;
        }
        // The swap: a new link under a name PostgreSQL never reads, renamed over `current`.
        let tmp = self.root.join(format!(".current.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink(next.file_name().expect("gen-<n>"), &tmp)?;
        fs::rename(&tmp, self.current_link())?;
        self.flush(&self.root)?;
        Ok((report, building))
    }

    /// The highest generation number under the root (0 for none).
    fn last_generation_number(&self) -> u64 {
        let entries = fs::read_dir(&self.root).into_iter().flatten().flatten();
        entries.filter_map(|e| generation_number(&e.file_name())).max().unwrap_or(0)
    }

    /// Writes generation `next` to serve the winners of `index`; entries equal to those of
    /// `previous` are hard links to them.
    fn fill(&self, index: &Index, next: &Path, previous: Option<&Path>) -> io::Result<(SyncReport, Vec<PathBuf>)> {
        let mut report = SyncReport::default();
        let mut controls: BTreeMap<OsString, Vec<u8>> = BTreeMap::new();
        let mut scripts = Vec::new();
        for copy in index.winners().filter(|c| index.path.catalogued(c.element)) {
            match usable(copy, &self.trust) {
                Ok(usable) => {
                    controls.insert(format!("{}.control", copy.name).into(), usable.generated);
                    scripts.push(usable.scripts);
                }
                Err(why) => {
                    report.problems.push(Problem { subject: copy.control_file.display().to_string(), kind: why.into() })
                }
            }
        }
        let mut links: BTreeMap<OsString, PathBuf> = BTreeMap::new();
        for library in index.library_winners().filter(|l| index.path.catalogued(l.element)) {
            match library_distrust(library, &self.trust) {
                Some(why) => report.problems.push(Problem {
                    subject: library.path.display().to_string(),
                    kind: ProblemKind::UntrustedLibrary(why),
                }),
                None => {
                    links.insert(library.file_name.clone(), library.path.clone());
                }
            }
        }
        report.extensions = controls.len();
        report.libraries = links.len();

        let control_dir = |generation: &Path| control_path_element(generation).join("extension");
        fill_dir(
            &control_dir(next),
            previous.map(control_dir).as_deref(),
            &controls,
            &mut report,
            |path| fs::read(path).ok(),
            |path, content| {
                fs::write(path, content)?;
                self.flush(path)
            },
            |from, to| fs::hard_link(from, to),
        )?;
        self.flush(&control_dir(next))?;
        fill_dir(
            &library_dir(next),
            previous.map(library_dir).as_deref(),
            &links,
            &mut report,
            |path| fs::read_link(path).ok(),
            |path, target| symlink(target, path),
            |_, _| Err(io::ErrorKind::Unsupported.into()),
        )?;
        self.flush(&library_dir(next))?;
        Ok((report, scripts))
    }

    /// Removes the generations no process holds, except `keep` and the current one, and what
    /// syncs cut short left in the root; the caller holds the lock. Returns how many
    /// generations went.
    fn collect_locked(&self, keep: Option<&Path>) -> usize {
        let current = self.current();
        let mut removed = 0;
        for entry in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if name.to_string_lossy().starts_with(".current.tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if generation_number(&name).is_none() || Some(path.as_path()) == keep || Some(&path) == current.as_ref() {
                continue;
            }
            if remove_if_unused(&path) {
                removed += 1;
            }
        }
        removed
    }

    /// Claims the current generation for as long as the returned value lives: no other process
    /// removes it meanwhile. `None` when there is no complete generation.
    pub fn adopt(&self) -> io::Result<Option<InUse>> {
        // A collection may remove the generation read from the link before it is held (only
        // once the link names a newer one): read the link again.
        for _ in 0..100 {
            let Some(generation) = self.current() else { return Ok(None) };
            if let Some(held) = hold(&generation, false)? {
                return Ok(Some(held));
            }
        }
        Ok(None)
    }
}

/// How much must have changed for a sync to build a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// An entry added to or removed from a prefix (the generation's stamp).
    IfPrefixesChanged,
    /// That, or a file or directory of what is served ([`files_digest`]).
    IfFilesChanged,
    Always,
}

impl Rebuild {
    fn forced(force: bool) -> Rebuild {
        if force { Rebuild::Always } else { Rebuild::IfPrefixesChanged }
    }
}

/// What the files a catalog serves from look like, without reading them: the inode number,
/// size, modification and change times, mode and owner of each prefix, and of each winner's
/// directory, control file and default script directories and each winning library under a
/// prefix (links followed). A file edited, replaced or `chmod`ed changes it. (A generation
/// also records the script directories its control files name, checked the same way.)
pub fn files_digest(index: &Index) -> String {
    use std::hash::Hasher;
    let mut hash = Fnv64::default();
    let mut add = |path: &Path| hash_metadata(&mut hash, path);
    for prefix in index.path.prefixes() {
        add(prefix);
    }
    for copy in index.winners().filter(|c| index.path.catalogued(c.element)) {
        for path in [&copy.dir, &copy.control_file, &copy.script_base, &copy.default_script_dir] {
            add(path);
        }
    }
    for library in index.library_winners().filter(|l| index.path.catalogued(l.element)) {
        add(&library.path);
        add(library.path.parent().unwrap_or(&library.path));
    }
    format!("{:016x}\n", hash.finish())
}

/// [`files_digest`] of the script directories `dirs` (those the generation's control files name).
fn paths_digest(dirs: &[PathBuf]) -> String {
    use std::hash::Hasher;
    let mut hash = Fnv64::default();
    for dir in dirs {
        hash_metadata(&mut hash, dir);
    }
    format!("{:016x}\n", hash.finish())
}

fn hash_metadata(hash: &mut Fnv64, path: &Path) {
    use std::hash::Hasher;
    hash.write(path.as_os_str().as_encoded_bytes());
    match fs::metadata(path) {
        Ok(m) => {
            for n in
                [m.ino(), m.size(), m.mtime() as u64, m.mtime_nsec() as u64, m.ctime() as u64, m.ctime_nsec() as u64]
            {
                hash.write_u64(n);
            }
            hash.write_u32(m.mode());
            hash.write_u32(m.uid());
        }
        Err(_) => hash.write_u8(0),
    }
}

/// FNV-1a, 64 bits: stable across processes and builds, unlike std's hasher.
pub(crate) struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// `n` for a name `gen-<n>`.
fn generation_number(name: &OsStr) -> Option<u64> {
    name.to_str()?.strip_prefix("gen-")?.parse().ok()
}

/// Makes `dir` hold exactly `desired`, given the `previous` generation's directory: entries whose
/// value there (`read`) is the desired one are linked from it (`link`, falling back to `write`),
/// others written.
fn fill_dir<V: PartialEq>(
    dir: &Path,
    previous: Option<&Path>,
    desired: &BTreeMap<OsString, V>,
    report: &mut SyncReport,
    read: impl Fn(&Path) -> Option<V>,
    write: impl Fn(&Path, &V) -> io::Result<()>,
    link: impl Fn(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(previous) = previous {
        let names = fs::read_dir(previous).into_iter().flatten().flatten().map(|e| e.file_name());
        report.removed += names.filter(|n| !desired.contains_key(n)).count();
    }
    for (name, value) in desired {
        let path = dir.join(name);
        let old = previous.map(|p| p.join(name));
        let unchanged = old.as_ref().is_some_and(|old| read(old).as_ref() == Some(value));
        if !unchanged {
            report.written += 1;
        } else if let Some(old) = &old
            && link(old, &path).is_ok()
        {
            continue;
        }
        write(&path, value)?;
    }
    Ok(())
}

/// What a catalog synced from `index` under `trust` serves, as far as can be told without
/// reading every file: the path, the trust policy and the modification times of the prefixes.
fn stamp(index: &Index, trust: &TrustPolicy) -> String {
    stamp_of(&index.path, &index.fingerprint, trust)
}

fn stamp_of(
    path: &crate::SearchPath,
    fingerprint: &[(PathBuf, Option<std::time::SystemTime>)],
    trust: &TrustPolicy,
) -> String {
    // the format of what a generation holds, and the rules that decide it, change with the
    // extension's version: a new version builds anew
    let mut stamp = format!(
        "{} {:?} {}\n{} {}\n",
        env!("CARGO_PKG_VERSION"),
        path.elements,
        path.implicit_system,
        trust.enforce,
        trust.server_uid
    );
    for (dir, modified) in fingerprint {
        let nanos = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos());
        stamp.push_str(&format!("{}\t{nanos:?}\n", dir.display()));
    }
    stamp
}

/// The canonical path of the library `file` is, when `file` is an entry of a catalog under
/// `root` (a generation's `lib/`, where a sync links only winning library copies under the
/// prefixes): what the catalog serves is known without an index.
pub fn served_through(root: &Path, file: &Path) -> Option<PathBuf> {
    let rest = file.strip_prefix(root).ok()?;
    let parts: Vec<_> = rest.components().collect();
    // <catalog>/gen-<n>/lib/<file>, every part a plain name, the catalog one of ours
    if parts.len() != 4 || !parts.iter().all(|p| matches!(p, std::path::Component::Normal(_))) {
        return None;
    }
    let catalog = parts[0].as_os_str().to_str()?;
    if catalog != SERVER_CATALOG && !catalog.starts_with(SESSION_CATALOG_PREFIX) {
        return None;
    }
    if parts[2].as_os_str() != "lib" || generation_number(parts[1].as_os_str()).is_none() {
        return None;
    }
    let target = fs::read_link(file).ok()?;
    target.is_absolute().then_some(())?;
    fs::canonicalize(file).ok()
}

/// The name of the catalog that serves a session's own path value (a SET, ALTER ROLE/DATABASE
/// … SET, connection options), under the same root as the server's: `session-<hash>`, the same
/// in every process and build for the same value.
pub fn session_catalog_name(value: &str) -> String {
    use std::hash::Hasher;
    let mut hash = Fnv64::default();
    hash.write(value.as_bytes());
    format!("{SESSION_CATALOG_PREFIX}{:016x}", hash.finish())
}

/// The server-wide settings the postmaster records for backends forked before its last reload:
/// the trust setting (`on`/`off`), a newline, the value of `extension_search_path.path`.
pub fn server_settings_record(enforce: bool, value: &str) -> String {
    format!("{}\n{value}", if enforce { "on" } else { "off" })
}

/// What [`server_settings_record`] wrote: the trust setting and the path value.
pub fn parse_server_settings_record(text: &str) -> Option<(bool, String)> {
    let (enforce, value) = text.split_once('\n')?;
    Some((enforce == "on", value.to_string()))
}

/// What the names of session catalogs start with.
pub const SESSION_CATALOG_PREFIX: &str = "session-";

/// The name of the catalog serving the server-wide path.
pub const SERVER_CATALOG: &str = "server";

/// A process's claim on a generation it uses (a shared lock on `<generation>/.inuse`, held
/// while the value lives; processes forked while it lives share it): no collection removes a
/// generation someone holds.
#[derive(Debug)]
pub struct InUse {
    _file: fs::File,
    pub dir: PathBuf,
}

/// Takes a claim on the generation `dir`; `None` if it was removed (a collector got there first).
fn hold(dir: &Path, create: bool) -> io::Result<Option<InUse>> {
    let path = dir.join(".inuse");
    let file = match fs::OpenOptions::new().create(create).truncate(false).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Never waits: the only exclusive lock is a collector's, on a generation it is removing.
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(None),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    // A collector may have removed the generation between the open and the lock: the file held
    // must still be the one at the path.
    Ok(same_file(&file, &path).then(|| InUse { _file: file, dir: dir.into() }))
}

/// Whether the open `file` is the one now at `path`.
fn same_file(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
        _ => false,
    }
}

/// Removes the generation `dir` if no process holds it, keeping it locked until it is gone (a
/// process that opened its claim file meanwhile then finds it removed); whether it went.
fn remove_if_unused(dir: &Path) -> bool {
    remove_if_unused_then(dir, || {})
}

/// [`remove_if_unused`], running `first` once the generation is known unused, before removing.
fn remove_if_unused_then(dir: &Path, first: impl FnOnce()) -> bool {
    let _locked = match fs::OpenOptions::new().write(true).open(dir.join(".inuse")) {
        Ok(file) if file.try_lock().is_ok() => Some(file),
        Ok(_) => return false,
        // Cut short before its claim file was made.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => return false,
    };
    first();
    fs::remove_dir_all(dir).is_ok()
}

/// Removes, in each catalog under `base` whose name starts with `prefix` and that no process is
/// syncing, every generation no process holds — the current one too — and the catalog itself
/// once none is left; returns how many catalogs went. Never waits for anyone.
pub fn collect_unused(base: &Path, prefix: &str) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(base).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let catalog = Catalog::new(entry.path());
        let Ok(Some(_lock)) = catalog.lock(false) else { continue };
        if let Some(current) = catalog.current() {
            remove_if_unused_then(&current, || {
                // the link goes first: a removal cut short never leaves it naming a half-removed
                // generation
                let _ = fs::remove_file(catalog.current_link());
            });
        }
        catalog.collect_locked(None);
        let left = fs::read_dir(catalog.root()).into_iter().flatten().flatten();
        if !left.into_iter().any(|e| generation_number(&e.file_name()).is_some())
            && fs::remove_dir_all(catalog.root()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_catalogs_are_named_the_same_everywhere_for_a_value() {
        let a = session_catalog_name("/ext:$system");
        assert_eq!(a, session_catalog_name("/ext:$system"));
        assert_ne!(a, session_catalog_name("/ext"));
        assert!(a.starts_with(SESSION_CATALOG_PREFIX) && a.len() == SESSION_CATALOG_PREFIX.len() + 16, "{a}");
        // FNV-1a of the empty value: fixed, so two builds agree on names
        assert_eq!(session_catalog_name(""), "session-cbf29ce484222325");
    }

    #[test]
    fn server_settings_records_read_back() {
        for (enforce, value) in [(true, "$system:/ext"), (false, ""), (true, "/a\nb")] {
            let record = server_settings_record(enforce, value);
            assert_eq!(parse_server_settings_record(&record), Some((enforce, value.to_string())));
        }
        assert_eq!(parse_server_settings_record("on"), None);
    }
}
