//! Merging the catalog into PostgreSQL's own `extension_control_path` and `dynamic_library_path`.
//!
//! The rule: the catalog's element comes first, followed by every element the operator set, in
//! the operator's order. It is applied by a check hook installed on both core settings, so it
//! holds for every value from every source — postgresql.conf at start and after each reload,
//! ALTER SYSTEM, SET, RESET — and nobody's value is ever replaced: CloudNativePG's per-image
//! elements keep working behind ours. `SHOW extension_control_path` shows the merged value.

use std::ffi::{CStr, CString, c_char};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use esp_resolver::catalog::SERVER_CATALOG;
use esp_resolver::catalog::{control_path_element, library_dir};
use esp_resolver::path::{catalog_named, merge_core_path, retarget_core_path};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::locations::locations;

/// One core path setting and the element of a catalog generation that goes into it.
pub struct CorePath {
    pub name: &'static CStr,
    element: fn(&Path) -> String,
}

pub const CONTROL: CorePath =
    CorePath { name: c"extension_control_path", element: |g| display(&control_path_element(g)) };
pub const LIBRARY: CorePath = CorePath { name: c"dynamic_library_path", element: |g| display(&library_dir(g)) };

/// Our check hooks are in place (set once in the postmaster's _PG_init, by `crate::hooks`).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Called once our check hooks are installed on both settings.
pub fn hooks_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn our_root() -> String {
    locations().root_prefix()
}

/// Replaces `*newval`, a new value of `core`, by the merged value (from the check hooks in
/// `crate::hooks::core_settings`).
///
/// # Safety
/// `newval` is a check hook's own argument.
pub unsafe fn merge(core: &CorePath, newval: *mut *mut c_char) -> bool {
    // SAFETY: the GUC machinery hands us a guc_malloc'd NUL-terminated *newval that we may
    // replace with another guc_malloc'd string after freeing it (guc.h's check-hook contract).
    unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        let current = CStr::from_ptr(*newval).to_string_lossy().into_owned();
        let merged = merge_core_path(&current, &(core.element)(&crate::generations::server_generation()), &our_root());
        if merged == current {
            return true;
        }
        let Ok(merged) = CString::new(merged) else { return false };
        let copy = pg_sys::guc_strdup(PgLogLevel::LOG as i32, merged.as_ptr());
        if copy.is_null() {
            return false;
        }
        pg_sys::guc_free((*newval).cast());
        *newval = copy;
        true
    }
}

/// Moves the server-wide values of both settings — the reset value and any saved value of the
/// same origin, and the current value unless this session SET its own — to the server catalog
/// generation this process now uses. Non-transactional, like a reload applying the
/// configuration file, and with the values' own source, so `pg_settings` shows them as before.
pub fn follow_server_generation() {
    if !INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    let generation = crate::generations::server_generation();
    let root = our_root();
    for core in [&CONTROL, &LIBRARY] {
        // SAFETY: find_option returns the core's own record of a string setting (it exists:
        // init found it), read on the main thread; reset_val is NULL or a NUL-terminated string.
        let (reset, source) = unsafe {
            let record = pg_sys::find_option(core.name.as_ptr(), false, true, PgLogLevel::WARNING as i32);
            if record.is_null() {
                continue;
            }
            let conf = record.cast::<pg_sys::config_string>();
            if (*conf).reset_val.is_null() {
                continue;
            }
            (CStr::from_ptr((*conf).reset_val).to_string_lossy().into_owned(), (*record).reset_source)
        };
        let wanted = retarget_core_path(&reset, &root, &(core.element)(&generation));
        if wanted == reset {
            continue;
        }
        let Ok(wanted) = CString::new(wanted) else { continue };
        // SAFETY: plain call into the GUC machinery on the main thread. A source at or below
        // PGC_S_OVERRIDE makes the value the reset value (and replaces saved values of no higher
        // origin) without a transaction, as ProcessConfigFile does; our check hook accepts it
        // unchanged (it names our catalog first). elevel WARNING: a refusal is reported, not
        // raised.
        unsafe {
            pg_sys::set_config_option(
                core.name.as_ptr(),
                wanted.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                source,
                pg_sys::GucAction::GUC_ACTION_SET,
                true,
                PgLogLevel::WARNING as i32,
                false,
            );
        }
    }
}

/// Every value of both settings this session may still use: the current and reset values and
/// those saved for the end of a transaction, a SET LOCAL or a function's SET clause.
pub fn all_values() -> Vec<String> {
    let mut values = Vec::new();
    let mut push = |p: *const c_char| {
        if !p.is_null() {
            // SAFETY: a NUL-terminated string owned by the GUC machinery, copied at once.
            values.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
    };
    for core in [&CONTROL, &LIBRARY] {
        // SAFETY: the core's own record of a string setting, read on the main thread: its value
        // and reset value are NULL or NUL-terminated, and every entry of its stack (zeroed when
        // made) holds string values in the `stringval` member of the union.
        unsafe {
            let record = pg_sys::find_option(core.name.as_ptr(), false, true, PgLogLevel::WARNING as i32);
            if record.is_null() {
                continue;
            }
            let conf = record.cast::<pg_sys::config_string>();
            push(*(*conf).variable);
            push((*conf).reset_val);
            let mut stack = (*record).stack;
            while !stack.is_null() {
                push((*stack).prior.val.stringval);
                push((*stack).masked.val.stringval);
                stack = (*stack).prev;
            }
        }
    }
    values
}

/// Points this session's core settings at the catalog generation `generation`: nothing to do
/// when they name it already (the server catalog's, after [`follow_server_generation`]) or
/// another generation of the server catalog. Done
/// with SET semantics (like the SET of extension_search_path.path that made the session's path
/// differ), so C functions created from a session path keep resolving in this session; a
/// rolled-back transaction undoes it together with everything else.
pub fn point_session_at(generation: &Path) {
    let root = our_root();
    for core in [&CONTROL, &LIBRARY] {
        let current = crate::gucs::current(core.name);
        let wanted = retarget_core_path(&current, &root, &(core.element)(generation));
        if wanted == current {
            continue;
        }
        // Another generation of the server catalog is never a SET: follow_server_generation
        // moved the server-wide values already, and a value still naming an older one is the
        // session's own (a SET, a SET LOCAL, a function's SET clause), which a SET here would
        // outlive. The generation it names stays held while it is named. (A session catalog's
        // generations are SET by us, at session level, so they move with SET.)
        let server = |value: &str| catalog_named(value, &root) == Some(SERVER_CATALOG);
        if server(&current) && server(&wanted) {
            continue;
        }
        let wanted = CString::new(wanted).expect("paths hold no NUL");
        // SAFETY: plain call into the GUC machinery on the main thread; PGC_SUSET is the
        // settings' own context, and these values name only the catalogs we maintain.
        unsafe {
            pg_sys::set_config_option(
                core.name.as_ptr(),
                wanted.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SET,
                true,
                PgLogLevel::ERROR as i32,
                false,
            );
        }
    }
}
