#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! extension_search_path: PostgreSQL finds extensions in per-extension directories under a list
//! of prefixes (`extension_search_path.path`), in the RFC layout and the CloudNativePG image layout.
//!
//! This crate is the thin PostgreSQL shell around `esp_resolver` (the pure core in `resolver/`):
//!
//! * [`gucs`] — the settings;
//! * [`server`] — PostgreSQL's own directories and the catalog location, refreshing the catalog;
//! * [`core_paths`] — merging the catalog into `extension_control_path` / `dynamic_library_path`;
//! * [`hooks`] — ProcessUtility (CREATE/ALTER EXTENSION, LOAD, CREATE FUNCTION) and
//!   needs_fmgr_hook (the first call of a C function in a backend);
//! * [`libraries`] — loading modules from images with their bundled libraries;
//! * [`sql`] — SQL functions in schema `extension_search_path`.

use pgrx::prelude::*;

mod core_paths;
mod gucs;
mod hooks;
mod libraries;
mod messages;
mod roles;
mod server;
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
    server::init();
    core_paths::init();
    hooks::init();
    libraries::prepare_preload_lists();
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
