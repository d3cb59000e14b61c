//! Extension names: which ones may ever reach the filesystem.

/// PostgreSQL's own rules for an extension name (`check_valid_extension_name`), plus the ones
/// that keep a name from ever leaving its directory: no path separator, no `.`/`..`, no NUL.
pub fn is_valid_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains("--")
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains(['/', '\\', '\0'])
}

/// The extension name of a primary control file name (`<name>.control`), or `None` for
/// secondary control files (`<name>--<version>.control`) and anything else.
pub fn primary_control_name(file_name: &str) -> Option<&str> {
    let name = file_name.strip_suffix(".control")?;
    is_valid_extension_name(name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["hstore", "pg_stat_statements", "uuid-ossp", "a", "postgis_topology"] {
            assert!(is_valid_extension_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../etc", "a--b", "-a", "a-", "a\\b", "a\0b"] {
            assert!(!is_valid_extension_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn control_names() {
        assert_eq!(primary_control_name("hstore.control"), Some("hstore"));
        assert_eq!(primary_control_name("hstore--1.4.control"), None);
        assert_eq!(primary_control_name("hstore.sql"), None);
        assert_eq!(primary_control_name(".control"), None);
    }
}
