//! Refreshing the catalogs: the server's at start and reload (in the postmaster), and before
//! CREATE/ALTER EXTENSION, LOAD and `rescan()` (in a backend, for the session's path), with the
//! index of the last scan kept so that an unchanged path costs one stat per prefix.
//!
//! Nothing here raises an error: problems are reported (see `crate::messages`) and a catalog
//! that cannot be written leaves the previous one in place.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use esp_resolver::catalog::{parse_server_settings_record, server_settings_record};
use esp_resolver::safe_fs::TrustPolicy;
use esp_resolver::{Catalog, Index, SearchPath, SyncReport};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::generations::{adopt, adopt_server_generation, keep, release_unnamed, server_generation};
use crate::locations::{locations, try_locations};
use crate::messages::Message;

/// In the postmaster's `_PG_init`: records the server-wide settings and builds the server
/// catalog, which every backend then inherits with its index.
pub fn init() {
    let value = crate::gucs::path();
    record_server_settings(&value, crate::gucs::trust_policy().enforce);
    // (What the SQL functions report of each control file is read when first asked, by the
    // backend that asks: kept in the postmaster, it would be copied into the page tables of
    // every backend forked.)
    refresh(&locations().server, &value, PgLogLevel::WARNING, Refresh::Start);
    adopt_server_generation();
}

/// In the postmaster: gives the memory a scan and a sync freed back to the system. Every
/// connection forks the postmaster, and fork copies the page table entries of every page it
/// has, used or free; with thousands of images the scan's garbage would cost each connection.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; called on the main
    // thread of a single-threaded process.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A reload changed (or re-read) the server-wide path: rebuild the server catalog. Runs in the
/// postmaster's assign hook, so it never raises an error.
pub fn refresh_server_catalog_after_reload(value: &str) {
    if let Some(locations) = try_locations() {
        record_server_settings(value, crate::gucs::trust_policy().enforce);
        // Every SIGHUP comes here, changed or not: rebuild only when the value or the
        // prefixes' entries changed (rescan() rebuilds on demand).
        refresh(&locations.server, value, PgLogLevel::WARNING, Refresh::IfChanged);
        adopt_server_generation();
        // parsed again for the settings backends will now inherit
        let _ = search_path(value);
        // Session catalogs no backend holds any more.
        esp_resolver::catalog::collect_unused(&locations.root, esp_resolver::catalog::SESSION_CATALOG_PREFIX);
        release_free_memory();
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
    let written = fs::create_dir_all(&locations().root)
        .and_then(|()| fs::write(&tmp, server_settings_record(enforce, value)))
        .and_then(|()| fs::rename(&tmp, &file));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        // Better no record than a stale one: backends then go by what they inherited.
        let _ = fs::remove_file(&file);
        let message =
            format!("extension_search_path: could not record the server-wide settings in \"{}\": {e}", file.display());
        let report = ErrorReport::new(crate::errors::for_io(&e), message, "record_server_settings")
            .set_detail("Backends forked before the last reload go by the settings they inherited.")
            .set_hint("Check that the data directory is writable by the server.");
        crate::messages::emit(PgLogLevel::WARNING, report);
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
        parse_server_settings_record(&String::from_utf8(bytes).ok()?)
    };
    let found = if in_postmaster { inherited() } else { recorded().or_else(inherited) };
    found.unwrap_or_else(|| (crate::gucs::trust_policy().enforce, crate::gucs::path()))
}

/// The catalog for a path value: the server's, or one of its own for any other value (SET,
/// ALTER ROLE/DATABASE … SET, connection options).
pub fn catalog_for(value: &str) -> Catalog {
    let locations = locations();
    if value == server_settings().1 { locations.server.clone() } else { locations.session_catalog(value) }
}

/// Brings the catalog of this session's path up to date and points the session's core settings
/// at it (CREATE/ALTER EXTENSION, LOAD, rescan()). Problems go to the server log only for the
/// server catalog (every backend would repeat them, and clients are not told about paths) and
/// are a WARNING for a path the session set itself or when `loud`, to roles that may see paths.
pub fn refresh_session(how: Refresh, loud: bool) -> Option<Arc<Index>> {
    let path = crate::gucs::path();
    let catalog = catalog_for(&path);
    let server = locations().is_server(&catalog);
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

/// Whether a refresh may reuse what this process already knows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Server start: rescan; build a new generation only when the current one does not serve
    /// the prefixes and files as they are (a restart with nothing changed rewrites nothing).
    Start,
    /// Rescan and resync whatever the cache says (a changed trust setting, rescan()).
    Full,
    /// Reuse the cached index and skip the sync when no prefix gained or lost an image since.
    IfChanged,
    /// A full refresh of the server catalog for the postmaster's settings, by a backend whose
    /// own sync a reload overtook.
    Overtaken,
}

/// The last index this backend built and synced a catalog from, with the path value and trust
/// policy it was built for. The postmaster keeps none (see [`refresh_with`]): what it verified is
/// in `VERIFIED`, which every backend inherits, so a CREATE EXTENSION with nothing changed costs
/// one stat per prefix, not a scan. A static, never dropped: a backend's exit frees nothing.
static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

struct Cached {
    value: String,
    enforce: bool,
    index: Arc<Index>,
}

impl Cached {
    /// Its index, if it is of `value` under the trust setting `enforce` (with the operator's
    /// images of the core settings as they are now) and still current.
    /// (`path` is [`search_path`] of `value`, computed once by the caller.)
    fn serving(&self, value: &str, path: &SearchPath, enforce: bool) -> Option<Arc<Index>> {
        let same = self.value == value && self.enforce == enforce;
        (same && self.index.path.elements == path.elements && self.index.is_current()).then(|| self.index.clone())
    }
}

/// The path `value` names, followed by the images the operator named in the core settings
/// (`extension_control_path`, `dynamic_library_path`, as this session has them): what the
/// index covers. Only the path's own prefixes are served through the catalog.
///
/// Remembered for the values it was parsed from (compared in place): the postmaster parses the
/// server's once and every backend inherits it, so the first C call of a session parses nothing.
pub fn search_path(value: &str) -> Arc<SearchPath> {
    type Parsed = (String, Vec<u8>, Vec<u8>, Arc<SearchPath>);
    static PARSED: Mutex<Option<Parsed>> = Mutex::new(None);
    let mut parsed = PARSED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((v, ecp, dlp, path)) = parsed.as_ref()
        && v == value
        && crate::gucs::with_current(c"extension_control_path", |c| c.to_bytes() == ecp.as_slice())
        && crate::gucs::with_dynamic_library_path(|d| d.to_bytes() == dlp.as_slice())
    {
        return path.clone();
    }
    let control = crate::gucs::with_current(c"extension_control_path", |v| v.to_bytes().to_vec());
    let library = crate::gucs::with_dynamic_library_path(|d| d.to_bytes().to_vec());
    let images = esp_resolver::path::operator_images(
        &String::from_utf8_lossy(&control),
        &String::from_utf8_lossy(&library),
        &locations().root_prefix(),
    );
    let path = Arc::new(SearchPath::parse(value).with_operator_images(images));
    *parsed = Some((value.to_string(), control, library, path.clone()));
    path
}

/// The index of `value`, from the caches when it is still current, else freshly scanned (not
/// synced: for reading) and kept for the next reader in this backend.
pub fn index_for(value: &str) -> Arc<Index> {
    let enforce = crate::gucs::trust_policy().enforce;
    let path = search_path(value);
    if let Some(index) = cached(value, &path, enforce) {
        return index;
    }
    let mut read = READ.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(index) = read.as_ref().and_then(|c| c.serving(value, &path, enforce)) {
        return index;
    }
    let index = Arc::new(Index::build(&path, &locations().system));
    // SAFETY: a plain global, false only in the postmaster (which keeps no index).
    if unsafe { pg_sys::IsUnderPostmaster } {
        *read = Some(Cached { value: value.to_string(), enforce, index: index.clone() });
    }
    index
}

/// The last index this backend built only to read it (SQL functions, the libraries of other
/// images): never taken for a synced catalog's, so a refresh still syncs what it must.
static READ: Mutex<Option<Cached>> = Mutex::new(None);

fn cached(value: &str, path: &SearchPath, enforce: bool) -> Option<Arc<Index>> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.as_ref().and_then(|c| c.serving(value, path, enforce))
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
    if let Some(locations) = try_locations() {
        record_server_settings(&crate::gucs::path(), enforce);
        let policy = TrustPolicy::for_this_process(enforce);
        refresh_with(&locations.server, &crate::gucs::path(), PgLogLevel::WARNING, Refresh::Full, policy);
        adopt_server_generation();
        let _ = search_path(&crate::gucs::path());
        release_free_memory();
    }
}

fn refresh_with(
    catalog: &Catalog,
    value: &str,
    level: PgLogLevel,
    how: Refresh,
    policy: TrustPolicy,
) -> Option<Arc<Index>> {
    #[cfg(feature = "pg_test")]
    crate::tests::inject_panic(value);
    let path = search_path(value);
    // (the catalog must still be there: a session catalog nobody held may have been collected)
    if how == Refresh::IfChanged
        && let Some(index) = cached(value, &path, policy.enforce)
        && catalog.current().is_some()
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
    let server = locations().is_server(catalog);
    let still_wanted = || !server || server_settings() == (policy.enforce, value.to_string());
    // What this process found the catalog serving last: the prefixes as they are now means
    // nothing to do (one stat per prefix, no lock, no scan).
    let fingerprint = esp_resolver::index::fingerprint(&path, &locations().system);
    let seen = (catalog.root().to_path_buf(), value.to_string(), policy.enforce, fingerprint);
    let verified = || VERIFIED.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&seen);
    if in_postmaster && how == Refresh::IfChanged && verified() {
        return None;
    }
    if in_postmaster && crate::offload::in_postmaster() {
        // The postmaster never waits for a backend's sync: if one holds the catalog, it tries
        // again at the next reload (and backends sync what they need before CREATE, ALTER and
        // LOAD). It keeps no index, and scans in a child process (see `crate::offload`): what
        // a scan allocates would otherwise stay in the heap every backend inherits.
        let complete = crate::offload::in_child("the update of the catalog", || {
            let (synced, index) = scan_and_sync(catalog, &path, how);
            report_problems(Some(&index), level);
            conclude(catalog, synced, level)
        });
        // (the generation it made is adopted by the caller: the child's claim ended with it)
        *VERIFIED.lock().unwrap_or_else(|e| e.into_inner()) = complete.then_some(seen);
        return None;
    }
    let (synced, index) = if in_postmaster {
        // A standalone backend (single-user mode): as the postmaster, in its own process.
        let (synced, index) = scan_and_sync(catalog, &path, how);
        (synced, Some(index))
    } else if how == Refresh::IfChanged {
        // After a change under a prefix, one backend scans and builds a generation; the others
        // wait for it and scan nothing (the catalog is what their statement needs). Once this
        // backend has seen the catalog serve the prefixes as they are, it checks again only
        // when they change (one stat per prefix, no lock).
        if verified() {
            return cached(value, &path, policy.enforce);
        }
        match catalog.sync_lazily(&path, &locations().system, &still_wanted) {
            Ok((report, index)) => (Ok(Some(report)), index),
            Err(e) => (Err(e), None),
        }
    } else {
        let index = Index::build(&path, &locations().system);
        (catalog.sync_if(&index, true, &still_wanted).map(Some), Some(index))
    };
    report_problems(index.as_ref(), level);
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
        let policy = TrustPolicy::for_this_process(enforce);
        refresh_with(catalog, &recorded, level, Refresh::Overtaken, policy);
    }
    complete &= conclude(catalog, synced, level);
    // What this process verified: the state just synced, or nothing (a sync not done or not
    // complete is not evidence the catalog serves anything).
    *VERIFIED.lock().unwrap_or_else(|e| e.into_inner()) = complete.then_some(seen);
    let index = Arc::new(index?);
    if !complete || in_postmaster {
        // Not remembered as synced: the next refresh tries again. (The postmaster keeps none.)
        return Some(index);
    }
    let cached = Cached { value: value.to_string(), enforce: policy.enforce, index: index.clone() };
    *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some(cached);
    Some(index)
}

/// The postmaster's scan and sync (also a standalone backend's, in its own process). It never
/// waits for a backend's sync: if one holds the catalog, it tries again at the next reload.
fn scan_and_sync(catalog: &Catalog, path: &SearchPath, how: Refresh) -> (std::io::Result<Option<SyncReport>>, Index) {
    let index = Index::build(path, &locations().system);
    let synced = match how {
        Refresh::Start => catalog.try_sync_if_files_changed(&index),
        _ => catalog.try_sync(&index, how != Refresh::IfChanged),
    };
    (synced, index)
}

/// Reports the problems a scan met along the path.
fn report_problems(index: Option<&Index>, level: PgLogLevel) {
    for problem in index.iter().flat_map(|i| &i.problems) {
        crate::messages::problem(level, problem, "refresh");
    }
}

/// Reports how a sync ended and keeps what it made; whether it is complete (the catalog serves
/// what the index holds).
fn conclude(catalog: &Catalog, synced: std::io::Result<Option<SyncReport>>, level: PgLogLevel) -> bool {
    match synced {
        Ok(Some(report)) if report.stale => false,
        Ok(Some(report)) => {
            for problem in &report.problems {
                crate::messages::problem(level, problem, "refresh");
            }
            // the generation it made or found current stays ours until we adopt it
            if let Some(held) = &report.held {
                keep(held.clone());
            }
            // (remembered without the claim: HELD keeps it while it is named)
            *LAST_SYNC.lock().unwrap_or_else(|e| e.into_inner()) = Some(SyncReport { held: None, ..report });
            true
        }
        Ok(None) => {
            let message =
                "extension_search_path: the catalog is being updated by a backend; trying again at the next reload";
            Message::new(PgLogLevel::LOG, PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, message.into(), "refresh").emit();
            false
        }
        Err(e) => {
            let message =
                format!("extension_search_path: could not update catalog \"{}\": {e}", catalog.root().display());
            Message::new(level, crate::errors::for_io(&e), message, "refresh")
                .detail("CREATE EXTENSION and LOAD use the catalog as it was.".into())
                .hint("Check that the data directory is writable by the server.".into())
                .emit();
            false
        }
    }
}
