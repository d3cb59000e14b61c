//! Every copy of every extension and library along the path, in precedence order.
//!
//! Precedence: path elements in order (`$system` where listed, last when left out), then the
//! images the operator named in the core settings; within a prefix the directory named after the
//! extension (or library) first — a top-level one before a nested one — then the others by path
//! (a nested image right after its parent); within one directory the RFC control file before an
//! image's `share/extension/`. The first copy wins; later copies are shadowed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::dfmgr;
use crate::path::{Element, OperatorImage, SearchPath};
use crate::problem::Problem;
use crate::scan::{self, Found, SystemDirs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layout {
    /// `<prefix>/<ext>/<ext>.control`, `sql/`, `lib/`
    Rfc,
    /// `<prefix>/<image>/share/extension/`, `lib/`
    Cnpg,
    /// PostgreSQL's own directories
    System,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Rfc => "rfc",
            Layout::Cnpg => "cnpg",
            Layout::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionCopy {
    pub name: String,
    pub layout: Layout,
    /// Position of the path element it was found under.
    pub element: usize,
    /// The prefix, `None` for `$system`.
    pub prefix: Option<PathBuf>,
    /// The extension's or image's directory (`$system`: the share/extension directory).
    pub dir: PathBuf,
    pub control_file: PathBuf,
    /// What a relative `directory` in the control file is taken against.
    pub script_base: PathBuf,
    /// Where the scripts are when the control file has no `directory`.
    pub default_script_dir: PathBuf,
    pub lib_dir: Option<PathBuf>,
    /// Found in a nested image (`<prefix>/<image>/<sub>/`).
    pub nested: bool,
}

impl ExtensionCopy {
    /// Reads and parses this copy's control file (not validated: see [`crate::usable`]).
    pub fn read_control(&self) -> Result<crate::control::ControlFile, crate::control::ReadError> {
        crate::control::read(&self.control_file).map(|(_, control)| control)
    }

    /// Where PostgreSQL will read this copy's scripts from: `directory` from the control file,
    /// absolute or relative to the image's `share/` (CloudNativePG) or the extension's directory
    /// (RFC). In the RFC layout a relative `directory` that does not exist there is what the
    /// control file meant for a classic install (`sharedir/<directory>`): `sql/` is used instead.
    pub fn script_directory(&self, control: &crate::control::ControlFile) -> PathBuf {
        let dir = control.script_directory(&self.script_base, &self.default_script_dir);
        let relative = control.get("directory").is_some_and(|d| !Path::new(d).is_absolute());
        if self.layout == Layout::Rfc && relative && !dir.is_dir() { self.default_script_dir.clone() } else { dir }
    }

    fn eponymous(&self) -> bool {
        self.layout != Layout::Cnpg || self.dir.file_name().is_some_and(|d| d == self.name.as_str())
    }
}

/// A directory under a prefix: an RFC extension directory or an image; a nested image in one;
/// or an image the operator named in the core settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub dir: PathBuf,
    pub element: usize,
    /// The prefix it is under (an operator's image: the image itself): trust is checked from it.
    pub prefix: PathBuf,
    pub source: ImageSource,
}

/// How an image was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A directory of a prefix.
    Prefix,
    /// A subdirectory of another image, one level deep.
    Nested,
    /// An element of `extension_control_path` / `dynamic_library_path` the operator set.
    Setting,
}

impl ImageSource {
    pub fn is_nested(&self) -> bool {
        matches!(self, ImageSource::Nested)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ImageSource::Prefix => "prefix",
            ImageSource::Nested => "nested",
            ImageSource::Setting => "setting",
        }
    }
}

impl Image {
    /// Where its libraries are: `lib/` (modules and bundled libraries) and `system/`
    /// (libraries the base system lacks, as in CloudNativePG's PostGIS image).
    pub fn library_dirs(&self) -> [PathBuf; 2] {
        [self.dir.join("lib"), self.dir.join("system")]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryCopy {
    pub file_name: OsString,
    pub path: PathBuf,
    pub element: usize,
    pub prefix: Option<PathBuf>,
    /// The image or extension directory holding `lib/` (`$system`: pkglibdir).
    pub dir: PathBuf,
    /// Found in a nested image.
    pub nested: bool,
}

impl LibraryCopy {
    /// `postgis-3.so` belongs to directory `postgis-3`; `libgeos_c.so.1` to `libgeos_c`.
    fn eponymous(&self) -> bool {
        let stem = self.file_name.as_encoded_bytes().split(|b| *b == b'.').next().unwrap_or_default();
        self.dir.file_name().is_some_and(|d| d.as_encoded_bytes() == stem)
    }
}

#[derive(Debug, Clone)]
pub struct Index {
    pub path: SearchPath,
    /// Every directory under a prefix, in precedence order (path order, then name).
    pub images: Vec<Image>,
    /// Sorted by name, then precedence: the first copy of a name wins.
    pub extensions: Vec<ExtensionCopy>,
    /// Sorted by file name, then precedence.
    pub libraries: Vec<LibraryCopy>,
    /// Path problems first, then what the scan met, in path order.
    pub problems: Vec<Problem>,
    /// Modification times of the directories whose entries decide which images exist (each
    /// prefix, `$system`'s extension and library directories), taken before the scan.
    pub fingerprint: Vec<(PathBuf, Option<std::time::SystemTime>)>,
    pub system: SystemDirs,
    /// What reading each extension copy's files tells (see [`Index::details`]), once.
    details: std::sync::OnceLock<Vec<CopyDetails>>,
}

/// What an extension copy's control file and script directory say, in [`Index::extensions`]
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyDetails {
    pub control: Result<crate::control::ControlFile, crate::control::ReadError>,
    pub script_directory: Option<PathBuf>,
    pub default_version: Option<String>,
    /// Installable versions, directly or along update scripts.
    pub versions: Option<Vec<String>>,
    /// Where `module_pathname` resolves: the copy's own `lib/`, else the winning library of
    /// that name along the path, else pkglibdir.
    pub modules: Option<Vec<PathBuf>>,
}

impl Index {
    /// Scans every element of `path`.
    pub fn build(path: &SearchPath, system: &SystemDirs) -> Index {
        let fingerprint = fingerprint(path, system);
        let mut found = Found::default();
        for (i, element) in path.elements.iter().enumerate() {
            match element {
                Element::System => scan::scan_system(i, system, &mut found),
                Element::Prefix(prefix) => scan::scan_prefix(i, prefix, &mut found),
                Element::Operator(image) => scan::scan_operator(i, image, &mut found),
            }
        }
        let Found { images, mut extensions, mut libraries, problems: scan_problems, .. } = found;
        extensions.sort_by(|a, b| {
            (a.name.as_str(), a.element, !a.eponymous(), a.nested, a.dir.as_path(), a.layout).cmp(&(
                b.name.as_str(),
                b.element,
                !b.eponymous(),
                b.nested,
                b.dir.as_path(),
                b.layout,
            ))
        });
        // The operator's images are searched by PostgreSQL in dynamic_library_path's order,
        // which may differ from extension_control_path's (the order of the elements).
        let library_rank = |element: usize| match &path.elements[element] {
            Element::Operator(image) => (path.elements.len(), image.library_rank.unwrap_or(usize::MAX)),
            _ => (element, 0),
        };
        libraries.sort_by(|a, b| {
            (&a.file_name, library_rank(a.element), !a.eponymous(), a.nested, &a.dir).cmp(&(
                &b.file_name,
                library_rank(b.element),
                !b.eponymous(),
                b.nested,
                &b.dir,
            ))
        });
        let (system_rank, libdir_rank) = path.operator_ranks;
        let control_rank = |c: &ExtensionCopy| operator_rank(path, c.element, |i| i.control_rank);
        put_operator_first(
            &mut extensions,
            |c| c.name.as_str(),
            |c| c.layout == Layout::System,
            control_rank,
            system_rank,
        );
        let in_system = |l: &LibraryCopy| matches!(path.elements[l.element], Element::System);
        let rank = |l: &LibraryCopy| operator_rank(path, l.element, |i| i.library_rank);
        put_operator_first(&mut libraries, |l| l.file_name.as_os_str(), in_system, rank, libdir_rank);
        let mut problems = path.problems.clone();
        problems.extend(scan_problems);
        Index {
            path: path.clone(),
            images,
            extensions,
            libraries,
            problems,
            fingerprint,
            system: system.clone(),
            details: std::sync::OnceLock::new(),
        }
    }

    /// Reads every copy's control file and script directory, the first time it is asked
    /// (then kept with the index: images are immutable; `rescan()` and reloads make new ones).
    pub fn details(&self) -> &[CopyDetails] {
        self.details.get_or_init(|| self.extensions.iter().map(|copy| self.read_details(copy)).collect())
    }

    fn read_details(&self, copy: &ExtensionCopy) -> CopyDetails {
        let control = copy.read_control();
        let ok = control.as_ref().ok();
        let script_directory = ok.map(|c| copy.script_directory(c));
        CopyDetails {
            default_version: ok.and_then(|c| c.default_version().map(String::from)),
            versions: script_directory.as_ref().map(|d| crate::versions::Versions::scan(&copy.name, d).available()),
            modules: ok.and_then(|c| c.module_pathname()).map(|m| self.module_paths(copy, m)),
            script_directory,
            control,
        }
    }

    fn module_paths(&self, copy: &ExtensionCopy, module: &str) -> Vec<PathBuf> {
        // The copy's own lib/ (and the catalog) serve simple names only: a name with a directory
        // in it is loaded as it is, with $libdir substituted.
        let bare = dfmgr::strip_libdir(module);
        let candidates = if bare.contains('/') { Vec::new() } else { dfmgr::candidates(bare).to_vec() };
        let own = copy.lib_dir.iter().flat_map(|d| candidates.iter().map(move |c| d.join(c)));
        let pkglib = self.system.lib_dir.to_string_lossy();
        let system = dfmgr::candidates(module).into_iter().filter_map(|c| {
            if c.contains('/') {
                dfmgr::substitute_libdir(&c, &pkglib).map(PathBuf::from)
            } else {
                Some(self.system.lib_dir.join(c))
            }
        });
        own.chain(self.find_library(module).map(|l| l.path.clone()))
            .chain(system)
            .find(|p| p.is_file())
            .into_iter()
            .collect()
    }

    /// Whether a scan of the same path would find the same images: no prefix (nor `$system`)
    /// gained or lost an entry since this index was built. One stat per directory. Files added
    /// inside an existing image directory are not seen this way (images are immutable; for
    /// plain directories, a reload or `rescan()` picks them up).
    pub fn is_current(&self) -> bool {
        self.fingerprint.iter().all(|(dir, seen)| modified(dir) == *seen)
    }

    /// Every copy of `name`, the winner first.
    pub fn copies(&self, name: &str) -> &[ExtensionCopy] {
        &self.extensions[self.copy_range(name)]
    }

    /// Where the copies of `name` are in [`Index::extensions`] (and [`Index::details`]).
    pub fn copy_range(&self, name: &str) -> std::ops::Range<usize> {
        let start = self.extensions.partition_point(|c| c.name.as_str() < name);
        start..start + self.extensions[start..].partition_point(|c| c.name == name)
    }

    /// The copy of `name` that PostgreSQL will use.
    pub fn resolve(&self, name: &str) -> Option<&ExtensionCopy> {
        self.copies(name).first()
    }

    /// The winning copy of every extension name.
    pub fn winners(&self) -> impl Iterator<Item = &ExtensionCopy> {
        winners_by(&self.extensions, |c| c.name.as_str())
    }

    /// The winning copy of every library file name.
    pub fn library_winners(&self) -> impl Iterator<Item = &LibraryCopy> {
        winners_by(&self.libraries, |l| l.file_name.as_os_str())
    }

    /// The winning library for a name as PostgreSQL is given it (`x`, `x.so`, `$libdir/x`, or
    /// an absolute path), looked up as PostgreSQL does: the name as given, then with `.so`.
    pub fn find_library(&self, name: &str) -> Option<&LibraryCopy> {
        let bare = dfmgr::strip_libdir(name);
        if bare.contains('/') {
            return self.libraries.iter().find(|l| l.path == Path::new(bare));
        }
        dfmgr::candidates(bare)
            .into_iter()
            .find_map(|candidate| self.library_winners().find(|l| l.file_name == candidate.as_str()))
    }

    /// The copy under a prefix that the file at canonical path `real` is, if any: how a file
    /// PostgreSQL is about to load is recognised as one this extension serves (through the
    /// catalog, an operator's element or an absolute path). `$system`'s files are not.
    pub fn served_library(&self, real: &Path) -> Option<&LibraryCopy> {
        let name = real.file_name()?;
        let start = self.libraries.partition_point(|l| l.file_name.as_os_str() < name);
        self.libraries[start..]
            .iter()
            .take_while(|l| l.file_name.as_os_str() == name)
            .filter(|l| l.prefix.is_some())
            .find(|l| std::fs::canonicalize(&l.path).is_ok_and(|p| p == real))
    }

    /// The prefix `path` lies under (as written, or with its links resolved): where trust is
    /// checked from.
    pub fn prefix_holding(&self, path: &Path) -> Option<PathBuf> {
        self.path.prefix_holding(path)
    }

    /// `lib/` and `system/` of every image, in precedence order: where bundled libraries of
    /// other images are looked for.
    pub fn image_library_dirs(&self) -> Vec<PathBuf> {
        self.images.iter().flat_map(Image::library_dirs).collect()
    }

    /// Whether `copy` is the one that wins for its name.
    pub fn is_winner(&self, copy: &ExtensionCopy) -> bool {
        self.resolve(&copy.name) == Some(copy)
    }
}

/// The canonical path of the file PostgreSQL's `loader` opens for library `name` (`x`, `x.so`,
/// `$libdir/x`, an absolute path) along `dynamic_library_path`, when that file is a library copy
/// under a prefix of `path` (reached through a catalog, an operator's element or an absolute
/// path); `None` for anything else, which is PostgreSQL's to load or report. The index is asked
/// for only when needed: a file reached through a catalog under `catalogs` (a generation's
/// `lib/`, which links winning library copies only) and lying under one of `path`'s prefixes is
/// served, and a file in pkglibdir that no prefix holds is not, both known without one.
pub fn served_file<I: std::ops::Deref<Target = Index>>(
    name: &str,
    loader: dfmgr::Loader,
    dynamic_library_path: &str,
    path: &SearchPath,
    pkglib: &Path,
    catalogs: &Path,
    index: impl FnOnce() -> I,
) -> Option<PathBuf> {
    let file = dfmgr::expand(name, loader, dynamic_library_path, pkglib, &dfmgr::pg_file_exists)?;
    if let Some(real) = crate::catalog::served_through(catalogs, &file)
        && path.prefix_holding(&real).is_some()
    {
        return Some(real);
    }
    let real = std::fs::canonicalize(file).ok()?;
    if let Ok(pkglib) = std::fs::canonicalize(pkglib)
        && real.starts_with(&pkglib)
        && !path
            .prefixes()
            .any(|p| pkglib.starts_with(p) || std::fs::canonicalize(p).is_ok_and(|p| pkglib.starts_with(p)))
    {
        // $system's own (or below it, as $libdir/plugins): never a copy under a prefix
        return None;
    }
    index().served_library(&real).is_some().then_some(real)
}

/// `LOAD '$libdir/x'`: PostgreSQL looks only in pkglibdir for it. When `x` is not there but an
/// image provides it (found as a C function's `$libdir/x` would be), the real path of the
/// image's file, for the statement to load instead (the index asked for only when needed, see
/// [`served_file`]).
pub fn load_target<I: std::ops::Deref<Target = Index>>(
    filename: &str,
    dynamic_library_path: &str,
    path: &SearchPath,
    pkglib: &Path,
    catalogs: &Path,
    index: impl FnOnce() -> I,
) -> Option<PathBuf> {
    if dfmgr::strip_libdir(filename) == filename {
        return None;
    }
    if dfmgr::expand(filename, dfmgr::Loader::File, dynamic_library_path, pkglib, &dfmgr::pg_file_exists).is_some() {
        return None;
    }
    served_file(filename, dfmgr::Loader::Function, dynamic_library_path, path, pkglib, catalogs, index)
}

fn modified(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// What tells whether the images under `path` changed, without reading them: the modification
/// time of each prefix (and of `$system`'s two directories). An image added, removed or renamed
/// changes it; files changed inside an image do not (images are immutable).
pub fn fingerprint(path: &SearchPath, system: &SystemDirs) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let mut dirs = Vec::new();
    for element in &path.elements {
        match element {
            Element::System => {
                dirs.push(system.extension_dir.clone());
                dirs.push(system.lib_dir.clone());
            }
            Element::Prefix(p) => dirs.push(p.clone()),
            Element::Operator(image) => dirs.push(image.dir.clone()),
        }
    }
    dirs.into_iter()
        .map(|d| {
            let m = modified(&d);
            (d, m)
        })
        .collect()
}

/// Where element `element` stands in the operator's setting (`rank` of its image), if it is an
/// operator's image.
fn operator_rank(path: &SearchPath, element: usize, rank: impl Fn(&OperatorImage) -> Option<usize>) -> Option<usize> {
    match path.elements.get(element) {
        Some(Element::Operator(image)) => rank(image),
        _ => None,
    }
}

/// PostgreSQL's order where our catalog does not decide: for a name whose first copy along our
/// path is `$system`'s (`is_system`), our catalog serves nothing and PostgreSQL searches the
/// operator's elements in order — an operator's image listed before `$system` (`system_rank`;
/// `$libdir` for libraries) wins. That copy is moved to the front of its name's copies.
fn put_operator_first<T, K: PartialEq + ?Sized>(
    sorted: &mut [T],
    key: impl Fn(&T) -> &K,
    is_system: impl Fn(&T) -> bool,
    rank: impl Fn(&T) -> Option<usize>,
    system_rank: Option<usize>,
) {
    let mut start = 0;
    while start < sorted.len() {
        let end = start + sorted[start..].iter().take_while(|c| key(c) == key(&sorted[start])).count();
        if is_system(&sorted[start]) {
            let before = |r: usize| system_rank.is_none_or(|s| r < s);
            let first = (start + 1..end).filter_map(|i| rank(&sorted[i]).filter(|r| before(*r)).map(|r| (r, i))).min();
            if let Some((_, i)) = first {
                sorted[start..=i].rotate_right(1);
            }
        }
        start = end;
    }
}

fn winners_by<'a, T, K: PartialEq + ?Sized + 'a>(
    sorted: &'a [T],
    key: impl Fn(&'a T) -> &'a K,
) -> impl Iterator<Item = &'a T> {
    sorted.iter().enumerate().filter(move |(i, item)| *i == 0 || key(&sorted[i - 1]) != key(item)).map(|(_, c)| c)
}
