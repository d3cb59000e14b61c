//! `/proc/self/mountinfo`: which directories are mount points, read-only, of what filesystem,
//! mounted from where.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub read_only: bool,
    pub fs_type: String,
    pub source: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let options = fields.get(5)?;
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let source = unescape(right.next().unwrap_or(""));
            Some(Mount {
                mount_point: PathBuf::from(mount_point),
                read_only: options.split(',').any(|o| o == "ro"),
                fs_type,
                source,
            })
        })
        .collect()
}

/// The mount `path` lives on: the longest mount point containing it (the last one listed when
/// several are stacked on the same point).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let code = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 22 0:30 / /tmp rw,nosuid shared:2 - tmpfs tmpfs rw
40 22 253:0 /images/pg_ivm /extensions/pg_ivm ro,relatime - ext4 /dev/vda rw
41 22 253:0 /x /extensions/with\\040space rw - ext4 /dev/vda rw
42 22 0:31 / /extensions/pg_ivm ro - overlay overlay ro";

    #[test]
    fn mount_points_and_read_only() {
        let mounts = parse_mountinfo(INFO);
        assert_eq!(mounts.len(), 5);
        let m = mount_of(&mounts, Path::new("/extensions/pg_ivm/lib")).unwrap();
        assert_eq!((m.fs_type.as_str(), m.read_only), ("overlay", true), "the last mount stacked on a point wins");
        let m = mount_of(&mounts, Path::new("/extensions/with space")).unwrap();
        assert_eq!(m.mount_point, Path::new("/extensions/with space"));
        let m = mount_of(&mounts, Path::new("/extensions/plain")).unwrap();
        assert_eq!((m.mount_point.as_path(), m.read_only), (Path::new("/"), false));
        assert_eq!(mount_of(&mounts, Path::new("/tmp/a")).unwrap().source, "tmpfs");
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_mountinfo("garbage\n1 2 3\n - \n").is_empty());
    }
}
