//! Recognising layouts: what one path element holds.
//!
//! * `$system`: PostgreSQL's `share/extension` and `lib` directories.
//! * RFC: `<prefix>/<ext>/<ext>.control`, scripts and secondary control files in
//!   `<prefix>/<ext>/sql/` (or beside the control file when there is no `sql/`), modules in
//!   `<prefix>/<ext>/lib/`.
//! * CloudNativePG image: `<prefix>/<image>/share/extension/*.control` with their scripts,
//!   modules in `<prefix>/<image>/lib/`; one image may hold several extensions.
//!
//! * Nested images, one level deep: `<prefix>/<image>/<sub>/` laid out as either (CloudNativePG's
//!   multi-extension images, `geospatial/postgis/share/extension`): served like separate images.
//! * The images an operator named in `extension_control_path` / `dynamic_library_path`
//!   (`<dir>/share`, `<dir>/lib`), searched after the path.
//!
//! Both layouts may be mixed in one prefix, even in one directory. Entries whose names start
//! with a dot are ignored (Kubernetes' `..data` links, editors' temporary files).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::index::{ExtensionCopy, Image, ImageSource, Layout, LibraryCopy};
use crate::name::primary_control_name;
use crate::path::OperatorImage;
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
    /// The directories of `images`, once an operator's image is to be matched against them.
    image_dirs: Option<std::collections::HashSet<PathBuf>>,
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
            nested: false,
        });
    }
    libraries(element, None, &system.lib_dir, &system.lib_dir, false, found);
}

pub fn scan_prefix(element: usize, prefix: &Path, found: &mut Found) {
    let subject = prefix.display().to_string();
    for (dir_name, dir) in list(prefix, &subject, &mut found.problems) {
        if dir_name.as_encoded_bytes().starts_with(b".") || !is_dir(&dir) {
            continue;
        }
        let at = Place { element, prefix, source: ImageSource::Prefix };
        if !scan_image(&at, &dir, found) {
            continue;
        }
        // Nested images, one level deep: `<image>/<sub>/share/extension`, `lib/`, `system/`
        // or `<image>/<sub>/<sub>.control` (CloudNativePG's multi-extension images).
        for (sub_name, sub) in list(&dir, &dir.display().to_string(), &mut Vec::new()) {
            let name = sub_name.as_encoded_bytes();
            if name.starts_with(b".") || OWN_DIRECTORIES.contains(&name) || !is_dir(&sub) || !holds_an_image(&sub) {
                continue;
            }
            let nested = Place { element, prefix, source: ImageSource::Nested };
            scan_image(&nested, &sub, found);
        }
    }
}

/// The images named by the operator's elements of the core settings (see
/// [`crate::path::operator_images`]) that no prefix holds already.
pub fn scan_operator(element: usize, image: &OperatorImage, found: &mut Found) {
    // (operator's elements come after every element of the path: the set is complete)
    let Found { images, image_dirs, .. } = &mut *found;
    let known = image_dirs.get_or_insert_with(|| images.iter().map(|i| i.dir.clone()).collect());
    if !known.insert(image.dir.clone()) || !is_dir(&image.dir) {
        return;
    }
    let at = Place { element, prefix: &image.dir, source: ImageSource::Setting };
    let lib_dir = image.library.clone().unwrap_or_else(|| image.dir.join("lib"));
    found.images.push(Image { dir: image.dir.clone(), element, prefix: image.dir.clone(), source: at.source.clone() });
    if let Some(share) = &image.control {
        let subject = share.display().to_string();
        let control_dir = share.join("extension");
        if is_dir(&control_dir) {
            image_controls(&at, &image.dir, share, &control_dir, &lib_dir, &subject, found);
        }
    }
    if is_dir(&lib_dir) {
        libraries(element, Some(&image.dir), &image.dir, &lib_dir, false, found);
    }
}

/// Directories of an image's own that are never nested images.
const OWN_DIRECTORIES: [&[u8]; 6] = [b"share", b"lib", b"system", b"sql", b"doc", b"bin"];

/// Whether `dir` looks like an image: `share/extension/`, `lib/`, `system/`, or its eponymous
/// control file.
fn holds_an_image(dir: &Path) -> bool {
    ["share/extension", "lib", "system"].iter().any(|d| is_dir(&dir.join(d)))
        || dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| is_file(&dir.join(format!("{n}.control"))))
}

/// Where an image was found.
struct Place<'a> {
    element: usize,
    prefix: &'a Path,
    source: ImageSource,
}

/// One image directory (`dir`): its RFC control file, its `share/extension/`, its `lib/`.
/// `false` when it cannot be entered (a problem is recorded).
fn scan_image(at: &Place, dir: &Path, found: &mut Found) -> bool {
    if !readable_dir(dir) {
        found.problems.push(Problem {
            subject: dir.display().to_string(),
            kind: ProblemKind::Directory(FileError::from(std::io::Error::last_os_error())),
        });
        return false;
    }
    let element = at.element;
    found.images.push(Image {
        dir: dir.to_path_buf(),
        element,
        prefix: at.prefix.to_path_buf(),
        source: at.source.clone(),
    });
    let lib_dir = dir.join("lib");
    let dir_name = dir.file_name().unwrap_or_default();
    // RFC: the eponymous control file at the top of the directory.
    if let Some(name) = dir_name.to_str().and_then(|n| primary_control_name_for_dir(n, dir)) {
        let sql = dir.join("sql");
        let scripts = if is_dir(&sql) { sql } else { dir.to_path_buf() };
        found.extensions.push(ExtensionCopy {
            name,
            layout: Layout::Rfc,
            element,
            prefix: Some(at.prefix.to_path_buf()),
            control_file: dir.join(format!("{}.control", dir_name.to_string_lossy())),
            script_base: dir.to_path_buf(),
            default_script_dir: scripts,
            lib_dir: Some(lib_dir.clone()),
            dir: dir.to_path_buf(),
            nested: at.source.is_nested(),
        });
    }
    // CloudNativePG image: share/extension/*.control.
    let share = dir.join("share");
    let share_ext = share.join("extension");
    if is_dir(&share_ext) {
        let subject = share_ext.display().to_string();
        image_controls(at, dir, &share, &share_ext, &lib_dir, &subject, found);
    }
    if is_dir(&lib_dir) {
        libraries(element, Some(at.prefix), dir, &lib_dir, at.source.is_nested(), found);
    }
    true
}

/// The control files of an image's `share/extension/` (or the operator's element's `extension/`).
fn image_controls(
    at: &Place,
    dir: &Path,
    share: &Path,
    control_dir: &Path,
    lib_dir: &Path,
    subject: &str,
    found: &mut Found,
) {
    for (file_name, control) in list(control_dir, subject, &mut found.problems) {
        let Some(name) = file_name.to_str().and_then(primary_control_name) else { continue };
        if !is_file(&control) {
            continue;
        }
        found.extensions.push(ExtensionCopy {
            name: name.to_string(),
            layout: Layout::Cnpg,
            element: at.element,
            prefix: Some(at.prefix.to_path_buf()),
            dir: dir.to_path_buf(),
            control_file: control,
            script_base: share.to_path_buf(),
            default_script_dir: control_dir.to_path_buf(),
            lib_dir: Some(lib_dir.to_path_buf()),
            nested: at.source.is_nested(),
        });
    }
}

fn primary_control_name_for_dir(dir_name: &str, dir: &Path) -> Option<String> {
    let file_name = format!("{dir_name}.control");
    let name = primary_control_name(&file_name)?;
    is_file(&dir.join(&file_name)).then(|| name.to_string())
}

fn libraries(element: usize, prefix: Option<&Path>, dir: &Path, lib_dir: &Path, nested: bool, found: &mut Found) {
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
            nested,
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
