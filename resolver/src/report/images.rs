//! `images()`: one row per directory under each prefix.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::index::{ExtensionCopy, Image, Index, Layout};
use crate::mounts::{Mount, mount_of};

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
    /// Why the file cannot be read, or (`META.json`) is no valid PGXN Meta Spec file.
    pub metadata_error: Option<String>,
    /// How the image was reached: `prefix`, `nested` (in another image), `setting` (an
    /// operator's element of `extension_control_path` / `dynamic_library_path`).
    pub source: &'static str,
    /// The modules its `META.json` declares for preloading: `name (server)`.
    pub declared_preload: Vec<String>,
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
    let (metadata_file, metadata, mut metadata_error) = read_metadata(&image.dir);
    // A META.json read as the metadata file is validated from what was read; one beside a
    // trunk.json is read for what it declares.
    let is_meta = metadata_file.as_deref().is_some_and(|f| f.ends_with(crate::meta::META_FILE));
    let declared = match (is_meta, &metadata) {
        (true, Some(json)) => Some(crate::meta::declare(json.clone())),
        (true, None) => None, // not JSON: metadata_error says why
        (false, _) => crate::meta::read(&image.dir).map(|m| m.declared),
    };
    let mut declared_preload = Vec::new();
    match declared {
        Some(Ok(declared)) => {
            for module in declared.modules {
                if let Some(preload) = module.preload {
                    declared_preload.push(format!("{} ({})", module.name, preload.as_str()));
                }
            }
        }
        Some(Err(invalid)) if is_meta => metadata_error = Some(invalid),
        _ => {}
    }
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
        source: image.source.as_str(),
        declared_preload,
    }
}

/// The regular files in `dir`, sorted by name.
pub(super) fn file_names(dir: &Path) -> Vec<String> {
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
