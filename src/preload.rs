//! Declared preloads: the modules the images' `META.json` files ask to be preloaded
//! (`contents.modules.<name>.preload`), loaded when `extension_search_path.preload_declared` is
//! on — `server` ones by the postmaster right after our `_PG_init`, `session` ones by every
//! client session before its first statement. What to load, and what not and why, is decided by
//! the core (`esp_resolver::meta`); this file loads, and remembers the outcome for
//! `declared_preloads()` and `check()`.
//!
//! What can be known before any code of a module runs is checked first, in the postmaster: the
//! file is a trusted library of an image, a shared object for this machine with a magic block
//! of this major version (`meta::preflight`), and its bundled libraries load (they are then
//! inherited by every process, parallel workers included). A module that fails there is
//! skipped with a WARNING naming its image, and the server starts: that is where a broken image
//! differs from a broken `shared_preload_libraries` entry, which keeps the server down — one
//! image mounted on many servers must not take every other extension down with it. Once a
//! module's own code has run, nothing can undo it (PostgreSQL never unloads a module): a server
//! module whose `_PG_init` raises an ERROR stops the start, as a `shared_preload_libraries`
//! entry does; a session module's ERROR reaches the session's first statement untouched, as a
//! failed `LOAD` would.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use esp_resolver::Index;
use esp_resolver::dfmgr::split_library_list;
use esp_resolver::meta::{
    Decision, Declarations, DeclaredPreload, Meta, Preload, ThisServer, declared_preloads, metas,
};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// What the postmaster decided and did at start (inherited by every backend).
static OUTCOMES: Mutex<Vec<DeclaredPreload>> = Mutex::new(Vec::new());

/// The files of the `session` modules each client session loads, with their places in
/// [`OUTCOMES`] (set in the postmaster).
static SESSION_FILES: OnceLock<(Vec<CString>, Vec<usize>)> = OnceLock::new();

/// In a session: the session module being loaded, while it is (`usize::MAX` otherwise). Still
/// set afterwards, it names the one whose ERROR ended the loading (the later ones were not
/// loaded in this session).
static LOADING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The preload lists PostgreSQL loads itself, split as it splits them.
fn listed() -> Vec<(&'static str, Vec<String>)> {
    [c"shared_preload_libraries", c"session_preload_libraries", c"local_preload_libraries"]
        .into_iter()
        .map(|name| {
            let setting = name.to_str().expect("ASCII names");
            (setting, split_library_list(&crate::gucs::current(name)).unwrap_or_default())
        })
        .collect()
}

fn this_server() -> ThisServer {
    ThisServer::new(pg_sys::PG_VERSION_NUM)
}

/// What the images of `index` declare and what is (or, with the setting off, would be) done.
fn decide(index: &Index) -> (Vec<(PathBuf, Meta)>, Vec<DeclaredPreload>) {
    let metas = metas(index);
    let preloads = declared_preloads(index, &metas, &this_server(), &listed(), &crate::gucs::trust_policy());
    (metas, preloads)
}

/// In the postmaster's `_PG_init`, after the preload lists were prepared: checks every declared
/// module (when the setting is on), loads the `server` ones and keeps the `session` ones for
/// each session. Returns whether sessions have modules to load.
pub fn at_server_start() -> bool {
    if !crate::gucs::preload_declared() {
        return false;
    }
    let index = crate::loading::session_index();
    let (_, mut preloads) = decide(&index);
    drop(index);
    let (mut session_files, mut places) = (Vec::new(), Vec::new());
    for (place, preload) in preloads.iter_mut().enumerate() {
        if matches!(preload.decision, Decision::Unloadable(_) | Decision::NotTrusted(_) | Decision::NoFile) {
            // what the image declares and this server will not load: said in the log
            let why = preload.decision.reason().unwrap_or_default();
            warn(preload, &why);
        }
        if preload.decision != Decision::Load {
            continue;
        }
        let Some(file) = preload.file.clone() else { continue };
        // (the core made sure it is UTF-8 and a module for this server)
        if let Err(why) = crate::loading::make_loadable_strictly(&file.to_string_lossy()) {
            skip(preload, why);
            continue;
        }
        match preload.preload {
            Preload::Server => load_in_postmaster(preload, &file),
            Preload::Session => match CString::new(file.as_os_str().as_encoded_bytes()) {
                Ok(name) => {
                    session_files.push(name);
                    places.push(place);
                }
                Err(_) => skip(preload, "the path holds a NUL byte".into()),
            },
        }
    }
    let sessions = !session_files.is_empty();
    let _ = SESSION_FILES.set((session_files, places));
    *OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()) = preloads;
    sessions
}

/// A declared module not loaded: logged (the postmaster's messages go to the server log only)
/// and recorded.
fn skip(preload: &mut DeclaredPreload, why: String) {
    warn(preload, &why);
    preload.decision = Decision::Failed(why);
}

/// Says in the server log that a declared module is not loaded, and why.
fn warn(preload: &DeclaredPreload, why: &str) {
    let report = pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "module \"{}\" declared for preloading ({}) by image \"{}\" was not loaded: {why}",
            preload.module,
            preload.preload.as_str(),
            preload.image.display()
        ),
        "preload",
    )
    .set_hint("See extension_search_path.declared_preloads() and check(); the server goes on without it.");
    crate::messages::emit(PgLogLevel::WARNING, report);
}

/// `load_file` in the postmaster. An ERROR raised before the module's code ran (the file could
/// not be opened by the dynamic loader, its magic block refused: PostgreSQL has closed it
/// again) skips it; one raised by its `_PG_init` (it stays mapped) stops the start.
fn load_in_postmaster(preload: &mut DeclaredPreload, file: &Path) {
    let Ok(name) = CString::new(file.as_os_str().as_encoded_bytes()) else {
        return skip(preload, "the path holds a NUL byte".into());
    };
    let failed = PgTryBuilder::new(|| {
        // SAFETY: a plain call into PostgreSQL with a NUL-terminated path; an ERROR it raises
        // comes back as a Rust panic (pgrx's FFI guard restores the error state), caught below.
        unsafe { pg_sys::load_file(name.as_ptr(), false) };
        None
    })
    .catch_others(|e| {
        Some(match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
                match r.detail() {
                    Some(detail) => format!("{}: {detail}", r.message()),
                    None => r.message().to_string(),
                }
            }
        })
    })
    .execute();
    let Some(why) = failed else { return };
    // PostgreSQL's own refusals name the file and come before the module's code runs (it
    // closes the library again, unless the dynamic loader cannot unmap it)
    let quoted = format!("\"{}\"", file.display());
    let refused = ["could not access file ", "could not load library ", "incompatible library "]
        .iter()
        .any(|start| why.starts_with(&format!("{start}{quoted}")));
    if refused || !crate::loading::is_loaded(file) {
        return skip(preload, why);
    }
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "module \"{}\" declared for preloading (server) by image \"{}\" failed in its initialisation: {why}",
            preload.module,
            preload.image.display()
        ),
        "preload",
    )
    .set_hint(
        "A module whose _PG_init failed cannot be unloaded, so the server does not start, as for \
         shared_preload_libraries. Fix or remove the image, or set extension_search_path.preload_declared = off.",
    )
    .report(PgLogLevel::FATAL);
}

/// The files of the declared `session` modules, for each client session to load.
pub fn session_files() -> &'static [CString] {
    SESSION_FILES.get().map_or(&[], |(files, _)| files.as_slice())
}

/// The session module `i` (of [`session_files`]) is being loaded; `None`: all were.
pub fn loading(i: Option<usize>) {
    LOADING.store(i.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// What the images declare, for `check()`: as decided and done at start when the setting is
/// on, else decided now for `index` (nothing loaded).
pub fn declarations(index: &Index) -> Declarations {
    let acted_on = crate::gucs::preload_declared();
    let (metas, preloads) = if acted_on {
        (metas(index), OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()).clone())
    } else {
        decide(index)
    };
    let mut declarations = Declarations { server: this_server(), metas, preloads, acted_on };
    session_failures(&mut declarations);
    declarations
}

/// One row per declared module, with whether this process has the image's file loaded (a
/// session module whose loading failed in this session is not, whatever is mapped).
pub fn rows(index: &Index) -> Vec<(DeclaredPreload, bool)> {
    declarations(index)
        .preloads
        .into_iter()
        .map(|p| {
            let loaded =
                !matches!(p.decision, Decision::Failed(_)) && p.file.as_deref().is_some_and(crate::loading::is_loaded);
            (p, loaded)
        })
        .collect()
}

/// Marks the session module whose ERROR ended this session's loading, and those after it.
fn session_failures(declarations: &mut Declarations) {
    let failed_at = LOADING.load(Ordering::Relaxed);
    let Some((_, places)) = SESSION_FILES.get() else { return };
    if !declarations.acted_on || failed_at >= places.len() {
        return;
    }
    for (i, place) in places.iter().enumerate().skip(failed_at) {
        let why = if i == failed_at {
            "its load raised an ERROR in this session (the session's first statement reported it)"
        } else {
            "not loaded in this session: an earlier declared session module failed"
        };
        if let Some(preload) = declarations.preloads.get_mut(*place) {
            preload.decision = Decision::Failed(why.into());
        }
    }
}
