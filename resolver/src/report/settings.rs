//! `settings()`: the effective `extension_control_path` and `dynamic_library_path`, and
//! `extension_search_path.path`, element by element — the directory each stands for and where
//! it comes from.

use std::path::Path;

use crate::dfmgr::substitute_libdir;
use crate::path::{Element, SYSTEM_MACRO, SearchPath};
use crate::scan::SystemDirs;

/// The two core settings the catalog is merged into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreSetting {
    ExtensionControlPath,
    DynamicLibraryPath,
}

impl CoreSetting {
    pub fn name(self) -> &'static str {
        match self {
            CoreSetting::ExtensionControlPath => "extension_control_path",
            CoreSetting::DynamicLibraryPath => "dynamic_library_path",
        }
    }
}

/// Where an element comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementOrigin {
    /// `$system` in `extension_control_path`.
    System,
    /// `$libdir` in `dynamic_library_path`.
    Libdir,
    /// A catalog generation of ours.
    Catalog,
    /// An element the operator wrote (the setting's source is the shell's to name).
    Operator,
    /// An element of `extension_search_path.path`.
    SearchPath,
    /// `$system`, searched last because the path does not name it.
    ImplicitSystem,
    /// An element of `extension_search_path.path` that is ignored, and why.
    Ignored(String),
}

impl ElementOrigin {
    /// The `origin` column; `source` is where the setting's value comes from (pg_settings.source).
    pub fn describe(&self, source: &str) -> String {
        match self {
            ElementOrigin::System => "PostgreSQL ($system)".into(),
            ElementOrigin::Libdir => "PostgreSQL ($libdir)".into(),
            ElementOrigin::Catalog => "extension_search_path catalog".into(),
            ElementOrigin::Operator => format!("operator ({source})"),
            ElementOrigin::SearchPath => "extension_search_path.path".into(),
            ElementOrigin::ImplicitSystem => "implicit: searched last".into(),
            ElementOrigin::Ignored(why) => format!("ignored: {why}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingRow {
    /// 1-based; 0 for an ignored element.
    pub position: i32,
    pub element: String,
    /// The directory PostgreSQL (or the extension) reads for it; empty when ignored.
    pub directory: String,
    pub origin: ElementOrigin,
    pub exists: bool,
}

fn is_dir(dir: &str) -> bool {
    !dir.is_empty() && Path::new(dir).is_dir()
}

/// The elements of core setting `setting` with value `value`. `our_root` (ending in `/`) is
/// where our catalogs are.
pub fn core_setting_rows(setting: CoreSetting, value: &str, our_root: &str, system: &SystemDirs) -> Vec<SettingRow> {
    let libdir = system.lib_dir.to_string_lossy();
    let elements = value.split(':').filter(|e| !e.is_empty());
    elements
        .enumerate()
        .map(|(i, element)| {
            // extension_control_path elements other than $system hold an extension/ directory
            let under = |e: &str| match setting {
                CoreSetting::ExtensionControlPath => format!("{e}/extension"),
                CoreSetting::DynamicLibraryPath => e.to_string(),
            };
            let (directory, origin) = match setting {
                CoreSetting::ExtensionControlPath if element == SYSTEM_MACRO => {
                    (system.extension_dir.to_string_lossy().into_owned(), ElementOrigin::System)
                }
                CoreSetting::DynamicLibraryPath if element.starts_with('$') => {
                    match substitute_libdir(element, &libdir) {
                        Some(dir) => (dir, ElementOrigin::Libdir),
                        None => (String::new(), ElementOrigin::Operator),
                    }
                }
                _ if element.starts_with(our_root) => (under(element), ElementOrigin::Catalog),
                _ => (under(element), ElementOrigin::Operator),
            };
            let exists = is_dir(&directory);
            SettingRow { position: i as i32 + 1, element: element.to_string(), directory, origin, exists }
        })
        .collect()
}

/// The elements of `extension_search_path.path` with value `value`, then the ignored ones.
pub fn search_path_rows(value: &str, system: &SystemDirs) -> Vec<SettingRow> {
    let parsed = SearchPath::parse(value);
    let share = system.extension_dir.parent().unwrap_or(&system.extension_dir).to_string_lossy().into_owned();
    let last = parsed.elements.len();
    let mut rows: Vec<SettingRow> = parsed
        .elements
        .iter()
        .enumerate()
        .map(|(i, element)| {
            let (element, directory, origin) = match element {
                Element::System if parsed.implicit_system && i + 1 == last => {
                    (SYSTEM_MACRO.to_string(), share.clone(), ElementOrigin::ImplicitSystem)
                }
                Element::System => (SYSTEM_MACRO.to_string(), share.clone(), ElementOrigin::SearchPath),
                Element::Prefix(p) => {
                    let p = p.to_string_lossy().into_owned();
                    (p.clone(), p, ElementOrigin::SearchPath)
                }
                // (never parsed from the setting: appended by the shell for the index only)
                Element::Operator(image) => {
                    let p = image.dir.to_string_lossy().into_owned();
                    (p.clone(), p, ElementOrigin::Operator)
                }
            };
            let exists = is_dir(&directory);
            SettingRow { position: i as i32 + 1, element, directory, origin, exists }
        })
        .collect();
    rows.extend(parsed.problems.iter().map(|problem| SettingRow {
        position: 0,
        element: problem.subject.trim_matches('"').to_string(),
        directory: String::new(),
        origin: ElementOrigin::Ignored(problem.kind.to_string()),
        exists: false,
    }));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn system(root: &Path) -> SystemDirs {
        SystemDirs { extension_dir: root.join("share/extension"), lib_dir: root.join("lib") }
    }

    #[test]
    fn core_elements_are_told_apart() {
        let t = tempfile::tempdir().unwrap();
        let sys = system(t.path());
        std::fs::create_dir_all(&sys.extension_dir).unwrap();
        std::fs::create_dir_all(&sys.lib_dir).unwrap();
        let root = format!("{}/esp/", t.path().display());
        let cat = format!("{root}server/gen-1/share");
        let rows = core_setting_rows(CoreSetting::ExtensionControlPath, &format!("{cat}:$system::/op"), &root, &sys);
        let got: Vec<_> = rows.iter().map(|r| (r.position, r.directory.clone(), r.origin.clone(), r.exists)).collect();
        assert_eq!(
            got,
            [
                (1, format!("{cat}/extension"), ElementOrigin::Catalog, false),
                (2, sys.extension_dir.display().to_string(), ElementOrigin::System, true),
                (3, "/op/extension".to_string(), ElementOrigin::Operator, false),
            ]
        );
        let rows = core_setting_rows(CoreSetting::DynamicLibraryPath, "$libdir/sub:$libdirx:$system", &root, &sys);
        assert_eq!(rows[0].directory, format!("{}/sub", sys.lib_dir.display()));
        assert_eq!(rows[0].origin, ElementOrigin::Libdir);
        assert_eq!((rows[1].directory.as_str(), &rows[1].origin), ("", &ElementOrigin::Operator), "not a macro");
        assert_eq!(rows[2].origin, ElementOrigin::Operator, "$system means nothing in dynamic_library_path");
        assert_eq!(ElementOrigin::Operator.describe("configuration file"), "operator (configuration file)");
    }

    #[test]
    fn search_path_rows_show_the_implicit_system_and_what_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let sys = system(t.path());
        let dir = t.path().display().to_string();
        let rows = search_path_rows(&format!("{dir}:relative"), &sys);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].element.as_str(), rows[0].exists), (dir.as_str(), true));
        assert_eq!(rows[1].origin, ElementOrigin::ImplicitSystem);
        assert_eq!(PathBuf::from(&rows[1].directory), t.path().join("share"));
        assert_eq!((rows[2].position, rows[2].element.as_str()), (0, "relative"));
        assert!(rows[2].origin.describe("").starts_with("ignored: relative path element"));
    }
}
