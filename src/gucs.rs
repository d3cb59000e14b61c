//! The settings of extension_search_path.

use std::ffi::{CStr, CString, c_char, c_void};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `extension_search_path.path`: prefixes searched for extension directories, colon-separated,
/// with `$system` standing for PostgreSQL's own directories. Superuser-only, like the core
/// `extension_control_path`; changes take effect at a reload (server-wide) or with SET (for the
/// session), at the next CREATE/ALTER EXTENSION or LOAD.
static PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"$system"));

const PATH_NAME: &CStr = c"extension_search_path.path";

/// `extension_search_path.trusted_files_only`: refuse control files, script directories and
/// libraries owned by neither root nor the server's user, or writable by group or others (a
/// WARNING names each). Server-wide (postgresql.conf or ALTER SYSTEM, then reload), because the
/// catalog it shapes is shared by all sessions.
static TRUSTED_FILES_ONLY: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `extension_search_path.preload_declared`: load the modules the images' `META.json` declare
/// for preloading — `"preload": "server"` into the postmaster right after this extension,
/// `"session"` into every session before its first statement. A trust decision (whoever can put
/// an image under a prefix then chooses code every backend runs), so off by default and
/// settable only where the server's configuration is (postgresql.conf, ALTER SYSTEM); read at
/// server start.
static PRELOAD_DECLARED: GucSetting<bool> = GucSetting::<bool>::new(false);

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
            Some(check_path),
            Some(assign_path),
            None,
        );
        GucRegistry::define_bool_guc_with_hooks(
            c"extension_search_path.trusted_files_only",
            c"Refuse extension files that are not owned by root or the server's user, or are writable by group or others.",
            c"Turning this off only reports such files (extension_search_path.check()).",
            &TRUSTED_FILES_ONLY,
            GucContext::Sighup,
            GucFlags::default(),
            None,
            Some(assign_trusted_files_only),
            None,
        );
        GucRegistry::define_bool_guc(
            c"extension_search_path.preload_declared",
            c"Load the modules the images' META.json files declare for preloading.",
            c"\"preload\": \"server\" modules are loaded at server start, right after extension_search_path; \
              \"session\" modules in every session before its first statement. One that cannot be loaded is \
              logged and skipped; an error in its own initialisation is not. See \
              extension_search_path.declared_preloads().",
            &PRELOAD_DECLARED,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
        pg_sys::MarkGUCPrefixReserved(c"extension_search_path".as_ptr());
    }
}

/// The trust policy in force.
pub fn trust_policy() -> esp_resolver::safe_fs::TrustPolicy {
    esp_resolver::safe_fs::TrustPolicy::for_this_process(trusted_files_only())
}

/// Values set interactively (SET, ALTER ROLE/DATABASE … SET) must be usable: a bad element is an
/// ERROR there. From the configuration file (start, reload, ALTER SYSTEM) nothing is refused:
/// bad elements are skipped with a WARNING naming them, so the server always starts.
#[pg_guard]
unsafe extern "C-unwind" fn check_path(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the GUC machinery passes a valid pointer to a NUL-terminated string (or NULL);
    // the detail and hint strings are palloc'd for the error report that follows at once.
    unsafe {
        if newval.is_null() || (*newval).is_null() || source < pg_sys::GucSource::PGC_S_INTERACTIVE {
            return true;
        }
        let value = CStr::from_ptr(*newval).to_string_lossy().into_owned();
        let errors = esp_resolver::path::refused_when_set(&value);
        if errors.is_empty() {
            if esp_resolver::path::has_empty_elements(&value) {
                let report = pgrx::pg_sys::panic::ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "extension_search_path.path: empty path elements are ignored",
                    "check_path",
                );
                crate::messages::emit(PgLogLevel::WARNING, report);
            }
            return true;
        }
        let detail: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let detail = CString::new(detail.join("; ")).unwrap_or_default();
        let hint = CString::new(esp_resolver::problem::PathProblem::HINT).unwrap_or_default();
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
        false
    }
}

/// The current value of any setting, as this session sees it (no privilege check).
pub fn current(name: &CStr) -> String {
    with_current(name, owned)
}

/// `value` as a String (its bytes checked once; lossily only when they are not UTF-8).
fn owned(value: &CStr) -> String {
    match value.to_str() {
        Ok(value) => value.to_owned(),
        Err(_) => value.to_string_lossy().into_owned(),
    }
}

/// Runs `f` on the current value of setting `name`, in place (no copy).
pub fn with_current<R>(name: &CStr, f: impl FnOnce(&CStr) -> R) -> R {
    // SAFETY: GetConfigOption with missing_ok = false raises an ERROR for an unknown name and
    // otherwise returns a NUL-terminated string owned by the GUC machinery, used before anything
    // can change it.
    f(unsafe { CStr::from_ptr(pg_sys::GetConfigOption(name.as_ptr(), false, false)) })
}

/// Runs `f` on the current value of `dynamic_library_path`, read in place from the variable
/// PostgreSQL keeps it in (no lookup by name: asked at every C function's FmgrInfo set-up).
pub fn with_dynamic_library_path<R>(f: impl FnOnce(&CStr) -> R) -> R {
    // SAFETY: Dynamic_library_path is the setting's own variable, a NUL-terminated string the
    // GUC machinery sets at start and replaces (never frees while current) on change; read on
    // the main thread, used before anything can change it.
    let value = unsafe { pg_sys::Dynamic_library_path };
    if value.is_null() {
        return f(c"");
    }
    // SAFETY: as above.
    f(unsafe { CStr::from_ptr(value) })
}

/// `extension_search_path.trusted_files_only`.
pub fn trusted_files_only() -> bool {
    TRUSTED_FILES_ONLY.get()
}

/// `extension_search_path.preload_declared`.
pub fn preload_declared() -> bool {
    PRELOAD_DECLARED.get()
}

/// The session's current path value.
pub fn path() -> String {
    PATH.get().map(|v| owned(&v)).unwrap_or_default()
}

/// In the postmaster, a changed trust setting rebuilds the server catalog at once.
#[pg_guard]
unsafe extern "C-unwind" fn assign_trusted_files_only(newval: bool, _extra: *mut c_void) {
    // SAFETY: IsUnderPostmaster is a plain global, false only in the postmaster.
    if !unsafe { pg_sys::IsUnderPostmaster } && newval != TRUSTED_FILES_ONLY.get() {
        crate::refresh::refresh_server_catalog_for_trust(newval);
    }
}

/// In the postmaster, a new server-wide value (start, reload) rebuilds the server catalog at once,
/// so `pg_available_extensions` and libraries in new backends follow it; a backend applying the
/// reload moves to the generation the postmaster made.
#[pg_guard]
unsafe extern "C-unwind" fn assign_path(newval: *const c_char, _extra: *mut c_void) {
    if newval.is_null() {
        return;
    }
    // SAFETY: IsUnderPostmaster is a plain global, false only in the postmaster (and
    // single-user mode).
    if unsafe { pg_sys::IsUnderPostmaster } {
        // A parallel worker names what its leader names (the values it was sent, and the
        // defaults it inherited like the leader): it moves nowhere on its own.
        // SAFETY: plain globals of the main thread.
        let worker = unsafe { pg_sys::InitializingParallelWorker || pg_sys::ParallelWorkerNumber >= 0 };
        if !worker {
            crate::generations::adopt_server_generation();
        }
        return;
    }
    // SAFETY: PostgreSQL passes a NUL-terminated string that outlives this call.
    let value = unsafe { CStr::from_ptr(newval) }.to_string_lossy().into_owned();
    crate::refresh::refresh_server_catalog_after_reload(&value);
}
