//! The one decision "can this copy be served, and if not, why": behind the catalog (what it
//! serves), the warnings of a refresh and `check()`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::control::{self, ControlFile, ReadError, quote};
use crate::index::{ExtensionCopy, LibraryCopy};
use crate::problem::Unusable;
use crate::safe_fs::TrustPolicy;

pub use crate::name::MAXPGPATH;

/// A copy PostgreSQL can be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    /// The control file the catalog serves: the original text, plus an absolute `directory`
    /// naming the real script directory (so scripts and secondary control files come from it).
    pub generated: Vec<u8>,
    /// The original control file's settings.
    pub control: ControlFile,
    /// Where PostgreSQL will read the scripts from.
    pub scripts: PathBuf,
}

/// Whether `copy` can be served to PostgreSQL: the control file PostgreSQL would accept (see
/// [`crate::control`]), its script directory usable, and — when `policy` enforces trust — the
/// control file, the script directory and every script and secondary control file of the
/// extension trusted from the prefix down.
pub fn usable(copy: &ExtensionCopy, policy: &TrustPolicy) -> Result<Usable, Unusable> {
    let top = copy.prefix.as_deref().unwrap_or(copy.dir.as_path());
    let trusted = |path: &Path| policy.refuses(top, path).map_or(Ok(()), |why| Err(Unusable::NotTrusted(why)));
    trusted(&copy.control_file)?;
    let (mut text, control) = match control::read(&copy.control_file) {
        Ok(read) => read,
        Err(ReadError::Unreadable(e)) => return Err(Unusable::ControlUnreadable(e)),
        Err(ReadError::Invalid(e)) => return Err(Unusable::ControlInvalid(e)),
    };
    control.validate(false).map_err(Unusable::ControlInvalid)?;
    let scripts = copy.script_directory(&control);
    // The directory is trusted before anything in it is read.
    if scripts.is_dir() {
        trusted(&scripts)?;
    }
    check_script_directory(&copy.name, &scripts, &control)?;
    // Every script and secondary control file of this extension.
    let prefix = format!("{}--", copy.name);
    let files = fs::read_dir(&scripts).into_iter().flatten().flatten().take(crate::safe_fs::MAX_DIR_ENTRIES);
    for entry in files.filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))) {
        trusted(&entry.path())?;
    }
    let scripts_text = scripts.to_str().ok_or_else(|| Unusable::ScriptDirectoryNotUtf8(scripts.clone()))?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(
        format!(
            "# added by extension_search_path: the scripts of {} ({})\ndirectory = {}\n",
            copy.name,
            copy.layout.as_str(),
            quote(scripts_text)
        )
        .as_bytes(),
    );
    // What PostgreSQL will read: it must parse, and name the directory meant.
    let generated = ControlFile::parse_bytes(&text).map_err(|e| Unusable::Generated(e.to_string()))?;
    if generated.get("directory") != Some(scripts_text) {
        return Err(Unusable::Generated("the script directory does not read back".into()));
    }
    Ok(Usable { generated: text, control, scripts })
}

/// Why the library `copy` must not be served or loaded, when `policy` enforces trust and it (or
/// a directory from its prefix down) is not trusted.
pub fn library_distrust(copy: &LibraryCopy, policy: &TrustPolicy) -> Option<String> {
    policy.refuses(copy.prefix.as_deref()?, &copy.path)
}

/// Whether PostgreSQL can use `scripts` as the script directory of extension `name`. What it
/// cannot use would make pg_available_extension_versions fail for every extension, so such an
/// extension is left out of the catalog: the directory must exist, leave room for script file
/// names within MAXPGPATH, and hold only secondary control files PostgreSQL can read.
pub fn check_script_directory(name: &str, scripts: &Path, control: &ControlFile) -> Result<(), Unusable> {
    if !scripts.is_dir() {
        return Err(Unusable::NoScriptDirectory(scripts.to_path_buf()));
    }
    let longest = scripts.as_os_str().len() + 2 * name.len() + 64;
    if longest >= MAXPGPATH {
        return Err(Unusable::ScriptDirectoryTooLong(scripts.to_path_buf()));
    }
    control::check_secondary_controls(name, scripts, control)
}
