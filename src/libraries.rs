//! Loading modules from images: bundled dependency libraries first (leaves first, by absolute
//! path), `LOAD '$libdir/x'` for modules that live only in images, and errors that name what is
//! missing and where it was looked for.
//!
//! `prepare(name)` is called before PostgreSQL loads a library: for LOAD, CREATE FUNCTION …
//! LANGUAGE C, the module of an extension being created or updated (and of what CASCADE pulls
//! in), the first call of a C function in a backend (through needs_fmgr_hook), and the
//! preload lists at server start. Each name is prepared once per process; backends inherit what
//! the postmaster prepared.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use esp_resolver::libs::{LibraryContext, plan, system_library_dirs};
use esp_resolver::{Index, SearchPath};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::server::{catalog_for, locations};

/// Library names prepared in this process (inherited by backends from the postmaster). A
/// static, never dropped: nothing to free at backend exit.
static PREPARED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn prepared(name: &str) -> bool {
    PREPARED.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|p| p.contains(name))
}

fn mark_prepared(name: &str) {
    PREPARED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).insert(name.to_string());
}

/// Makes `name` (as PostgreSQL is given it: `x`, `x.so`, `$libdir/x`, an absolute path)
/// loadable when it is a module served from a prefix: loads the bundled libraries it needs, and
/// raises an ERROR for one whose dependency cannot be found. Anything else — a library found
/// nowhere, PostgreSQL's own, one an operator's element provides — is left to PostgreSQL, which
/// loads or reports it exactly as it does without us.
pub fn prepare(name: &str) {
    if name.is_empty() || prepared(name) {
        return;
    }
    let Some(module) = locate(name) else { return };
    let real = fs::canonicalize(&module.path).unwrap_or_else(|_| module.path.clone());
    if !module.ours || real.starts_with(&locations().system.lib_dir) {
        // PostgreSQL's own modules and files we do not serve: their libraries are the
        // system's business, as without us.
        mark_prepared(name);
        return;
    }
    let mut ctx =
        LibraryContext { image_dirs: Vec::new(), system_dirs: system_library_dirs(), loaded: loaded_objects() };
    let mut result = plan(&real, &ctx);
    if result.as_ref().is_ok_and(|p| p.missing().next().is_some()) {
        // Not in its own image nor on the system: look in the other images too.
        ctx.image_dirs = session_index().image_library_dirs();
        result = plan(&real, &ctx);
    }
    let plan = match result {
        Ok(plan) => plan,
        Err(e) => {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                format!("could not load library \"{name}\": {e}"),
                "prepare",
            )
            .set_hint("Replace the file in the image with a shared library built for this server.")
            .report(PgLogLevel::ERROR);
            return;
        }
    };
    if let Some(missing) = plan.missing().next() {
        let searched: Vec<String> = missing.searched.iter().map(|d| d.display().to_string()).collect();
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("could not load library \"{name}\": required library \"{}\" was not found", missing.soname),
            "prepare",
        )
        .set_detail(format!(
            "\"{}\" needs \"{}\". Directories searched: {}.",
            missing.needed_by.display(),
            missing.soname,
            searched.join(", ")
        ))
        .set_hint(format!(
            "Bundle \"{}\" in the image's lib/ or system/ directory, or install it on the server.",
            missing.soname
        ))
        .report(PgLogLevel::ERROR);
    }
    let policy = crate::gucs::trust_policy();
    if policy.enforce {
        for file in std::iter::once(&real).chain(&plan.load_order) {
            if let Some(why) = policy.distrust(file) {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("library \"{}\" is not trusted: {why}", file.display()),
                    "prepare",
                )
                .set_hint("Fix the file's owner or mode, or set extension_search_path.trusted_files_only = off (server-wide).")
                .report(PgLogLevel::ERROR);
            }
        }
    }
    for library in &plan.load_order {
        // SAFETY: loading a shared library runs its initialisers; these are the dependencies
        // of a module PostgreSQL is about to load anyway, which would run them too.
        match unsafe {
            libloading::os::unix::Library::open(
                Some(library),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        } {
            // Kept loaded for the life of the process, like PostgreSQL's own modules.
            Ok(handle) => std::mem::forget(handle),
            Err(e) => ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                format!("could not load library \"{}\", needed by \"{name}\": {e}", library.display()),
                "prepare",
            )
            .report(PgLogLevel::ERROR),
        }
    }
    mark_prepared(name);
}

struct Located {
    path: PathBuf,
    /// Found through extension_search_path (not `$libdir` or an operator's element).
    ours: bool,
}

/// Finds `name` the way PostgreSQL will: along the effective dynamic_library_path (our catalog
/// first), the name as given and then with `.so`; a name with a slash as is (after `$libdir`).
fn locate(name: &str) -> Option<Located> {
    let catalog_lib = catalog_for(&crate::gucs::path()).library_dir();
    let bare = name.strip_prefix("$libdir/").unwrap_or(name);
    if bare.contains('/') {
        let path = PathBuf::from(bare);
        let ours = path.starts_with(&catalog_lib) || prefixes().iter().any(|p| path.starts_with(p));
        return path.is_file().then_some(Located { path, ours });
    }
    let dirs = library_path_dirs();
    for candidate in [bare.to_string(), format!("{bare}.so")] {
        for dir in &dirs {
            let path = dir.join(&candidate);
            if path.is_file() {
                return Some(Located { ours: *dir == catalog_lib, path });
            }
        }
    }
    // Not along the path: PostgreSQL then hands the bare name to the system's loader.
    system_library_dirs()
        .into_iter()
        .map(|dir| dir.join(bare))
        .find(|path| path.is_file())
        .map(|path| Located { path, ours: false })
}

/// The effective dynamic_library_path, `$libdir` expanded.
fn library_path_dirs() -> Vec<PathBuf> {
    let value = crate::gucs::current(c"dynamic_library_path");
    let libdir = locations().system.lib_dir.display().to_string();
    value
        .split(':')
        .filter(|e| !e.is_empty())
        .map(|e| {
            PathBuf::from(
                e.strip_prefix("$libdir").map(|rest| format!("{libdir}{rest}")).unwrap_or_else(|| e.to_string()),
            )
        })
        .collect()
}

fn prefixes() -> Vec<PathBuf> {
    SearchPath::parse(&crate::gucs::path()).prefixes().map(Path::to_path_buf).collect()
}

pub fn session_index() -> std::sync::Arc<Index> {
    crate::server::index_for(&crate::gucs::path())
}

/// File names of the objects mapped into this process (the loader matches a needed soname
/// against loaded objects before searching any directory).
pub fn loaded_objects() -> HashSet<String> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .filter_map(|p| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// `LOAD '$libdir/x'`: PostgreSQL looks only in pkglibdir for it. When `x` is not there but an
/// image provides it, the real path of the image's file, for the statement to load instead.
pub fn load_target(filename: &str) -> Option<PathBuf> {
    let rest = filename.strip_prefix("$libdir/")?;
    let libdir = &locations().system.lib_dir;
    if rest.contains('/') || libdir.join(rest).is_file() || libdir.join(format!("{rest}.so")).is_file() {
        return None;
    }
    let located = locate(rest)?;
    located.ours.then(|| fs::canonicalize(&located.path).unwrap_or(located.path))
}

/// The module_pathname of `name` and of everything it requires (what CASCADE may create), as
/// resolved along the session's path.
pub fn extension_modules(index: &Index, name: &str) -> Vec<String> {
    let mut modules = Vec::new();
    let mut todo = vec![name.to_string()];
    let mut seen = HashSet::new();
    while let Some(next) = todo.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        let Some(control) = index.resolve(&next).and_then(|c| c.read_control().ok()) else { continue };
        if let Some(module) = control.module_pathname() {
            modules.push(module.to_string());
        }
        todo.extend(control.requires());
    }
    modules
}

/// At server start, in the postmaster: prepare every library named in
/// shared_preload_libraries (PostgreSQL loads them right after us, in list order, by the same
/// dynamic_library_path) and session_preload_libraries, so their bundled libraries are loaded
/// and every backend inherits them.
pub fn prepare_preload_lists() {
    for setting in [c"shared_preload_libraries", c"session_preload_libraries"] {
        let value = crate::gucs::current(setting);
        for name in value.split(',').map(|n| n.trim().trim_matches('"')) {
            if !name.is_empty() && name != "extension_search_path" && !name.ends_with("/extension_search_path") {
                prepare(name);
            }
        }
    }
}
