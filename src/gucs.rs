//! The settings of extension_search_path.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `extension_search_path.path`: prefixes searched for extension directories, colon-separated,
/// with `$system` standing for PostgreSQL's own directories. Superuser-only, like the core
/// `extension_control_path`; changes take effect at a reload (server-wide) or with SET (for the
/// session), at the next CREATE/ALTER EXTENSION or LOAD.
pub static PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"$system"));

pub const PATH_NAME: &CStr = c"extension_search_path.path";

pub fn init() {
    // SAFETY: called once from _PG_init in the postmaster; the hook matches PostgreSQL's
    // GucStringAssignHook signature and never raises an error.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            PATH_NAME,
            c"Prefixes searched for per-extension directories.",
            c"Colon-separated absolute directories and $system. Each prefix holds one directory per \
              extension (<ext>/<ext>.control, sql/, lib/) or per CloudNativePG image \
              (<image>/share/extension/, lib/). The first match wins.",
            &PATH,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            None,
            Some(assign_path),
            None,
        );
        pg_sys::MarkGUCPrefixReserved(c"extension_search_path".as_ptr());
    }
}

/// The session's current path value.
pub fn path() -> String {
    PATH.get().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The server-wide value (postgresql.conf, ALTER SYSTEM), what RESET would restore.
pub fn server_path() -> String {
    // SAFETY: the option exists (defined in init) and is a string option; reset_val is read
    // directly because GetConfigOptionResetString checks privileges, which needs a user (the
    // postmaster has none). The string is copied at once.
    unsafe {
        let record = pg_sys::find_option(PATH_NAME.as_ptr(), false, true, PgLogLevel::ERROR as i32);
        if record.is_null() {
            return path();
        }
        let reset = (*record.cast::<pg_sys::config_string>()).reset_val;
        if reset.is_null() { String::new() } else { CStr::from_ptr(reset).to_string_lossy().into_owned() }
    }
}

/// In the postmaster, a new server-wide value (start, reload) rebuilds the server catalog at once,
/// so `pg_available_extensions` and libraries in new backends follow it.
#[pg_guard]
unsafe extern "C-unwind" fn assign_path(newval: *const c_char, _extra: *mut c_void) {
    // SAFETY: IsUnderPostmaster is a plain global, false only in the postmaster (and
    // single-user mode).
    if unsafe { pg_sys::IsUnderPostmaster } || newval.is_null() {
        return;
    }
    // SAFETY: PostgreSQL passes a NUL-terminated string that outlives this call.
    let value = unsafe { CStr::from_ptr(newval) }.to_string_lossy().into_owned();
    crate::server::refresh_server_catalog_after_reload(&value);
}
