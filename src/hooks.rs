//! The ProcessUtility hook: before CREATE EXTENSION, ALTER EXTENSION and LOAD, bring the
//! catalog up to date with the session's path, so a directory added under a prefix, or a path
//! changed by reload or SET, is seen without a restart. Every other statement goes straight
//! through to the previous hook.

use std::ffi::c_char;

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded; we keep the previous
    // hook and call it from ours.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL passes a valid PlannedStmt whose utilityStmt is a Node.
    if unsafe { needs_catalog(pstmt) } {
        let path = crate::gucs::path();
        let catalog = crate::server::catalog_for(&path);
        let level = if catalog == crate::server::locations().server { PgLogLevel::LOG } else { PgLogLevel::WARNING };
        crate::server::refresh(&catalog, &path, level);
        crate::core_paths::point_session_at(&catalog);
    }
    // The previous hook if there is one, else PostgreSQL's own implementation.
    // SAFETY: the arguments are passed on unchanged, as PostgreSQL gave them to us;
    // PREV_PROCESS_UTILITY is written once in init; the boundary turns a PostgreSQL ERROR
    // raised below into a Rust unwind through this frame and back.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(previous) => pg_sys::ffi::pg_guard_ffi_boundary(|| {
                previous(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
        }
    }
}

/// CREATE EXTENSION, ALTER EXTENSION … UPDATE and LOAD, when not run from inside an extension
/// script (the outer statement has refreshed already).
unsafe fn needs_catalog(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: see process_utility; creating_extension is a plain global.
    unsafe {
        if pstmt.is_null() || (*pstmt).utilityStmt.is_null() || pg_sys::creating_extension {
            return false;
        }
        matches!(
            (*(*pstmt).utilityStmt).type_,
            pg_sys::NodeTag::T_CreateExtensionStmt | pg_sys::NodeTag::T_AlterExtensionStmt | pg_sys::NodeTag::T_LoadStmt
        )
    }
}
