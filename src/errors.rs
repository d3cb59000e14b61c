//! The one place our errors and warnings get their SQLSTATE, DETAIL and HINT.
//!
//! The core (`esp_resolver`) says what went wrong, typed; this module says how PostgreSQL users
//! hear of it:
//!
//! | what | SQLSTATE |
//! |---|---|
//! | a file operation that failed | as PostgreSQL's `errcode_for_file_access` maps its errno |
//! | a file our reading rules refuse: not a regular file / too large (no errno) | 42809 / 54000 |
//! | another failure without an errno (the catalog's lock, a generation removed) | 58030 `io_error` |
//! | a bad `extension_search_path.path` element | 22023 `invalid_parameter_value` |
//! | a file not trusted (owner, mode) | 42501 `insufficient_privilege` |
//! | a control file PostgreSQL would refuse | the code PostgreSQL raises it with: 42601, 22023, 42704 |
//! | a script directory that does not exist | 58P01 `undefined_file` |
//! | a script directory PostgreSQL cannot name (too long, not UTF-8) | 54000 `program_limit_exceeded` |
//! | a generated control file that does not read back (a bug of ours) | XX000 `internal_error` |
//! | a library that is not a shared object | 42809 `wrong_object_type` |
//! | a library a module needs, found nowhere | 58P01 `undefined_file` |
//! | a bundled library the dynamic loader refused | 58030 `io_error` (class 58: outside PostgreSQL) |
//! | the catalog being rebuilt by another process (LOG) | 55P03 `lock_not_available` |
//!
//! One difference from `errcode_for_file_access`: `ENAMETOOLONG` is 54000, because pgrx 0.18's
//! error codes lack PostgreSQL 18's 58P03 `file_name_too_long`.

use esp_resolver::control::ControlError;
use esp_resolver::dependencies::LibraryRefusal;
use esp_resolver::elf::ElfError;
use esp_resolver::problem::{FileError, PathProblem, ProblemKind, Unusable};
use pgrx::PgSqlErrorCode;
use pgrx::PgSqlErrorCode::*;

/// PostgreSQL's `errcode_for_file_access` for `errno`.
pub fn for_file_access(errno: Option<i32>) -> PgSqlErrorCode {
    match errno {
        Some(libc::EPERM | libc::EACCES | libc::EROFS) => ERRCODE_INSUFFICIENT_PRIVILEGE,
        Some(libc::ENOENT) => ERRCODE_UNDEFINED_FILE,
        Some(libc::EEXIST) => ERRCODE_DUPLICATE_FILE,
        Some(libc::ENOTDIR | libc::EISDIR | libc::ENOTEMPTY) => ERRCODE_WRONG_OBJECT_TYPE,
        Some(libc::ENOSPC) => ERRCODE_DISK_FULL,
        Some(libc::ENOMEM) => ERRCODE_OUT_OF_MEMORY,
        Some(libc::ENFILE | libc::EMFILE) => ERRCODE_INSUFFICIENT_RESOURCES,
        Some(libc::EIO) => ERRCODE_IO_ERROR,
        Some(libc::ENAMETOOLONG) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        _ => ERRCODE_INTERNAL_ERROR,
    }
}

/// A failed file operation: by its errno as PostgreSQL maps it; a refusal of our own reading
/// rules (no errno) as what it is.
fn for_file(error: &FileError) -> PgSqlErrorCode {
    match (error.errno, error.kind) {
        (Some(errno), _) => for_file_access(Some(errno)),
        // a FIFO, a directory or a device where a regular file should be
        (None, std::io::ErrorKind::InvalidInput) => ERRCODE_WRONG_OBJECT_TYPE,
        // larger than we read
        (None, std::io::ErrorKind::InvalidData) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        (None, _) => ERRCODE_IO_ERROR,
    }
}

/// A failed file operation of the shell's own (writing a catalog, recording the settings).
pub fn for_io(error: &std::io::Error) -> PgSqlErrorCode {
    for_file(&FileError::from(error))
}

/// The code PostgreSQL raises a refused control file with.
fn for_control(error: &ControlError) -> PgSqlErrorCode {
    match error {
        ControlError::Syntax(_) => ERRCODE_SYNTAX_ERROR,
        ControlError::InvalidValue(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        ControlError::UnknownEncoding(_) => ERRCODE_UNDEFINED_OBJECT,
    }
}

/// A problem met along the path (a warning of a refresh, a refusal of SET).
pub fn for_problem(kind: &ProblemKind) -> PgSqlErrorCode {
    match kind {
        ProblemKind::Path(PathProblem::Unusable(e)) => for_file(e),
        ProblemKind::Path(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        ProblemKind::Directory(e) => for_file(e),
        ProblemKind::Unusable(unusable) => for_unusable(unusable),
        ProblemKind::UntrustedLibrary(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
    }
}

fn for_unusable(unusable: &Unusable) -> PgSqlErrorCode {
    match unusable {
        Unusable::NotTrusted(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
        Unusable::ControlUnreadable(e) | Unusable::SecondaryUnreadable { error: e, .. } => for_file(e),
        Unusable::ControlInvalid(e) | Unusable::SecondaryInvalid { error: e, .. } => for_control(e),
        Unusable::NoScriptDirectory(_) => ERRCODE_UNDEFINED_FILE,
        Unusable::ScriptDirectoryTooLong(_) | Unusable::ScriptDirectoryNotUtf8(_) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        Unusable::Generated(_) => ERRCODE_INTERNAL_ERROR,
    }
}

/// An error about loading library `name` (as PostgreSQL was given it): SQLSTATE, message,
/// DETAIL (it names files: shown only to roles that may see paths) and HINT.
pub struct LibraryError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: String,
    pub hint: String,
}

pub fn for_library(name: &str, refusal: &LibraryRefusal) -> LibraryError {
    let (code, message, detail, hint) = match refusal {
        LibraryRefusal::NotTrusted { file, why } => (
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("library \"{name}\" is not trusted"),
            format!("\"{}\": {why}", file.display()),
            "Fix the file's owner or mode, or set extension_search_path.trusted_files_only = off (server-wide).".into(),
        ),
        LibraryRefusal::NotALibrary(e) => (
            match e {
                ElfError::Unreadable { error, .. } => for_file(error),
                ElfError::Invalid { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            },
            format!("could not load library \"{name}\": it is not a shared library this server can load"),
            e.to_string(),
            "Replace the file in the image with a shared library built for this server.".into(),
        ),
        LibraryRefusal::MissingDependency { soname, needed_by, searched } => {
            let searched: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
            (
                ERRCODE_UNDEFINED_FILE,
                format!("could not load library \"{name}\": required library \"{soname}\" was not found"),
                format!(
                    "\"{}\" needs \"{soname}\". Directories searched: {}.",
                    needed_by.display(),
                    searched.join(", ")
                ),
                format!("Bundle \"{soname}\" in the image's lib/ or system/ directory, or install it on the server."),
            )
        }
        LibraryRefusal::LoadFailed { .. } => (
            ERRCODE_IO_ERROR,
            format!("could not load library \"{name}\": a library it needs could not be loaded"),
            refusal.to_string(),
            "Check that the image's bundled libraries are built for this server's system.".into(),
        ),
    };
    LibraryError { code, message, detail, hint }
}
