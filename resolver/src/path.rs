//! `extension_search_path.path`: a colon-separated list of absolute prefixes and `$system`.

use std::path::{Path, PathBuf};

use crate::problem::{FileError, PathProblem, Problem};

/// The macro that stands for PostgreSQL's own directories (`pg_config --sharedir`/`extension`
/// and `--pkglibdir`), as in `extension_control_path`.
pub const SYSTEM_MACRO: &str = "$system";

/// Longer values are ignored (only `$system` is searched) or, set interactively, refused.
pub const MAX_VALUE_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// PostgreSQL's own share/extension and lib directories.
    System,
    /// A prefix holding one directory per extension or image.
    Prefix(PathBuf),
    /// An image an operator named in PostgreSQL's own settings (CloudNativePG's per-image
    /// elements, custom lists included): searched after every element of the path.
    Operator(OperatorImage),
}

/// One image reached through the operator's elements of `extension_control_path` and
/// `dynamic_library_path`: `<dir>/share` and `<dir>/lib` (CloudNativePG's form) both name image
/// `<dir>`; any other element names an image of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorImage {
    pub dir: PathBuf,
    /// The `extension_control_path` element (PostgreSQL reads `<it>/extension/*.control`).
    pub control: Option<PathBuf>,
    /// The `dynamic_library_path` element.
    pub library: Option<PathBuf>,
    /// Where those elements stand in their settings (0 is the first element).
    pub control_rank: Option<usize>,
    pub library_rank: Option<usize>,
}

/// The operator's images and where `$system` (in `extension_control_path`) and `$libdir` (in
/// `dynamic_library_path`) stand among them: PostgreSQL searches them in that order after our
/// catalog, so an image listed before `$system` wins over `$system` for a name our path does not
/// serve from a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorElements {
    pub images: Vec<OperatorImage>,
    pub system_rank: Option<usize>,
    pub libdir_rank: Option<usize>,
}

/// The images named by the operator's elements of `extension_control_path` (`control_path`)
/// and `dynamic_library_path` (`library_path`), in the order written: `$system`, `$libdir`,
/// relative and empty elements and our own catalogs (under `our_root`) left out.
pub fn operator_images(control_path: &str, library_path: &str, our_root: &str) -> OperatorElements {
    let mut images: Vec<OperatorImage> = Vec::new();
    let elements = |value: &'static str, text: &str| -> Vec<(&'static str, usize, PathBuf)> {
        text.split(':')
            .map(str::trim)
            .enumerate()
            .filter(|(_, e)| Path::new(e).is_absolute() && (our_root.is_empty() || !e.starts_with(our_root)))
            .map(|(rank, e)| (value, rank, normalize(Path::new(e))))
            .collect()
    };
    for (setting, rank, element) in elements("share", control_path).into_iter().chain(elements("lib", library_path)) {
        let dir = match element.file_name() {
            Some(last) if last == setting => element.parent().unwrap_or(&element).to_path_buf(),
            _ => element.clone(),
        };
        let at = match images.iter().position(|i| i.dir == dir) {
            Some(at) => at,
            None => {
                images.push(OperatorImage {
                    dir,
                    control: None,
                    library: None,
                    control_rank: None,
                    library_rank: None,
                });
                images.len() - 1
            }
        };
        let image = &mut images[at];
        let (slot, slot_rank) = if setting == "share" {
            (&mut image.control, &mut image.control_rank)
        } else {
            (&mut image.library, &mut image.library_rank)
        };
        if slot.is_none() {
            *slot = Some(element);
            *slot_rank = Some(rank);
        }
    }
    let rank_of = |text: &str, name: &str| text.split(':').map(str::trim).position(|e| e == name);
    OperatorElements {
        images,
        system_rank: rank_of(control_path, SYSTEM_MACRO),
        libdir_rank: rank_of(library_path, "$libdir"),
    }
}

/// A parsed path. Bad elements are dropped and reported; they never stop the good ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    pub elements: Vec<Element>,
    /// `true` when the setting did not name `$system`: it is then searched after every prefix,
    /// so system extensions can never be hidden by leaving it out.
    pub implicit_system: bool,
    pub problems: Vec<Problem>,
    /// Where `$system` and `$libdir` stand among the operator's images (see
    /// [`OperatorElements`]); `None` when there are none.
    pub operator_ranks: (Option<usize>, Option<usize>),
}

impl SearchPath {
    /// The prefixes, in order (`$system` left out).
    pub fn prefixes(&self) -> impl Iterator<Item = &Path> {
        self.elements.iter().filter_map(|e| match e {
            Element::Prefix(p) => Some(p.as_path()),
            Element::System | Element::Operator(_) => None,
        })
    }

    /// The path with the operator's images appended (see [`operator_images`]), behind every
    /// element the setting names: what the index reports and loads bundled libraries for.
    /// They are not served through the catalog: PostgreSQL reaches them through the operator's
    /// own elements, as it would without us.
    pub fn with_operator_images(mut self, operator: OperatorElements) -> SearchPath {
        self.elements.extend(operator.images.into_iter().map(Element::Operator));
        self.operator_ranks = (operator.system_rank, operator.libdir_rank);
        self
    }

    /// Whether the copies found under element `i` are served through our catalog (a prefix).
    pub fn catalogued(&self, i: usize) -> bool {
        matches!(self.elements.get(i), Some(Element::Prefix(_)))
    }

    /// Where trust is checked from for `path`: the prefix holding it, else the operator's
    /// image holding it (the operator vouched for that directory, as for PostgreSQL's own).
    pub fn trust_top(&self, path: &Path) -> Option<PathBuf> {
        self.prefix_holding(path).or_else(|| {
            self.elements.iter().find_map(|e| match e {
                Element::Operator(image) if path.starts_with(&image.dir) => Some(image.dir.clone()),
                Element::Operator(image) => std::fs::canonicalize(&image.dir).ok().filter(|c| path.starts_with(c)),
                _ => None,
            })
        })
    }

    /// The prefix `path` lies under (as written, or with its links resolved): where trust is
    /// checked from.
    pub fn prefix_holding(&self, path: &Path) -> Option<PathBuf> {
        self.prefixes().find_map(|p| {
            if path.starts_with(p) {
                return Some(p.to_path_buf());
            }
            std::fs::canonicalize(p).ok().filter(|c| path.starts_with(c))
        })
    }

    pub fn parse(value: &str) -> SearchPath {
        let mut elements = Vec::new();
        let mut problems = Vec::new();
        if value.len() > MAX_VALUE_LEN {
            problems.push(Problem {
                subject: "extension_search_path.path".into(),
                kind: PathProblem::TooLong(value.len()).into(),
            });
            return SearchPath {
                elements: vec![Element::System],
                implicit_system: true,
                problems,
                operator_ranks: (None, None),
            };
        }
        for raw in value.split(':') {
            let trimmed = raw.trim();
            let problem = |kind: PathProblem| Problem { subject: format!("\"{raw}\""), kind: kind.into() };
            if trimmed.is_empty() {
                if !value.trim().is_empty() {
                    problems.push(problem(PathProblem::Empty));
                }
                continue;
            }
            let element = if trimmed == SYSTEM_MACRO {
                Element::System
            } else if trimmed.starts_with('$') {
                problems.push(problem(PathProblem::UnknownMacro));
                continue;
            } else if !Path::new(trimmed).is_absolute() {
                problems.push(problem(PathProblem::Relative));
                continue;
            } else {
                Element::Prefix(normalize(Path::new(trimmed)))
            };
            if elements.contains(&element) {
                problems.push(problem(PathProblem::Duplicate));
                continue;
            }
            elements.push(element);
        }
        let implicit_system = !elements.contains(&Element::System);
        if implicit_system {
            elements.push(Element::System);
        }
        SearchPath { elements, implicit_system, problems, operator_ranks: (None, None) }
    }
}

/// Lexically tidies an absolute path: drops `.` components, repeated and trailing slashes.
/// `..` is kept (resolving it lexically would be wrong across symlinks).
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

fn is_empty_element(problem: &Problem) -> bool {
    problem.kind == PathProblem::Empty.into()
}

/// What makes a value set with SET (or ALTER ROLE/DATABASE … SET, a session's own choice) an
/// error rather than a warning: every problem of [`SearchPath::parse`] except empty elements
/// (ignored with a WARNING), plus prefixes that do not exist or are not directories.
pub fn refused_when_set(value: &str) -> Vec<Problem> {
    let parsed = SearchPath::parse(value);
    let mut errors: Vec<Problem> = parsed.problems.iter().filter(|p| !is_empty_element(p)).cloned().collect();
    for dir in parsed.prefixes() {
        let kind = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => PathProblem::NotADirectory,
            Err(e) => PathProblem::Unusable(FileError::from(e)),
        };
        errors.push(Problem { subject: dir.display().to_string(), kind: kind.into() });
    }
    errors
}

/// Empty elements in a value (reported with a WARNING, never an error).
pub fn has_empty_elements(value: &str) -> bool {
    SearchPath::parse(value).problems.iter().any(is_empty_element)
}

/// The catalog an element under `our_root` belongs to (`server`, `session-<key>`), if it is one.
pub fn catalog_of<'a>(element: &'a str, our_root: &str) -> Option<&'a str> {
    element.strip_prefix(our_root)?.split('/').next().filter(|name| !name.is_empty())
}

/// The catalog the first element of ours in core path value `value` belongs to, if any.
pub fn catalog_named<'a>(value: &'a str, our_root: &str) -> Option<&'a str> {
    value.split(':').find(|e| e.starts_with(our_root)).and_then(|e| catalog_of(e, our_root))
}

/// Whether core path value `value` names catalog generation `generation` (an element in it).
pub fn names_generation(value: &str, generation: &Path) -> bool {
    let prefix = format!("{}/", generation.display());
    value.split(':').any(|element| element.starts_with(&prefix))
}

/// Puts `ours` first in a core path setting (`extension_control_path`, `dynamic_library_path`),
/// keeping every element the operator wrote, in order. Idempotent: an element of the same
/// catalog as `ours` (ours, or another generation of it, e.g. pasted from an older `SHOW`) is
/// replaced by `ours` at the front, never repeated; an element of another catalog of ours (a
/// session-specific catalog) means the value was written by us and is returned unchanged.
pub fn merge_core_path(operator_value: &str, ours: &str, our_root: &str) -> String {
    let own_catalog = catalog_of(ours, our_root);
    let mut rest = Vec::new();
    for element in operator_value.split(':') {
        if element == ours || (own_catalog.is_some() && catalog_of(element, our_root) == own_catalog) {
            continue;
        }
        if element.starts_with(our_root) {
            return operator_value.to_string();
        }
        rest.push(element);
    }
    if operator_value.is_empty() {
        return ours.to_string();
    }
    let mut merged = String::from(ours);
    for element in rest {
        merged.push(':');
        merged.push_str(element);
    }
    merged
}

/// Points a merged core path at another catalog of ours: every element under `our_root` is
/// replaced by `to` (once, where the first stood); without one, `to` is put first.
pub fn retarget_core_path(merged: &str, our_root: &str, to: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut placed = false;
    for element in merged.split(':').filter(|e| !e.is_empty()) {
        if element.starts_with(our_root) || element == to {
            if !placed {
                out.push(to);
                placed = true;
            }
        } else {
            out.push(element);
        }
    }
    if !placed {
        out.insert(0, to);
    }
    out.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Element {
        Element::Prefix(PathBuf::from(p))
    }

    #[test]
    fn parses_prefixes_and_system_in_order() {
        let p = SearchPath::parse("$system:/extensions:/usr/local/extensions/");
        assert_eq!(p.elements, vec![Element::System, prefix("/extensions"), prefix("/usr/local/extensions")]);
        assert!(!p.implicit_system);
        assert!(p.problems.is_empty());
    }

    #[test]
    fn system_is_searched_last_when_left_out() {
        let p = SearchPath::parse("/a:/b");
        assert_eq!(p.elements, vec![prefix("/a"), prefix("/b"), Element::System]);
        assert!(p.implicit_system);
    }

    #[test]
    fn bad_elements_are_reported_and_skipped_never_hiding_system() {
        let p = SearchPath::parse("relative:$system/x:::/ok:$libdir:/ok:$system");
        assert_eq!(p.elements, vec![prefix("/ok"), Element::System]);
        let subjects: Vec<_> = p.problems.iter().map(|x| x.subject.as_str()).collect();
        assert_eq!(subjects, ["\"relative\"", "\"$system/x\"", "\"\"", "\"\"", "\"$libdir\"", "\"/ok\""]);
        assert_eq!(p.problems[0].kind, PathProblem::Relative.into());
        assert_eq!(p.problems[1].kind, PathProblem::UnknownMacro.into());
        assert_eq!(p.problems[2].kind, PathProblem::Empty.into());
        assert_eq!(p.problems[5].kind, PathProblem::Duplicate.into());
        assert!(p.problems[0].to_string().contains("relative"));
    }

    #[test]
    fn interactive_values_are_held_to_more() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = format!("$system:{}", tmp.path().display());
        assert!(refused_when_set(&ok).is_empty());
        assert!(refused_when_set(&format!("{ok}::")).is_empty(), "empty elements only warn");
        assert!(has_empty_elements(&format!("{ok}::")));
        let errors = refused_when_set("rel:$system/x:/does/not/exist");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[2].starts_with("/does/not/exist: cannot be used"));
        let long = format!("/{}", "x".repeat(MAX_VALUE_LEN));
        assert!(refused_when_set(&long)[0].to_string().contains("more than 8192"));
        assert_eq!(SearchPath::parse(&long).elements, vec![Element::System]);
    }

    #[test]
    fn empty_value_is_just_system() {
        let p = SearchPath::parse("");
        assert_eq!(p.elements, vec![Element::System]);
        assert!(p.problems.is_empty());
    }

    #[test]
    fn normalizes_slashes() {
        let p = SearchPath::parse("//ext//x/./:$system");
        assert_eq!(p.elements[0], prefix("/ext/x"));
    }

    #[test]
    fn merge_puts_ours_first_and_keeps_the_operators_order() {
        let ours = "/data/esp/server/share";
        assert_eq!(merge_core_path("$system", ours, "/data/esp/"), "/data/esp/server/share:$system");
        assert_eq!(
            merge_core_path("$system:/extensions/a/share:/extensions/b/share", ours, "/data/esp/"),
            "/data/esp/server/share:$system:/extensions/a/share:/extensions/b/share"
        );
        // idempotent
        let once = merge_core_path("/x:$system", ours, "/data/esp/");
        assert_eq!(merge_core_path(&once, ours, "/data/esp/"), once);
        // moved to the front, not repeated
        assert_eq!(
            merge_core_path("$system:/data/esp/server/share", ours, "/data/esp/"),
            "/data/esp/server/share:$system"
        );
        assert_eq!(merge_core_path("", ours, "/data/esp/"), ours);
        // a value naming a session catalog was written by us: untouched
        let session = "/data/esp/session-1/share:$system";
        assert_eq!(merge_core_path(session, ours, "/data/esp/"), session);
        // another generation of our own catalog (an older SHOW pasted into SET) becomes ours
        let ours = "/data/esp/server/gen-5/share";
        assert_eq!(
            merge_core_path("/x:/data/esp/server/gen-3/share:$system", ours, "/data/esp/"),
            "/data/esp/server/gen-5/share:/x:$system"
        );
        assert_eq!(merge_core_path("/data/esp/server/current/share", ours, "/data/esp/"), ours);
    }

    #[test]
    fn values_name_catalogs_and_generations() {
        let value = "/x:/r/session-ab/gen-2/lib:/r/server/gen-1/lib";
        assert_eq!(catalog_named(value, "/r/"), Some("session-ab"));
        assert_eq!(catalog_named("/x:$libdir", "/r/"), None);
        assert!(names_generation(value, Path::new("/r/server/gen-1")));
        assert!(!names_generation(value, Path::new("/r/server/gen-2")));
        assert!(!names_generation("/r/server/gen-10/lib", Path::new("/r/server/gen-1")), "whole names only");
    }

    #[test]
    fn retarget_replaces_our_element() {
        assert_eq!(retarget_core_path("/r/server/lib:$libdir", "/r/", "/r/s1/lib"), "/r/s1/lib:$libdir");
        assert_eq!(retarget_core_path("$libdir:/r/s1/lib", "/r/", "/r/server/lib"), "$libdir:/r/server/lib");
        assert_eq!(retarget_core_path("$libdir", "/r/", "/r/s1/lib"), "/r/s1/lib:$libdir");
        assert_eq!(retarget_core_path("/r/s1/lib:/x", "/r/", "/r/s1/lib"), "/r/s1/lib:/x");
    }
}
