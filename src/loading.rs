//! Loading modules from images: before PostgreSQL loads a library that is a copy under a prefix,
//! the bundled libraries it needs are loaded (leaves first, by absolute path), or an error names
//! what is missing and where it was looked for. What to load, and whether it may be, is decided
//! by the core (`esp_resolver::dependencies::plan_loading`); this module loads and reports.
//!
//! [`make_loadable`] is called before PostgreSQL loads a library: for LOAD, CREATE FUNCTION …
//! LANGUAGE C (also from extension scripts), the first call of a C function in a backend
//! (through needs_fmgr_hook), and the preload lists at server start. Each name is made loadable
//! once per process; backends inherit what the postmaster did.

use std::path::PathBuf;

use esp_resolver::Index;
use esp_resolver::dependencies::{LibraryRefusal, loaded_sonames, plan_loading, system_library_dirs};
use esp_resolver::dfmgr::{Loader, names_library, split_library_list};
use esp_resolver::index::{load_target as load_target_of, served_file};
use pgrx::pg_sys::panic::ErrorReport;

use crate::memo::UnderLibrarySettings;
use pgrx::prelude::*;

/// What making each library name loadable came to in this process — done, found to need
/// nothing, or refused — per loader (they spell `$libdir/x` differently; the outcome for
/// [`Loader::Function`], then for [`Loader::File`]), under the settings it was looked up with (see
/// `crate::memo`); until they change a refusal is repeated without redoing the work. Inherited
/// by backends from the postmaster. A list searched in order: a session makes few names loadable,
/// and a first call in a fresh backend should run as little code as it can (each page of code it
/// runs is a page fault of its own).
static OUTCOMES: UnderLibrarySettings<Vec<(String, [Option<Outcome>; 2])>> = UnderLibrarySettings::new();

type Outcome = Result<(), LibraryRefusal>;

fn slot(loader: Loader) -> usize {
    usize::from(loader == Loader::File)
}

fn remembered(name: &str, loader: Loader) -> Option<Result<(), LibraryRefusal>> {
    OUTCOMES.get(|by_name| by_name.iter().find(|(n, _)| n == name)?.1[slot(loader)].clone())
}

fn remember(name: &str, loader: Loader, outcome: &Result<(), LibraryRefusal>) {
    OUTCOMES.update(|by_name| {
        let index = match by_name.iter().position(|(n, _)| n == name) {
            Some(index) => index,
            None => {
                by_name.push((name.to_string(), Default::default()));
                by_name.len() - 1
            }
        };
        by_name[index].1[slot(loader)] = Some(outcome.clone());
    });
}

/// Makes `name`, as `loader` is about to load it (`x`, `x.so`, `$libdir/x`, an absolute path),
/// loadable when the file PostgreSQL will open is a library served from a prefix: loads the
/// bundled libraries it needs, and raises an ERROR for one that cannot be loaded. Anything else
/// — a name PostgreSQL will not find, PostgreSQL's own files, a file that is no copy under a
/// prefix — is left to PostgreSQL, which loads or reports it exactly as it does without us:
/// nothing of it is read and nothing it needs is loaded.
pub fn make_loadable(name: &str, loader: Loader) {
    if let Err(refusal) = try_make_loadable(name, loader) {
        report(name, &refusal, PgLogLevel::ERROR);
    }
}

/// Raises (or, below ERROR, logs) the refusal to load `name`.
fn report(name: &str, refusal: &LibraryRefusal, level: PgLogLevel) {
    let error = crate::errors::for_library(name, refusal);
    let mut report = ErrorReport::new(error.code, error.message, "make_loadable").set_hint(error.hint);
    // The DETAIL names files and directories: only for roles that may see them.
    if crate::roles::may_see_paths() {
        report = report.set_detail(error.detail);
    }
    if level >= PgLogLevel::ERROR {
        report.report(level);
    } else {
        crate::messages::emit(level, report);
    }
}

/// Makes the module at `file` loadable (its bundled libraries loaded first), as for `LOAD`,
/// strictly — also in an operator's image, where PostgreSQL's own loads are only helped: for a
/// module we choose to load ourselves (a declared preload). Why not, in words.
pub fn make_loadable_strictly(file: &str) -> Result<(), String> {
    load_dependencies(file, Loader::File, false).map_err(|refusal| refusal.to_string())
}

/// Whether the shared object at `file` is loaded in this process.
pub fn is_loaded(file: &std::path::Path) -> bool {
    let Ok(name) = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: RTLD_NOLOAD never loads anything: it returns a handle (one more reference, given
    // back at once) only for an object already loaded.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

fn try_make_loadable(name: &str, loader: Loader) -> Result<(), LibraryRefusal> {
    if name.is_empty() {
        return Ok(());
    }
    if let Some(outcome) = remembered(name, loader) {
        return outcome;
    }
    let outcome = load_dependencies(name, loader, true);
    // A refusal is remembered only by the backend that met it (never by the postmaster, whose
    // memory every backend inherits): a new session tries again, e.g. once the missing library
    // is installed or a file's mode fixed.
    // SAFETY: a plain global, false only in the postmaster.
    if outcome.is_ok() || unsafe { pgrx::pg_sys::IsUnderPostmaster } {
        remember(name, loader, &outcome);
    }
    outcome
}

/// `lenient`: for a file in an operator's image (which PostgreSQL would load without us), help
/// only — never refuse.
fn load_dependencies(name: &str, loader: Loader, lenient: bool) -> Result<(), LibraryRefusal> {
    let locations = crate::locations::locations();
    let dynamic_library_path = crate::gucs::current(c"dynamic_library_path");
    // Through the catalog (the usual way) no index is needed: one is built (once per backend)
    // only for a file reached otherwise, or a need met only in another image.
    let path = crate::refresh::search_path(&crate::gucs::path());
    let (pkglib, catalogs) = (&locations.system.lib_dir, &locations.root);
    let found = served_file(name, loader, &dynamic_library_path, &path, pkglib, catalogs, session_index);
    let Some(real) = found else {
        return Ok(());
    };
    let policy = crate::gucs::trust_policy();
    let others = || session_index().image_library_dirs();
    // A file reached through the operator's own elements, which PostgreSQL would load without
    // us: we only help (its bundled libraries, when they can be loaded), never refuse.
    let operators = lenient && path.prefix_holding(&real).is_none();
    let planned = plan_loading(&real, &path, others, &policy, system_dirs(), loaded_sonames());
    let plan = match planned {
        Ok(plan) => plan,
        Err(_) if operators => return Ok(()),
        Err(refusal) => return Err(refusal),
    };
    for library in &plan.load_order {
        // SAFETY: loading a shared library runs its initialisers; these are the dependencies
        // of a module PostgreSQL is about to load anyway, which would run them too, and every
        // one is a trusted file of an image (plan_loading checked).
        let opened = unsafe {
            libloading::os::unix::Library::open(
                Some(library),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        };
        match opened {
            // Kept loaded for the life of the process, like PostgreSQL's own modules.
            Ok(handle) => std::mem::forget(handle),
            Err(_) if operators => return Ok(()),
            Err(e) => return Err(LibraryRefusal::LoadFailed { file: library.clone(), message: e.to_string() }),
        }
    }
    Ok(())
}

/// The system loader's directories (`LD_LIBRARY_PATH`, `/etc/ld.so.conf`, the defaults), read
/// once per server: first by the postmaster (every backend inherits them), as the dynamic
/// loader itself reads its configuration once per process.
pub fn system_dirs() -> Vec<std::path::PathBuf> {
    static DIRS: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIRS.get_or_init(system_library_dirs).clone()
}

/// The index of the session's path (from the cache when it is current).
pub fn session_index() -> std::sync::Arc<Index> {
    crate::refresh::index_for(&crate::gucs::path())
}

/// `LOAD '$libdir/x'` of a module only an image has: the image's file, for the statement to
/// load instead (see `esp_resolver::index::load_target`).
pub fn load_target(filename: &str) -> Option<PathBuf> {
    let locations = crate::locations::locations();
    let dynamic_library_path = crate::gucs::current(c"dynamic_library_path");
    let path = crate::refresh::search_path(&crate::gucs::path());
    load_target_of(filename, &dynamic_library_path, &path, &locations.system.lib_dir, &locations.root, session_index)
}

/// At server start, in the postmaster: make every library named in shared_preload_libraries
/// (PostgreSQL loads them right after us, in list order, by the same dynamic_library_path) and
/// session_preload_libraries loadable, so their bundled libraries are loaded and every backend
/// inherits them. A library of the shared list we refuse stops the start, as its load would; one
/// of the session list is only logged: PostgreSQL loads those in each new backend, where a
/// failure refuses that connection, not the server. A list PostgreSQL cannot split is left to
/// PostgreSQL, which logs it and loads nothing of it.
pub fn prepare_preload_lists() {
    // read here, in the postmaster, so that no backend reads the loader's configuration or the
    // names of the objects loaded so far again
    let _ = system_dirs();
    let _ = loaded_sonames();
    for (setting, level) in
        [(c"shared_preload_libraries", PgLogLevel::ERROR), (c"session_preload_libraries", PgLogLevel::WARNING)]
    {
        let names = split_library_list(&crate::gucs::current(setting)).unwrap_or_default();
        for name in names.iter().filter(|n| !names_library(n, "extension_search_path")) {
            if let Err(refusal) = try_make_loadable(name, Loader::File) {
                report(name, &refusal, level);
            }
        }
    }
}
