//! post_parse_analyze_hook, installed only when `extension_search_path.preload_declared` is on
//! and an image declares a module for every session: loads them before a session's first
//! statement (PostgreSQL offers no hook at `session_preload_libraries`' own moment, and the
//! authentication hook comes before the role's login rights are checked).

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;

/// This session loaded its declared modules (or is not a client session).
static DONE: AtomicBool = AtomicBool::new(false);

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded; the hook matches
    // post_parse_analyze_hook_type.
    unsafe {
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
    }
}

/// The hook itself: no `#[pg_guard]`, nothing with a destructor in this frame (see [`super`]).
unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    if !DONE.swap(true, Ordering::Relaxed) {
        // SAFETY: a plain global of the main thread. Only client sessions load them, as
        // PostgreSQL loads session_preload_libraries (not background workers, not walsenders).
        if unsafe { pg_sys::MyBackendType } == pg_sys::BackendType::B_BACKEND && unsafe { !pg_sys::am_walsender } {
            // SAFETY: guarded: it returns, or raises an ERROR through PostgreSQL.
            unsafe { load_session_modules() };
        }
    }
    // SAFETY: PREV_POST_PARSE_ANALYZE is written once, in init; the arguments are PostgreSQL's.
    // An ERROR below siglongjmps over this frame, which owns nothing to drop.
    unsafe {
        if let Some(previous) = PREV_POST_PARSE_ANALYZE {
            previous(pstate, query, jstate);
        }
    }
}

#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn load_session_modules() {
    crate::preload::at_session_start();
}
