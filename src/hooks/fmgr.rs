//! needs_fmgr_hook: the one point before PostgreSQL loads the library of a C function on its
//! first call in a backend. We never ask for the fmgr hook itself (we return what the previous
//! hook says); we only make sure the function's library can load: its bundled dependencies are
//! loaded first. A library found nowhere is left to PostgreSQL, which reports it as it always does.
//!
//! Cost: called for every non-builtin function when its FmgrInfo is set up; for anything but a
//! C function it is one syscache lookup (a hit: fmgr_info just read the same row), and each
//! library is prepared once per backend.

use pgrx::pg_sys;
use pgrx::prelude::*;

use esp_resolver::dfmgr::Loader;

use crate::loading::make_loadable;

/// `ClanguageId` (pg_language.dat), not in pgrx's bindings.
const C_LANGUAGE_ID: u32 = 13;

static mut PREV_NEEDS_FMGR: pg_sys::needs_fmgr_hook_type = None;

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded.
    unsafe {
        PREV_NEEDS_FMGR = pg_sys::needs_fmgr_hook;
        pg_sys::needs_fmgr_hook = Some(needs_fmgr);
    }
}

/// The hook itself: no `#[pg_guard]`, nothing with a destructor in this frame (see [`super`]).
unsafe extern "C-unwind" fn needs_fmgr(fn_oid: pg_sys::Oid) -> bool {
    // SAFETY: `prepare_function` is guarded: it returns, or raises an ERROR through PostgreSQL.
    unsafe { prepare_function(fn_oid) };
    // SAFETY: PREV_NEEDS_FMGR is written once, in init. An ERROR below siglongjmps over this
    // frame, which owns nothing to drop and is in no catch_unwind.
    unsafe {
        match PREV_NEEDS_FMGR {
            Some(previous) => previous(fn_oid),
            None => false,
        }
    }
}

/// Our part: the function's library made loadable (its bundled dependencies loaded first).
#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn prepare_function(fn_oid: pg_sys::Oid) {
    if let Some(probin) = c_function_library(fn_oid) {
        make_loadable(&probin, Loader::Function);
    }
}

/// `probin` of a C-language function.
fn c_function_library(fn_oid: pg_sys::Oid) -> Option<String> {
    // SAFETY: syscache access on the main thread inside a transaction (fmgr_info is); the
    // tuple is released before returning and probin is copied out of it first.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::PROCOID as i32, pg_sys::Datum::from(fn_oid));
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple);
        let mut probin = None;
        if (*form).prolang == pg_sys::Oid::from(C_LANGUAGE_ID) {
            let mut isnull = false;
            let datum = pg_sys::SysCacheGetAttr(
                pg_sys::SysCacheIdentifier::PROCOID as i32,
                tuple,
                pg_sys::Anum_pg_proc_probin as pg_sys::AttrNumber,
                &mut isnull,
            );
            if !isnull {
                probin = String::from_datum(datum, false);
            }
        }
        pg_sys::ReleaseSysCache(tuple);
        probin
    }
}
