//! The catalog: the winning copies, materialised where PostgreSQL 18 reads natively.
//!
//! PostgreSQL looks for `<element>/extension/<name>.control` and for libraries along
//! `dynamic_library_path`; neither can express `<prefix>/<ext>/<ext>.control` + `sql/`. The
//! catalog is a small writable directory owned by the server:
//!
//! ```text
//! <root>/share/extension/<name>.control   the winner's control file, plus an absolute
//!                                          `directory` naming its real script directory
//! <root>/lib/<file>                        symlink to the winning library file
//! ```
//!
//! `<root>/share` is put first in `extension_control_path` and `<root>/lib` first in
//! `dynamic_library_path`. Scripts, secondary control files and libraries are read from the
//! images themselves; only control files are copied (a few hundred bytes each). `$system`
//! winners are not copied: PostgreSQL finds them itself. Syncing is idempotent and atomic per
//! entry (write to a temporary name, rename), and serialised between processes by a lock file,
//! so concurrent backends converge on the same content.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Path, PathBuf};

use crate::Problem;
use crate::control::{ControlFile, quote};
use crate::index::{ExtensionCopy, Index, Layout, LibraryCopy};
use crate::safe_fs::TrustPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    root: PathBuf,
    trust: TrustPolicy,
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Extensions and libraries the catalog serves (not counting `$system`).
    pub extensions: usize,
    pub libraries: usize,
    /// Entries written or replaced, and stale entries removed, by this sync.
    pub written: usize,
    pub removed: usize,
    /// Control files that could not be read or parsed (left out of the catalog).
    pub problems: Vec<Problem>,
    /// Nothing was done: the catalog already served this state (synced by another process).
    pub unchanged: bool,
    /// Nothing was done: the index is no longer what the catalog must serve.
    pub stale: bool,
}

impl Catalog {
    /// A catalog at `root` that refuses untrusted files (owned by neither root nor this
    /// process's user, or writable by group or others).
    pub fn new(root: impl Into<PathBuf>) -> Catalog {
        Catalog { root: root.into(), trust: TrustPolicy::for_this_process(true) }
    }

    pub fn with_trust(mut self, trust: TrustPolicy) -> Catalog {
        self.trust = trust;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The element for `extension_control_path` (PostgreSQL appends `/extension`).
    pub fn control_path_element(&self) -> PathBuf {
        self.root.join("share")
    }

    /// The element for `dynamic_library_path`.
    pub fn library_dir(&self) -> PathBuf {
        self.root.join("lib")
    }

    fn control_dir(&self) -> PathBuf {
        self.root.join("share").join("extension")
    }

    /// Makes the catalog serve exactly the non-`$system` winners of `index`, waiting for another
    /// process's sync to finish first. `force` rewrites what the catalog says it already holds
    /// (files may have changed inside the images without any prefix changing).
    pub fn sync(&self, index: &Index, force: bool) -> io::Result<SyncReport> {
        self.sync_if(index, force, &|| true)
    }

    /// [`Catalog::sync`], if `still_wanted()` — asked once the catalog is locked — says `index`
    /// is still what this catalog must serve; else nothing is written and the report says
    /// `stale` (a backend that built its index before a reload must not undo it).
    pub fn sync_if(&self, index: &Index, force: bool, still_wanted: &dyn Fn() -> bool) -> io::Result<SyncReport> {
        self.sync_locking(index, force, true, still_wanted).map(|r| r.unwrap_or_default())
    }

    /// [`Catalog::sync_if`] that never waits: `None` when another process holds the catalog
    /// (the postmaster must never block on a backend).
    pub fn try_sync(&self, index: &Index, force: bool) -> io::Result<Option<SyncReport>> {
        self.sync_locking(index, force, false, &|| true)
    }

    fn sync_locking(
        &self,
        index: &Index,
        force: bool,
        wait: bool,
        still_wanted: &dyn Fn() -> bool,
    ) -> io::Result<Option<SyncReport>> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(self.control_dir())?;
        builder.create(self.library_dir())?;
        let lock = fs::File::create(self.root.join(".lock"))?;
        if wait {
            lock.lock()?;
        } else {
            match lock.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        if !still_wanted() {
            return Ok(Some(SyncReport { stale: true, ..SyncReport::default() }));
        }
        // What the catalog was last synced from: when another process just synced the same
        // state (many backends after one change), there is nothing to write.
        let stamp = stamp(index, &self.trust);
        let stamp_file = self.root.join(".stamp");
        if !force && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            return Ok(Some(SyncReport { unchanged: true, ..SyncReport::default() }));
        }
        // No stamp while entries change: a sync cut short (a killed backend) is redone by the
        // next one, whatever it is asked.
        match fs::remove_file(&stamp_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let report = crate::safe_fs::memo::scope(|| self.sync_locked(index))?;
        write_durably(&self.root, OsStr::new(".stamp"), |tmp| fs::write(tmp, &stamp))?;
        Ok(Some(report))
    }

    fn sync_locked(&self, index: &Index) -> io::Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut controls: BTreeMap<OsString, Vec<u8>> = BTreeMap::new();
        for copy in index.winners().filter(|c| c.layout != Layout::System) {
            match usable(copy, &self.trust) {
                Ok(text) => {
                    controls.insert(format!("{}.control", copy.name).into(), text);
                }
                Err(message) => {
                    report.problems.push(Problem { subject: copy.control_file.display().to_string(), message })
                }
            }
        }
        let mut links: BTreeMap<OsString, PathBuf> = BTreeMap::new();
        for library in index.library_winners().filter(|l| l.prefix.is_some()) {
            match library_distrust(library, &self.trust) {
                Some(why) => {
                    report.problems.push(Problem { subject: library.path.display().to_string(), message: why })
                }
                None => {
                    links.insert(library.file_name.clone(), library.path.clone());
                }
            }
        }
        report.extensions = controls.len();
        report.libraries = links.len();

        sync_dir(
            &self.control_dir(),
            &controls,
            &mut report,
            |path| fs::read(path).ok(),
            |tmp, content| fs::write(tmp, content),
        )?;
        sync_dir(
            &self.library_dir(),
            &links,
            &mut report,
            |path| fs::read_link(path).ok(),
            |tmp, target| symlink(target, tmp),
        )?;
        Ok(report)
    }
}

/// Makes `dir` hold exactly `desired`: entries whose current value (`read`) differs are
/// rewritten through a temporary name and a rename; entries not desired are removed.
fn sync_dir<V: PartialEq>(
    dir: &Path,
    desired: &BTreeMap<OsString, V>,
    report: &mut SyncReport,
    read: impl Fn(&Path) -> Option<V>,
    write: impl Fn(&Path, &V) -> io::Result<()>,
) -> io::Result<()> {
    let mut present = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !desired.contains_key(&name) {
            match fs::remove_file(entry.path()) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else {
            present.push(name);
        }
    }
    for (name, value) in desired {
        let path = dir.join(name);
        if present.contains(name) && read(&path).as_ref() == Some(value) {
            continue;
        }
        write_durably(dir, name, |tmp| write(tmp, value))?;
        report.written += 1;
    }
    // The renames and removals themselves reach the disk.
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `dir/name` atomically: to a temporary name PostgreSQL never lists (it does not end in
/// `.control`; leftovers of a killed process are removed by the next sync), flushed to disk,
/// then renamed over the entry.
fn write_durably(dir: &Path, name: &OsStr, write: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp);
    write(&tmp)?;
    if fs::symlink_metadata(&tmp)?.is_file() {
        fs::File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))
}

/// What a catalog synced from `index` under `trust` serves, as far as can be told without
/// reading every file: the path, the trust policy and the modification times of the prefixes.
fn stamp(index: &Index, trust: &TrustPolicy) -> String {
    let mut stamp = format!("{:?} {}\n{}\n", index.path.elements, index.path.implicit_system, trust.enforce);
    for (dir, modified) in &index.fingerprint {
        let nanos = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos());
        stamp.push_str(&format!("{}\t{nanos:?}\n", dir.display()));
    }
    stamp
}

/// Whether `copy` can be served to PostgreSQL, and if so the control file the catalog gives it
/// (the original text, plus an absolute `directory` so scripts and secondary control files come
/// from the real directory). The one decision behind the catalog, its warnings and `check()`:
/// the control file PostgreSQL would accept (see [`crate::control`]), its script directory
/// usable, and — when `policy` enforces trust — the control file, the script directory and every
/// script and secondary control file of the extension trusted from the prefix down.
pub fn usable(copy: &ExtensionCopy, policy: &TrustPolicy) -> Result<Vec<u8>, String> {
    let top = copy.prefix.as_deref().unwrap_or(copy.dir.as_path());
    let distrust = |path: &Path| {
        policy
            .enforce
            .then(|| policy.distrust_from(top, path))
            .flatten()
            .map(|why| format!("not trusted, left out: {why}"))
    };
    if let Some(why) = distrust(&copy.control_file) {
        return Err(why);
    }
    let mut text = crate::safe_fs::read_regular(&copy.control_file, crate::safe_fs::MAX_TEXT_FILE)
        .map_err(|e| format!("control file cannot be used: could not read it: {e}"))?;
    let control = ControlFile::parse_bytes(&text)
        .and_then(|c| c.validate(false).map(|()| c))
        .map_err(|e| format!("control file cannot be used: {e}"))?;
    let scripts = copy.script_directory(&control);
    // The directory is trusted before anything in it is read.
    if scripts.is_dir()
        && let Some(why) = distrust(&scripts)
    {
        return Err(why);
    }
    check_script_directory(&copy.name, &scripts, &control)?;
    // Every script and secondary control file of this extension.
    let prefix = format!("{}--", copy.name);
    let files = fs::read_dir(&scripts).into_iter().flatten().flatten().take(crate::safe_fs::MAX_DIR_ENTRIES);
    let own = files.filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))).map(|e| e.path());
    for path in own {
        if let Some(why) = distrust(&path) {
            return Err(why);
        }
    }
    let scripts_text = scripts.to_str().ok_or("script directory is not valid UTF-8")?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(
        format!(
            "# added by extension_search_path: the scripts of {} ({})\ndirectory = {}\n",
            copy.name,
            copy.layout.as_str(),
            quote(scripts_text)
        )
        .as_bytes(),
    );
    // What PostgreSQL will read: it must parse, and name the directory meant.
    let generated = ControlFile::parse_bytes(&text).map_err(|e| format!("generated control file: {e}"))?;
    if generated.get("directory") != Some(scripts_text) {
        return Err("generated control file: the script directory does not read back".into());
    }
    Ok(text)
}

/// Why the library `copy` must not be served or loaded, when `policy` enforces trust and it (or
/// a directory from its prefix down) is not trusted.
pub fn library_distrust(copy: &LibraryCopy, policy: &TrustPolicy) -> Option<String> {
    let top = copy.prefix.as_deref()?;
    policy
        .enforce
        .then(|| policy.distrust_from(top, &copy.path))
        .flatten()
        .map(|why| format!("not trusted, left out: {why}"))
}

/// PostgreSQL's `MAXPGPATH`: longer file names are cut off in its buffers.
pub const MAXPGPATH: usize = 1024;

/// Whether PostgreSQL can use `scripts` as the script directory of extension `name`. What it
/// cannot use would make pg_available_extension_versions fail for every extension, so such an
/// extension is left out of the catalog: the directory must exist, leave room for script file
/// names within MAXPGPATH, and hold only secondary control files PostgreSQL can read.
pub fn check_script_directory(name: &str, scripts: &Path, control: &ControlFile) -> Result<(), String> {
    if !scripts.is_dir() {
        return Err(format!("script directory \"{}\" does not exist", scripts.display()));
    }
    let longest = scripts.as_os_str().len() + 2 * name.len() + 64;
    if longest >= MAXPGPATH {
        return Err(format!(
            "script directory \"{}\" is too long: PostgreSQL handles file names up to {} bytes",
            scripts.display(),
            MAXPGPATH - 1
        ));
    }
    crate::control::check_secondary_controls(name, scripts, control)
}

/// A short stable key for a path value, naming a session-specific catalog.
pub fn key(value: &str) -> String {
    // FNV-1a, 64 bits: stable across processes and builds, unlike std's hasher.
    let hash = value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// A process's claim on a catalog it uses (a shared lock on `<root>/.inuse`, held while the
/// value lives): [`collect_unused`] never removes a catalog someone holds.
#[derive(Debug)]
pub struct InUse {
    _file: fs::File,
    pub root: PathBuf,
}

impl Catalog {
    /// Claims this catalog for as long as the returned value lives (creating it if need be).
    pub fn hold(&self) -> io::Result<InUse> {
        use std::os::unix::fs::MetadataExt;
        loop {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root)?;
            let path = self.root.join(".inuse");
            let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            file.lock_shared()?;
            // A collector may have removed the catalog between the open and the lock: the file
            // held must still be the one at the path.
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(InUse { _file: file, root: self.root.clone() });
                }
                _ => continue,
            }
        }
    }
}

/// Removes the catalogs under `root` whose names start with `prefix` and that no process holds
/// (see [`Catalog::hold`]); returns how many. Never waits for a holder.
pub fn collect_unused(root: &Path, prefix: &str) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        let Ok(file) = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".inuse")) else {
            continue;
        };
        if file.try_lock().is_ok() && fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}
