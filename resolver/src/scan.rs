//! Recognising layouts: what one path element holds.
//!
//! * `$system`: PostgreSQL's `share/extension` and `lib` directories.
//! * RFC: `<prefix>/<ext>/<ext>.control`, scripts and secondary control files in
//!   `<prefix>/<ext>/sql/` (or beside the control file when there is no `sql/`), modules in
//!   `<prefix>/<ext>/lib/`.
//! * CloudNativePG image: `<prefix>/<image>/share/extension/*.control` with their scripts,
//!   modules in `<prefix>/<image>/lib/`; one image may hold several extensions.
//!
//! Both layouts may be mixed in one prefix, even in one directory. Entries whose names start
//! with a dot are ignored (Kubernetes' `..data` links, editors' temporary files).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::index::{ExtensionCopy, Image, Layout, LibraryCopy};
use crate::name::primary_control_name;
use crate::problem::{FileError, Problem, ProblemKind};

/// PostgreSQL's own directories, what `$system` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDirs {
    /// `pg_config --sharedir` + `/extension`
    pub extension_dir: PathBuf,
    /// `pg_config --pkglibdir`
    pub lib_dir: PathBuf,
}

/// What one element yields.
#[derive(Debug, Default)]
pub struct Found {
    pub images: Vec<Image>,
    pub extensions: Vec<ExtensionCopy>,
    pub libraries: Vec<LibraryCopy>,
    pub problems: Vec<Problem>,
}

pub fn scan_system(element: usize, system: &SystemDirs, found: &mut Found) {
    let base = system.extension_dir.parent().unwrap_or(&system.extension_dir).to_path_buf();
    for (file_name, path) in list(&system.extension_dir, "$system", &mut found.problems) {
        let Some(name) = file_name.to_str().and_then(primary_control_name) else { continue };
        if !is_file(&path) {
            continue;
        }
        found.extensions.push(ExtensionCopy {
            name: name.to_string(),
            layout: Layout::System,
            element,
            prefix: None,
            dir: system.extension_dir.clone(),
            control_file: path,
            script_base: base.clone(),
            default_script_dir: system.extension_dir.clone(),
            lib_dir: Some(system.lib_dir.clone()),
        });
    }
    libraries(element, None, &system.lib_dir, &system.lib_dir, found);
}

pub fn scan_prefix(element: usize, prefix: &Path, found: &mut Found) {
    let subject = prefix.display().to_string();
    for (dir_name, dir) in list(prefix, &subject, &mut found.problems) {
        if dir_name.as_encoded_bytes().starts_with(b".") || !is_dir(&dir) {
            continue;
        }
        if !readable_dir(&dir) {
            found.problems.push(Problem {
                subject: dir.display().to_string(),
                kind: ProblemKind::Directory(FileError::from(std::io::Error::last_os_error())),
            });
            continue;
        }
        found.images.push(Image { dir: dir.clone(), element, prefix: prefix.to_path_buf() });
        let lib_dir = dir.join("lib");
        // RFC: the eponymous control file at the top of the directory.
        if let Some(name) = dir_name.to_str().and_then(|n| primary_control_name_for_dir(n, &dir)) {
            let sql = dir.join("sql");
            let scripts = if is_dir(&sql) { sql } else { dir.clone() };
            found.extensions.push(ExtensionCopy {
                name,
                layout: Layout::Rfc,
                element,
                prefix: Some(prefix.to_path_buf()),
                control_file: dir.join(format!("{}.control", dir_name.to_string_lossy())),
                script_base: dir.clone(),
                default_script_dir: scripts,
                lib_dir: Some(lib_dir.clone()),
                dir: dir.clone(),
            });
        }
        // CloudNativePG image: share/extension/*.control.
        let share_ext = dir.join("share").join("extension");
        if is_dir(&share_ext) {
            let image_subject = share_ext.display().to_string();
            for (file_name, control) in list(&share_ext, &image_subject, &mut found.problems) {
                let Some(name) = file_name.to_str().and_then(primary_control_name) else { continue };
                if !is_file(&control) {
                    continue;
                }
                found.extensions.push(ExtensionCopy {
                    name: name.to_string(),
                    layout: Layout::Cnpg,
                    element,
                    prefix: Some(prefix.to_path_buf()),
                    dir: dir.clone(),
                    control_file: control,
                    script_base: dir.join("share"),
                    default_script_dir: share_ext.clone(),
                    lib_dir: Some(lib_dir.clone()),
                });
            }
        }
        if is_dir(&lib_dir) {
            libraries(element, Some(prefix), &dir, &lib_dir, found);
        }
    }
}

fn primary_control_name_for_dir(dir_name: &str, dir: &Path) -> Option<String> {
    let file_name = format!("{dir_name}.control");
    let name = primary_control_name(&file_name)?;
    is_file(&dir.join(&file_name)).then(|| name.to_string())
}

fn libraries(element: usize, prefix: Option<&Path>, dir: &Path, lib_dir: &Path, found: &mut Found) {
    let subject = lib_dir.display().to_string();
    for (file_name, path) in list(lib_dir, &subject, &mut found.problems) {
        if file_name.as_encoded_bytes().starts_with(b".") || !is_file(&path) {
            continue;
        }
        found.libraries.push(LibraryCopy {
            file_name,
            path,
            element,
            prefix: prefix.map(Path::to_path_buf),
            dir: dir.to_path_buf(),
        });
    }
}

/// The entries of a directory, sorted by name so every scan sees the same order. An unreadable
/// or missing directory is a problem, not an error.
fn list(dir: &Path, subject: &str, problems: &mut Vec<Problem>) -> Vec<(OsString, PathBuf)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Problem { subject: subject.to_string(), kind: ProblemKind::Directory(FileError::from(e)) });
            return Vec::new();
        }
    };
    let mut out: Vec<(OsString, PathBuf)> = entries
        .filter_map(Result::ok)
        .take(crate::safe_fs::MAX_DIR_ENTRIES)
        .map(|e| (e.file_name(), e.path()))
        .collect();
    out.sort();
    out
}

/// Whether this process may list and enter `dir` (one access(2) call, no descriptor).
fn readable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::X_OK) == 0 }
}

fn is_dir(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}
