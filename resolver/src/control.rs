//! Extension control files, read exactly as PostgreSQL 18 reads them: the lexer of its
//! configuration files (`guc-file.l`: tokens, quoting, escapes), the grammar of `ParseConfigFp`,
//! and the checks of `parse_extension_control_file` (parameter names compared exactly, Boolean
//! spellings, server encodings, identifier lists, `schema` with `relocatable`). A control file
//! this accepts, PostgreSQL accepts; one it refuses would make PostgreSQL fail — and with it
//! `pg_available_extensions` for every extension — so it is left out of the catalog.
//!
//! One difference, on purpose: `include`, `include_if_exists` and `include_dir`, which
//! PostgreSQL would follow to other files, are refused.

use std::path::{Path, PathBuf};

use crate::problem::{FileError, Unusable};

/// Why PostgreSQL would refuse a control file, in the classes its `parse_extension_control_file`
/// and `ParseConfigFp` raise (the shell gives each the SQLSTATE PostgreSQL uses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// `ERRCODE_SYNTAX_ERROR`: the file's syntax, an unrecognised parameter, one a secondary
    /// control file may not set, `schema` with `relocatable`; also what PostgreSQL cannot read
    /// (a NUL byte, `include`).
    #[error("{0}")]
    Syntax(String),
    /// `ERRCODE_INVALID_PARAMETER_VALUE`: a value of the wrong form.
    #[error("{0}")]
    InvalidValue(String),
    /// `ERRCODE_UNDEFINED_OBJECT`: an encoding PostgreSQL does not know.
    #[error("{0}")]
    UnknownEncoding(String),
}

/// Why a control file could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("could not read control file: {0}")]
    Unreadable(FileError),
    #[error(transparent)]
    Invalid(ControlError),
}

/// Reads the control file at `path` — a regular file, bounded — and parses it: its bytes (as
/// PostgreSQL would read them) and its settings. The one reader of control files.
pub fn read(path: &Path) -> Result<(Vec<u8>, ControlFile), ReadError> {
    let text = crate::safe_fs::read_regular(path, crate::safe_fs::MAX_TEXT_FILE)
        .map_err(|e| ReadError::Unreadable(FileError::from(e)))?;
    let control = ControlFile::parse_bytes(&text).map_err(ReadError::Invalid)?;
    Ok((text, control))
}

/// The settings of one control file, in file order (a later repetition wins, as in PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFile {
    pub entries: Vec<(String, String)>,
}

impl ControlFile {
    pub fn parse(text: &str) -> Result<ControlFile, ControlError> {
        ControlFile::parse_bytes(text.as_bytes())
    }

    /// Reads a control file's bytes (PostgreSQL does not require them to be UTF-8; values that
    /// are not are kept with replacement characters).
    pub fn parse_bytes(text: &[u8]) -> Result<ControlFile, ControlError> {
        let mut lexer = Lexer { text, pos: 0, line: 1 };
        let mut entries = Vec::new();
        loop {
            let (token, name) = lexer.next();
            match token {
                Token::End => break,
                Token::Eol => continue,
                Token::Id | Token::QualifiedId => {}
                _ => return Err(lexer.syntax_error(token, &name)),
            }
            let (mut token, mut value) = lexer.next();
            if token == Token::Equals {
                (token, value) = lexer.next();
            }
            let value = match token {
                // PostgreSQL's reader works on C strings: a NUL byte inside a quoted value trips
                // its own checks (an assertion, or a value silently cut short). (Elsewhere a NUL
                // is a syntax error, or in a comment, ignored, as in PostgreSQL.)
                Token::String if value.contains(&0) => {
                    return Err(ControlError::Syntax(format!(
                        "line {}: a NUL byte in a quoted value, which PostgreSQL cannot read",
                        lexer.line
                    )));
                }
                Token::String => deescape(&value),
                Token::Id | Token::Integer | Token::Real | Token::UnquotedString => value,
                _ => return Err(lexer.syntax_error(token, &value)),
            };
            let line = lexer.line;
            let (after, text) = lexer.next();
            if !matches!(after, Token::Eol | Token::End) {
                return Err(lexer.syntax_error(after, &text));
            }
            let name = String::from_utf8_lossy(&name).into_owned();
            if ["include", "include_if_exists", "include_dir"].iter().any(|d| name.eq_ignore_ascii_case(d)) {
                return Err(ControlError::Syntax(format!(
                    "line {line}: \"{name}\" directives are not supported in control files"
                )));
            }
            entries.push((name, c_string(value)));
            if after == Token::End {
                break;
            }
        }
        Ok(ControlFile { entries })
    }

    /// The last value given for parameter `key` (names compared exactly, as PostgreSQL does).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn default_version(&self) -> Option<&str> {
        self.get("default_version")
    }

    pub fn module_pathname(&self) -> Option<&str> {
        self.get("module_pathname")
    }

    /// Required extensions, as PostgreSQL reads `requires` (unquoted names downcased).
    pub fn requires(&self) -> Vec<String> {
        self.get("requires").and_then(split_identifiers).unwrap_or_default()
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

    /// What `parse_extension_control_file` checks; `secondary` for `<name>--<version>.control`
    /// (where `directory` and `default_version` are not allowed).
    pub fn validate(&self, secondary: bool) -> Result<(), ControlError> {
        use ControlError::{InvalidValue, Syntax, UnknownEncoding};
        let (mut relocatable, mut schema) = (false, false);
        for (key, value) in &self.entries {
            match key.as_str() {
                "directory" | "default_version" if secondary => {
                    return Err(Syntax(format!(
                        "parameter \"{key}\" cannot be set in a secondary extension control file"
                    )));
                }
                "directory" | "default_version" | "module_pathname" | "comment" => {}
                "schema" => schema = true,
                "relocatable" | "superuser" | "trusted" => {
                    let Some(b) = parse_bool(value) else {
                        return Err(InvalidValue(format!("parameter \"{key}\" requires a Boolean value")));
                    };
                    if key == "relocatable" {
                        relocatable = b;
                    }
                }
                "encoding" if !is_server_encoding(value) => {
                    return Err(UnknownEncoding(format!("\"{value}\" is not a valid encoding name")));
                }
                "encoding" => {}
                "requires" | "no_relocate" if split_identifiers(value).is_none() => {
                    return Err(InvalidValue(format!("parameter \"{key}\" must be a list of extension names")));
                }
                "requires" | "no_relocate" => {}
                _ => return Err(Syntax(format!("unrecognized parameter \"{key}\""))),
            }
        }
        if relocatable && schema {
            return Err(Syntax("parameter \"schema\" cannot be specified when \"relocatable\" is true".into()));
        }
        Ok(())
    }
}

/// PostgreSQL's `parse_bool`: a case-insensitive prefix of true, false, yes or no; `on`; `of`
/// or `off`; 1 or 0. No surrounding spaces.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str| !v.is_empty() && word.starts_with(v.as_str());
    match v.as_bytes().first()? {
        b't' if prefix_of("true") => Some(true),
        b'f' if prefix_of("false") => Some(false),
        b'y' if prefix_of("yes") => Some(true),
        b'n' if prefix_of("no") => Some(false),
        // pg_strncasecmp over max(length, 2) characters: "on", and "of" or "off"
        b'o' if v == "on" => Some(true),
        b'o' if v.len() >= 2 && "off".starts_with(v.as_str()) => Some(false),
        b'1' if v.len() == 1 => Some(true),
        b'0' if v.len() == 1 => Some(false),
        _ => None,
    }
}

/// `pg_valid_server_encoding`: the name, lowercased with everything but letters and digits
/// dropped, is one of PostgreSQL's names for an encoding a server can use.
pub fn is_server_encoding(name: &str) -> bool {
    // pg_encname_tbl (encnames.c) without the client-only encodings (BIG5, GBK, UHC, GB18030,
    // JOHAB, SJIS, SHIFT_JIS_2004 and their aliases).
    const SERVER: [&str; 64] = [
        "abc",
        "alt",
        "euccn",
        "eucjis2004",
        "eucjp",
        "euckr",
        "euctw",
        "iso88591",
        "iso885910",
        "iso885913",
        "iso885914",
        "iso885915",
        "iso885916",
        "iso88592",
        "iso88593",
        "iso88594",
        "iso88595",
        "iso88596",
        "iso88597",
        "iso88598",
        "iso88599",
        "koi8",
        "koi8r",
        "koi8u",
        "latin1",
        "latin10",
        "latin2",
        "latin3",
        "latin4",
        "latin5",
        "latin6",
        "latin7",
        "latin8",
        "latin9",
        "muleinternal",
        "sqlascii",
        "tcvn",
        "tcvn5712",
        "unicode",
        "utf8",
        "vscii",
        "win",
        "win1250",
        "win1251",
        "win1252",
        "win1253",
        "win1254",
        "win1255",
        "win1256",
        "win1257",
        "win1258",
        "win866",
        "win874",
        "windows1250",
        "windows1251",
        "windows1252",
        "windows1253",
        "windows1254",
        "windows1255",
        "windows1256",
        "windows1257",
        "windows1258",
        "windows866",
        "windows874",
    ];
    if name.len() >= NAMEDATALEN {
        return false;
    }
    let clean: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    SERVER.contains(&clean.as_str())
}

use crate::name::NAMEDATALEN;

/// `SplitIdentifierString(value, ',')`: a comma-separated list of identifiers, quoted (`""` for
/// a quote, case kept) or not (ASCII downcased); each cut to 63 bytes. `None` for bad syntax.
pub fn split_identifiers(value: &str) -> Option<Vec<String>> {
    let items = crate::name::split_list(value, false)?;
    let name = |(item, quoted): (String, bool)| if quoted { item } else { item.to_ascii_lowercase() };
    Some(items.into_iter().map(|item| crate::name::truncate(name(item), NAMEDATALEN)).collect())
}

/// Every `<name>--*.control` in `scripts` must be a regular file that PostgreSQL can read and
/// accept: on its own (no `directory`, no `default_version`) and, as PostgreSQL reads it, on top
/// of the primary control file `primary` (`schema` with `relocatable` is checked on the two
/// together).
pub fn check_secondary_controls(name: &str, scripts: &Path, primary: &ControlFile) -> Result<(), Unusable> {
    let prefix = format!("{name}--");
    for entry in std::fs::read_dir(scripts).into_iter().flatten().flatten().take(crate::safe_fs::MAX_DIR_ENTRIES) {
        let file = entry.file_name();
        if !file.to_str().is_some_and(|f| f.starts_with(&prefix) && f.ends_with(".control")) {
            continue;
        }
        let file = entry.path();
        let invalid = |combined, error| Unusable::SecondaryInvalid { file: file.clone(), combined, error };
        let secondary = match read(&file) {
            Ok((_, secondary)) => secondary,
            Err(ReadError::Unreadable(error)) => return Err(Unusable::SecondaryUnreadable { file, error }),
            Err(ReadError::Invalid(error)) => return Err(invalid(false, error)),
        };
        secondary.validate(true).map_err(|e| invalid(false, e))?;
        let mut combined = primary.clone();
        combined.entries.extend(secondary.entries);
        combined.validate(false).map_err(|e| invalid(true, e))?;
    }
    Ok(())
}

/// The tokens of PostgreSQL's configuration-file lexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    Eol,
    Id,
    QualifiedId,
    String,
    UnquotedString,
    Integer,
    Real,
    Equals,
    Error,
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_letter_or_digit(b: u8) -> bool {
    is_letter(b) || b.is_ascii_digit()
}

impl Lexer<'_> {
    /// The next token and its text, the longest match winning and, between matches of the same
    /// length, the rule listed first in guc-file.l (ID, QUALIFIED_ID, STRING, UNQUOTED_STRING,
    /// INTEGER, REAL, `=`).
    fn next(&mut self) -> (Token, Vec<u8>) {
        let t = self.text;
        while self.pos < t.len() && matches!(t[self.pos], b' ' | b'\t' | b'\r') {
            self.pos += 1;
        }
        if self.pos < t.len() && t[self.pos] == b'#' {
            while self.pos < t.len() && t[self.pos] != b'\n' {
                self.pos += 1;
            }
        }
        let Some(&first) = t.get(self.pos) else { return (Token::End, Vec::new()) };
        if first == b'\n' {
            self.pos += 1;
            self.line += 1;
            return (Token::Eol, Vec::new());
        }
        let rest = &t[self.pos..];
        let candidates = [
            (Token::Id, id_len(rest)),
            (Token::QualifiedId, qualified_id_len(rest)),
            (Token::String, string_len(rest)),
            (Token::UnquotedString, unquoted_len(rest)),
            (Token::Integer, integer_len(rest)),
            (Token::Real, real_len(rest)),
            (Token::Equals, usize::from(first == b'=')),
        ];
        // max_by_key keeps the last of equal maxima: look from the end for the first rule.
        let (token, len) = candidates
            .iter()
            .rev()
            .copied()
            .max_by_key(|(_, len)| *len)
            .filter(|(_, len)| *len > 0)
            .unwrap_or((Token::Error, 1));
        let text = rest[..len].to_vec();
        self.pos += len;
        (token, text)
    }

    fn syntax_error(&self, token: Token, text: &[u8]) -> ControlError {
        ControlError::Syntax(match token {
            Token::Eol | Token::End => format!(
                "syntax error in line {}, near end of line",
                self.line.saturating_sub(usize::from(token == Token::Eol))
            ),
            _ if text == b"'" => format!("syntax error in line {}: unterminated quoted string", self.line),
            _ => format!("syntax error in line {}, near token \"{}\"", self.line, String::from_utf8_lossy(text)),
        })
    }
}

fn id_len(s: &[u8]) -> usize {
    match s.first() {
        Some(&b) if is_letter(b) => 1 + s[1..].iter().take_while(|b| is_letter_or_digit(**b)).count(),
        _ => 0,
    }
}

fn qualified_id_len(s: &[u8]) -> usize {
    let first = id_len(s);
    if first == 0 || s.get(first) != Some(&b'.') {
        return 0;
    }
    let second = id_len(&s[first + 1..]);
    if second == 0 { 0 } else { first + 1 + second }
}

/// `'([^'\\\n]|\\.|'')*'`, where `.` is anything but a newline.
fn string_len(s: &[u8]) -> usize {
    if s.first() != Some(&b'\'') {
        return 0;
    }
    let mut i = 1;
    loop {
        match s.get(i) {
            None | Some(b'\n') => return 0,
            Some(b'\\') => match s.get(i + 1) {
                None | Some(b'\n') => return 0,
                Some(_) => i += 2,
            },
            Some(b'\'') if s.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => return i + 1,
            Some(_) => i += 1,
        }
    }
}

fn unquoted_len(s: &[u8]) -> usize {
    match s.first() {
        Some(&b) if is_letter(b) => {
            1 + s[1..]
                .iter()
                .take_while(|b| is_letter_or_digit(**b) || matches!(b, b'-' | b'.' | b'_' | b':' | b'/'))
                .count()
        }
        _ => 0,
    }
}

fn sign_len(s: &[u8]) -> usize {
    usize::from(matches!(s.first(), Some(b'-' | b'+')))
}

/// `{SIGN}?({DIGIT}+|0x{HEXDIGIT}+){UNIT_LETTER}*`: the longer of the two alternatives.
fn integer_len(s: &[u8]) -> usize {
    let sign = sign_len(s);
    let body = &s[sign..];
    let units = |n: usize| n + body[n..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let hex = if body.starts_with(b"0x") { body[2..].iter().take_while(|b| b.is_ascii_hexdigit()).count() } else { 0 };
    let decimal = if digits > 0 { units(digits) } else { 0 };
    let hexadecimal = if hex > 0 { units(2 + hex) } else { 0 };
    match decimal.max(hexadecimal) {
        0 => 0,
        len => sign + len,
    }
}

/// `{SIGN}?{DIGIT}*"."{DIGIT}*{EXPONENT}?`, `EXPONENT = [Ee]{SIGN}?{DIGIT}+`
fn real_len(s: &[u8]) -> usize {
    let sign = sign_len(s);
    let body = &s[sign..];
    let int = body.iter().take_while(|b| b.is_ascii_digit()).count();
    if body.get(int) != Some(&b'.') {
        return 0;
    }
    let frac = body[int + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut len = int + 1 + frac;
    if matches!(body.get(len), Some(b'e' | b'E')) {
        let exp_sign = sign_len(&body[len + 1..]);
        let exp_digits = body[len + 1 + exp_sign..].iter().take_while(|b| b.is_ascii_digit()).count();
        if exp_digits > 0 {
            len += 1 + exp_sign + exp_digits;
        }
    }
    sign + len
}

/// `DeescapeQuotedString`: the quotes removed, `''` for a quote, and backslash escapes (`\b`
/// `\f` `\n` `\r` `\t`, up to three octal digits, anything else for itself).
fn deescape(token: &[u8]) -> Vec<u8> {
    let s = &token[1..token.len() - 1];
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if i + 1 < s.len() => {
                i += 1;
                match s[i] {
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'0'..=b'7' => {
                        let digits = s[i..].iter().take(3).take_while(|b| (b'0'..=b'7').contains(b)).count();
                        let value = s[i..i + digits].iter().fold(0u32, |v, d| (v << 3) + u32::from(d - b'0'));
                        out.push(value as u8);
                        i += digits - 1;
                    }
                    other => out.push(other),
                }
            }
            b'\'' if s.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 1;
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// The value as PostgreSQL holds it: a C string, so it ends at the first NUL byte.
fn c_string(bytes: Vec<u8>) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A value written so that [`ControlFile::parse`] (and PostgreSQL) read back exactly `value`.
pub fn quote(value: &str) -> String {
    let mut out = String::from("'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // other control bytes, as the octal escapes PostgreSQL reads
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
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
        assert_eq!(c.get("relocatable"), Some("true"));
        assert_eq!(c.get("RELOCATABLE"), None, "names are compared exactly");
        assert_eq!(c.entries.len(), 5);
    }

    #[test]
    fn quoting_round_trips() {
        for v in [
            "plain",
            "it's",
            "back\\slash",
            "/a b/c",
            "''",
            "tab\there",
            "new\nline",
            "cr\rx",
            "bell\u{7}x",
            "del\u{7f}",
        ] {
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
        assert!(err("colour = 'blue'", false).to_string().contains("unrecognized parameter \"colour\""));
        assert!(err("trusted = maybe", false).to_string().contains("requires a Boolean value"));
        assert!(err("default_version = '1'", true).to_string().contains("secondary"));
        // the classes PostgreSQL raises them in (the shell gives each its SQLSTATE)
        assert!(matches!(err("colour = 'blue'", false), ControlError::Syntax(_)));
        assert!(matches!(err("default_version = '1'", true), ControlError::Syntax(_)));
        assert!(matches!(err("trusted = maybe", false), ControlError::InvalidValue(_)));
        assert!(matches!(err("requires = 'a,,b'", false), ControlError::InvalidValue(_)));
        assert!(matches!(err("relocatable = true\nschema = s", false), ControlError::Syntax(_)));
        assert!(matches!(err("encoding = klingon", false), ControlError::UnknownEncoding(_)));
        assert!(matches!(ControlFile::parse("a = 'x"), Err(ControlError::Syntax(_))));
        for (b, v) in
            [("t", true), ("TRUE", true), ("Tr", true), ("yes", true), ("on", true), ("ON", true), ("1", true)]
        {
            assert_eq!(parse_bool(b), Some(v), "{b}");
        }
        for (b, v) in
            [("f", false), ("False", false), ("n", false), ("no", false), ("off", false), ("of", false), ("0", false)]
        {
            assert_eq!(parse_bool(b), Some(v), "{b}");
        }
        for b in ["o", "onn", "offf", "maybe", "", " true", "true ", "truee", "10", "00"] {
            assert!(parse_bool(b).is_none(), "{b:?}");
        }
    }

    #[test]
    fn every_parameter_is_checked_as_postgres_does() {
        let ok = |t: &str| ControlFile::parse(t).and_then(|c| c.validate(false));
        // names are case-sensitive in PostgreSQL
        assert!(
            ok("Default_Version = '1.0'")
                .unwrap_err()
                .to_string()
                .contains("unrecognized parameter \"Default_Version\"")
        );
        assert!(ok("encoding = 'UTF8'").is_ok());
        assert!(ok("encoding = 'latin-1'").is_ok(), "non-alphanumerics are ignored");
        assert!(ok("encoding = 'SJIS'").unwrap_err().to_string().contains("not a valid encoding name"), "client-only");
        assert!(ok("encoding = klingon").unwrap_err().to_string().contains("\"klingon\" is not a valid encoding name"));
        assert!(ok("requires = 'a, \"B c\", D'").is_ok());
        assert_eq!(ControlFile::parse("requires = 'a, \"B c\", D'").unwrap().requires(), ["a", "B c", "d"]);
        assert!(ok("requires = 'a,,b'").unwrap_err().to_string().contains("must be a list of extension names"));
        assert!(ok("no_relocate = 'a b'").unwrap_err().to_string().contains("must be a list of extension names"));
        assert!(ok("requires = '\"open'").is_err());
        assert!(ok("requires = ''").is_ok());
        assert!(
            ok("relocatable = true\nschema = s").unwrap_err().to_string().contains("\"schema\" cannot be specified")
        );
        assert!(ok("relocatable = false\nschema = s").is_ok());
        assert!(ok("trusted = ' true'").unwrap_err().to_string().contains("requires a Boolean value"));
        assert!(ok("include '/etc/passwd'").unwrap_err().to_string().contains("directives are not supported"));
        assert!(ok("INCLUDE_DIR 'x'").unwrap_err().to_string().contains("directives are not supported"));
        assert!(ControlFile::parse_bytes(b"relocatable = 'on\0'").unwrap_err().to_string().contains("NUL byte"));
        assert!(ControlFile::parse_bytes(b"relocatable = on\0").is_err(), "a syntax error, as in PostgreSQL");
        let commented =
            ControlFile::parse_bytes(b"default_version = '1.0'\n# a \0 here\nrelocatable = true\n").unwrap();
        assert!(commented.validate(false).is_ok(), "a NUL in a comment is ignored, as in PostgreSQL");
        // not UTF-8: PostgreSQL reads it, so do we
        let latin1 = ControlFile::parse_bytes(b"comment = 'caf\xe9'\ndefault_version = '1.0'").unwrap();
        assert!(latin1.validate(false).is_ok());
        assert_eq!(latin1.default_version(), Some("1.0"));
    }

    #[test]
    fn the_lexer_is_postgres_lexer() {
        let value = |t: &str| ControlFile::parse(t).map(|c| c.entries[0].1.clone());
        // unquoted values PostgreSQL's lexer rejects
        for bad in ["module_pathname = $libdir/baz", "a = 'x'y", "a = @", "a = 1.0.1", "a.b.c = 1", "a = 'x\\\ny'"] {
            assert!(value(bad).is_err(), "{bad}");
        }
        // and the forms it accepts
        for (text, v) in [
            ("a = b/c:d-e.f_g", "b/c:d-e.f_g"),
            ("a = 1.0", "1.0"),
            ("a = -.5e3", "-.5e3"),
            ("a = 0x1Fkb", "0x1Fkb"),
            ("a = 10MB", "10MB"),
            ("a.b = x", "x"),
            ("a 'it''s'", "it's"),
            ("a = '\\101\\x\\''", "Ax'"),
            ("a = 'cut\\0here'", "cut"),
            ("a = caf\u{e9}", "caf\u{e9}"),
        ] {
            assert_eq!(value(text).ok().as_deref(), Some(v), "{text}");
        }
        assert_eq!(ControlFile::parse("a.b = x").unwrap().entries[0].0, "a.b");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["= 1", "a = 'unterminated", "a = 1 2", "a =", "1a = 2"] {
            assert!(ControlFile::parse(bad).is_err(), "{bad}");
        }
    }
}
