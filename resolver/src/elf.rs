//! Reading shared objects: soname, `DT_NEEDED`, `DT_RPATH`/`DT_RUNPATH`, machine and class,
//! with goblin. Nothing is ever loaded here.

use std::path::Path;

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
    /// Exports `Pg_magic_func`: a PostgreSQL module.
    pub is_pg_module: bool,
    /// The PostgreSQL major version in the module's magic block (18 for 1800), when found.
    pub pg_major: Option<u32>,
}

/// `e_machine` of the running process's architecture.
pub const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    goblin::elf::header::EM_X86_64
} else if cfg!(target_arch = "aarch64") {
    goblin::elf::header::EM_AARCH64
} else {
    0
};

/// A readable name for `e_machine`.
pub fn machine_name(machine: u16) -> String {
    match machine {
        goblin::elf::header::EM_X86_64 => "x86_64".into(),
        goblin::elf::header::EM_AARCH64 => "aarch64".into(),
        goblin::elf::header::EM_386 => "i386".into(),
        goblin::elf::header::EM_ARM => "arm".into(),
        goblin::elf::header::EM_PPC64 => "ppc64".into(),
        goblin::elf::header::EM_S390 => "s390".into(),
        other => format!("machine {other}"),
    }
}

/// Reads the dynamic section of the shared object at `path` (a regular file; symlinks followed).
pub fn read_elf(path: &Path) -> Result<ElfInfo, String> {
    let bytes = crate::safe_fs::read_regular(path, crate::safe_fs::MAX_LIBRARY_FILE)
        .map_err(|e| format!("could not read \"{}\": {e}", path.display()))?;
    parse_elf(&bytes).map_err(|e| format!("\"{}\" is not a valid ELF shared object: {e}", path.display()))
}

/// Parses ELF bytes; never panics on malformed input.
pub fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    let mut search_paths = Vec::new();
    for list in elf.rpaths.iter().chain(elf.runpaths.iter()) {
        search_paths.extend(list.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    let is_pg_module =
        elf.dynsyms.iter().any(|sym| sym.st_shndx != 0 && elf.dynstrtab.get_at(sym.st_name) == Some("Pg_magic_func"));
    Ok(ElfInfo {
        soname: elf.soname.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search_paths,
        machine: elf.header.e_machine,
        is_64: elf.is_64,
        is_pg_module,
        pg_major: if is_pg_module { magic_major(bytes, elf.little_endian) } else { None },
    })
}

/// Finds PostgreSQL's magic block in a module's data: `int len` followed by the ABI fields
/// `version` (major × 100), `funcmaxargs` (100), `indexmaxkeys` (32), `namedatalen` (64) and
/// `float8byval` (0 or 1). Only modules built with other values of these defaults are missed.
fn magic_major(bytes: &[u8], little_endian: bool) -> Option<u32> {
    let word = |i: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(i..i + 4)?.try_into().ok()?;
        Some(if little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    (0..bytes.len().saturating_sub(24)).step_by(4).find_map(|i| {
        let (len, version) = (word(i)?, word(i + 4)?);
        let tail = [word(i + 8)?, word(i + 12)?, word(i + 16)?, word(i + 20)?];
        let plausible = (24..=512).contains(&len) && version % 100 == 0 && (800..=9900).contains(&version);
        (plausible && tail[..3] == [100, 32, 64] && tail[3] <= 1).then_some(version / 100)
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
