//! The server's side of resolution: where PostgreSQL's own directories are, where the catalog
//! lives, and refreshing it.
//!
//! The catalog (see `esp_resolver::catalog`) lives in the data directory, the one place the
//! server can always write: `$PGDATA/extension_search_path/server` for the server-wide path and
//! `$PGDATA/extension_search_path/session-<key>` for a path a session SET for itself. It is
//! derived data: rebuilt at start, on reload and before every CREATE/ALTER EXTENSION and LOAD.

use std::ffi::CStr;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use esp_resolver::catalog::key;
use esp_resolver::{Catalog, Index, SearchPath, SystemDirs};
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
        let root = data_dir().join("extension_search_path");
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
    refresh(&locations.server, &crate::gucs::path(), PgLogLevel::WARNING);
}

/// A reload changed (or re-read) the server-wide path: rebuild the server catalog. Runs in the
/// postmaster's assign hook, so it never raises an error.
pub fn refresh_server_catalog_after_reload(value: &str) {
    if let Some(locations) = LOCATIONS.get() {
        refresh(&locations.server, value, PgLogLevel::WARNING);
    }
}

/// The catalog for a path value: the server's, or one of its own for a value a session SET.
pub fn catalog_for(value: &str) -> Catalog {
    let locations = locations();
    if value == crate::gucs::server_path() {
        locations.server.clone()
    } else {
        Catalog::new(locations.root.join(format!("session-{}", key(value))))
    }
}

/// Scans `value` and makes `catalog` serve its winners. Problems are reported at `level` with
/// the element or file named; nothing here raises an error: a catalog that cannot be written
/// leaves the previous one in place.
pub fn refresh(catalog: &Catalog, value: &str, level: PgLogLevel) -> Index {
    let catalog = &catalog.clone().with_trust(crate::gucs::trust_policy());
    let index = Index::build(&SearchPath::parse(value), &locations().system);
    for problem in &index.problems {
        ereport!(level, PgSqlErrorCode::ERRCODE_WARNING, format!("extension_search_path: {problem}"));
    }
    match catalog.sync(&index) {
        Ok(report) => {
            for problem in &report.problems {
                ereport!(level, PgSqlErrorCode::ERRCODE_WARNING, format!("extension_search_path: {problem}"));
            }
        }
        Err(e) => ErrorReport::new(
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("extension_search_path: could not update catalog \"{}\": {e}", catalog.root().display()),
            "refresh",
        )
        .set_detail("CREATE EXTENSION and LOAD use the catalog as it was.")
        .set_hint("Check that the data directory is writable by the server.")
        .report(PgLogLevel::WARNING),
    }
    index
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
