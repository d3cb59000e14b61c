//! post_parse_analyze_hook, installed only when `extension_search_path.preload_declared` is on
//! and an image declares a module for every session: loads them before a client session's first
//! statement is analysed further. PostgreSQL offers no hook at `session_preload_libraries`' own
//! moment, and the authentication hook comes before the role's login rights are checked; here
//! the role is connected, as for any statement.
//!
//! The modules are loaded with PostgreSQL's own `load_file`, called from this hook's plain
//! outer frame (see [`super`]): an ERROR one raises reaches the client untouched and aborts the
//! statement's transaction (its locks released, a cancel honoured), as a failed `LOAD` would.
//! What could be checked before any of their code runs was checked by the postmaster
//! (`crate::preload`).

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::pg_sys;

unsafe extern "C-unwind" {
    /// PostgreSQL's `load_file` (`fmgr.h`), declared here to be called without pgrx's FFI
    /// guard, which would turn an ERROR into a Rust panic and back (losing its fields).
    #[link_name = "load_file"]
    fn postgres_load_file(filename: *const c_char, restricted: bool);
}

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
    // SAFETY: plain globals of the main thread. Only sessions load them, as PostgreSQL loads
    // session_preload_libraries: client sessions and single-user mode (not background workers,
    // not walsenders).
    let session = unsafe {
        let kind = pg_sys::MyBackendType;
        (kind == pg_sys::BackendType::B_BACKEND && !pg_sys::am_walsender)
            || kind == pg_sys::BackendType::B_STANDALONE_BACKEND
    };
    if session && !DONE.swap(true, Ordering::Relaxed) {
        let ours = post_parse_analyze as unsafe extern "C-unwind" fn(_, _, _);
        // SAFETY: a plain global of the main thread.
        let outermost = unsafe { pg_sys::post_parse_analyze_hook }.is_some_and(|h| std::ptr::fn_addr_eq(h, ours));
        // (a slice iterator: nothing to drop if an ERROR jumps over it)
        for (i, file) in crate::preload::session_files().iter().enumerate() {
            crate::preload::loading(Some(i));
            // SAFETY: a NUL-terminated path of the postmaster's list (never freed); an ERROR
            // siglongjmps over this frame, which owns nothing to drop and is in no catch_unwind.
            unsafe { postgres_load_file(file.as_ptr(), false) };
        }
        crate::preload::loading(None);
        // A module that installed a post_parse_analyze_hook of its own sees this statement too
        // when ours was the one PostgreSQL called: its hook calls ours (now done) and so the
        // rest of the chain. (When a module preloaded after us wraps ours, PostgreSQL called
        // that chain already: the new hook sees the session's statements from the second on.)
        // SAFETY: a plain global of the main thread.
        let current = unsafe { pg_sys::post_parse_analyze_hook };
        if let Some(theirs) = current.filter(|h| outermost && !std::ptr::fn_addr_eq(*h, ours)) {
            // SAFETY: the hook PostgreSQL would call, with PostgreSQL's arguments.
            unsafe { theirs(pstate, query, jstate) };
            return;
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
