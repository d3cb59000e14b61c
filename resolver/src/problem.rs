//! What can be wrong along the path, typed: one enum per concern, each with the message it
//! prints and the hint a DBA gets. The shell maps every kind to a SQLSTATE in one place
//! (`src/errors.rs`); `check()` rows and the warnings of a catalog refresh share the texts here.

use std::io;
use std::path::PathBuf;

use crate::control::ControlError;

/// Something wrong with the path or a tree under it. Never fatal: the element or entry is
/// skipped and the rest keeps working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: {kind}")]
pub struct Problem {
    /// The path element (as written in the setting) or file the problem is about.
    pub subject: String,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    /// An element or value of `extension_search_path.path` that is ignored (or, set
    /// interactively, refused).
    #[error(transparent)]
    Path(#[from] PathProblem),
    /// A directory along the path that could not be listed.
    #[error("could not read directory: {0}")]
    Directory(FileError),
    /// An extension copy PostgreSQL cannot be given.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// A library copy left out because it is not trusted.
    #[error("not trusted, left out: {0}")]
    UntrustedLibrary(String),
}

impl ProblemKind {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ProblemKind::Path(_) => PathProblem::HINT,
            ProblemKind::Directory(_) => {
                "Make the directory readable by the server's user, or remove it from the path."
            }
            ProblemKind::Unusable(unusable) => unusable.hint(),
            ProblemKind::UntrustedLibrary(_) => Unusable::TRUST_HINT,
        }
    }
}

/// A failed file operation, kept with its `errno` so that the shell can map it as PostgreSQL's
/// `errcode_for_file_access` does. Refusals of our own reading rules (`crate::safe_fs`) have no
/// errno: `kind` tells them apart (`InvalidInput`: not a regular file; `InvalidData`: too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    pub errno: Option<i32>,
    pub kind: io::ErrorKind,
    pub message: String,
}

impl From<&io::Error> for FileError {
    fn from(e: &io::Error) -> FileError {
        FileError { errno: e.raw_os_error(), kind: e.kind(), message: e.to_string() }
    }
}

impl From<io::Error> for FileError {
    fn from(e: io::Error) -> FileError {
        FileError::from(&e)
    }
}

/// A problem with `extension_search_path.path` itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("value is {0} bytes long, more than {max}: ignored, only $system is searched", max = crate::path::MAX_VALUE_LEN)]
    TooLong(usize),
    #[error("empty path element ignored")]
    Empty,
    #[error("unknown macro; only \"$system\" is recognised, as a whole element")]
    UnknownMacro,
    #[error("relative path element ignored; elements must be absolute")]
    Relative,
    #[error("duplicate path element ignored")]
    Duplicate,
    #[error("is not a directory")]
    NotADirectory,
    #[error("cannot be used: {0}")]
    Unusable(FileError),
}

impl PathProblem {
    pub const HINT: &'static str =
        "Elements must be absolute paths of existing directories, or $system, separated by colons.";
}

/// Why an extension copy cannot be served to PostgreSQL (see [`crate::catalog::usable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// The control file, the script directory or one of the extension's files.
    #[error("not trusted, left out: {0}")]
    NotTrusted(String),
    #[error("control file cannot be used: could not read it: {0}")]
    ControlUnreadable(FileError),
    #[error("control file cannot be used: {0}")]
    ControlInvalid(ControlError),
    #[error("script directory \"{}\" does not exist", .0.display())]
    NoScriptDirectory(PathBuf),
    #[error("script directory \"{}\" is too long: PostgreSQL handles file names up to {} bytes", .0.display(), crate::name::MAXPGPATH - 1)]
    ScriptDirectoryTooLong(PathBuf),
    #[error("script directory \"{}\" is not valid UTF-8", .0.display())]
    ScriptDirectoryNotUtf8(PathBuf),
    #[error("secondary control file \"{}\": {error}", .file.display())]
    SecondaryUnreadable { file: PathBuf, error: FileError },
    /// `combined`: valid alone, refused read on top of the primary control file.
    #[error("secondary control file \"{}\" ({}){}: {error}", .file.display(), file_name(.file), if *.combined { ", read on top of the primary one" } else { "" })]
    SecondaryInvalid { file: PathBuf, combined: bool, error: ControlError },
    /// The control file we generate does not read back as meant (a bug of ours).
    #[error("generated control file: {0}")]
    Generated(String),
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

impl Unusable {
    pub const TRUST_HINT: &'static str =
        "Fix the owner (root or the server's user) or the mode (chmod go-w); it is left out until then.";
    /// The same, when `trusted_files_only` is off and the file is served anyway.
    pub const TRUST_OFF_HINT: &'static str = "Served only because extension_search_path.trusted_files_only is off: \
        anyone who can write there can make the server run their code.";

    pub fn hint(&self) -> &'static str {
        match self {
            Unusable::NotTrusted(_) => Unusable::TRUST_HINT,
            Unusable::ControlUnreadable(_) | Unusable::SecondaryUnreadable { .. } => {
                "Make the file readable by the server's user; the extension is left out until then."
            }
            Unusable::NoScriptDirectory(_) => {
                "Ship the scripts in the image, or fix the control file's directory parameter."
            }
            Unusable::ScriptDirectoryTooLong(_) | Unusable::ScriptDirectoryNotUtf8(_) => {
                "Mount the image at a shorter path made of UTF-8 names."
            }
            Unusable::ControlInvalid(_) | Unusable::SecondaryInvalid { .. } | Unusable::Generated(_) => {
                "PostgreSQL cannot use this extension as it is; it is left out until it is fixed."
            }
        }
    }

    pub fn is_trust(&self) -> bool {
        matches!(self, Unusable::NotTrusted(_))
    }
}
