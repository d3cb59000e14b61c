//! Libraries bundled in images: what a module needs (`DT_NEEDED`, direct and transitive) and
//! where each need resolves, so the shell can load bundled dependencies first, leaves first, by
//! absolute path — no `LD_LIBRARY_PATH`, rpath or ldconfig.
//!
//! Where a needed soname is looked for, in order (the first hit wins):
//! 1. already loaded in the process (the dynamic loader matches loaded objects by soname);
//! 2. the image of the object that needs it: its `lib/` and `system/` directories — a bundled
//!    copy wins over the system's, as with CloudNativePG's `LD_LIBRARY_PATH=<image>/system`;
//! 3. `$ORIGIN` entries of the object's rpath/runpath, expanded against its real directory;
//! 4. the system loader's directories (`LD_LIBRARY_PATH`, other rpath entries, `/etc/ld.so.conf`,
//!    the defaults): left to the loader, not loaded by us;
//! 5. other images' `lib/` and `system/`, in path precedence (so two images bundling the same
//!    soname resolve by prefix order).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::elf::ElfError;
use crate::path::SearchPath;
use crate::safe_fs::TrustPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// In the image of the object that needs it (or next to it through `$ORIGIN`).
    Bundled(PathBuf),
    /// In another image.
    OtherImage(PathBuf),
    /// Where the system's loader will find it.
    System(PathBuf),
    /// An object of that name is already loaded.
    Loaded,
    NotFound,
}

impl Resolution {
    pub fn kind(&self) -> &'static str {
        match self {
            Resolution::Bundled(_) => "bundled",
            Resolution::OtherImage(_) => "other image",
            Resolution::System(_) => "system",
            Resolution::Loaded => "already loaded",
            Resolution::NotFound => "not found",
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Resolution::Bundled(p) | Resolution::OtherImage(p) | Resolution::System(p) => Some(p),
            Resolution::Loaded | Resolution::NotFound => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub soname: String,
    pub needed_by: PathBuf,
    pub resolution: Resolution,
    /// Directories looked in, for messages.
    pub searched: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bundled libraries to load, leaves first, by absolute path, before the module itself.
    pub load_order: Vec<PathBuf>,
    /// Every need met on the way, in discovery order.
    pub dependencies: Vec<Dependency>,
}

impl Plan {
    pub fn missing(&self) -> impl Iterator<Item = &Dependency> {
        self.dependencies.iter().filter(|d| d.resolution == Resolution::NotFound)
    }
}

/// What a plan is computed against.
#[derive(Debug, Clone, Default)]
pub struct LibraryContext {
    /// `lib/` and `system/` of every image, in path precedence.
    pub image_dirs: Vec<PathBuf>,
    /// The system loader's directories ([`system_library_dirs`]).
    pub system_dirs: Vec<PathBuf>,
    /// File names and sonames of objects already loaded in the process.
    pub loaded: HashSet<String>,
}

/// The `lib/` and `system/` directories of the image holding `file` (`<image>/lib/x.so`), or
/// just its directory when it is not in such a layout.
pub fn image_library_dirs(file: &Path) -> Vec<PathBuf> {
    let Some(dir) = file.parent() else { return Vec::new() };
    match (dir.file_name().and_then(|n| n.to_str()), dir.parent()) {
        (Some("lib" | "system"), Some(image)) => vec![image.join("lib"), image.join("system")],
        _ => vec![dir.to_path_buf()],
    }
}

/// Works out what loading `module` needs. Fails only when `module` itself cannot be read.
pub fn plan(module: &Path, ctx: &LibraryContext) -> Result<Plan, ElfError> {
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    visit(module, ctx, &mut seen, &mut plan, 0)?;
    Ok(plan)
}

const MAX_DEPTH: usize = 64;

fn visit(
    object: &Path,
    ctx: &LibraryContext,
    seen: &mut HashSet<String>,
    plan: &mut Plan,
    depth: usize,
) -> Result<(), ElfError> {
    let info = crate::elf::read_dynamic(object)?;
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let real_dir = fs::canonicalize(object).ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let own = image_library_dirs(object);
    let mut origin = Vec::new();
    let mut rpath = Vec::new();
    for entry in &info.search_paths {
        if entry.contains("$ORIGIN") || entry.contains("${ORIGIN}") {
            if let Some(real) = &real_dir {
                let real = real.to_string_lossy();
                origin.push(PathBuf::from(entry.replace("${ORIGIN}", &real).replace("$ORIGIN", &real)));
            }
        } else {
            rpath.push(PathBuf::from(entry));
        }
    }
    for soname in &info.needed {
        if !seen.insert(soname.clone()) {
            continue;
        }
        let mut searched = Vec::new();
        let resolution = if ctx.loaded.contains(soname) {
            Resolution::Loaded
        } else if let Some(p) = find(soname, own.iter().chain(&origin), &mut searched) {
            Resolution::Bundled(p)
        } else if let Some(p) = find(soname, rpath.iter().chain(&ctx.system_dirs), &mut searched) {
            Resolution::System(p)
        } else if let Some(p) = find(soname, ctx.image_dirs.iter(), &mut searched) {
            Resolution::OtherImage(p)
        } else {
            Resolution::NotFound
        };
        if let Resolution::Bundled(p) | Resolution::OtherImage(p) = &resolution {
            visit(p, ctx, seen, plan, depth + 1)?;
            plan.load_order.push(p.clone());
        }
        plan.dependencies.push(Dependency {
            soname: soname.clone(),
            needed_by: object.to_path_buf(),
            resolution,
            searched,
        });
    }
    Ok(())
}

fn find<'a>(soname: &str, dirs: impl Iterator<Item = &'a PathBuf>, searched: &mut Vec<PathBuf>) -> Option<PathBuf> {
    if soname.contains('/') {
        return None;
    }
    for dir in dirs {
        if !searched.contains(dir) {
            searched.push(dir.clone());
        }
        let candidate = dir.join(soname);
        if fs::metadata(&candidate).map(|m| m.is_file()).unwrap_or(false) {
            return Some(candidate);
        }
    }
    None
}

/// Why a library served from a prefix cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibraryRefusal {
    /// The library, or a bundled library it needs, is not trusted.
    #[error("\"{}\" is not trusted: {why}", .file.display())]
    NotTrusted { file: PathBuf, why: String },
    /// It cannot be read as a shared object.
    #[error(transparent)]
    NotALibrary(#[from] ElfError),
    /// A library it needs is nowhere: not loaded, not bundled, not on the system, in no image.
    #[error("\"{}\" needs \"{soname}\", which was not found", .needed_by.display())]
    MissingDependency { soname: String, needed_by: PathBuf, searched: Vec<PathBuf> },
    /// The dynamic loader refused a bundled library (found by the shell, which loads them).
    #[error("\"{}\": {message}", .file.display())]
    LoadFailed { file: PathBuf, message: String },
}

/// What loading the library at `real` (a canonical path, a copy under a prefix of `path`)
/// takes: every file it would load trusted (when `policy` enforces trust) and every need met —
/// in its own image or on the system, else in the other images (`other_images`: `lib/` and
/// `system/` of every image, in precedence order; asked only then). The bundled libraries to
/// load first, leaves first.
pub fn plan_loading(
    real: &Path,
    path: &SearchPath,
    other_images: impl FnOnce() -> Vec<PathBuf>,
    policy: &TrustPolicy,
    system_dirs: Vec<PathBuf>,
    loaded: HashSet<String>,
) -> Result<Plan, LibraryRefusal> {
    let trusted = |file: &Path| {
        let top = path.trust_top(file).unwrap_or_else(|| file.parent().unwrap_or(file).to_path_buf());
        policy
            .refuses(&top, file)
            .map_or(Ok(()), |why| Err(LibraryRefusal::NotTrusted { file: file.to_path_buf(), why }))
    };
    trusted(real)?;
    let mut ctx = LibraryContext { image_dirs: Vec::new(), system_dirs, loaded };
    let mut result = plan(real, &ctx);
    if result.as_ref().is_ok_and(|p| p.missing().next().is_some()) {
        // Not in its own image nor on the system: look in the other images too.
        ctx.image_dirs = other_images();
        result = plan(real, &ctx);
    }
    let plan = result?;
    if let Some(missing) = plan.missing().next() {
        return Err(LibraryRefusal::MissingDependency {
            soname: missing.soname.clone(),
            needed_by: missing.needed_by.clone(),
            searched: missing.searched.clone(),
        });
    }
    for file in &plan.load_order {
        trusted(file)?;
    }
    Ok(plan)
}

/// The directories the system's dynamic loader searches: `LD_LIBRARY_PATH`, `/etc/ld.so.conf`
/// (with its `include`s) and the defaults.
pub fn system_library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(value) = std::env::var("LD_LIBRARY_PATH") {
        dirs.extend(value.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    for default in ["/lib", "/usr/lib", "/lib64", "/usr/lib64"] {
        dirs.push(PathBuf::from(default));
    }
    let mut unique = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

fn read_ld_so_conf(file: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = fs::read_to_string(file) else { return };
    if depth > 8 {
        return;
    }
    let base = file.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include").filter(|_| line.starts_with("include ")) {
            for pattern in pattern.split_whitespace() {
                for included in glob_files(&base.join(pattern)) {
                    read_ld_so_conf(&included, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// The files matching `pattern`, where only the last component may hold `*`s; sorted.
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let parts: Vec<&str> = name.split('*').collect();
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard_match(&parts, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn wildcard_match(parts: &[&str], name: &str) -> bool {
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, n: &str| wildcard_match(&p.split('*').collect::<Vec<_>>(), n);
        assert!(m("*.conf", "x86_64-linux-gnu.conf"));
        assert!(!m("*.conf", "x.conf.bak"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(!m("ab*ba", "aba"));
    }

    #[test]
    fn image_dirs_of_a_file() {
        assert_eq!(
            image_library_dirs(Path::new("/e/postgis/lib/postgis-3.so")),
            [PathBuf::from("/e/postgis/lib"), PathBuf::from("/e/postgis/system")]
        );
        assert_eq!(image_library_dirs(Path::new("/opt/plugins/x.so")), [PathBuf::from("/opt/plugins")]);
    }

    #[test]
    fn system_dirs_include_the_multiarch_directory() {
        let dirs = system_library_dirs();
        assert!(dirs.iter().any(|d| d.join("libc.so.6").exists()), "{dirs:?}");
    }
}

/// The names under which the dynamic loader knows the objects loaded in this process: each one's
/// `DT_SONAME` (read from its dynamic section in memory) and the file name it was loaded from. The
/// loader matches a `DT_NEEDED` entry against both before searching any directory, so a library
/// named here is never loaded a second time (a system `libz.so.1` is mapped from
/// `libz.so.1.2.13`: its file name alone would not say so).
///
/// The names of each object are remembered by its load address, program headers and path, while
/// the loader's count of unloaded objects (`dlpi_subs`) is unchanged: a process forked after a
/// first call — every backend, after the postmaster's — reads only the objects loaded since, not
/// the dynamic sections of every library again (pages of theirs it would otherwise fault in).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn loaded_sonames() -> HashSet<String> {
    use std::collections::HashMap;
    use std::ffi::{CStr, c_int, c_void};
    use std::sync::Mutex;

    /// The names of each object seen, by load address and program headers, with a hash of the
    /// path it was loaded from; and the unload count they hold under.
    type Key = (usize, usize);
    type Seen = (u64, Vec<String>);
    type Objects = HashMap<Key, Seen>;
    static SEEN: Mutex<Option<(u64, Objects)>> = Mutex::new(None);

    struct Walk<'a> {
        /// What was seen before, if it still holds (no object unloaded since).
        known: Option<&'a (u64, Objects)>,
        subs: u64,
        /// The names of every object loaded now.
        names: HashSet<String>,
        /// Objects not seen before, to remember.
        new: Vec<(Key, Seen)>,
    }

    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }
    const DT_NULL: i64 = 0;
    const DT_STRTAB: i64 = 5;
    const DT_SONAME: i64 = 14;

    /// The file name and soname of the object `info` describes.
    ///
    /// # Safety
    /// `info` is what the loader passed to a `dl_iterate_phdr` callback, during the call.
    unsafe fn names_of(info: &libc::dl_phdr_info) -> Vec<String> {
        let mut names = Vec::new();
        // SAFETY: the object's name, program headers, dynamic section and string table are
        // mapped for as long as the object is loaded, which it is during the callback.
        unsafe {
            if !info.dlpi_name.is_null() {
                let path = CStr::from_ptr(info.dlpi_name).to_string_lossy();
                if let Some(file) = std::path::Path::new(path.as_ref()).file_name() {
                    names.push(file.to_string_lossy().into_owned());
                }
            }
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else { return names };
            let mut entry = (info.dlpi_addr + dynamic.p_vaddr) as *const Dyn;
            let (mut strtab, mut soname) = (None, None);
            while (*entry).tag != DT_NULL {
                match (*entry).tag {
                    DT_STRTAB => strtab = Some((*entry).val),
                    DT_SONAME => soname = Some((*entry).val),
                    _ => {}
                }
                entry = entry.add(1);
            }
            if let (Some(strtab), Some(soname)) = (strtab, soname) {
                // glibc relocates DT_STRTAB in place; where it does not, it is relative.
                let base = if strtab < info.dlpi_addr { strtab + info.dlpi_addr } else { strtab };
                let name = CStr::from_ptr((base + soname) as *const std::ffi::c_char);
                names.push(name.to_string_lossy().into_owned());
            }
        }
        names
    }

    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut c_void) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for each loaded object while it holds
        // its lock; `data` is the Walk passed below, which outlives the iteration.
        unsafe {
            let walk = &mut *data.cast::<Walk>();
            let info = &*info;
            let key = (info.dlpi_addr as usize, info.dlpi_phdr as usize);
            let path = if info.dlpi_name.is_null() { &[][..] } else { CStr::from_ptr(info.dlpi_name).to_bytes() };
            let mut hash = crate::catalog::Fnv64::default();
            std::hash::Hasher::write(&mut hash, path);
            let path = std::hash::Hasher::finish(&hash);
            walk.subs = info.dlpi_subs;
            // (an object seen with these headers and this path while nothing was unloaded
            // since is the same one; the path is the loader's own copy, in its memory)
            let known = walk
                .known
                .filter(|(subs, _)| *subs == info.dlpi_subs)
                .and_then(|(_, objects)| objects.get(&key))
                .filter(|(seen, _)| *seen == path);
            match known {
                Some((_, names)) => walk.names.extend(names.iter().cloned()),
                None => {
                    let names = names_of(info);
                    walk.names.extend(names.iter().cloned());
                    walk.new.push((key, (path, names)));
                }
            }
            0
        }
    }

    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut walk = Walk { known: seen.as_ref(), subs: 0, names: HashSet::new(), new: Vec::new() };
    // SAFETY: `each` only reads what the loader hands it and writes into `walk`, which outlives
    // the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut walk).cast()) };
    let (subs, names, new) = (walk.subs, walk.names, walk.new);
    match seen.as_mut() {
        // nothing unloaded since: what was seen still holds, the new objects are added
        Some((seen_subs, objects)) if *seen_subs == subs => objects.extend(new),
        _ => *seen = Some((subs, new.into_iter().collect())),
    }
    names
}

#[cfg(test)]
mod loaded_tests {
    #[test]
    fn the_loader_s_own_names_are_found() {
        let names = super::loaded_sonames();
        // this test binary links the C library under its soname
        assert!(names.contains("libc.so.6"), "{names:?}");
    }
}
