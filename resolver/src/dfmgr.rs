//! How PostgreSQL turns a library name into a file, ported from `dfmgr.c` (PostgreSQL 18):
//! `load_external_function`'s `$libdir/` strip, `expand_dynamic_library_name`, `find_in_path`,
//! `substitute_path_macro` and `check_restricted_library_name`. The shell asks this module which
//! file PostgreSQL is about to load, so that it prepares exactly that file, or nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// The shared-library suffix PostgreSQL appends (`DLSUFFIX`).
pub const DLSUFFIX: &str = ".so";

/// Who loads the library; they spell names differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `load_external_function`: C functions (their first call, the C validator at CREATE
    /// FUNCTION). `$libdir/x` is searched along `dynamic_library_path` as `x`.
    Function,
    /// `load_file`: LOAD and the `*_preload_libraries` lists. `$libdir/x` means pkglibdir only.
    File,
}

/// `check_restricted_library_name`: the only names a role without superuser may LOAD.
pub fn is_unrestricted_plugin_name(name: &str) -> bool {
    name.strip_prefix("$libdir/plugins/").is_some_and(|rest| !rest.contains('/'))
}

/// The file PostgreSQL's `loader` opens for `name`, given the value of `dynamic_library_path`
/// and pkglibdir; `None` when PostgreSQL would hand the name to the dynamic loader as it is
/// (nothing found), or would raise an error of its own about the path (a bad element or macro).
/// `exists` is `pg_file_exists`: it exists and is not a directory.
pub fn expand(
    name: &str,
    loader: Loader,
    dynamic_library_path: &str,
    pkglib: &Path,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let name = match loader {
        Loader::Function => strip_libdir(name),
        Loader::File => name,
    };
    let pkglib = pkglib.to_string_lossy();
    let have_slash = name.contains('/');
    for candidate in candidates(name) {
        if have_slash {
            let full = PathBuf::from(substitute_libdir(&candidate, &pkglib)?);
            if exists(&full) {
                return Some(full);
            }
        } else if let Some(full) = find_in_path(&candidate, dynamic_library_path, &pkglib, exists).ok()? {
            return Some(full);
        }
    }
    None
}

/// The file names PostgreSQL tries for a library name, in order: the name as given, then with
/// [`DLSUFFIX`] (`expand_dynamic_library_name`).
pub fn candidates(name: &str) -> [String; 2] {
    [name.to_string(), format!("{name}{DLSUFFIX}")]
}

/// `load_external_function` strips `$libdir/` from simple names only (`$libdir/foo`, not
/// `$libdir/foo/bar`).
pub fn strip_libdir(name: &str) -> &str {
    match name.strip_prefix("$libdir/") {
        Some(rest) if !rest.contains('/') => rest,
        _ => name,
    }
}

/// `find_in_path` over `dynamic_library_path`. `Err(())` where PostgreSQL raises an error
/// (zero-length or relative element, unknown macro); `Ok(None)` when no element has the file.
fn find_in_path(
    basename: &str,
    path: &str,
    pkglib: &str,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Option<PathBuf>, ()> {
    if path.is_empty() {
        return Ok(None);
    }
    for piece in path.split(':') {
        if piece.is_empty() {
            return Err(());
        }
        let mangled = canonicalize_path(&substitute_libdir(piece, pkglib).ok_or(())?);
        if !mangled.starts_with('/') {
            return Err(());
        }
        let full = PathBuf::from(format!("{mangled}/{basename}"));
        if exists(&full) {
            return Ok(Some(full));
        }
    }
    Ok(None)
}

/// `substitute_path_macro` for `$libdir`: recognised only at the start, as a whole component;
/// any other `$…` start is an error (`None`). The one `$libdir` expander.
pub fn substitute_libdir(s: &str, pkglib: &str) -> Option<String> {
    if !s.starts_with('$') {
        return Some(s.to_string());
    }
    let end = s.find('/').unwrap_or(s.len());
    (&s[..end] == "$libdir").then(|| format!("{pkglib}{}", &s[end..]))
}

/// `SplitDirectoriesString(value, ',')`, as `load_libraries` splits `shared_preload_libraries`
/// and `session_preload_libraries`: names separated by commas, surrounding whitespace dropped,
/// double quotes around a name (with `""` for a quote inside), each name cut to MAXPGPATH - 1
/// bytes (at a character boundary) and canonicalised. `None` where PostgreSQL finds the list
/// syntax invalid (and loads nothing of it).
pub fn split_library_list(value: &str) -> Option<Vec<String>> {
    let items = crate::name::split_list(value, true)?;
    let name = |item: String| canonicalize_path(&crate::name::truncate(item, crate::name::MAXPGPATH));
    Some(items.into_iter().map(|(item, _)| name(item)).collect())
}

/// Whether library name `name` (as a preload list or LOAD gives it) names the library
/// `stem`: `stem`, `stem.so`, or either under a directory (`$libdir/stem`, an absolute path).
pub fn names_library(name: &str, stem: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    candidates(stem).iter().any(|c| c == file)
}

/// The parts of PostgreSQL's `canonicalize_path` that matter on Unix: repeated and trailing
/// slashes, `.` components and textual `..` removal.
fn canonicalize_path(p: &str) -> String {
    if p.is_empty() {
        // as in PostgreSQL: an empty path is returned as it is
        return String::new();
    }
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    let mut leading_up = 0;
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !absolute {
                    leading_up += 1;
                }
            }
            _ => parts.push(part),
        }
    }
    let mut out: Vec<&str> = std::iter::repeat_n("..", leading_up).collect();
    out.extend(parts);
    let joined = out.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `pg_file_exists`: stat succeeds (links followed) and it is not a directory.
pub fn pg_file_exists(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn files(list: &[&str]) -> impl Fn(&Path) -> bool {
        let set: HashSet<PathBuf> = list.iter().map(PathBuf::from).collect();
        move |p: &Path| set.contains(p)
    }

    const LIB: &str = "/pg/lib";

    fn expand_with(name: &str, loader: Loader, path: &str, existing: &[&str]) -> Option<String> {
        expand(name, loader, path, Path::new(LIB), &files(existing)).map(|p| p.display().to_string())
    }

    #[test]
    fn plain_names_are_searched_along_the_path_as_given_then_with_the_suffix() {
        let path = "/cat/lib:$libdir";
        assert_eq!(expand_with("x", Loader::File, path, &["/pg/lib/x.so", "/cat/lib/x.so"]).unwrap(), "/cat/lib/x.so");
        assert_eq!(expand_with("x", Loader::File, path, &["/pg/lib/x", "/cat/lib/x.so"]).unwrap(), "/pg/lib/x");
        assert_eq!(expand_with("x.so", Loader::File, path, &["/pg/lib/x.so"]).unwrap(), "/pg/lib/x.so");
        assert_eq!(expand_with("x", Loader::File, path, &[]), None);
        assert_eq!(expand_with("x", Loader::File, "", &["/pg/lib/x.so"]), None, "an empty path searches nothing");
    }

    #[test]
    fn libdir_is_stripped_for_functions_only_and_only_from_simple_names() {
        let path = "/cat/lib:$libdir";
        let only_in_catalog = ["/cat/lib/x.so"];
        assert_eq!(expand_with("$libdir/x", Loader::Function, path, &only_in_catalog).unwrap(), "/cat/lib/x.so");
        assert_eq!(expand_with("$libdir/x", Loader::File, path, &only_in_catalog), None, "LOAD: pkglibdir only");
        assert_eq!(expand_with("$libdir/x", Loader::File, path, &["/pg/lib/x.so"]).unwrap(), "/pg/lib/x.so");
        // $libdir/sub/x: substituted and used as is, by both
        for loader in [Loader::Function, Loader::File] {
            assert_eq!(
                expand_with("$libdir/plugins/ae", loader, path, &["/pg/lib/plugins/ae.so"]).unwrap(),
                "/pg/lib/plugins/ae.so"
            );
            assert_eq!(expand_with("$libdir/plugins/ae", loader, path, &["/cat/lib/plugins/ae.so"]), None);
        }
        assert_eq!(strip_libdir("$libdir/a/b"), "$libdir/a/b");
        assert_eq!(strip_libdir("$libdir/a"), "a");
        assert_eq!(strip_libdir("a"), "a");
    }

    #[test]
    fn absolute_and_relative_names_with_a_slash_are_used_as_they_are() {
        let path = "/cat/lib";
        assert_eq!(expand_with("/opt/m", Loader::File, path, &["/opt/m.so"]).unwrap(), "/opt/m.so");
        assert_eq!(expand_with("/opt/m.so", Loader::Function, path, &["/opt/m.so"]).unwrap(), "/opt/m.so");
        assert_eq!(expand_with("/opt/m", Loader::File, path, &["/opt/m", "/opt/m.so"]).unwrap(), "/opt/m");
        assert_eq!(expand_with("sub/m", Loader::File, path, &["/cat/lib/sub/m.so"]), None);
        assert_eq!(expand_with("sub/m", Loader::File, path, &["sub/m.so"]).unwrap(), "sub/m.so");
    }

    #[test]
    fn bad_path_elements_and_macros_are_left_to_postgres() {
        for path in ["/a::/b", "relative", "$foo", ":/cat/lib"] {
            assert_eq!(expand_with("x", Loader::File, path, &["/cat/lib/x.so", "/a/x.so"]), None, "{path}");
        }
        // an earlier element that has the file wins before a later bad one is reached; the name
        // as given is looked for along the whole path before the name with the suffix
        assert_eq!(expand_with("x", Loader::File, "/a:relative", &["/a/x"]).unwrap(), "/a/x");
        assert_eq!(expand_with("x", Loader::File, "/a:relative", &["/a/x.so"]), None);
        assert_eq!(expand_with("$foo/x", Loader::File, "/a", &["/a/x.so"]), None);
        assert_eq!(expand_with("$libdirx/x", Loader::File, "/a", &[]), None);
    }

    #[test]
    fn elements_are_canonicalised_like_postgres() {
        let path = "/cat//lib/:/a/./b/../c/";
        assert_eq!(expand_with("x", Loader::File, path, &["/cat/lib/x.so"]).unwrap(), "/cat/lib/x.so");
        assert_eq!(expand_with("y", Loader::File, path, &["/a/c/y"]).unwrap(), "/a/c/y");
        assert_eq!(canonicalize_path("/"), "/");
        assert_eq!(canonicalize_path("/.."), "/");
    }

    #[test]
    fn preload_lists_are_split_as_postgres_splits_them() {
        let split = |v: &str| split_library_list(v);
        assert_eq!(split(""), Some(vec![]));
        assert_eq!(split("   "), Some(vec![]));
        assert_eq!(split("a"), Some(vec!["a".to_string()]));
        assert_eq!(split(" a , b\t,c "), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(split("a b, c"), Some(vec!["a b".into(), "c".into()]), "inner spaces are kept");
        assert_eq!(split(r#""a,b" , "say ""hi""""#), Some(vec!["a,b".into(), r#"say "hi""#.into()]));
        assert_eq!(split(r#""""#), Some(vec![String::new()]), "an empty quoted name is allowed");
        assert_eq!(split("$libdir//x/./y/"), Some(vec!["$libdir/x/y".into()]), "canonicalised");
        for bad in ["a,,b", "a,", ",a", r#""open"#, r#""a" b"#, r#""a"b"#] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
        let long = split(&"x".repeat(2000)).unwrap();
        assert_eq!(long[0].len(), crate::name::MAXPGPATH - 1);
    }

    #[test]
    fn library_names_are_recognised_in_every_spelling() {
        for name in ["esp", "esp.so", "$libdir/esp", "$libdir/esp.so", "/opt/lib/esp.so"] {
            assert!(names_library(name, "esp"), "{name}");
        }
        for name in ["esp2", "xesp", "esp.so.1", "esp/x", ""] {
            assert!(!names_library(name, "esp"), "{name}");
        }
    }

    #[test]
    fn only_libdir_plugins_names_are_unrestricted() {
        assert!(is_unrestricted_plugin_name("$libdir/plugins/auto_explain"));
        for name in
            ["auto_explain", "$libdir/auto_explain", "$libdir/plugins/a/b", "/x/$libdir/plugins/a", "$libdir/plugins"]
        {
            assert!(!is_unrestricted_plugin_name(name), "{name}");
        }
    }
}
