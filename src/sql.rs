//! SQL functions in schema `extension_search_path`: what the path resolves to.
//! EXECUTE is for superusers and members of pg_read_server_files only (paths are sensitive);
//! see sql/privileges.sql.

use esp_resolver::name::is_valid_extension_name;
use esp_resolver::{Index, SearchPath};
use pgrx::prelude::*;

/// One extension copy: the columns declared in `copies_function!`.
type CopyRow = (String, bool, String, Option<String>, String, String, Option<String>, Option<String>, Option<String>);

/// The copies of `name` (all extensions when `None`) along the session's path, winner first.
fn copy_rows(name: Option<&str>) -> Vec<CopyRow> {
    if let Some(name) = name.filter(|n| !is_valid_extension_name(n)) {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid extension name: \"{name}\""),
            "extension_search_path",
        )
        .set_hint("Extension names must not be empty, contain \"--\" or \"/\", or begin or end with \"-\".")
        .report(PgLogLevel::ERROR);
    }
    let index = Index::build(&SearchPath::parse(&crate::gucs::path()), &crate::server::locations().system);
    let copies = match name {
        Some(name) => index.copies(name),
        None => &index.extensions[..],
    };
    copies
        .iter()
        .map(|copy| {
            let control = copy.read_control().ok();
            (
                copy.name.clone(),
                index.is_winner(copy),
                copy.layout.as_str().to_string(),
                copy.prefix.as_ref().map(|p| p.display().to_string()),
                copy.dir.display().to_string(),
                copy.control_file.display().to_string(),
                control.as_ref().map(|c| copy.script_directory(c).display().to_string()),
                copy.lib_dir.as_ref().map(|p| p.display().to_string()),
                control.as_ref().and_then(|c| c.default_version().map(String::from)),
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
                name!(default_version, Option<String>),
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
/// `pg_available_extensions` shows directories added since. Returns what the catalog serves.
#[pg_extern]
fn rescan() -> TableIterator<'static, (name!(extensions, i64), name!(libraries, i64), name!(problems, Vec<String>))> {
    let path = crate::gucs::path();
    let catalog = crate::server::catalog_for(&path);
    let index = crate::server::refresh(&catalog, &path, PgLogLevel::WARNING);
    crate::core_paths::point_session_at(&catalog);
    let extensions = index.winners().filter(|c| c.prefix.is_some()).count() as i64;
    let libraries = index.library_winners().filter(|l| l.prefix.is_some()).count() as i64;
    let problems = index.problems.iter().map(ToString::to_string).collect();
    TableIterator::once((extensions, libraries, problems))
}

extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
