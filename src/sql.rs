//! SQL functions in schema `extension_search_path`: what the path resolves to.
//! EXECUTE is for superusers and members of pg_read_server_files only (paths are sensitive);
//! see sql/privileges.sql.

use std::ffi::CStr;

use esp_resolver::Index;
use esp_resolver::dependencies::LibraryContext;
use esp_resolver::name::is_valid_extension_name;
use esp_resolver::report::{
    CoreSetting, LibraryReport, SettingRow, check as check_findings, core_setting_rows, image_reports, library_reports,
    search_path_rows,
};
use pgrx::JsonB;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::locations::locations;

/// One extension copy: the columns declared in `copies_function!`.
type CopyRow = (
    String,
    bool,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<Vec<String>>,
    Vec<String>,
);

/// The copies of `name` (all extensions when `None`) along the session's path, winner first.
fn copy_rows(name: Option<&str>) -> Vec<CopyRow> {
    if let Some(name) = name.filter(|n| !is_valid_extension_name(n)) {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid extension name: \"{name}\""),
            "resolve",
        )
        .set_hint("Extension names must not be empty, contain \"--\" or \"/\", or begin or end with \"-\".")
        .report(PgLogLevel::ERROR);
    }
    let index = crate::loading::session_index();
    let details = index.details();
    let range = match name {
        Some(name) => index.copy_range(name),
        None => 0..index.extensions.len(),
    };
    range
        .map(|i| {
            let (copy, d) = (&index.extensions[i], &details[i]);
            let winner = index.is_winner(copy);
            let shadows = if winner {
                index.copies(&copy.name).iter().skip(1).map(|c| text(&c.dir)).collect()
            } else {
                Vec::new()
            };
            (
                copy.name.clone(),
                winner,
                copy.layout.as_str().to_string(),
                copy.prefix.as_deref().map(text),
                text(&copy.dir),
                text(&copy.control_file),
                d.script_directory.as_deref().map(text),
                copy.lib_dir.as_deref().map(text),
                d.modules.as_ref().map(|m| m.iter().map(|p| text(p)).collect()),
                d.default_version.clone(),
                d.versions.clone(),
                shadows,
            )
        })
        .collect()
}

/// Declares a set-returning function of [`CopyRow`]s; the column names are written once, here,
/// because pgrx reads them from each function's signature.
macro_rules! copies_function {
    ($(#[$doc:meta])* fn $fn:ident($($arg:ident: $ty:ty),*) => $name:expr) => {
        $(#[$doc])*
        #[allow(clippy::type_complexity)]
        #[pg_extern(parallel_safe)]
        fn $fn($($arg: $ty),*) -> TableIterator<
            'static,
            (
                name!(name, String),
                name!(winner, bool),
                name!(layout, String),
                name!(prefix, Option<String>),
                name!(directory, String),
                name!(control_file, String),
                name!(script_directory, Option<String>),
                name!(module_directory, Option<String>),
                name!(modules, Option<Vec<String>>),
                name!(default_version, Option<String>),
                name!(versions, Option<Vec<String>>),
                name!(shadows, Vec<String>),
            ),
        > {
            TableIterator::new(copy_rows($name))
        }
    };
}

copies_function!(
    /// Every copy of extension `name` along the session's path, the one that wins first.
    fn resolve(name: &str) => Some(name)
);

copies_function!(
    /// Every extension visible through the session's path, `$system` included, one row per copy.
    fn extensions() => None
);

/// Rescans the session's path now and updates the catalog (as CREATE EXTENSION does), so
/// `pg_available_extensions` shows directories added since. Returns how many extensions and
/// libraries the catalog now serves (outside `$system`), and every problem met: path elements
/// and directories that could not be scanned, and what was left out of the catalog, and why.
#[pg_extern]
fn rescan() -> TableIterator<'static, (name!(extensions, i64), name!(libraries, i64), name!(problems, Vec<String>))> {
    let _ = crate::refresh::take_last_sync();
    let index = crate::refresh::refresh_session(crate::refresh::Refresh::Full, true)
        .unwrap_or_else(|| crate::refresh::index_for(&crate::gucs::path()));
    let mut problems: Vec<String> = index.problems.iter().map(ToString::to_string).collect();
    let (extensions, libraries) = match crate::refresh::take_last_sync() {
        Some(report) => {
            problems.extend(report.problems.iter().map(ToString::to_string));
            (report.extensions as i64, report.libraries as i64)
        }
        // not synced (an error, reported as such): what the path offers
        None => (
            index.winners().filter(|c| c.prefix.is_some()).count() as i64,
            index.library_winners().filter(|l| l.prefix.is_some()).count() as i64,
        ),
    };
    TableIterator::once((extensions, libraries, problems))
}

fn library_context(index: &Index) -> LibraryContext {
    LibraryContext {
        image_dirs: index.image_library_dirs(),
        system_dirs: crate::loading::system_dirs(),
        loaded: esp_resolver::dependencies::loaded_sonames(),
    }
}

fn mounts() -> Vec<esp_resolver::mounts::Mount> {
    esp_resolver::mounts::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn text(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// One row per directory under each prefix: what it provides, how it is mounted, its size and
/// the metadata file at its root (`trunk.json` or `META.json`), if any.
#[allow(clippy::type_complexity)]
#[pg_extern]
fn images() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(path, String),
        name!(prefix, String),
        name!(layout, String),
        name!(extensions, Vec<String>),
        name!(libraries, Vec<String>),
        name!(mount_point, bool),
        name!(read_only, Option<bool>),
        name!(fs_type, Option<String>),
        name!(mount_source, Option<String>),
        name!(size_bytes, i64),
        name!(metadata, Option<JsonB>),
        name!(metadata_file, Option<String>),
        name!(metadata_error, Option<String>),
        name!(source, String),
        name!(declared_preload, Vec<String>),
    ),
> {
    let index = crate::loading::session_index();
    let rows: Vec<_> = image_reports(&index, &mounts())
        .into_iter()
        .map(|i| {
            (
                i.name,
                text(&i.dir),
                text(&i.prefix),
                i.layout,
                i.extensions,
                i.libraries,
                i.mount_point,
                i.read_only,
                i.fs_type,
                i.mount_source,
                i64::try_from(i.size_bytes).unwrap_or(i64::MAX),
                i.metadata.map(JsonB),
                i.metadata_file.as_deref().map(text),
                i.metadata_error,
                i.source.to_string(),
                i.declared_preload,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Every shared object in the images' `lib/` and `system/`: a PostgreSQL module or a plain
/// library, and each `DT_NEEDED` entry with where it resolves (an `ldd` that never loads).
#[allow(clippy::type_complexity)]
#[pg_extern]
fn libraries() -> TableIterator<
    'static,
    (
        name!(file, String),
        name!(image, String),
        name!(kind, String),
        name!(winner, bool),
        name!(soname, Option<String>),
        name!(pg_major, Option<i32>),
        name!(machine, Option<String>),
        name!(needed, Vec<String>),
        name!(resolved, Vec<String>),
        name!(missing, Vec<String>),
        name!(error, Option<String>),
    ),
> {
    let index = crate::loading::session_index();
    let rows: Vec<_> = library_reports(&index, &library_context(&index))
        .into_iter()
        .map(|l: LibraryReport| {
            (
                text(&l.path),
                text(&l.image),
                l.kind.to_string(),
                l.winner,
                l.soname,
                l.pg_major.map(|m| m as i32),
                l.machine,
                l.needed,
                l.resolved,
                l.missing,
                l.error,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The effective extension_control_path and dynamic_library_path, and
/// extension_search_path.path, element by element: the directory it stands for, where it
/// comes from, and whether it exists.
#[allow(clippy::type_complexity)]
#[pg_extern]
fn settings() -> TableIterator<
    'static,
    (
        name!(setting, String),
        name!(position, i32),
        name!(element, String),
        name!(directory, String),
        name!(origin, String),
        name!(exists, bool),
    ),
> {
    let loc = locations();
    let mut rows = Vec::new();
    for setting in [CoreSetting::ExtensionControlPath, CoreSetting::DynamicLibraryPath] {
        let name = std::ffi::CString::new(setting.name()).expect("no NUL");
        let source = option_source(&name);
        let value = crate::gucs::current(&name);
        for row in core_setting_rows(setting, &value, &loc.root_prefix(), &loc.system) {
            rows.push(setting_row(setting.name(), row, &source));
        }
    }
    for row in search_path_rows(&crate::gucs::path(), &loc.system) {
        rows.push(setting_row("extension_search_path.path", row, ""));
    }
    TableIterator::new(rows)
}

fn setting_row(setting: &str, row: SettingRow, source: &str) -> (String, i32, String, String, String, bool) {
    (setting.to_string(), row.position, row.element, row.directory, row.origin.describe(source), row.exists)
}

/// Where the current value of a setting comes from, as pg_settings.source says it.
fn option_source(name: &CStr) -> String {
    // SAFETY: find_option returns the core's record (or NULL); `source` is a plain enum field.
    let source = unsafe {
        let record = pg_sys::find_option(name.as_ptr(), false, true, PgLogLevel::ERROR as i32);
        if record.is_null() {
            return "unknown".into();
        }
        (*record).source
    };
    match source {
        pg_sys::GucSource::PGC_S_DEFAULT | pg_sys::GucSource::PGC_S_DYNAMIC_DEFAULT => "default",
        pg_sys::GucSource::PGC_S_ENV_VAR => "environment variable",
        pg_sys::GucSource::PGC_S_FILE => "configuration file",
        pg_sys::GucSource::PGC_S_ARGV => "command line",
        pg_sys::GucSource::PGC_S_GLOBAL => "global",
        pg_sys::GucSource::PGC_S_DATABASE => "database",
        pg_sys::GucSource::PGC_S_USER => "user",
        pg_sys::GucSource::PGC_S_DATABASE_USER => "database user",
        pg_sys::GucSource::PGC_S_CLIENT => "client",
        pg_sys::GucSource::PGC_S_OVERRIDE => "override",
        pg_sys::GucSource::PGC_S_INTERACTIVE | pg_sys::GucSource::PGC_S_TEST | pg_sys::GucSource::PGC_S_SESSION => {
            "session"
        }
        _ => "unknown",
    }
    .to_string()
}

/// One row per problem found along the path, most severe first: unresolvable libraries,
/// modules for another PostgreSQL major version or architecture, writable files, control files
/// that fail to parse, update-path gaps, library name collisions, bad path elements.
#[allow(clippy::type_complexity)]
#[pg_extern]
fn check() -> TableIterator<
    'static,
    (
        name!(severity, String),
        name!(image, Option<String>),
        name!(extension, Option<String>),
        name!(message, String),
        name!(hint, String),
    ),
> {
    let index = crate::loading::session_index();
    let libraries = library_reports(&index, &library_context(&index));
    let declarations = crate::preload::declarations(&index);
    let rows: Vec<_> = check_findings(&index, &libraries, &declarations, &crate::gucs::trust_policy())
        .into_iter()
        .map(|f| (f.severity.as_str().to_string(), f.image.as_deref().map(text), f.extension, f.message, f.hint))
        .collect();
    TableIterator::new(rows)
}

/// Every module the images' `META.json` files declare for preloading (`"preload": "server"` or
/// `"session"`), in path precedence: the library file, whether this session has it loaded, and
/// why it is not (the setting `extension_search_path.preload_declared` off, listed in a preload
/// setting already, shadowed, not trusted, not for this server, failed to load).
#[allow(clippy::type_complexity)]
#[pg_extern]
fn declared_preloads() -> TableIterator<
    'static,
    (
        name!(image, String),
        name!(module, String),
        name!(preload, String),
        name!(library, String),
        name!(file, Option<String>),
        name!(loaded, bool),
        name!(reason, Option<String>),
    ),
> {
    let index = crate::loading::session_index();
    let enabled = crate::gucs::preload_declared();
    let rows: Vec<_> = crate::preload::rows(&index)
        .into_iter()
        .map(|(p, loaded)| {
            let reason = match p.decision.reason() {
                None if !enabled => Some("extension_search_path.preload_declared is off".to_string()),
                None if !loaded => Some("not loaded in this session".to_string()),
                other => other,
            };
            (
                text(&p.image),
                p.module,
                p.preload.as_str().to_string(),
                p.library,
                p.file.as_deref().map(text),
                loaded,
                reason,
            )
        })
        .collect();
    TableIterator::new(rows)
}

extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
