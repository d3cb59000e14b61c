//! What the SQL reporting functions show: images, libraries and the problems found in them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::elf::{HOST_MACHINE, machine_name, read_elf};
use crate::index::{ExtensionCopy, Image, Index, Layout};
use crate::libs::{LibraryContext, Resolution, plan};
use crate::mounts::{Mount, mount_of};
use crate::safe_fs::TrustPolicy;
use crate::versions::Versions;

/// Entries visited when sizing an image; a larger tree is reported as at least this big.
const MAX_WALK: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageReport {
    pub name: String,
    pub dir: PathBuf,
    pub prefix: PathBuf,
    /// `rfc`, `cnpg`, `rfc+cnpg`, or `other` (nothing recognised).
    pub layout: String,
    pub extensions: Vec<String>,
    /// File names in `lib/` and `system/`.
    pub libraries: Vec<String>,
    pub mount_point: bool,
    pub read_only: Option<bool>,
    pub fs_type: Option<String>,
    pub mount_source: Option<String>,
    pub size_bytes: u64,
    /// `trunk.json` or `META.json` at the image's root, parsed.
    pub metadata: Option<serde_json::Value>,
    pub metadata_file: Option<PathBuf>,
    pub metadata_error: Option<String>,
}

pub fn image_reports(index: &Index, mounts: &[Mount]) -> Vec<ImageReport> {
    index.images.iter().map(|image| image_report(index, image, mounts)).collect()
}

fn image_report(index: &Index, image: &Image, mounts: &[Mount]) -> ImageReport {
    let copies: Vec<&ExtensionCopy> = index.extensions.iter().filter(|c| c.dir == image.dir).collect();
    let has = |layout| copies.iter().any(|c| c.layout == layout);
    // An image with only share/ or lib/ (a LOAD-only module such as auto_explain) is a
    // CloudNativePG image too.
    let cnpg_dirs = image.dir.join("share").is_dir() || image.dir.join("lib").is_dir();
    let layout = match (has(Layout::Rfc), has(Layout::Cnpg)) {
        (true, true) => "rfc+cnpg",
        (true, false) => "rfc",
        (false, true) => "cnpg",
        (false, false) if cnpg_dirs => "cnpg",
        (false, false) => "other",
    };
    let mut extensions: Vec<String> = copies.iter().map(|c| c.name.clone()).collect();
    extensions.dedup();
    let libraries = image.library_dirs().iter().flat_map(|d| file_names(d)).collect();
    let mount = mount_of(mounts, &image.dir);
    let (metadata_file, metadata, metadata_error) = read_metadata(&image.dir);
    ImageReport {
        name: image.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        dir: image.dir.clone(),
        prefix: image.prefix.clone(),
        layout: layout.to_string(),
        extensions,
        libraries,
        mount_point: mount.is_some_and(|m| m.mount_point == image.dir),
        read_only: mount.map(|m| m.read_only),
        fs_type: mount.map(|m| m.fs_type.clone()),
        mount_source: mount.map(|m| m.source.clone()),
        size_bytes: disk_usage(&image.dir),
        metadata,
        metadata_file,
        metadata_error,
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.metadata().map(|m| m.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_metadata(dir: &Path) -> (Option<PathBuf>, Option<serde_json::Value>, Option<String>) {
    for name in ["trunk.json", "META.json"] {
        let path = dir.join(name);
        if !fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
            continue;
        }
        return match crate::safe_fs::read_regular(&path, crate::safe_fs::MAX_TEXT_FILE)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(value) => (Some(path), Some(value), None),
            Err(e) => (Some(path), None, Some(e)),
        };
    }
    (None, None, None)
}

/// Bytes allocated on disk under `dir` (symlinks not followed, at most MAX_WALK entries).
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(next) = todo.pop() {
        let Ok(meta) = fs::symlink_metadata(&next) else { continue };
        total += meta.blocks() * 512;
        visited += 1;
        if visited >= MAX_WALK {
            break;
        }
        if meta.is_dir() {
            todo.extend(fs::read_dir(&next).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    total
}

#[derive(Debug, Clone, PartialEq)]
pub struct LibraryReport {
    pub path: PathBuf,
    pub image: PathBuf,
    pub prefix: PathBuf,
    /// `module` (exports Pg_magic_func), `library`, or `unreadable`.
    pub kind: &'static str,
    pub soname: Option<String>,
    pub pg_major: Option<u32>,
    pub machine: Option<String>,
    pub foreign_machine: bool,
    /// Direct `DT_NEEDED` entries and, in the same order, where each resolves.
    pub needed: Vec<String>,
    pub resolved: Vec<String>,
    pub missing: Vec<String>,
    pub error: Option<String>,
    /// For files in `lib/`: the copy PostgreSQL loads for this file name.
    pub winner: bool,
}

/// Every shared object in every image's `lib/` and `system/` (names containing `.so`).
pub fn library_reports(index: &Index, ctx: &LibraryContext) -> Vec<LibraryReport> {
    let mut reports = Vec::new();
    for image in &index.images {
        for dir in image.library_dirs() {
            for name in file_names(&dir).into_iter().filter(|n| n.contains(".so")) {
                let path = dir.join(&name);
                let winner = index.library_winners().any(|l| l.path == path);
                reports.push(library_report(path, image, ctx, winner));
            }
        }
    }
    reports
}

fn library_report(path: PathBuf, image: &Image, ctx: &LibraryContext, winner: bool) -> LibraryReport {
    let mut report = LibraryReport {
        path: path.clone(),
        image: image.dir.clone(),
        prefix: image.prefix.clone(),
        kind: "unreadable",
        soname: None,
        pg_major: None,
        machine: None,
        foreign_machine: false,
        needed: Vec::new(),
        resolved: Vec::new(),
        missing: Vec::new(),
        error: None,
        winner,
    };
    let info = match read_elf(&path) {
        Ok(info) => info,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.kind = if info.is_pg_module { "module" } else { "library" };
    report.soname = info.soname.clone();
    report.pg_major = info.pg_major;
    report.machine = Some(machine_name(info.machine));
    report.foreign_machine = info.machine != HOST_MACHINE;
    match plan(&path, ctx) {
        Ok(plan) => {
            for dep in plan.dependencies.iter().filter(|d| d.needed_by == path) {
                report.needed.push(dep.soname.clone());
                report.resolved.push(match &dep.resolution {
                    Resolution::Loaded | Resolution::NotFound => dep.resolution.kind().to_string(),
                    other => format!(
                        "{} ({})",
                        other.path().map(|p| p.display().to_string()).unwrap_or_default(),
                        other.kind()
                    ),
                });
            }
            report.missing = plan.missing().map(|d| d.soname.clone()).collect();
        }
        Err(e) => report.error = Some(e),
    }
    report
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub image: Option<PathBuf>,
    pub extension: Option<String>,
    pub message: String,
    pub hint: String,
}

/// Everything worth a DBA's attention along the path, most severe first.
pub fn check(index: &Index, libraries: &[LibraryReport], server_major: u32, policy: &TrustPolicy) -> Vec<Finding> {
    crate::safe_fs::memo::scope(|| check_in_scope(index, libraries, server_major, policy))
}

fn check_in_scope(index: &Index, libraries: &[LibraryReport], server_major: u32, policy: &TrustPolicy) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |severity, image: Option<&Path>, extension: Option<&str>, message: String, hint: &str| {
        findings.push(Finding {
            severity,
            image: image.map(Path::to_path_buf),
            extension: extension.map(String::from),
            message,
            hint: hint.to_string(),
        })
    };
    for problem in &index.problems {
        add(
            Severity::Warning,
            None,
            None,
            problem.to_string(),
            "Fix extension_search_path.path: elements must be absolute directories the server can read, or $system.",
        );
    }
    // Trust is always judged here; with trusted_files_only off, what it refuses is still served.
    let judge = TrustPolicy { enforce: true, ..*policy };
    let trust_severity = if policy.enforce { Severity::Error } else { Severity::Warning };
    let trust_hint = if policy.enforce {
        "Fix the owner (root or the server's user) or the mode (chmod go-w); it is left out until then."
    } else {
        "Served only because extension_search_path.trusted_files_only is off: anyone who can write there can make the server run their code."
    };
    for copy in index.extensions.iter().filter(|c| c.layout != Layout::System) {
        let image = Some(copy.dir.as_path());
        let name = Some(copy.name.as_str());
        if let Err(e) = crate::catalog::usable(copy, &judge) {
            let trust = e.starts_with("not trusted");
            let message = format!("\"{}\": {e}", copy.control_file.display());
            if trust {
                add(trust_severity, image, name, message, trust_hint);
            } else {
                add(
                    Severity::Error,
                    image,
                    name,
                    message,
                    "PostgreSQL cannot use this extension as it is; it is left out until it is fixed.",
                );
            }
            if !trust || policy.enforce {
                continue;
            }
        }
        let Ok(control) = copy.read_control() else { continue };
        let scripts = copy.script_directory(&control);
        let versions = Versions::scan(&copy.name, &scripts);
        match control.default_version() {
            Some(default) if !versions.available().iter().any(|v| v == default) => add(
                Severity::Error,
                image,
                name,
                format!(
                    "default version {default} of {} cannot be installed: no install script leads to it",
                    copy.name
                ),
                "Add the install script or the missing update scripts.",
            ),
            Some(default) => {
                let gaps = versions.gaps(default);
                if !gaps.is_empty() {
                    add(
                        Severity::Warning,
                        image,
                        name,
                        format!("no update path to {default} from version(s) {}", gaps.join(", ")),
                        "Installations at those versions cannot ALTER EXTENSION UPDATE; ship the missing update scripts.",
                    );
                }
            }
            None => add(
                Severity::Error,
                image,
                name,
                format!("{} has no default_version", copy.name),
                "Set default_version in the control file.",
            ),
        }
        if !index.is_winner(copy)
            && let Some(winner) = index.resolve(&copy.name)
        {
            add(
                Severity::Notice,
                image,
                name,
                format!("{} here is shadowed by \"{}\" ({})", copy.name, winner.dir.display(), winner.layout.as_str()),
                "The first copy along extension_search_path.path wins; reorder the path or remove a copy.",
            );
        }
    }
    for image in &index.images {
        for dir in tsearch_data_dirs(&image.dir) {
            add(
                Severity::Warning,
                Some(&image.dir),
                None,
                format!(
                    "text search files in \"{}\" cannot be used ({}): PostgreSQL reads dictionary, synonym and \
                     thesaurus files only from its own share/tsearch_data",
                    dir.display(),
                    file_names(&dir).join(", ")
                ),
                "Install these files into the server's share/tsearch_data (pg_config --sharedir) or the base image; \
                 until then dictionaries that name them fail with \"could not open ... file\".",
            );
        }
    }
    for copy in index.libraries.iter().filter(|l| l.prefix.is_some()) {
        if let Some(why) = crate::catalog::library_distrust(copy, &judge) {
            add(
                trust_severity,
                Some(&copy.dir),
                None,
                format!("library \"{}\": {why}", copy.path.display()),
                trust_hint,
            );
        }
    }
    for lib in libraries {
        let image = Some(lib.image.as_path());
        let file = lib.path.display();
        if let Some(error) = &lib.error {
            add(
                Severity::Warning,
                image,
                None,
                format!("library \"{file}\" cannot be read: {error}"),
                "Replace it with a shared library, or remove it.",
            );
            continue;
        }
        if lib.foreign_machine {
            add(
                Severity::Error,
                image,
                None,
                format!(
                    "library \"{file}\" is built for {}, not {}",
                    lib.machine.as_deref().unwrap_or("?"),
                    machine_name(HOST_MACHINE)
                ),
                "Use the image built for this server's architecture.",
            );
        }
        if let Some(major) = lib.pg_major.filter(|m| *m != server_major) {
            add(
                Severity::Error,
                image,
                None,
                format!("module \"{file}\" is built for PostgreSQL {major}, this server is {server_major}"),
                "Use the image built for this PostgreSQL major version.",
            );
        }
        for soname in &lib.missing {
            add(
                Severity::Error,
                image,
                None,
                format!("library \"{file}\" requires \"{soname}\", which was not found"),
                "Bundle it in the image's lib/ or system/ directory, or install it on the server.",
            );
        }
    }
    let mut by_name: BTreeMap<String, Vec<&LibraryReport>> = BTreeMap::new();
    for lib in libraries.iter().filter(|l| l.path.parent().and_then(Path::file_name).is_some_and(|d| d == "lib")) {
        by_name.entry(lib.path.file_name().unwrap_or_default().to_string_lossy().into_owned()).or_default().push(lib);
    }
    for (name, copies) in by_name.into_iter().filter(|(_, c)| c.len() > 1) {
        let winner = copies.iter().find(|l| l.winner).map(|l| l.path.display().to_string()).unwrap_or_default();
        let images: Vec<String> = copies.iter().map(|l| l.image.display().to_string()).collect();
        add(
            Severity::Warning,
            None,
            None,
            format!(
                "library \"{name}\" is provided by {} images ({}); \"{winner}\" is used",
                copies.len(),
                images.join(", ")
            ),
            "The first along extension_search_path.path wins; remove the copies you do not want.",
        );
    }
    findings.sort_by_key(|f| f.severity);
    findings
}

/// Text search data an image carries: `share/tsearch_data/` (CloudNativePG layout) or
/// `tsearch_data/` (RFC layout), when it holds any file.
fn tsearch_data_dirs(dir: &Path) -> Vec<PathBuf> {
    [dir.join("share/tsearch_data"), dir.join("tsearch_data")]
        .into_iter()
        .filter(|d| !file_names(d).is_empty())
        .collect()
}
