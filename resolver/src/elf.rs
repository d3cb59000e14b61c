//! Reading shared objects: soname, `DT_NEEDED`, `DT_RPATH`/`DT_RUNPATH`, machine and class,
//! with goblin. Nothing is ever loaded here.

use std::fs;
use std::path::Path;

/// Shared objects larger than this are not read (no real library is near it).
const MAX_SIZE: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub soname: Option<String>,
    /// `DT_NEEDED`, in file order.
    pub needed: Vec<String>,
    /// `DT_RPATH` and `DT_RUNPATH` directories, as written (`$ORIGIN` unexpanded).
    pub search_paths: Vec<String>,
    /// `e_machine` (62 = x86-64, 183 = AArch64).
    pub machine: u16,
    pub is_64: bool,
}

/// Reads the dynamic section of the shared object at `path` (a regular file; symlinks followed).
pub fn read_elf(path: &Path) -> Result<ElfInfo, String> {
    let meta = fs::metadata(path).map_err(|e| format!("could not stat \"{}\": {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("\"{}\" is not a regular file", path.display()));
    }
    if meta.len() > MAX_SIZE {
        return Err(format!("\"{}\" is too large to be a shared library", path.display()));
    }
    let bytes = fs::read(path).map_err(|e| format!("could not read \"{}\": {e}", path.display()))?;
    parse_elf(&bytes).map_err(|e| format!("\"{}\" is not a valid ELF shared object: {e}", path.display()))
}

/// Parses ELF bytes; never panics on malformed input.
pub fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    let mut search_paths = Vec::new();
    for list in elf.rpaths.iter().chain(elf.runpaths.iter()) {
        search_paths.extend(list.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    Ok(ElfInfo {
        soname: elf.soname.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search_paths,
        machine: elf.header.e_machine,
        is_64: elf.is_64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x7fELF", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0garbage", &[0xff; 64]] {
            assert!(parse_elf(bytes).is_err());
        }
    }

    #[test]
    fn reads_a_real_system_library() {
        // libc is on every machine this runs on; its soname is stable.
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("a libc.so.6");
        let info = read_elf(libc).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(info.is_64);
    }

    #[test]
    fn directories_are_refused() {
        assert!(read_elf(Path::new("/")).unwrap_err().contains("not a regular file"));
    }
}
