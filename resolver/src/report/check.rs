//! `check()`: everything worth a DBA's attention along the path, one family of findings per
//! function. Whether a copy can be served is decided by [`crate::usable`] (the catalog's own
//! decision); the texts of what it refuses, and their hints, are those of [`crate::problem`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::images::file_names;
use super::{Finding, LibraryReport, Severity};
use crate::elf::{HOST_MACHINE, machine_name};
use crate::index::{ExtensionCopy, Index, Layout};
use crate::meta::{Decision, Declarations};
use crate::problem::{ProblemKind, Unusable};
use crate::safe_fs::TrustPolicy;
use crate::usable::{Usable, library_distrust, usable};
use crate::versions::Versions;

/// Everything worth a DBA's attention along the path, most severe first.
pub fn check(
    index: &Index,
    libraries: &[LibraryReport],
    declarations: &Declarations,
    policy: &TrustPolicy,
) -> Vec<Finding> {
    let server_major = declarations.server.version_num / 10000;
    crate::safe_fs::memo::scope(|| {
        let mut findings = Findings::default();
        findings.path_problems(index);
        for copy in index.extensions.iter().filter(|c| c.layout != Layout::System) {
            findings.extension(index, copy, policy);
        }
        findings.text_search_data(index);
        findings.untrusted_libraries(index, policy);
        for lib in libraries {
            findings.library(lib, server_major);
        }
        findings.library_collisions(libraries);
        findings.declarations(declarations);
        let mut findings = findings.0;
        findings.sort_by_key(|f| f.severity);
        findings
    })
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, severity: Severity, image: Option<&Path>, extension: Option<&str>, message: String, hint: &str) {
        self.0.push(Finding {
            severity,
            image: image.map(Path::to_path_buf),
            extension: extension.map(String::from),
            message,
            hint: hint.to_string(),
        });
    }

    /// Bad elements of the path and directories that could not be scanned.
    fn path_problems(&mut self, index: &Index) {
        for problem in &index.problems {
            self.add(Severity::Warning, None, None, problem.to_string(), problem.kind.hint());
        }
    }

    /// One extension copy: what keeps it out of the catalog, what it cannot install, what
    /// shadows it.
    fn extension(&mut self, index: &Index, copy: &ExtensionCopy, policy: &TrustPolicy) {
        let (image, name) = (Some(copy.dir.as_path()), Some(copy.name.as_str()));
        // Trust is always judged here; with trusted_files_only off, what it refuses is still
        // served, so the rest is checked as served.
        let judged = usable(copy, &TrustPolicy { enforce: true, ..*policy });
        let served = match judged {
            Err(why @ Unusable::NotTrusted(_)) if !policy.enforce => {
                self.unusable(copy, &why, policy);
                usable(copy, policy)
            }
            other => other,
        };
        let Usable { control, scripts, .. } = match served {
            Ok(served) => served,
            Err(why) => return self.unusable(copy, &why, policy),
        };
        let versions = Versions::scan(&copy.name, &scripts);
        if versions.installable.is_empty() && versions.updates.is_empty() && is_a_package_alias(copy) {
            // Listed by PostgreSQL too (pg_available_extensions reads control files only), as
            // from a stock package: Debian's postgis-3.control beside postgis.control.
            return self.add(
                Severity::Notice,
                image,
                name,
                format!(
                    "{} has a control file but no scripts: PostgreSQL lists it, but CREATE EXTENSION cannot install it \
                     (a package's alias control file, such as Debian's postgis-3.control, looks like this)",
                    copy.name
                ),
                "Nothing to do for a package's alias; otherwise ship the extension's scripts beside its control file.",
            );
        }
        match control.default_version() {
            Some(default) if !versions.available().iter().any(|v| v == default) => self.add(
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
                    self.add(
                        Severity::Warning,
                        image,
                        name,
                        format!("no update path to {default} from version(s) {}", gaps.join(", ")),
                        "Installations at those versions cannot ALTER EXTENSION UPDATE; ship the missing update scripts.",
                    );
                }
            }
            None => self.add(
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
            self.add(
                Severity::Notice,
                image,
                name,
                format!("{} here is shadowed by \"{}\" ({})", copy.name, winner.dir.display(), winner.layout.as_str()),
                "The first copy along extension_search_path.path wins; reorder the path or remove a copy.",
            );
        }
    }

    /// Why `copy` is (or, with trust not enforced, would be) left out of the catalog.
    fn unusable(&mut self, copy: &ExtensionCopy, why: &Unusable, policy: &TrustPolicy) {
        let severity = if why.is_trust() && !policy.enforce { Severity::Warning } else { Severity::Error };
        let hint = if why.is_trust() { trust_hint(policy) } else { why.hint() };
        let message = format!("\"{}\": {why}", copy.control_file.display());
        self.add(severity, Some(&copy.dir), Some(&copy.name), message, hint);
    }

    /// Text search files an image carries, which PostgreSQL never reads from there.
    fn text_search_data(&mut self, index: &Index) {
        for image in &index.images {
            for dir in tsearch_data_dirs(&image.dir) {
                self.add(
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
    }

    /// Libraries under a prefix that are not trusted.
    fn untrusted_libraries(&mut self, index: &Index, policy: &TrustPolicy) {
        let judge = TrustPolicy { enforce: true, ..*policy };
        let severity = if policy.enforce { Severity::Error } else { Severity::Warning };
        for copy in index.libraries.iter().filter(|l| l.prefix.is_some()) {
            if let Some(why) = library_distrust(copy, &judge) {
                let message = format!("library \"{}\": {}", copy.path.display(), ProblemKind::UntrustedLibrary(why));
                self.add(severity, Some(&copy.dir), None, message, trust_hint(policy));
            }
        }
    }

    /// One shared object: unreadable, for another machine or PostgreSQL major version, or
    /// missing what it needs.
    fn library(&mut self, lib: &LibraryReport, server_major: u32) {
        let image = Some(lib.image.as_path());
        let file = lib.path.display();
        if let Some(error) = &lib.error {
            self.add(
                Severity::Warning,
                image,
                None,
                format!("library \"{file}\" cannot be read: {error}"),
                "Replace it with a shared library, or remove it.",
            );
            return;
        }
        if lib.foreign_machine {
            self.add(
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
            self.add(
                Severity::Error,
                image,
                None,
                format!("module \"{file}\" is built for PostgreSQL {major}, this server is {server_major}"),
                "Use the image built for this PostgreSQL major version.",
            );
        }
        for soname in &lib.missing {
            self.add(
                Severity::Error,
                image,
                None,
                format!("library \"{file}\" requires \"{soname}\", which was not found"),
                "Bundle it in the image's lib/ or system/ directory, or install it on the server.",
            );
        }
    }

    /// The same module file name in several images' `lib/`.
    fn library_collisions(&mut self, libraries: &[LibraryReport]) {
        let mut by_name: BTreeMap<String, Vec<&LibraryReport>> = BTreeMap::new();
        let in_lib = |l: &&LibraryReport| l.path.parent().and_then(Path::file_name).is_some_and(|d| d == "lib");
        for lib in libraries.iter().filter(in_lib) {
            let name = lib.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            by_name.entry(name).or_default().push(lib);
        }
        for (name, copies) in by_name.into_iter().filter(|(_, c)| c.len() > 1) {
            let winner = copies.iter().find(|l| l.winner).map(|l| l.path.display().to_string()).unwrap_or_default();
            let images: Vec<String> = copies.iter().map(|l| l.image.display().to_string()).collect();
            self.add(
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
    }
}

impl Findings {
    /// What the images' `META.json` files declare: files that are not valid, images not meant
    /// for this server, and modules declared for preloading that are not loaded, and why.
    fn declarations(&mut self, declarations: &Declarations) {
        for (image, meta) in &declarations.metas {
            let image = Some(image.as_path());
            match &meta.declared {
                Err(invalid) => self.add(
                    Severity::Warning,
                    image,
                    None,
                    format!("\"{}\" is not a valid PGXN META.json: {invalid}", meta.file.display()),
                    "Fix the file (PGXN Meta Spec v1 or v2); until then nothing it declares is acted on.",
                ),
                Ok(declared) => {
                    for why in declared.excludes(&declarations.server) {
                        self.add(
                            Severity::Error,
                            image,
                            None,
                            format!("the image is not for this server: {why}"),
                            "Use the image built for this PostgreSQL version and platform.",
                        );
                    }
                }
            }
        }
        for preload in &declarations.preloads {
            let image = Some(preload.image.as_path());
            let what = format!(
                "module \"{}\" is declared for preloading ({}) by the image's META.json",
                preload.module,
                preload.preload.as_str()
            );
            match (&preload.decision, declarations.acted_on) {
                (Decision::Load, true) | (Decision::Listed(_) | Decision::Excluded(_), _) => {}
                (Decision::Load, false) => self.add(
                    Severity::Notice,
                    image,
                    None,
                    format!("{what}; extension_search_path.preload_declared is off: it would be loaded from \"{}\"", {
                        preload.file.as_deref().unwrap_or(preload.image.as_path()).display()
                    }),
                    "Set extension_search_path.preload_declared = on (postgresql.conf or ALTER SYSTEM) and restart, \
                     or add the module to shared_preload_libraries.",
                ),
                (why, _) => self.add(
                    Severity::Warning,
                    image,
                    None,
                    format!("{what}, but is not loaded: {}", why.reason().unwrap_or_default()),
                    "Fix the image, or load the module through shared_preload_libraries.",
                ),
            }
        }
    }
}

/// Whether `copy` looks like a package's alias control file: `<name>-<major>.control` beside
/// `<name>.control` (Debian's `postgis-3.control` beside `postgis.control`).
fn is_a_package_alias(copy: &ExtensionCopy) -> bool {
    let Some((base, major)) = copy.name.rsplit_once('-') else { return false };
    let major_only = !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit());
    major_only && copy.control_file.with_file_name(format!("{base}.control")).is_file()
}

/// What to do about an untrusted file, with trust enforced or not.
fn trust_hint(policy: &TrustPolicy) -> &'static str {
    if policy.enforce { Unusable::TRUST_HINT } else { Unusable::TRUST_OFF_HINT }
}

/// Text search data an image carries: `share/tsearch_data/` (CloudNativePG layout) or
/// `tsearch_data/` (RFC layout), when it holds any file.
fn tsearch_data_dirs(dir: &Path) -> Vec<PathBuf> {
    [dir.join("share/tsearch_data"), dir.join("tsearch_data")]
        .into_iter()
        .filter(|d| !file_names(d).is_empty())
        .collect()
}
