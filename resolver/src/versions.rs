//! Versions of an extension from its script file names: `<name>--<v>.sql` installs `v`,
//! `<name>--<a>--<b>.sql` updates `a` to `b`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    pub installable: BTreeSet<String>,
    /// Update edges, from → to.
    pub updates: BTreeMap<String, BTreeSet<String>>,
}

impl Versions {
    pub fn scan(name: &str, script_dir: &Path) -> Versions {
        let mut versions = Versions::default();
        let prefix = format!("{name}--");
        for entry in fs::read_dir(script_dir).into_iter().flatten().flatten() {
            let file = entry.file_name();
            let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|f| f.strip_suffix(".sql"))
            else {
                continue;
            };
            match rest.split_once("--") {
                Some((from, to)) if !from.is_empty() && !to.is_empty() && !to.contains("--") => {
                    versions.updates.entry(from.to_string()).or_default().insert(to.to_string());
                }
                Some(_) => {}
                None if !rest.is_empty() => {
                    versions.installable.insert(rest.to_string());
                }
                None => {}
            }
        }
        versions
    }

    /// Versions reachable from `from` along update scripts (itself included).
    fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([from.to_string()]);
        let mut todo = vec![from.to_string()];
        while let Some(v) = todo.pop() {
            for next in self.updates.get(&v).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    }

    /// What `CREATE EXTENSION … VERSION` can install: an install script, or one plus updates.
    pub fn available(&self) -> Vec<String> {
        let mut all = BTreeSet::new();
        for v in &self.installable {
            all.extend(self.reachable(v));
        }
        sort_versions(all.into_iter().collect())
    }

    /// Versions named by a script from which `target` cannot be reached (update-path gaps).
    pub fn gaps(&self, target: &str) -> Vec<String> {
        let mut named: BTreeSet<String> = self.installable.clone();
        for (from, tos) in &self.updates {
            named.insert(from.clone());
            named.extend(tos.iter().cloned());
        }
        let gaps = named.into_iter().filter(|v| !self.reachable(v).contains(target)).collect();
        sort_versions(gaps)
    }
}

/// Numeric-aware order: 1.10 after 1.9.
pub fn sort_versions(mut versions: Vec<String>) -> Vec<String> {
    let key = |v: &String| -> Vec<(u64, String)> {
        v.split(['.', '-']).map(|part| (part.parse::<u64>().unwrap_or(u64::MAX), part.to_string())).collect()
    };
    versions.sort_by_key(key);
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(files: &[&str]) -> Versions {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            fs::write(dir.path().join(f), "").unwrap();
        }
        Versions::scan("hstore", dir.path())
    }

    #[test]
    fn available_versions_follow_update_scripts() {
        let v = versions(&[
            "hstore--1.4.sql",
            "hstore--1.4--1.5.sql",
            "hstore--1.5--1.10.sql",
            "hstore.control",
            "other--9.sql",
        ]);
        assert_eq!(v.available(), ["1.4", "1.5", "1.10"]);
        assert!(v.gaps("1.10").is_empty());
    }

    #[test]
    fn gaps_are_versions_that_cannot_reach_the_default() {
        let v = versions(&["hstore--1.0.sql", "hstore--1.0--1.1.sql", "hstore--1.2--1.3.sql", "hstore--1.3.sql"]);
        assert_eq!(v.gaps("1.3"), ["1.0", "1.1"]);
        assert_eq!(v.available(), ["1.0", "1.1", "1.3"]);
    }
}
