//! Reading files that images and operators control, without ever blocking or trusting them.
//!
//! * Only regular files are read: the file is opened with `O_NONBLOCK` (so a FIFO put in the
//!   place of a control file between the scan and the read cannot hang a backend) and checked
//!   with `fstat` on the open descriptor.
//! * Reads are bounded.
//! * Trust: a file the server reads code or scripts from must be owned by root or by the
//!   server's user and not be writable by group or others; nor may its directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Control files and metadata are small. Libraries are never read whole (see `crate::elf`).
pub const MAX_TEXT_FILE: u64 = 1 << 20;
/// Entries read from one directory; the rest are ignored.
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// The content of the regular file at `path` (symlinks followed), at most `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let meta = file.metadata()?;
    if meta.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::take(file, max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// The regular file at `path` (symlinks followed), opened without blocking, for reading parts
/// of it at given offsets.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path, MAX_TEXT_FILE)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
}

/// Who the server may trust files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Refuse untrusted files (the default); `false` only reports them.
    pub enforce: bool,
    /// The server's user (root is always trusted).
    pub server_uid: u32,
}

impl TrustPolicy {
    /// The policy for this process as the server's user.
    pub fn for_this_process(enforce: bool) -> TrustPolicy {
        // The server's user does not change during a process's life (nor across fork).
        static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        // SAFETY: geteuid has no preconditions.
        TrustPolicy { enforce, server_uid: *EUID.get_or_init(|| unsafe { libc::geteuid() }) }
    }

    /// Why `path` (reached from `top`) is refused, when this policy enforces trust and `path` is
    /// not trusted: the one rule behind the catalog, the loader and `check()`.
    pub fn refuses(&self, top: &Path, path: &Path) -> Option<String> {
        if self.enforce { self.distrust_from(top, path) } else { None }
    }

    /// Why `path` is not trusted, if it is not.
    ///
    /// * As reached: `path` and every directory from `top` (a prefix) down to it must be owned by
    ///   root or the server's user and not be writable by group or others — anyone who can write
    ///   one of them can rename, replace or shadow what the server loads. (Above the prefix is the
    ///   operator's business, as it is for PostgreSQL's own directories.)
    /// * Where it really is, when a link leads out of the prefix: the same for the file and every
    ///   directory from the linked image's real location down, and above that every directory up
    ///   to `/` must be owned by root or the server's user and be writable by others only with the
    ///   sticky bit (as `/tmp`), so nobody can swap a directory of that chain for one of theirs.
    ///
    /// When `path` is not under `top`, its own directory takes the image's place.
    pub fn distrust_from(&self, top: &Path, path: &Path) -> Option<String> {
        let reached: Vec<&Path> = path.ancestors().take_while(|a| a.starts_with(top)).collect();
        // From the top down: the first untrusted place is the one to fix.
        if let Some(why) = reached.iter().rev().find_map(|place| self.distrust_one(place, false)) {
            return Some(why);
        }
        // The image (or extension) directory: the first component below the prefix.
        let image = match reached.len() {
            0 | 1 => path.parent().unwrap_or(path).to_path_buf(),
            n => reached[n - 2].to_path_buf(),
        };
        let (Some(real), Some(real_top)) = (memo::canonical(path), memo::canonical(top)) else {
            // Gone or dangling: whoever opens it next fails on that.
            return None;
        };
        if !reached.is_empty() && real.starts_with(&real_top) {
            // No link leads out of the prefix: the chain checked above is the real one.
            return None;
        }
        let real_image = memo::canonical(&image)?;
        let chain: Vec<&Path> = real.ancestors().collect();
        chain.iter().rev().find_map(|place| self.distrust_one(place, !place.starts_with(&real_image)))
    }

    fn distrust_one(&self, place: &Path, sticky_ok: bool) -> Option<String> {
        let Some(meta) = memo::metadata(place) else {
            return Some(format!("\"{}\" cannot be examined", place.display()));
        };
        if meta.uid() != 0 && meta.uid() != self.server_uid {
            return Some(format!(
                "\"{}\" is owned by uid {}, neither root nor the server's user",
                place.display(),
                meta.uid()
            ));
        }
        let writable = meta.mode() & 0o022 != 0;
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        (writable && !(sticky_ok && sticky_dir))
            .then(|| format!("\"{}\" is writable by group or others", place.display()))
    }
}

/// Within [`memo::scope`] (a catalog sync, a `check()`), what trust decisions look up is looked up
/// once per path: thousands of scripts share a few directories. Outside it nothing is
/// remembered, so a `chmod` is seen by the next decision.
pub mod memo {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fs;
    use std::path::{Path, PathBuf};

    #[derive(Default)]
    struct Memo {
        metadata: HashMap<PathBuf, Option<fs::Metadata>>,
        canonical: HashMap<PathBuf, Option<PathBuf>>,
    }

    thread_local! { static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) }; }

    /// Runs `f` with look-ups remembered; nested scopes share the outer one.
    pub fn scope<T>(f: impl FnOnce() -> T) -> T {
        let outer = MEMO.with(|m| m.borrow().is_some());
        if !outer {
            MEMO.with(|m| *m.borrow_mut() = Some(Memo::default()));
        }
        let result = f();
        if !outer {
            MEMO.with(|m| *m.borrow_mut() = None);
        }
        result
    }

    pub(super) fn metadata(path: &Path) -> Option<fs::Metadata> {
        MEMO.with(|m| match m.borrow_mut().as_mut() {
            Some(memo) => memo.metadata.entry(path.to_path_buf()).or_insert_with(|| fs::metadata(path).ok()).clone(),
            None => fs::metadata(path).ok(),
        })
    }

    pub(super) fn canonical(path: &Path) -> Option<PathBuf> {
        let remembered = MEMO.with(|m| m.borrow().as_ref().and_then(|memo| memo.canonical.get(path).cloned()));
        if let Some(known) = remembered {
            return known;
        }
        // A file that is no link is where its directory really is.
        let real = match (path.parent(), path.file_name(), fs::symlink_metadata(path)) {
            (Some(dir), Some(name), Ok(meta)) if !meta.file_type().is_symlink() && !dir.as_os_str().is_empty() => {
                canonical(dir).map(|d| d.join(name))
            }
            _ => fs::canonicalize(path).ok(),
        };
        MEMO.with(|m| {
            if let Some(memo) = m.borrow_mut().as_mut() {
                memo.canonical.insert(path.to_path_buf(), real.clone());
            }
        });
        real
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.control");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: plain libc call with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(read_regular(&fifo, 10).unwrap_err().to_string().contains("not a regular file"));
        assert!(read_regular(dir.path(), 10).is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        fs::write(&f, vec![b'x'; 100]).unwrap();
        assert_eq!(read_regular(&f, 100).unwrap().len(), 100);
        assert!(read_regular(&f, 99).is_err());
    }

    #[test]
    fn trust_needs_owner_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.path().join("a.control");
        fs::write(&f, "").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let policy = TrustPolicy { enforce: true, server_uid: me };
        let top = dir.path();
        assert_eq!(policy.distrust_from(top, &f), None);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(policy.distrust_from(top, &f).unwrap().contains("writable by group or others"));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(policy.distrust_from(top, &f).unwrap().contains("writable by group or others"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        if me == 0 {
            let other = TrustPolicy { enforce: true, server_uid: 12345 };
            assert_eq!(other.distrust_from(top, &f), None, "root-owned files are trusted");
        }
    }

    #[test]
    fn trust_is_checked_from_the_prefix_down() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        let file = prefix.join("image/lib/x.so");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, "").unwrap();
        for d in [&prefix, &prefix.join("image"), &prefix.join("image/lib")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let policy = TrustPolicy { enforce: true, server_uid: unsafe { libc::geteuid() } };
        assert_eq!(policy.distrust_from(&prefix, &file), None);
        // a group that can write the prefix can rename images: two levels above the file
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o775)).unwrap();
        let why = policy.distrust_from(&prefix, &file).unwrap();
        assert_eq!(why, format!("\"{}\" is writable by group or others", prefix.display()));
        // above the prefix is the operator's business, as for PostgreSQL's own directories
        // (a Kubernetes emptyDir, a setgid /usr/local, a user's home)
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(policy.distrust_from(&prefix, &file), None);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn trust_follows_links_to_where_files_really_are() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let prefix = dir.path().join("prefix");
        let outside = dir.path().join("outside");
        let target = outside.join("img");
        fs::create_dir_all(target.join("lib")).unwrap();
        fs::create_dir_all(&prefix).unwrap();
        fs::write(target.join("lib/x.so"), "").unwrap();
        for d in [&prefix, &outside, &target, &target.join("lib")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::symlink(&target, prefix.join("img")).unwrap();
        let file = prefix.join("img/lib/x.so");
        // SAFETY: geteuid has no preconditions.
        let policy = TrustPolicy { enforce: true, server_uid: unsafe { libc::geteuid() } };
        assert_eq!(policy.distrust_from(&prefix, &file), None);
        // whoever can write the directory holding the link's target can swap the image
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o777)).unwrap();
        let why = policy.distrust_from(&prefix, &file).unwrap();
        assert_eq!(why, format!("\"{}\" is writable by group or others", outside.display()));
        // with the sticky bit nobody can rename what is not theirs
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(policy.distrust_from(&prefix, &file), None);
        // but inside the image, sticky or not, nobody else may add files
        fs::set_permissions(target.join("lib"), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(policy.distrust_from(&prefix, &file).unwrap().contains("lib\" is writable"));
    }
}
