//! The server's side of resolution: where PostgreSQL's own directories are, where the catalog
//! lives, and refreshing it.
//!
//! The catalog (see `esp_resolver::catalog`) lives in the data directory, the one place the
//! server can always write, under `pg_stat_tmp/` (which pg_basebackup and pg_rewind skip):
//! `$PGDATA/pg_stat_tmp/extension_search_path/server` for the server-wide path and
//! `…/session-<key>` for any other value a session has. It is derived data: rebuilt at start,
//! on reload and before every CREATE/ALTER EXTENSION and LOAD when a prefix changed.
//!
//! Each catalog is a series of immutable generations (see `esp_resolver::catalog`). A process
//! points PostgreSQL's settings at one generation and holds it while they may name it; it moves
//! to the newest one at the points it cannot be reading: session start, a reload, and before
//! CREATE/ALTER EXTENSION, LOAD and `rescan()`.

use std::ffi::CStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};

use esp_resolver::catalog::key;
use esp_resolver::{Catalog, Index, SearchPath, SyncReport, SystemDirs};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

pub struct Locations {
    pub root: PathBuf,
    pub server: Catalog,
    pub system: SystemDirs,
}

static LOCATIONS: OnceLock<Locations> = OnceLock::new();

/// Set in the postmaster by `init` and inherited by every backend.
pub fn locations() -> &'static Locations {
    LOCATIONS.get().expect("extension_search_path is initialised in _PG_init")
}

pub fn init() {
    let locations = LOCATIONS.get_or_init(|| {
        // Under pg_stat_tmp, whose contents pg_basebackup and pg_rewind skip by design: the catalog
        // (symlinks, generated files) is derived data every server rebuilds at start, and tools
        // that copy a data directory must neither copy it nor trip over its links.
        let root = data_dir().join("pg_stat_tmp").join("extension_search_path");
        // Where versions before 0.2 kept it, and the layout before generations.
        let _ = fs::remove_dir_all(data_dir().join("extension_search_path"));
        for old in ["share", "lib"] {
            let _ = fs::remove_dir_all(root.join("server").join(old));
        }
        for old in [".stamp", ".inuse"] {
            let _ = fs::remove_file(root.join("server").join(old));
        }
        Locations { server: Catalog::new(root.join("server")), root, system: system_dirs() }
    });
    // Session catalogs of earlier runs are stale.
    if let Ok(entries) = fs::read_dir(&locations.root) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("session-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let value = crate::gucs::path();
    record_server_settings(&value, crate::gucs::trust_policy().enforce);
    // Read every control file once now, in the postmaster: backends inherit what the SQL
    // functions report instead of reading N files each.
    if let Some(index) = refresh(&locations.server, &value, PgLogLevel::WARNING, Refresh::Full) {
        index.details();
    }
    adopt_server_generation();
}

/// A reload changed (or re-read) the server-wide path: rebuild the server catalog. Runs in the
/// postmaster's assign hook, so it never raises an error.
pub fn refresh_server_catalog_after_reload(value: &str) {
    if let Some(locations) = LOCATIONS.get() {
        record_server_settings(value, crate::gucs::trust_policy().enforce);
        // Every SIGHUP comes here, changed or not: rebuild only when the value or the
        // prefixes' entries changed (rescan() rebuilds on demand).
        if let Some(index) = refresh(&locations.server, value, PgLogLevel::WARNING, Refresh::IfChanged) {
            index.details();
        }
        adopt_server_generation();
        // Session catalogs no backend holds any more.
        esp_resolver::catalog::collect_unused(&locations.root, "session-");
    }
}

/// The server-wide path and trust setting as the postmaster last set them (a static backends
/// inherit at fork).
static SERVER_SETTINGS: Mutex<Option<(bool, String)>> = Mutex::new(None);

/// Where the postmaster records them for backends forked before its last reload (their
/// inherited static is older): `on` or `off`, a newline, the path.
fn server_settings_file() -> PathBuf {
    locations().root.join("server-settings")
}

/// In the postmaster: the value of extension_search_path.path and of trusted_files_only that
/// its configuration (file, ALTER SYSTEM, command line) sets, the only values that shape the
/// server catalog. Written atomically; a backend syncs the server catalog only for exactly
/// these (see [`refresh_with`]).
fn record_server_settings(value: &str, enforce: bool) {
    *SERVER_SETTINGS.lock().unwrap_or_else(|e| e.into_inner()) = Some((enforce, value.to_string()));
    let file = server_settings_file();
    let tmp = file.with_file_name(format!(".server-settings.tmp-{}", std::process::id()));
    let text = format!("{}\n{value}", if enforce { "on" } else { "off" });
    let written = fs::create_dir_all(&locations().root)
        .and_then(|()| fs::write(&tmp, text))
        .and_then(|()| fs::rename(&tmp, &file));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        // Better no record than a stale one: backends then go by what they inherited.
        let _ = fs::remove_file(&file);
        crate::messages::warn(
            PgLogLevel::WARNING,
            format!("extension_search_path: could not record the server-wide settings in \"{}\": {e}", file.display()),
        );
    }
}

/// The server-wide trust setting and value of extension_search_path.path: what the
/// postmaster's configuration set — never a per-role, per-database or connection value, which
/// only this session uses.
fn server_settings() -> (bool, String) {
    // SAFETY: a plain global, false only in the postmaster (and single-user mode).
    let in_postmaster = !unsafe { pg_sys::IsUnderPostmaster };
    let inherited = || SERVER_SETTINGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let recorded = || {
        let bytes = esp_resolver::safe_fs::read_regular(&server_settings_file(), 64 * 1024).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (enforce, value) = text.split_once('\n')?;
        Some((enforce == "on", value.to_string()))
    };
    let found = if in_postmaster { inherited() } else { recorded().or_else(inherited) };
    found.unwrap_or_else(|| (crate::gucs::trust_policy().enforce, crate::gucs::path()))
}

/// The catalog for a path value: the server's, or one of its own for any other value (SET,
/// ALTER ROLE/DATABASE … SET, connection options).
pub fn catalog_for(value: &str) -> Catalog {
    let locations = locations();
    if value == server_settings().1 {
        locations.server.clone()
    } else {
        Catalog::new(locations.root.join(format!("session-{}", key(value))))
    }
}

/// Brings the catalog of this session's path up to date and points the session's core settings
/// at it (CREATE/ALTER EXTENSION, LOAD, rescan()). Problems go to the server log only for the
/// server catalog (every backend would repeat them, and clients are not told about paths) and
/// are a WARNING for a path the session set itself or when `loud`, to roles that may see paths.
pub fn refresh_session(how: Refresh, loud: bool) -> Option<Arc<Index>> {
    let path = crate::gucs::path();
    let catalog = catalog_for(&path);
    let server = catalog.root() == locations().server.root();
    // Problems name paths: clients see them only when they may see paths.
    let level = if (loud || !server) && crate::roles::may_see_paths() {
        PgLogLevel::WARNING
    } else {
        PgLogLevel::LOG_SERVER_ONLY
    };
    let index = refresh(&catalog, &path, level, how);
    let generation = if server {
        adopt_server_generation();
        server_generation()
    } else {
        adopt(&catalog).unwrap_or_else(|| catalog.current_link())
    };
    crate::core_paths::point_session_at(&generation);
    release_unnamed();
    index
}

/// The generations this process's settings may name (the current value, the reset value, values
/// saved by SET LOCAL or function SET clauses), held so that no other process removes them.
static HELD: Mutex<Vec<Arc<esp_resolver::catalog::InUse>>> = Mutex::new(Vec::new());

/// Keeps `held` among this process's claims (once per generation).
fn keep(held: Arc<esp_resolver::catalog::InUse>) {
    let mut all = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|h| h.dir == held.dir) {
        all.push(held);
    }
}

/// Gives up the claims on generations that no value of the core settings names any more (the
/// server generation this process uses is always kept: the settings name it from start on).
fn release_unnamed() {
    let values = crate::core_paths::all_values();
    let own = SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let named = |dir: &Path| {
        let prefix = format!("{}/", dir.display());
        own.as_deref() == Some(dir) || values.iter().any(|v| v.split(':').any(|element| element.starts_with(&prefix)))
    };
    HELD.lock().unwrap_or_else(|e| e.into_inner()).retain(|h| named(&h.dir));
}

/// The server catalog generation this process points PostgreSQL at (inherited from the
/// postmaster, then followed at session start, reloads and refreshes).
static SERVER_GENERATION: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The server catalog's generation this process uses: what the core settings name.
pub fn server_generation() -> PathBuf {
    let adopted = SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).clone();
    adopted.unwrap_or_else(|| locations().server.current_link())
}

/// Holds the current generation of `catalog`; its directory, or `None` if it has none yet (or
/// it cannot be held: then the settings keep naming what they named).
fn adopt(catalog: &Catalog) -> Option<PathBuf> {
    let held = catalog.adopt().ok()??;
    let dir = held.dir.clone();
    keep(Arc::new(held));
    Some(dir)
}

/// Moves this process to the server catalog's current generation (cheap when it already uses
/// it: one readlink). Never raises an error.
pub fn adopt_server_generation() {
    let Some(locations) = LOCATIONS.get() else { return };
    if locations.server.current().as_ref() == SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return;
    }
    let Some(dir) = adopt(&locations.server) else { return };
    *SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
    crate::core_paths::follow_server_generation();
    // Backends forked earlier keep their own claims on older generations: a claim is shared
    // with the processes forked while it was held.
    release_unnamed();
}

/// Whether a refresh may reuse what this process already knows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Rescan and resync whatever the cache says (start, reload, rescan()).
    Full,
    /// Reuse the cached index and skip the sync when no prefix gained or lost an image since.
    IfChanged,
    /// A full refresh of the server catalog for the postmaster's settings, by a backend whose
    /// own sync a reload overtook.
    Overtaken,
}

/// The last index this process built and synced a catalog from, with the path value and trust
/// policy it was built for. Set in the postmaster at start and reload, so every new backend
/// starts with it: a CREATE EXTENSION then costs one stat per prefix, not a scan. A static, not
/// a thread-local: statics are never dropped, so a backend's exit does not walk (and, through
/// copy-on-write, copy) the inherited index to free it.
static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

struct Cached {
    value: String,
    enforce: bool,
    index: Arc<Index>,
    /// The process that built it: an index inherited from the postmaster is never freed by a
    /// backend (freeing would copy its pages); one built here is freed when replaced.
    built_by: u32,
}

/// The index of `value`, from the cache when it is still current, else freshly scanned (not
/// synced: for reading).
pub fn index_for(value: &str) -> Arc<Index> {
    let enforce = crate::gucs::trust_policy().enforce;
    if let Some(index) = cached(value, enforce) {
        return index;
    }
    Arc::new(Index::build(&SearchPath::parse(value), &locations().system))
}

fn cached(value: &str, enforce: bool) -> Option<Arc<Index>> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.as_ref().filter(|c| c.value == value && c.enforce == enforce && c.index.is_current()).map(|c| c.index.clone())
}

/// The catalog, path value, trust setting and prefixes' fingerprint this backend last found the
/// catalog serving (built by it or by another process).
#[allow(clippy::type_complexity)]
static VERIFIED: Mutex<Option<(PathBuf, String, bool, Vec<(PathBuf, Option<std::time::SystemTime>)>)>> =
    Mutex::new(None);

/// What this process's last sync made the catalog serve (for `rescan()`).
static LAST_SYNC: Mutex<Option<esp_resolver::SyncReport>> = Mutex::new(None);

/// Takes the report of this process's last sync.
pub fn take_last_sync() -> Option<esp_resolver::SyncReport> {
    LAST_SYNC.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Makes `catalog` serve the winners of `value`, scanning when the cache or the catalog does not
/// already serve them; the index when one was at hand or built (`None`: the catalog was current
/// and no scan was needed, or the sync was not done). Problems are reported at `level` with the
/// element or file named; nothing here raises an error: a catalog that cannot be written leaves
/// the previous one in place.
pub fn refresh(catalog: &Catalog, value: &str, level: PgLogLevel, how: Refresh) -> Option<Arc<Index>> {
    refresh_with(catalog, value, level, how, crate::gucs::trust_policy())
}

/// The server-wide trust setting changed (in the postmaster's assign hook, before the new value
/// is stored): rebuild the server catalog under the new policy.
pub fn refresh_server_catalog_for_trust(enforce: bool) {
    if let Some(locations) = LOCATIONS.get() {
        record_server_settings(&crate::gucs::path(), enforce);
        let policy = esp_resolver::safe_fs::TrustPolicy::for_this_process(enforce);
        refresh_with(&locations.server, &crate::gucs::path(), PgLogLevel::WARNING, Refresh::Full, policy);
        adopt_server_generation();
    }
}

/// Test builds only: a prefix whose name ends in `esp-inject-panic` panics inside the hook path,
/// to show a Rust panic reaching PostgreSQL as an ERROR.
#[cfg(feature = "pg_test")]
fn inject_panic(value: &str) {
    if value.split(':').any(|e| e.ends_with("esp-inject-panic")) {
        panic!("extension_search_path: injected panic");
    }
}

fn refresh_with(
    catalog: &Catalog,
    value: &str,
    level: PgLogLevel,
    how: Refresh,
    policy: esp_resolver::safe_fs::TrustPolicy,
) -> Option<Arc<Index>> {
    #[cfg(feature = "pg_test")]
    inject_panic(value);
    if how == Refresh::IfChanged
        && let Some(index) = cached(value, policy.enforce)
    {
        return Some(index);
    }
    // SAFETY: a plain global of the fsync setting, read on the main thread.
    let durable = unsafe { pg_sys::enableFsync };
    let catalog = &catalog.clone().with_trust(policy).with_durability(durable);
    // SAFETY: a plain global, false only in the postmaster.
    let in_postmaster = !unsafe { pg_sys::IsUnderPostmaster };
    // A backend writes the server catalog only for the settings the postmaster recorded, checked
    // under the catalog's lock: one that built its index before a reload changed the path or
    // the trust setting must not undo the postmaster's sync.
    let server = catalog.root() == locations().server.root();
    let still_wanted = || !server || server_settings() == (policy.enforce, value.to_string());
    let (synced, index) = if in_postmaster {
        // The postmaster never waits for a backend's sync: if one holds the catalog, it tries
        // again at the next reload (and backends sync what they need before CREATE, ALTER and
        // LOAD). It always scans: every backend inherits its index.
        let index = Index::build(&SearchPath::parse(value), &locations().system);
        (catalog.try_sync(&index, how != Refresh::IfChanged), Some(index))
    } else if how == Refresh::IfChanged {
        // After a change under a prefix, one backend scans and builds a generation; the others
        // wait for it and scan nothing (the catalog is what their statement needs). Once this
        // backend has seen the catalog serve the prefixes as they are, it checks again only
        // when they change (one stat per prefix, no lock).
        let path = SearchPath::parse(value);
        let fingerprint = esp_resolver::index::fingerprint(&path, &locations().system);
        let seen = (catalog.root().to_path_buf(), value.to_string(), policy.enforce, fingerprint);
        if VERIFIED.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&seen) {
            return cached(value, policy.enforce);
        }
        match catalog.sync_lazily(&path, &locations().system, &still_wanted) {
            Ok((report, index)) => {
                if !report.stale {
                    *VERIFIED.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
                }
                (Ok(Some(report)), index)
            }
            Err(e) => (Err(e), None),
        }
    } else {
        let index = Index::build(&SearchPath::parse(value), &locations().system);
        (catalog.sync_if(&index, true, &still_wanted).map(Some), Some(index))
    };
    for problem in index.iter().flat_map(|i| &i.problems) {
        crate::messages::warn(level, format!("extension_search_path: {problem}"));
    }
    let mut complete = true;
    // A reload between our check and the end of our sync: the postmaster found the catalog
    // locked and left it to us, so we sync it for what the postmaster recorded (once).
    let overtaken = |synced: &std::io::Result<Option<esp_resolver::SyncReport>>| {
        !in_postmaster
            && server
            && matches!(synced, Ok(Some(r)) if !r.stale && !r.unchanged)
            && server_settings() != (policy.enforce, value.to_string())
    };
    if overtaken(&synced) && how != Refresh::Overtaken {
        // What we wrote is not remembered as synced: it was the server catalog's, for settings
        // that are no longer the server's.
        complete = false;
        let (enforce, recorded) = server_settings();
        let policy = esp_resolver::safe_fs::TrustPolicy::for_this_process(enforce);
        refresh_with(catalog, &recorded, level, Refresh::Overtaken, policy);
    }
    match synced {
        Ok(Some(report)) if report.stale => complete = false,
        Ok(Some(report)) => {
            for problem in &report.problems {
                crate::messages::warn(level, format!("extension_search_path: {problem}"));
            }
            // the generation it made or found current stays ours until we adopt it
            if let Some(held) = &report.held {
                keep(held.clone());
            }
            // (remembered without the claim: HELD keeps it while it is named)
            *LAST_SYNC.lock().unwrap_or_else(|e| e.into_inner()) = Some(SyncReport { held: None, ..report });
        }
        Ok(None) => {
            complete = false;
            crate::messages::warn(
                PgLogLevel::LOG,
                "extension_search_path: the catalog is being updated by a backend; trying again at the next reload"
                    .into(),
            );
        }
        Err(e) => {
            complete = false;
            crate::messages::emit(
                level,
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_IO_ERROR,
                    format!("extension_search_path: could not update catalog \"{}\": {e}", catalog.root().display()),
                    "refresh",
                )
                .set_detail("CREATE EXTENSION and LOAD use the catalog as it was.")
                .set_hint("Check that the data directory is writable by the server."),
            )
        }
    }
    let index = Arc::new(index?);
    if !complete {
        // Not remembered as synced: the next refresh tries again.
        return Some(index);
    }
    let cached = Cached {
        value: value.to_string(),
        enforce: policy.enforce,
        index: index.clone(),
        built_by: std::process::id(),
    };
    let previous = CACHE.lock().unwrap_or_else(|e| e.into_inner()).replace(cached);
    match previous {
        Some(old) if old.built_by == std::process::id() => drop(old),
        // Inherited from the postmaster: let it go without freeing it piece by piece (it is
        // shared copy-on-write with the postmaster).
        old => std::mem::forget(old),
    }
    Some(index)
}

fn data_dir() -> PathBuf {
    // SAFETY: DataDir is set (absolute) before shared_preload_libraries are loaded.
    let dir = unsafe { pg_sys::DataDir };
    if dir.is_null() {
        return PathBuf::from(".");
    }
    // SAFETY: non-null, NUL-terminated, lives for the whole process.
    PathBuf::from(unsafe { CStr::from_ptr(dir) }.to_string_lossy().into_owned())
}

/// `$system`: `pg_config --sharedir`/extension and `--pkglibdir`, following a relocated install.
fn system_dirs() -> SystemDirs {
    let mut share = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is set at process start; get_share_path writes at most MAXPGPATH
    // bytes into the buffer; pkglib_path is a NUL-terminated global array.
    unsafe {
        pg_sys::get_share_path((&raw const pg_sys::my_exec_path).cast(), share.as_mut_ptr());
        let share = CStr::from_ptr(share.as_ptr()).to_string_lossy().into_owned();
        let lib = CStr::from_ptr((&raw const pg_sys::pkglib_path).cast()).to_string_lossy().into_owned();
        SystemDirs { extension_dir: PathBuf::from(share).join("extension"), lib_dir: PathBuf::from(lib) }
    }
}
