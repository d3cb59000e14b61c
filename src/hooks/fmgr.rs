//! needs_fmgr_hook: the one point before PostgreSQL loads the library of a C function on its
//! first call in a backend. We never ask for the fmgr hook itself (we return what the previous
//! hook says); we only make sure the function's library can load: its bundled dependencies are
//! loaded first. A library found nowhere is left to PostgreSQL, which reports it as it always does.
//!
//! Cost: called for every non-builtin function each time its FmgrInfo is set up (every
//! execution of a query, in steady state). A function already handled in this backend — its
//! library made loadable, or found not to be a C function — costs one lookup in a set of OIDs,
//! under the same `dynamic_library_path` and trust setting; the set is emptied by every change to
//! `pg_proc` (a syscache invalidation callback), so a replaced function is looked at again.

use pgrx::pg_sys;
use pgrx::prelude::*;

use esp_resolver::dfmgr::Loader;

use crate::loading::make_loadable;
use crate::memo::UnderLibrarySettings;

/// `ClanguageId` (pg_language.dat), not in pgrx's bindings.
const C_LANGUAGE_ID: u32 = 13;

static mut PREV_NEEDS_FMGR: pg_sys::needs_fmgr_hook_type = None;

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded. The callback list is a
    // static array that backends inherit.
    unsafe {
        PREV_NEEDS_FMGR = pg_sys::needs_fmgr_hook;
        pg_sys::needs_fmgr_hook = Some(needs_fmgr);
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            Some(forget_handled),
            pg_sys::Datum::from(0),
        );
    }
}

/// The functions this backend has handled, under the settings they were handled with (sorted).
static HANDLED: UnderLibrarySettings<Vec<u32>> = UnderLibrarySettings::new();

/// A `pg_proc` row changed (in this backend or another): every function is looked at again.
#[pg_guard]
unsafe extern "C-unwind" fn forget_handled(_arg: pg_sys::Datum, _cacheid: i32, _hashvalue: u32) {
    HANDLED.clear();
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
    let oid = fn_oid.to_u32();
    if HANDLED.get(|functions| functions.binary_search(&oid).ok()).is_some() {
        return;
    }
    if let Some(probin) = c_function_library(fn_oid) {
        make_loadable(&probin, Loader::Function);
    }
    // (not reached when make_loadable raises an ERROR: a refused library is asked again)
    HANDLED.update(|functions| {
        if let Err(place) = functions.binary_search(&oid) {
            functions.insert(place, oid);
        }
    });
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
