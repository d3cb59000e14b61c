//! Loading modules from images: bundled dependency libraries first (leaves first, by absolute
//! path), `LOAD '$libdir/x'` for modules that live only in images, and errors that name what is
//! missing and where it was looked for.
//!
//! `prepare(name)` is called before PostgreSQL loads a library: for LOAD, CREATE FUNCTION …
//! LANGUAGE C, the module of an extension being created or updated (and of what CASCADE pulls
//! in), the first call of a C function in a backend (through needs_fmgr_hook), and the
//! preload lists at server start. Each name is prepared once per process; backends inherit what
//! the postmaster prepared.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use esp_resolver::Index;
use esp_resolver::dfmgr::{self, Loader};
use esp_resolver::libs::{LibraryContext, loaded_sonames, plan, system_library_dirs};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::server::locations;

/// What preparing each library name came to in this process — prepared, found to need nothing,
/// or refused — per loader (they spell `$libdir/x` differently), under the
/// `dynamic_library_path` it was looked up with. That value names the catalog generation, so a
/// change under a prefix, a reload that changes what is served, or a session's own path starts
/// afresh; until then a refusal is repeated without redoing the work. Inherited by backends
/// from the postmaster. A static, never dropped: nothing to free at backend exit.
static PREPARED: Mutex<Option<Prepared>> = Mutex::new(None);

type Prepared = (String, HashMap<(String, bool), Result<(), Refusal>>);

/// The settings a preparation depends on: `dynamic_library_path` (which names the catalog
/// generation) and the trust setting.
fn prepared_under() -> String {
    format!("{}\n{}", crate::gucs::current(c"dynamic_library_path"), crate::gucs::trust_policy().enforce)
}

fn remembered(name: &str, loader: Loader) -> Option<Result<(), Refusal>> {
    let path = prepared_under();
    let key = (name.to_string(), loader == Loader::File);
    let guard = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().filter(|(p, _)| *p == path).and_then(|(_, outcomes)| outcomes.get(&key).cloned())
}

fn remember(name: &str, loader: Loader, outcome: &Result<(), Refusal>) {
    let path = prepared_under();
    let key = (name.to_string(), loader == Loader::File);
    let mut guard = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut() {
        Some((p, outcomes)) if *p == path => {
            outcomes.insert(key, outcome.clone());
        }
        _ => *guard = Some((path, HashMap::from([(key, outcome.clone())]))),
    }
}

/// Makes `name`, as `loader` is about to load it (`x`, `x.so`, `$libdir/x`, an absolute path),
/// loadable when the file PostgreSQL will open is a library served from a prefix: loads the
/// bundled libraries it needs, and raises an ERROR for one whose dependency cannot be found.
/// Anything else — a name PostgreSQL will not find, PostgreSQL's own files, a file that is no
/// copy under a prefix — is left to PostgreSQL, which loads or reports it exactly as it does
/// without us: nothing of it is read and nothing it needs is loaded.
pub fn prepare(name: &str, loader: Loader) {
    if let Err(refusal) = try_prepare(name, loader) {
        refusal.report(PgLogLevel::ERROR);
    }
}

/// Why a library of ours cannot be loaded: an error of ours, raised or (at start, for
/// session_preload_libraries) logged.
#[derive(Clone)]
struct Refusal {
    code: PgSqlErrorCode,
    message: String,
    /// Names files and directories: shown only to roles that may see them.
    detail: String,
    hint: String,
}

impl Refusal {
    fn report(self, level: PgLogLevel) {
        let mut error = ErrorReport::new(self.code, self.message, "prepare").set_hint(self.hint);
        if crate::roles::may_see_paths() {
            error = error.set_detail(self.detail);
        }
        if level >= PgLogLevel::ERROR {
            error.report(level);
        } else {
            crate::messages::emit(level, error);
        }
    }
}

fn try_prepare(name: &str, loader: Loader) -> Result<(), Refusal> {
    if name.is_empty() {
        return Ok(());
    }
    if let Some(outcome) = remembered(name, loader) {
        return outcome;
    }
    let outcome = prepare_now(name, loader);
    // A refusal is remembered only by the backend that met it (never by the postmaster, whose
    // memory every backend inherits): a new session tries again, e.g. once the missing library
    // is installed or a file's mode fixed.
    // SAFETY: a plain global, false only in the postmaster.
    if outcome.is_ok() || unsafe { pgrx::pg_sys::IsUnderPostmaster } {
        remember(name, loader, &outcome);
    }
    outcome
}

fn prepare_now(name: &str, loader: Loader) -> Result<(), Refusal> {
    let Some(real) = locate(name, loader) else {
        return Ok(());
    };
    let policy = crate::gucs::trust_policy();
    let index = session_index();
    let trusted = |file: &Path| {
        let top = index.prefix_holding(file).unwrap_or_else(|| file.parent().unwrap_or(file).to_path_buf());
        match policy.enforce.then(|| policy.distrust_from(&top, file)).flatten() {
            None => Ok(()),
            Some(why) => Err(Refusal {
                code: PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                message: format!("library \"{name}\" is not trusted"),
                detail: format!("\"{}\": {why}", file.display()),
                hint:
                    "Fix the file's owner or mode, or set extension_search_path.trusted_files_only = off (server-wide)."
                        .into(),
            }),
        }
    };
    trusted(&real)?;
    let mut ctx =
        LibraryContext { image_dirs: Vec::new(), system_dirs: system_library_dirs(), loaded: loaded_sonames() };
    let mut result = plan(&real, &ctx);
    if result.as_ref().is_ok_and(|p| p.missing().next().is_some()) {
        // Not in its own image nor on the system: look in the other images too.
        ctx.image_dirs = index.image_library_dirs();
        result = plan(&real, &ctx);
    }
    let plan = result.map_err(|e| Refusal {
        code: PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
        message: format!("could not load library \"{name}\": it is not a shared library this server can load"),
        detail: e,
        hint: "Replace the file in the image with a shared library built for this server.".into(),
    })?;
    if let Some(missing) = plan.missing().next() {
        let searched: Vec<String> = missing.searched.iter().map(|d| d.display().to_string()).collect();
        return Err(Refusal {
            code: PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            message: format!(
                "could not load library \"{name}\": required library \"{}\" was not found",
                missing.soname
            ),
            detail: format!(
                "\"{}\" needs \"{}\". Directories searched: {}.",
                missing.needed_by.display(),
                missing.soname,
                searched.join(", ")
            ),
            hint: format!(
                "Bundle \"{}\" in the image's lib/ or system/ directory, or install it on the server.",
                missing.soname
            ),
        });
    }
    for file in &plan.load_order {
        trusted(file)?;
    }
    for library in &plan.load_order {
        // SAFETY: loading a shared library runs its initialisers; these are the dependencies
        // of a module PostgreSQL is about to load anyway, which would run them too, and every
        // one is a trusted file of an image (checked above).
        let opened = unsafe {
            libloading::os::unix::Library::open(
                Some(library),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        };
        match opened {
            // Kept loaded for the life of the process, like PostgreSQL's own modules.
            Ok(handle) => std::mem::forget(handle),
            Err(e) => {
                return Err(Refusal {
                    code: PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                    message: format!("could not load library \"{name}\": a library it needs could not be loaded"),
                    detail: format!("\"{}\": {e}", library.display()),
                    hint: "Check that the image's bundled libraries are built for this server's system.".into(),
                });
            }
        }
    }
    Ok(())
}

/// The canonical path of the file PostgreSQL's `loader` will open for `name`, when it is a
/// library copy under a prefix (reached through the catalog, an operator's element or an
/// absolute path); `None` for anything else.
fn locate(name: &str, loader: Loader) -> Option<PathBuf> {
    let dynamic_library_path = crate::gucs::current(c"dynamic_library_path");
    let file = dfmgr::expand(name, loader, &dynamic_library_path, &locations().system.lib_dir, &dfmgr::pg_file_exists)?;
    let real = fs::canonicalize(file).ok()?;
    session_index().served_library(&real).is_some().then_some(real)
}

pub fn session_index() -> std::sync::Arc<Index> {
    crate::server::index_for(&crate::gucs::path())
}

/// `LOAD '$libdir/x'`: PostgreSQL looks only in pkglibdir for it. When `x` is not there but an
/// image provides it (found as a C function's `$libdir/x` would be), the real path of the
/// image's file, for the statement to load instead.
pub fn load_target(filename: &str) -> Option<PathBuf> {
    if dfmgr::strip_libdir(filename) == filename {
        return None;
    }
    let libdir = &locations().system.lib_dir;
    let dynamic_library_path = crate::gucs::current(c"dynamic_library_path");
    if dfmgr::expand(filename, Loader::File, &dynamic_library_path, libdir, &dfmgr::pg_file_exists).is_some() {
        return None;
    }
    locate(filename, Loader::Function)
}

/// At server start, in the postmaster: prepare every library named in shared_preload_libraries
/// (PostgreSQL loads them right after us, in list order, by the same dynamic_library_path) and
/// session_preload_libraries, so their bundled libraries are loaded and every backend inherits
/// them. A library of the shared list we refuse stops the start, as its load would; one of the
/// session list is only logged: PostgreSQL loads those in each new backend, where a failure
/// refuses that connection, not the server.
pub fn prepare_preload_lists() {
    for (setting, level) in
        [(c"shared_preload_libraries", PgLogLevel::ERROR), (c"session_preload_libraries", PgLogLevel::WARNING)]
    {
        let value = crate::gucs::current(setting);
        for name in value.split(',').map(|n| n.trim().trim_matches('"')) {
            let ours = name == "extension_search_path" || name.ends_with("/extension_search_path");
            if !name.is_empty()
                && !ours
                && let Err(refusal) = try_prepare(name, Loader::File)
            {
                refusal.report(level);
            }
        }
    }
}
