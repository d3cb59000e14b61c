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

/// Where the bytes of an object come from: a file read piece by piece, or bytes in memory.
trait Source {
    fn len(&self) -> u64;
    /// `len` bytes at `offset`, or an error when they are not all there.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String>;
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{len} bytes at offset {offset} are past the end"))
    }
}

impl Source for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::FileExt;
        if offset.checked_add(len as u64).is_none_or(|end| end > Source::len(self)) {
            return Err(format!("{len} bytes at offset {offset} are past the end"));
        }
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, offset).map_err(|e| e.to_string())?;
        Ok(buf)
    }
}

/// What is read of an object is bounded, whatever its size: the ELF header, the program headers
/// (at most 64 KiB), the dynamic segment (at most 1 MiB) and the dynamic string table (at most
/// 16 MiB). The magic-block scan for reports reads the file in 1 MiB pieces.
const MAX_PROGRAM_HEADERS: usize = 64 << 10;
const MAX_DYNAMIC: usize = 1 << 20;
const MAX_DYNSTR: usize = 16 << 20;
const SCAN_CHUNK: usize = 1 << 20;

/// Why a file could not be read as a shared object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("could not read \"{}\": {error}", .file.display())]
    Unreadable { file: std::path::PathBuf, error: crate::problem::FileError },
    #[error("\"{}\" is not a valid ELF shared object: {why}", .file.display())]
    Invalid { file: std::path::PathBuf, why: String },
}

/// Reads the dynamic section of the shared object at `path` (a regular file; symlinks
/// followed), with the PostgreSQL major version of a module's magic block.
pub fn read_elf(path: &Path) -> Result<ElfInfo, ElfError> {
    read_path(path, true)
}

/// [`read_elf`] without the magic-block scan (`pg_major` is `None`): what dependency plans need.
pub fn read_dynamic(path: &Path) -> Result<ElfInfo, ElfError> {
    read_path(path, false)
}

fn read_path(path: &Path, magic: bool) -> Result<ElfInfo, ElfError> {
    let file = crate::safe_fs::open_regular(path)
        .map_err(|e| ElfError::Unreadable { file: path.to_path_buf(), error: e.into() })?;
    let mut info = parse(&file).map_err(|why| ElfError::Invalid { file: path.to_path_buf(), why })?;
    if magic && info.is_pg_module {
        info.pg_major = scan_magic(&file, info.little_endian());
    }
    Ok(info.into())
}

/// Parses ELF bytes; never panics on malformed input.
pub fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    let mut info = parse(bytes)?;
    if info.is_pg_module {
        info.pg_major = magic_major(bytes, info.little_endian());
    }
    Ok(info.into())
}

/// [`ElfInfo`] and the byte order it was read in.
struct Parsed {
    info: ElfInfo,
    little_endian: bool,
}

impl Parsed {
    fn little_endian(&self) -> bool {
        self.little_endian
    }
}

impl std::ops::Deref for Parsed {
    type Target = ElfInfo;
    fn deref(&self) -> &ElfInfo {
        &self.info
    }
}

impl std::ops::DerefMut for Parsed {
    fn deref_mut(&mut self) -> &mut ElfInfo {
        &mut self.info
    }
}

impl From<Parsed> for ElfInfo {
    fn from(p: Parsed) -> ElfInfo {
        p.info
    }
}

fn parse<S: Source + ?Sized>(src: &S) -> Result<Parsed, String> {
    use goblin::container::{Container, Ctx};
    use goblin::elf::dynamic::{DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB, Dyn};
    use goblin::elf::program_header::{PT_DYNAMIC, PT_LOAD, ProgramHeader};
    use scroll::Pread;

    let head = src.read_at(0, src.len().min(goblin::elf::header::header64::SIZEOF_EHDR as u64) as usize)?;
    let header = goblin::elf::Elf::parse_header(&head).map_err(|e| e.to_string())?;
    let container = header.container().map_err(|e| e.to_string())?;
    let endian = header.endianness().map_err(|e| e.to_string())?;
    let ctx = Ctx::new(container, endian);
    let count = header.e_phnum as usize;
    let size = ProgramHeader::size(ctx);
    if count * size > MAX_PROGRAM_HEADERS {
        return Err(format!("{count} program headers"));
    }
    let phdr_bytes = src.read_at(header.e_phoff, count * size)?;
    let phdrs = ProgramHeader::parse(&phdr_bytes, 0, count, ctx).map_err(|e| e.to_string())?;

    let mut info = ElfInfo {
        soname: None,
        needed: Vec::new(),
        search_paths: Vec::new(),
        machine: header.e_machine,
        is_64: container == Container::Big,
        is_pg_module: false,
        pg_major: None,
    };
    let little_endian = endian == scroll::Endian::Little;
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(Parsed { info, little_endian });
    };
    let dyn_len =
        usize::try_from(dynamic.p_filesz).ok().filter(|l| *l <= MAX_DYNAMIC).ok_or("dynamic segment too large")?;
    let dyn_bytes = src.read_at(dynamic.p_offset, dyn_len)?;
    let entry = Dyn::size(container);
    let mut entries = Vec::new();
    for offset in (0..dyn_bytes.len() / entry).map(|i| i * entry) {
        let d: Dyn = dyn_bytes.pread_with(offset, ctx).map_err(|e: goblin::error::Error| e.to_string())?;
        if d.d_tag == DT_NULL {
            break;
        }
        entries.push((d.d_tag, d.d_val));
    }
    let value = |tag| entries.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v);
    let (Some(strtab), Some(strsz)) = (value(DT_STRTAB), value(DT_STRSZ)) else {
        return Ok(Parsed { info, little_endian });
    };
    // DT_STRTAB is an address: the loadable segment holding it says where it is in the file.
    let offset = phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| p.p_vaddr <= strtab && strtab - p.p_vaddr < p.p_filesz)
        .and_then(|p| (strtab - p.p_vaddr).checked_add(p.p_offset))
        .ok_or("the dynamic string table is in no loadable segment")?;
    let strsz = usize::try_from(strsz).ok().filter(|l| *l <= MAX_DYNSTR).ok_or("dynamic string table too large")?;
    let strings = src.read_at(offset, strsz)?;
    let string = |at: u64| -> Result<String, String> {
        let rest = usize::try_from(at).ok().and_then(|at| strings.get(at..)).ok_or("string offset out of range")?;
        let end = rest.iter().position(|b| *b == 0).ok_or("unterminated string")?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    for (tag, val) in &entries {
        match *tag {
            DT_NEEDED => info.needed.push(string(*val)?),
            DT_SONAME => info.soname = Some(string(*val)?),
            DT_RPATH | DT_RUNPATH => {
                info.search_paths.extend(string(*val)?.split(':').filter(|s| !s.is_empty()).map(String::from))
            }
            _ => {}
        }
    }
    // A module exports Pg_magic_func; its name is then among the dynamic strings.
    info.is_pg_module = strings.split(|b| *b == 0).any(|s| s == b"Pg_magic_func");
    Ok(Parsed { info, little_endian })
}

/// [`magic_major`] over a file, read in pieces that overlap by a block's length.
fn scan_magic(file: &std::fs::File, little_endian: bool) -> Option<u32> {
    let len = Source::len(file);
    let mut offset = 0u64;
    while offset < len {
        let take = (len - offset).min(SCAN_CHUNK as u64) as usize;
        let chunk = file.read_at(offset, take).ok()?;
        if let Some(major) = magic_major(&chunk, little_endian) {
            return Some(major);
        }
        if offset + take as u64 >= len {
            break;
        }
        offset += (take - 24) as u64 & !3;
    }
    None
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

    /// libc is on every machine this runs on; its soname is stable.
    fn libc() -> &'static Path {
        ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("a libc.so.6")
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x7fELF", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0garbage", &[0xff; 64]] {
            assert!(parse_elf(bytes).is_err());
        }
    }

    #[test]
    fn reads_a_real_system_library() {
        let libc = libc();
        let info = read_elf(libc).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(info.is_64);
    }

    #[test]
    fn reading_a_file_and_parsing_its_bytes_agree() {
        let libc = libc();
        let bytes = std::fs::read(libc).unwrap();
        assert_eq!(read_elf(libc).unwrap(), parse_elf(&bytes).unwrap());
        assert_eq!(read_dynamic(libc).unwrap(), parse_elf(&bytes).unwrap());
        assert!(!parse_elf(&bytes).unwrap().needed.is_empty());
    }

    #[test]
    fn damage_reaches_the_reader_s_own_checks() {
        let libc = libc();
        let bytes = std::fs::read(libc).unwrap();
        // cut after the headers: the dynamic segment is past the end
        let err = parse_elf(&bytes[..8192]).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
        // a program header count that would need more than 64 KiB
        let mut many = bytes.clone();
        let phnum_at = if many[4] == 2 { 56 } else { 44 };
        many[phnum_at..phnum_at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(parse_elf(&many).unwrap_err().contains("program headers"));
    }

    #[test]
    fn directories_are_refused() {
        let err = read_elf(Path::new("/")).unwrap_err();
        assert!(matches!(err, ElfError::Unreadable { .. }) && err.to_string().contains("not a regular file"), "{err}");
        let missing = read_elf(Path::new("/nonexistent/x.so")).unwrap_err();
        assert!(matches!(&missing, ElfError::Unreadable { error, .. } if error.errno == Some(libc::ENOENT)));
        let text = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(text.path(), "not an object").unwrap();
        assert!(matches!(read_elf(text.path()).unwrap_err(), ElfError::Invalid { .. }));
    }
}
