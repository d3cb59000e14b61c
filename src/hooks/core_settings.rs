//! Check hooks on the core settings `extension_control_path` and `dynamic_library_path`: every
//! new value, from every source, gets the catalog merged in first (see `crate::core_paths`).

use std::ffi::{CStr, c_char, c_void};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::core_paths::{CONTROL, CorePath, LIBRARY};

/// Previous check hooks of the two settings (none in PostgreSQL 18; kept to chain politely).
static mut PREV_CONTROL_CHECK: pg_sys::GucStringCheckHook = None;
static mut PREV_LIBRARY_CHECK: pg_sys::GucStringCheckHook = None;

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded, before any backend
    // exists; find_option returns the core's own records, which live for the whole process.
    unsafe {
        PREV_CONTROL_CHECK = install(&CONTROL, Some(check_control_path));
        PREV_LIBRARY_CHECK = install(&LIBRARY, Some(check_library_path));
    }
    crate::core_paths::hooks_installed();
}

/// Installs `hook` as the check hook of `core` and re-applies the current value through it.
unsafe fn install(core: &CorePath, hook: pg_sys::GucStringCheckHook) -> pg_sys::GucStringCheckHook {
    // SAFETY: see init; the record of a string setting is a config_string.
    unsafe {
        let record = pg_sys::find_option(core.name.as_ptr(), false, false, PgLogLevel::ERROR as i32);
        let conf = record.cast::<pg_sys::config_string>();
        let previous = (*conf).check_hook;
        (*conf).check_hook = hook;
        let current = CStr::from_ptr(*(*conf).variable).to_owned();
        pg_sys::set_config_option(
            core.name.as_ptr(),
            current.as_ptr(),
            pg_sys::GucContext::PGC_POSTMASTER,
            (*record).source,
            pg_sys::GucAction::GUC_ACTION_SET,
            true,
            0,
            false,
        );
        previous
    }
}

/// The check hooks themselves: no `#[pg_guard]`, nothing with a destructor in their frames, so
/// that an ERROR a previous hook raises reaches PostgreSQL untouched (see `crate::hooks`).
unsafe extern "C-unwind" fn check_control_path(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: same contract as the hook we wrap; PREV_CONTROL_CHECK is only written in init.
    unsafe { previous_check(PREV_CONTROL_CHECK, newval, extra, source) && merge_control_path(newval) }
}

unsafe extern "C-unwind" fn check_library_path(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: same contract as the hook we wrap; PREV_LIBRARY_CHECK is only written in init.
    unsafe { previous_check(PREV_LIBRARY_CHECK, newval, extra, source) && merge_library_path(newval) }
}

/// Calls the check hook that was installed before ours, if any, directly (not through pgrx's
/// error conversion).
#[inline(always)]
unsafe fn previous_check(
    previous: pg_sys::GucStringCheckHook,
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the arguments are the ones PostgreSQL gave our hook, passed on unchanged.
    previous.is_none_or(|previous| unsafe { previous(newval, extra, source) })
}

#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn merge_control_path(newval: *mut *mut c_char) -> bool {
    // SAFETY: the check hook's own *newval.
    unsafe { crate::core_paths::merge(&CONTROL, newval) }
}

#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn merge_library_path(newval: *mut *mut c_char) -> bool {
    // SAFETY: the check hook's own *newval.
    unsafe { crate::core_paths::merge(&LIBRARY, newval) }
}
