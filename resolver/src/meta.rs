//! What an image says of itself: `META.json` at its root (PGXN Meta Spec v1 or v2), read and
//! validated with the `pgxn_meta` crate, and what follows from it for this server — whether
//! the PostgreSQL versions and platforms it declares admit this one, and which of its modules
//! it asks to be preloaded (`contents.modules.<name>.preload`: `server` or `session`).

use std::path::{Path, PathBuf};

use crate::dfmgr;
use crate::index::Index;
use crate::safe_fs::TrustPolicy;
use crate::usable::library_distrust;

/// The file looked for at an image's root (and at an RFC extension directory's root).
pub const META_FILE: &str = "META.json";

/// A `META.json` found at an image's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub file: PathBuf,
    /// What it declares, or why it is not a valid PGXN `META.json`.
    pub declared: Result<Declared, String>,
}

/// What a valid `META.json` declares (the parts this server acts on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub version: String,
    /// The Meta Spec version it follows (`1.0.0`, `2.0.0`).
    pub spec: String,
    /// `dependencies.postgres.version`: a version range (`>= 14, < 19`).
    pub postgres: Option<String>,
    /// `dependencies.platforms` (`linux`, `linux-amd64`, `darwin-23.5.0-arm64`, `any`).
    pub platforms: Vec<String>,
    /// `contents.modules`, by name.
    pub modules: Vec<DeclaredModule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Preload {
    /// Into every server process, at start (`shared_preload_libraries`).
    Server,
    /// Into every session, at its start (`session_preload_libraries`).
    Session,
}

impl Preload {
    pub fn as_str(self) -> &'static str {
        match self {
            Preload::Server => "server",
            Preload::Session => "session",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredModule {
    pub name: String,
    /// `extension`, `hook` or `bgw`.
    pub kind: String,
    pub preload: Option<Preload>,
    /// `lib` as written: the shared object's path in the distribution, without suffix.
    pub lib: String,
}

impl DeclaredModule {
    /// The library's name as PostgreSQL is given it (the file name without `.so`).
    pub fn library_name(&self) -> &str {
        let file = self.lib.rsplit('/').next().unwrap_or(&self.lib);
        file.strip_suffix(dfmgr::DLSUFFIX).unwrap_or(file)
    }
}

/// Reads `<dir>/META.json`: `None` when there is none.
pub fn read(dir: &Path) -> Option<Meta> {
    let file = dir.join(META_FILE);
    if !std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let declared = crate::safe_fs::read_regular(&file, crate::safe_fs::MAX_TEXT_FILE)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string()))
        .and_then(declare);
    Some(Meta { file, declared })
}

/// What the parsed `META.json` `json` declares, or why it is not valid PGXN metadata.
pub fn declare(json: serde_json::Value) -> Result<Declared, String> {
    validate(json).map(|dist| declared(&dist))
}

/// Validates with `pgxn_meta`, whose panics on some malformed files (a `meta-spec` version
/// starting with a multi-byte character) are an invalid file here, never a failure.
fn validate(json: serde_json::Value) -> Result<pgxn_meta::dist::Distribution, String> {
    if json.pointer("/meta-spec/version").and_then(|v| v.as_str()).is_some_and(|v| !v.is_ascii()) {
        return Err("meta-spec version is not a version".into());
    }
    let validated = std::panic::catch_unwind(move || pgxn_meta::dist::Distribution::try_from(json));
    match validated {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("not valid PGXN metadata (the validator gave up on it)".into()),
    }
}

fn declared(dist: &pgxn_meta::dist::Distribution) -> Declared {
    use pgxn_meta::dist::Preload as P;
    let mut modules: Vec<DeclaredModule> = dist
        .contents()
        .modules()
        .into_iter()
        .flatten()
        .map(|(name, module)| DeclaredModule {
            name: name.clone(),
            kind: module.kind().to_string(),
            preload: module.preload().map(|p| match p {
                P::Server => Preload::Server,
                P::Session => Preload::Session,
            }),
            lib: module.lib().as_str().to_string(),
        })
        .collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let dependencies = dist.dependencies();
    Declared {
        name: dist.name().to_string(),
        version: dist.version().to_string(),
        spec: dist.spec().version().to_string(),
        postgres: dependencies.and_then(|d| d.postgres()).map(|p| p.version().to_string()),
        platforms: dependencies.and_then(|d| d.platforms()).map(<[String]>::to_vec).unwrap_or_default(),
        modules,
    }
}

/// This server, as `META.json` ranges and platforms name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisServer {
    /// `server_version_num`: 180006 is 18.6.
    pub version_num: u32,
    /// `linux`
    pub os: &'static str,
    /// `amd64`, `arm64`, … (Go's names, as PGXN uses them) and the machine's own (`x86_64`).
    pub arch: &'static [&'static str],
}

impl ThisServer {
    pub fn new(version_num: u32) -> ThisServer {
        let arch: &'static [&'static str] = match std::env::consts::ARCH {
            "x86_64" => &["amd64", "x86_64"],
            "aarch64" => &["arm64", "aarch64"],
            "x86" => &["386", "i386", "x86"],
            "powerpc64" => &["ppc64le", "ppc64", "powerpc64"],
            "s390x" => &["s390x"],
            "riscv64" => &["riscv64"],
            _ => &[],
        };
        ThisServer { version_num, os: std::env::consts::OS, arch }
    }

    fn version(&self) -> [u64; 3] {
        let n = u64::from(self.version_num);
        [n / 10000, n % 10000, 0]
    }
}

impl Declared {
    /// Why this image is not meant for `server` (its PostgreSQL version range or its platforms
    /// exclude it), if so.
    pub fn excludes(&self, server: &ThisServer) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(range) = &self.postgres {
            match admits(range, server.version()) {
                Ok(true) => {}
                Ok(false) => why.push(format!(
                    "it declares PostgreSQL \"{range}\"; this server is {}.{}",
                    server.version_num / 10000,
                    server.version_num % 10000
                )),
                Err(e) => why.push(format!("its PostgreSQL version range \"{range}\" cannot be read: {e}")),
            }
        }
        if !self.platforms.is_empty() && !self.platforms.iter().any(|p| platform_admits(p, server)) {
            why.push(format!(
                "it declares the platforms {}; this server runs on {}-{}",
                self.platforms.join(", "),
                server.os,
                server.arch.first().copied().unwrap_or(std::env::consts::ARCH)
            ));
        }
        why
    }
}

/// Whether `platform` (`any`, `linux`, `gnulinux-amd64`, `linux-5.1-arm64`) admits `server`.
/// `gnulinux` and `musllinux` are Linux with that C library: this one is built against glibc.
fn platform_admits(platform: &str, server: &ThisServer) -> bool {
    if platform == "any" {
        return true;
    }
    let mut parts = platform.split('-');
    let os = parts.next().unwrap_or_default();
    let os_ok = os == server.os || (server.os == "linux" && os == "gnulinux" && cfg!(target_env = "gnu"));
    // the last part is the architecture unless it starts with a digit (an OS version)
    let arch = parts.next_back().filter(|p| !p.starts_with(|c: char| c.is_ascii_digit()));
    os_ok && arch.is_none_or(|a| server.arch.contains(&a))
}

/// Whether the PGXN version range `range` (`0` for any; `1.2`, meaning at least; or a
/// comma-separated list of `>=`, `<=`, `>`, `<`, `==`, `!=` comparisons, all of which must hold)
/// admits `version`.
pub fn admits(range: &str, version: [u64; 3]) -> Result<bool, String> {
    let range = range.trim();
    if range == "0" {
        return Ok(true);
    }
    for clause in range.split(',').map(str::trim) {
        let (op, text) = ["==", "!=", ">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| clause.strip_prefix(op).map(|rest| (*op, rest.trim())))
            .unwrap_or((">=", clause));
        let wanted = parse_version(text).ok_or_else(|| format!("\"{clause}\" is not a version comparison"))?;
        let holds = match op {
            "==" => version == wanted,
            "!=" => version != wanted,
            ">=" => version >= wanted,
            "<=" => version <= wanted,
            ">" => version > wanted,
            _ => version < wanted,
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `18`, `18.6`, `18.6.0` (a pre-release or build suffix is ignored) as three numbers.
fn parse_version(text: &str) -> Option<[u64; 3]> {
    let core = text.split(['-', '+']).next()?;
    let mut out = [0; 3];
    let mut parts = core.split('.');
    for slot in &mut out {
        match parts.next() {
            Some(p) => *slot = p.parse().ok()?,
            None => break,
        }
    }
    parts.next().is_none().then_some(out)
}

/// A module an image declares for preloading, and what this server makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredPreload {
    pub image: PathBuf,
    pub module: String,
    pub preload: Preload,
    /// The library as PostgreSQL is given it.
    pub library: String,
    /// The image's file for it, when there is one.
    pub file: Option<PathBuf>,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// To be loaded (from `file`).
    Load,
    /// Left alone: already in `shared_preload_libraries` (or `session_preload_libraries`),
    /// which PostgreSQL loads itself — once.
    Listed(&'static str),
    /// The image has no file for it in `lib/`.
    NoFile,
    /// Another copy of the library wins along the path: loading this one too would give the
    /// server two modules of one name.
    Shadowed(PathBuf),
    /// An earlier image declared the same library.
    Duplicate(PathBuf),
    /// The image's file is not trusted.
    NotTrusted(String),
    /// The image's `META.json` excludes this server.
    Excluded(String),
    /// It cannot be loaded, as its file shows (not a module for this server): found out
    /// without loading it.
    Unloadable(String),
    /// Loading it was tried and failed (set by the shell, which loads).
    Failed(String),
}

impl Decision {
    /// Why it is not loaded, in words (`None` for [`Decision::Load`]).
    pub fn reason(&self) -> Option<String> {
        Some(match self {
            Decision::Load => return None,
            Decision::Listed(setting) => format!("listed in {setting}: PostgreSQL loads it"),
            Decision::NoFile => "the image has no such library in lib/".to_string(),
            Decision::Shadowed(winner) => format!("\"{}\" wins for this library name", winner.display()),
            Decision::Duplicate(image) => format!("already declared by \"{}\"", image.display()),
            Decision::NotTrusted(why) => format!("not trusted: {why}"),
            Decision::Excluded(why) => format!("the image is not for this server: {why}"),
            Decision::Unloadable(why) => format!("it cannot be loaded: {why}"),
            Decision::Failed(why) => format!("loading it failed: {why}"),
        })
    }
}

/// Every module the images of `index` declare for preloading, in path precedence (images in
/// order, modules by name), each with what to do: `listed` holds the names of
/// `shared_preload_libraries` and `session_preload_libraries` (as split by PostgreSQL), which
/// PostgreSQL loads itself; `ourselves` is our own library's name.
pub fn declared_preloads(
    index: &Index,
    metas: &[(PathBuf, Meta)],
    server: &ThisServer,
    listed: &[(&'static str, Vec<String>)],
    policy: &TrustPolicy,
) -> Vec<DeclaredPreload> {
    let mut out: Vec<DeclaredPreload> = Vec::new();
    for (image, meta) in metas {
        let Ok(declared) = &meta.declared else { continue };
        let excluded = declared.excludes(server);
        for module in &declared.modules {
            let Some(preload) = module.preload else { continue };
            let library = module.library_name().to_string();
            // the image's own library of that name, as the index knows it (from its lib/, or
            // the operator's element): trust is then judged as for every library
            let names = dfmgr::candidates(&library);
            let file = index
                .libraries
                .iter()
                .find(|l| l.dir == *image && names.iter().any(|n| l.file_name == n.as_str()))
                .map(|l| l.path.clone());
            let ctx = Context { index, listed, policy, server_major: server.version_num / 10000 };
            let decision = decide(&ctx, &library, file.as_deref(), &excluded, &out);
            out.push(DeclaredPreload {
                image: image.clone(),
                module: module.name.clone(),
                preload,
                library,
                file,
                decision,
            });
        }
    }
    out
}

/// What a decision is taken against.
struct Context<'a> {
    index: &'a Index,
    listed: &'a [(&'static str, Vec<String>)],
    policy: &'a TrustPolicy,
    server_major: u32,
}

fn decide(
    ctx: &Context,
    library: &str,
    file: Option<&Path>,
    excluded: &[String],
    earlier: &[DeclaredPreload],
) -> Decision {
    let Context { index, listed, policy, server_major } = *ctx;
    if !excluded.is_empty() {
        return Decision::Excluded(excluded.join("; "));
    }
    if let Some((setting, _)) = listed.iter().find(|(_, names)| names.iter().any(|n| dfmgr::names_library(n, library)))
    {
        return Decision::Listed(setting);
    }
    let Some(file) = file else { return Decision::NoFile };
    if let Some(first) = earlier.iter().find(|d| d.library == library) {
        return Decision::Duplicate(first.image.clone());
    }
    let real = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    if let Some(winner) = index.find_library(library)
        && std::fs::canonicalize(&winner.path).ok().as_deref() != Some(real.as_path())
    {
        return Decision::Shadowed(winner.path.clone());
    }
    match index.served_library(&real) {
        Some(copy) => {
            if let Some(why) = library_distrust(copy, policy) {
                return Decision::NotTrusted(why);
            }
        }
        None => return Decision::NotTrusted("not a library of an image along the path".into()),
    }
    if real.to_str().is_none() {
        return Decision::Unloadable("its path is not UTF-8".into());
    }
    match preflight(&real, server_major) {
        Ok(()) => Decision::Load,
        Err(why) => Decision::Unloadable(why),
    }
}

/// What PostgreSQL checks of a module before it runs any of its code (`internal_load_library`:
/// a shared object for this machine, with a magic block of this major version), read from the
/// file without loading it: a declared module that fails here is skipped, never loaded. A
/// magic block our reader does not recognise (built with non-default `FUNC_MAX_ARGS`,
/// `INDEX_MAX_KEYS`, `NAMEDATALEN`) is refused too: better not preloaded than refused by
/// PostgreSQL after the dynamic loader ran its constructors.
pub fn preflight(file: &Path, server_major: u32) -> Result<(), String> {
    let info = crate::elf::read_elf(file).map_err(|e| e.to_string())?;
    if info.machine != crate::elf::HOST_MACHINE {
        return Err(format!("built for {}", crate::elf::machine_name(info.machine)));
    }
    if !info.is_pg_module {
        return Err("not a PostgreSQL module (no magic block)".into());
    }
    match info.pg_major {
        Some(major) if major == server_major => Ok(()),
        Some(major) => Err(format!("built for PostgreSQL {major}, this server is {server_major}")),
        None => Err("its magic block is not one this server accepts".into()),
    }
}

/// The `META.json` of every image of `index` that has one, in path precedence.
pub fn metas(index: &Index) -> Vec<(PathBuf, Meta)> {
    index.images.iter().filter_map(|image| read(&image.dir).map(|m| (image.dir.clone(), m))).collect()
}

/// What the images declare, for `check()`.
#[derive(Debug, Clone)]
pub struct Declarations {
    pub server: ThisServer,
    pub metas: Vec<(PathBuf, Meta)>,
    pub preloads: Vec<DeclaredPreload>,
    /// `extension_search_path.preload_declared`: whether the declared preloads are acted on.
    pub acted_on: bool,
}

impl Declarations {
    /// Nothing declared (no image has a `META.json`).
    pub fn none(version_num: u32) -> Declarations {
        Declarations { server: ThisServer::new(version_num), metas: Vec::new(), preloads: Vec::new(), acted_on: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges_as_pgxn_writes_them() {
        let v18_6 = [18, 6, 0];
        for (range, ok) in [
            ("0", true),
            ("14", true),
            ("19", false),
            (">= 14, < 19", true),
            (">= 14.0.0, < 18.0.0", false),
            ("== 18.6", true),
            ("!= 18.6.0", false),
            ("> 18.5", true),
            ("<= 18", false),
            ("18.6.0-beta1", true),
        ] {
            assert_eq!(admits(range, v18_6), Ok(ok), "{range}");
        }
        assert!(admits(">= fourteen", v18_6).is_err());
        assert!(admits("1.2.3.4", v18_6).is_err());
    }

    #[test]
    fn platforms_as_pgxn_writes_them() {
        let amd64 = ThisServer { version_num: 180006, os: "linux", arch: &["amd64", "x86_64"] };
        for (platform, ok) in [
            ("any", true),
            ("linux", true),
            ("linux-amd64", true),
            ("linux-5.10-amd64", true),
            ("linux-arm64", false),
            ("linux-5.10", true),
            ("darwin", false),
            ("gnulinux-amd64", cfg!(target_env = "gnu")),
        ] {
            assert_eq!(platform_admits(platform, &amd64), ok, "{platform}");
        }
    }

    #[test]
    fn module_library_names() {
        let m = |lib: &str| DeclaredModule { name: "x".into(), kind: "hook".into(), preload: None, lib: lib.into() };
        assert_eq!(m("src/pg_stat_statements").library_name(), "pg_stat_statements");
        assert_eq!(m("auto_explain.so").library_name(), "auto_explain");
        assert_eq!(m("pair").library_name(), "pair");
    }
}
