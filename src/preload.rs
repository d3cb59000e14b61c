//! Declared preloads: the modules the images' `META.json` files ask to be preloaded
//! (`contents.modules.<name>.preload`), loaded when `extension_search_path.preload_declared` is
//! on — `server` ones by the postmaster right after our `_PG_init`, `session` ones by every
//! session before its first statement. What to load, and what not and why, is decided by the
//! core (`esp_resolver::meta`); this file loads, and remembers the outcome for
//! `declared_preloads()` and `check()`.
//!
//! A declared module that fails to load is logged with its image named and skipped, where a
//! failing `shared_preload_libraries` entry keeps the server down: that list is the operator's
//! own and written for this server, while a declaration comes with an image that can be
//! mounted on many servers — one broken image must not take every other extension, and the
//! server, down with it; the server comes up and `check()` says what failed.

use std::ffi::CString;
use std::path::Path;
use std::sync::Mutex;

use esp_resolver::Index;
use esp_resolver::dfmgr::split_library_list;
use esp_resolver::meta::{Decision, Declarations, DeclaredPreload, Preload, ThisServer, declared_preloads, metas};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// What the postmaster decided and did at start (inherited by every backend), then what this
/// session loaded.
static OUTCOMES: Mutex<Vec<DeclaredPreload>> = Mutex::new(Vec::new());

/// The preload lists PostgreSQL loads itself, split as it splits them.
fn listed() -> Vec<(&'static str, Vec<String>)> {
    ["shared_preload_libraries", "session_preload_libraries", "local_preload_libraries"]
        .into_iter()
        .map(|setting| {
            let name = CString::new(setting).expect("no NUL");
            (setting, split_library_list(&crate::gucs::current(&name)).unwrap_or_default())
        })
        .collect()
}

fn this_server() -> ThisServer {
    ThisServer::new(pg_sys::PG_VERSION_NUM)
}

/// What the images of `index` declare and what is (or, with the setting off, would be) done.
fn decide(index: &Index) -> (Vec<(std::path::PathBuf, esp_resolver::meta::Meta)>, Vec<DeclaredPreload>) {
    let metas = metas(index);
    let preloads = declared_preloads(index, &metas, &this_server(), &listed(), &crate::gucs::trust_policy());
    (metas, preloads)
}

/// In the postmaster's `_PG_init`, after the preload lists were prepared: loads every `server`
/// module declared (when the setting is on) and keeps the `session` ones for each session.
/// Returns whether sessions have modules to load.
pub fn at_server_start() -> bool {
    if !crate::gucs::preload_declared() {
        return false;
    }
    let index = crate::loading::session_index();
    let (_, mut preloads) = decide(&index);
    drop(index);
    for preload in preloads.iter_mut().filter(|p| p.preload == Preload::Server) {
        load(preload);
    }
    let sessions = preloads.iter().any(|p| p.preload == Preload::Session && p.decision == Decision::Load);
    *OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()) = preloads;
    sessions
}

/// Before a session's first statement: loads the declared `session` modules.
pub fn at_session_start() {
    let mut outcomes = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
    for preload in outcomes.iter_mut().filter(|p| p.preload == Preload::Session) {
        load(preload);
    }
}

/// Loads one module PostgreSQL's way (`load_file`, as the preload lists are loaded), its bundled
/// libraries first; a failure is logged and recorded, never raised.
fn load(preload: &mut DeclaredPreload) {
    if preload.decision != Decision::Load {
        return;
    }
    let Some(file) = preload.file.clone() else { return };
    let outcome = crate::loading::make_loadable_or_why(&file.to_string_lossy()).and_then(|()| load_file(&file));
    if let Err(why) = outcome {
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
        preload.decision = Decision::Failed(why);
    }
}

/// `load_file(file)`, with an ERROR it raises caught and returned as its message.
fn load_file(file: &Path) -> Result<(), String> {
    let Ok(name) = CString::new(file.as_os_str().as_encoded_bytes()) else {
        return Err("the path holds a NUL byte".into());
    };
    PgTryBuilder::new(|| {
        // SAFETY: a plain call into PostgreSQL with a NUL-terminated path; an ERROR it raises
        // comes back as a Rust panic (pgrx's FFI guard), caught below.
        unsafe { pg_sys::load_file(name.as_ptr(), false) };
        Ok(())
    })
    .catch_others(|e| {
        Err(match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
                r.message().to_string()
            }
        })
    })
    .execute()
}

/// What the images declare, for `check()`: as decided and done at start when the setting is
/// on, else decided now for `index` (nothing loaded).
pub fn declarations(index: &Index) -> Declarations {
    let (metas, decided) = decide(index);
    let acted_on = crate::gucs::preload_declared();
    let preloads = if acted_on { OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()).clone() } else { decided };
    Declarations { server: this_server(), metas, preloads, acted_on }
}

/// One row per declared module: `loaded` is whether this process has it now.
pub fn rows(index: &Index) -> Vec<(DeclaredPreload, bool)> {
    let declarations = declarations(index);
    declarations
        .preloads
        .into_iter()
        .map(|p| {
            let loaded = declarations.acted_on
                && p.decision == Decision::Load
                && p.file.as_deref().is_some_and(crate::loading::is_loaded);
            (p, loaded)
        })
        .collect()
}
