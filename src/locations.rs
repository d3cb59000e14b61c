//! Where things are: PostgreSQL's own directories (`$system`) and the catalogs' root.
//!
//! The catalogs (see `esp_resolver::catalog`) live in the data directory, the one place the
//! server can always write, under `pg_stat_tmp/` (which pg_basebackup and pg_rewind skip):
//! `$PGDATA/pg_stat_tmp/extension_search_path/server` for the server-wide path and
//! `…/session-<hash>` for any other value a session has. They are derived data, rebuilt at start.

use std::ffi::CStr;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use esp_resolver::catalog::{SERVER_CATALOG, SESSION_CATALOG_PREFIX, session_catalog_name};
use esp_resolver::{Catalog, SystemDirs};
use pgrx::pg_sys;

pub struct Locations {
    /// Where the catalogs are.
    pub root: PathBuf,
    /// The catalog of the server-wide path.
    pub server: Catalog,
    pub system: SystemDirs,
}

impl Locations {
    /// The catalog of a session's own path value.
    pub fn session_catalog(&self, value: &str) -> Catalog {
        Catalog::new(self.root.join(session_catalog_name(value)))
    }

    /// Whether `catalog` is the server's.
    pub fn is_server(&self, catalog: &Catalog) -> bool {
        catalog.root() == self.server.root()
    }

    /// `root` as a prefix of the elements it holds (with a trailing slash).
    pub fn root_prefix(&self) -> String {
        format!("{}/", self.root.display())
    }
}

static LOCATIONS: OnceLock<Locations> = OnceLock::new();

/// Set in the postmaster by `init` and inherited by every backend.
pub fn locations() -> &'static Locations {
    LOCATIONS.get().expect("extension_search_path is initialised in _PG_init")
}

/// The locations, once `init` has run (never in a process that did not load us at start).
pub fn try_locations() -> Option<&'static Locations> {
    LOCATIONS.get()
}

/// In the postmaster's `_PG_init`: finds the directories, and removes what earlier runs and
/// versions left (session catalogs are stale after a restart).
pub fn init() {
    let locations = LOCATIONS.get_or_init(|| {
        // Under pg_stat_tmp, whose contents pg_basebackup and pg_rewind skip by design: the
        // catalog (symlinks, generated files) is derived data every server rebuilds at start,
        // and tools that copy a data directory must neither copy it nor trip over its links.
        let root = data_dir().join("pg_stat_tmp").join("extension_search_path");
        // Where versions before 0.2 kept it, and the layout before generations.
        let _ = fs::remove_dir_all(data_dir().join("extension_search_path"));
        let server = root.join(SERVER_CATALOG);
        for old in ["share", "lib"] {
            let _ = fs::remove_dir_all(server.join(old));
        }
        for old in [".stamp", ".inuse"] {
            let _ = fs::remove_file(server.join(old));
        }
        Locations { server: Catalog::new(server), root, system: system_dirs() }
    });
    for entry in fs::read_dir(&locations.root).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(SESSION_CATALOG_PREFIX) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
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
