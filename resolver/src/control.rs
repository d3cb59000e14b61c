//! Extension control files: PostgreSQL's `name = value` configuration syntax.
//!
//! Only what the resolver needs is interpreted (`directory`, `default_version`, `requires`,
//! `module_pathname`); everything else is kept as text so a generated control file says what
//! the original said.

use std::path::{Path, PathBuf};

/// The settings of one control file, in file order (a later repetition wins, as in PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFile {
    pub entries: Vec<(String, String)>,
}

impl ControlFile {
    pub fn parse(text: &str) -> Result<ControlFile, String> {
        let mut entries = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let entry = parse_line(line).map_err(|e| format!("syntax error in line {}: {e}", lineno + 1))?;
            entries.extend(entry);
        }
        Ok(ControlFile { entries })
    }

    /// The last value given for `key` (names are case-insensitive, as for GUCs).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    pub fn default_version(&self) -> Option<&str> {
        self.get("default_version")
    }

    pub fn module_pathname(&self) -> Option<&str> {
        self.get("module_pathname")
    }

    /// Required extensions, as listed in `requires`.
    pub fn requires(&self) -> Vec<String> {
        self.get("requires")
            .map(|r| r.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// Where the scripts are: `directory` taken as absolute, or relative to `base`; without it,
    /// `default`.
    pub fn script_directory(&self, base: &Path, default: &Path) -> PathBuf {
        match self.get("directory") {
            Some(dir) if Path::new(dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => base.join(dir),
            None => default.to_path_buf(),
        }
    }
}

/// The parameters PostgreSQL 18 accepts in a primary control file; any other name makes it fail
/// (`unrecognized parameter`), and with it pg_available_extensions for every extension.
const KNOWN: [&str; 11] = [
    "directory",
    "default_version",
    "module_pathname",
    "comment",
    "schema",
    "relocatable",
    "superuser",
    "trusted",
    "encoding",
    "requires",
    "no_relocate",
];
const BOOLEAN: [&str; 3] = ["relocatable", "superuser", "trusted"];

impl ControlFile {
    /// What PostgreSQL checks when it reads the file; `secondary` for `<name>--<version>.control`
    /// (where `directory` and `default_version` are not allowed).
    pub fn validate(&self, secondary: bool) -> Result<(), String> {
        for (key, value) in &self.entries {
            let key = key.to_ascii_lowercase();
            if !KNOWN.contains(&key.as_str()) {
                return Err(format!("unrecognized parameter \"{key}\""));
            }
            if secondary && (key == "directory" || key == "default_version") {
                return Err(format!("parameter \"{key}\" cannot be set in a secondary extension control file"));
            }
            if BOOLEAN.contains(&key.as_str()) && parse_bool(value).is_none() {
                return Err(format!("parameter \"{key}\" requires a Boolean value"));
            }
        }
        Ok(())
    }
}

/// PostgreSQL's boolean spellings: true/false/yes/no/on/off/1/0 and unambiguous prefixes.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "on" || v == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// Every `<name>--*.control` in `scripts` must be a regular file that PostgreSQL can read.
pub fn check_secondary_controls(name: &str, scripts: &Path) -> Result<(), String> {
    let prefix = format!("{name}--");
    for entry in std::fs::read_dir(scripts).into_iter().flatten().flatten().take(crate::safe_fs::MAX_DIR_ENTRIES) {
        let file = entry.file_name();
        let Some(file) = file.to_str().filter(|f| f.starts_with(&prefix) && f.ends_with(".control")) else { continue };
        let path = entry.path();
        let text = crate::safe_fs::read_text(&path)
            .map_err(|e| format!("secondary control file \"{}\": {e}", path.display()))?;
        ControlFile::parse(&text)
            .and_then(|c| c.validate(true))
            .map_err(|e| format!("secondary control file \"{}\" ({file}): {e}", path.display()))?;
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key_len = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$' || !c.is_ascii()))
        .unwrap_or(line.len());
    if key_len == 0 || line.as_bytes()[0].is_ascii_digit() {
        return Err(format!("expected a parameter name near \"{}\"", truncate(line)));
    }
    let (key, rest) = line.split_at(key_len);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let (value, rest) = if let Some(quoted) = rest.strip_prefix('\'') {
        unquote(quoted)?
    } else {
        let end = rest.find(|c: char| c.is_whitespace() || c == '#').unwrap_or(rest.len());
        if end == 0 {
            return Err(format!("missing value for \"{key}\""));
        }
        (rest[..end].to_string(), &rest[end..])
    };
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(format!("unexpected text after the value of \"{key}\": \"{}\"", truncate(rest)));
    }
    Ok(Some((key.to_string(), value)))
}

/// Reads a quoted value after its opening quote: `''` and backslash escapes as in
/// PostgreSQL's configuration files. Returns the value and what follows the closing quote.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                if let Some((_, '\'')) = chars.peek() {
                    chars.next();
                    out.push('\'');
                } else {
                    return Ok((out, &s[i + 1..]));
                }
            }
            '\\' => match chars.next() {
                Some((_, 'b')) => out.push('\u{8}'),
                Some((_, 'f')) => out.push('\u{c}'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 't')) => out.push('\t'),
                Some((_, d @ '0'..='7')) => {
                    let mut code = d.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek() {
                            Some(&(_, o @ '0'..='7')) => {
                                code = code * 8 + o.to_digit(8).unwrap_or(0);
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                Some((_, other)) => out.push(other),
                None => break,
            },
            _ => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// A value written so that [`ControlFile::parse`] (and PostgreSQL) read back exactly `value`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HSTORE: &str = "# hstore extension\ncomment = 'data type for storing sets of (key, value) pairs'\n\
        default_version = '1.8'\nmodule_pathname = '$libdir/hstore'\nrelocatable = true\ntrusted = true\n";

    #[test]
    fn reads_a_real_control_file() {
        let c = ControlFile::parse(HSTORE).unwrap();
        assert_eq!(c.default_version(), Some("1.8"));
        assert_eq!(c.module_pathname(), Some("$libdir/hstore"));
        assert_eq!(c.get("RELOCATABLE"), Some("true"));
        assert_eq!(c.entries.len(), 5);
    }

    #[test]
    fn quoting_round_trips() {
        for v in ["plain", "it's", "back\\slash", "/a b/c", "''", "tab\there"] {
            let text = format!("directory = {}\n", quote(v));
            assert_eq!(ControlFile::parse(&text).unwrap().get("directory"), Some(v), "{text}");
        }
    }

    #[test]
    fn forms_postgres_accepts() {
        let c =
            ControlFile::parse("a 1\nb=two # c\n  c = 'x' # y\nrequires = 'cube, earthdistance'\nd '\\101'").unwrap();
        assert_eq!(c.get("a"), Some("1"));
        assert_eq!(c.get("b"), Some("two"));
        assert_eq!(c.get("c"), Some("x"));
        assert_eq!(c.get("d"), Some("A"));
        assert_eq!(c.requires(), ["cube", "earthdistance"]);
    }

    #[test]
    fn last_value_wins() {
        let c = ControlFile::parse("directory = 'a'\ndirectory = '/b'\n").unwrap();
        assert_eq!(c.script_directory(Path::new("/base"), Path::new("/d")), PathBuf::from("/b"));
    }

    #[test]
    fn script_directory_rules() {
        let base = Path::new("/img/share");
        let default = Path::new("/img/share/extension");
        let rel = ControlFile::parse("directory = 'contrib/x'").unwrap();
        assert_eq!(rel.script_directory(base, default), PathBuf::from("/img/share/contrib/x"));
        let none = ControlFile::parse("comment = 'x'").unwrap();
        assert_eq!(none.script_directory(base, default), default);
    }

    #[test]
    fn validation_follows_postgres() {
        assert!(ControlFile::parse(HSTORE).unwrap().validate(false).is_ok());
        let err = |t: &str, secondary| ControlFile::parse(t).unwrap().validate(secondary).unwrap_err();
        assert!(err("colour = 'blue'", false).contains("unrecognized parameter \"colour\""));
        assert!(err("trusted = maybe", false).contains("requires a Boolean value"));
        assert!(err("default_version = '1'", true).contains("secondary"));
        for b in ["t", "TRUE", "yes", "on", "1", "of", "off", "n", "0"] {
            assert!(parse_bool(b).is_some(), "{b}");
        }
        for b in ["o", "maybe", ""] {
            assert!(parse_bool(b).is_none(), "{b:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["= 1", "a = 'unterminated", "a = 1 2", "a =", "1a = 2"] {
            assert!(ControlFile::parse(bad).is_err(), "{bad}");
        }
    }
}
