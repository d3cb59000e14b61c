//! Extension names: which ones may ever reach the filesystem.

/// PostgreSQL's `MAXPGPATH`: longer file names are cut off in its buffers.
pub const MAXPGPATH: usize = 1024;

/// PostgreSQL's `NAMEDATALEN`: identifiers are cut to one byte less.
pub const NAMEDATALEN: usize = 64;

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

/// PostgreSQL's list splitters (`SplitIdentifierString` and `SplitDirectoriesString` with a
/// comma): items separated by commas, whitespace around them dropped, an item in double quotes
/// kept as written (`""` for a quote inside, empty allowed), an unquoted one ending at the comma
/// — or, unless `inner_spaces`, at whitespace — and never empty. Each item comes with whether it
/// was quoted; `None` where PostgreSQL finds the syntax invalid.
pub fn split_list(value: &str, inner_spaces: bool) -> Option<Vec<(String, bool)>> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}');
    let mut rest = value.trim_start_matches(is_space);
    let mut items = Vec::new();
    if rest.is_empty() {
        return Some(items);
    }
    loop {
        let item = if let Some(quoted) = rest.strip_prefix('"') {
            let mut item = String::new();
            let mut chars = quoted.char_indices();
            loop {
                let (i, c) = chars.next()?;
                if c != '"' {
                    item.push(c);
                } else if quoted[i + 1..].starts_with('"') {
                    item.push('"');
                    chars.next();
                } else {
                    rest = &quoted[i + 1..];
                    break (item, true);
                }
            }
        } else {
            let end = rest.find(|c: char| c == ',' || (!inner_spaces && is_space(c))).unwrap_or(rest.len());
            let item = rest[..end].trim_end_matches(is_space);
            if item.is_empty() {
                return None;
            }
            rest = &rest[end..];
            (item.to_string(), false)
        };
        items.push(item);
        rest = rest.trim_start_matches(is_space);
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start_matches(is_space),
            None if rest.is_empty() => return Some(items),
            None => return None,
        }
    }
}

/// `name` cut to fewer than `limit` bytes (at a character boundary), as PostgreSQL cuts names to
/// its buffers (NAMEDATALEN, MAXPGPATH).
pub fn truncate(mut name: String, limit: usize) -> String {
    if name.len() >= limit {
        let mut end = limit - 1;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
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
