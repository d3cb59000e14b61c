#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! extension_search_path: PostgreSQL finds extensions in per-extension directories under a list
//! of prefixes (`extension_search_path.path`), in the RFC layout and the CloudNativePG image layout.
//!
//! This crate is the thin PostgreSQL shell around `esp_resolver` (the pure core in `resolver/`):
//!
//! * [`gucs`] — the settings;
//! * [`locations`] — PostgreSQL's own directories and where the catalogs are;
//! * [`refresh`] — rebuilding the catalogs, with the index of the last scan;
//! * [`generations`] — which catalog generation this process uses and holds;
//! * [`core_paths`] — the catalog in `extension_control_path` / `dynamic_library_path`;
//! * [`hooks`] — every hook: check hooks on those two settings, ProcessUtility,
//!   needs_fmgr_hook, ClientAuthentication_hook;
//! * [`loading`] — loading modules from images with their bundled libraries;
//! * [`preload`] — the modules images declare for preloading in their `META.json`;
//! * [`errors`] — the SQLSTATE, DETAIL and HINT of everything we report; [`messages`] — how;
//! * [`offload`] — the postmaster's scans, done in a child process of its own;
//! * [`memo`] — per-backend memos kept under `dynamic_library_path` and the trust setting;
//! * [`roles`] — who may see paths; [`sql`] — SQL functions in schema `extension_search_path`.

use pgrx::prelude::*;

mod core_paths;
mod errors;
mod generations;
mod gucs;
mod hooks;
mod loading;
mod locations;
mod memo;
mod messages;
mod offload;
mod preload;
mod refresh;
mod roles;
mod sql;

pgrx::pg_module_magic!(name = c"extension_search_path", version = c"0.1.0");

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a plain global the postmaster sets while it loads shared_preload_libraries; read
    // on the main thread.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "extension_search_path must be loaded via shared_preload_libraries",
            "_PG_init",
        )
        .set_hint("Add extension_search_path to shared_preload_libraries in postgresql.conf, first in the list, and restart the server.")
        .report(PgLogLevel::ERROR);
    }
    gucs::init();
    locations::init();
    refresh::init();
    hooks::init();
    loading::prepare_preload_lists();
    if preload::at_server_start() {
        hooks::init_session_modules();
    }
    // the server's path parsed once, for every backend to inherit
    let _ = refresh::search_path(&gucs::path());
    // last: what the start's scans freed goes back to the system before any backend is forked
    refresh::release_free_memory();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'extension_search_path'"]
    }
}
