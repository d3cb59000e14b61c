//! Property tests: the parsers never panic on any input, and keep their promises.
//! PROPTEST_CASES bounds the run (scripts/test sets it).

use esp_resolver::control::{ControlFile, quote};
use esp_resolver::elf::parse_elf;
use esp_resolver::mounts::parse_mountinfo;
use esp_resolver::path::{Element, SearchPath, merge_core_path};
use proptest::prelude::*;

/// A small PostgreSQL-style module compiled by the test: a soname, a `DT_NEEDED` (libm), a
/// `DT_RUNPATH`, the exported `Pg_magic_func` and a magic block for major 18. About 16 kB, so that
/// damage anywhere in it lands in what the reader looks at.
fn small_module() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.c");
    std::fs::write(
        &src,
        "#include <math.h>\n\
         static const struct { int len, version, funcmaxargs, indexmaxkeys, namedatalen, float8byval; \
           char abi[32]; const char *name, *ver; } magic = { sizeof(magic), 1800, 100, 32, 64, 1, \"PostgreSQL\", 0, 0 };\n\
         const void *Pg_magic_func(void) { return &magic; }\n\
         double m_sqrt(double x) { return sqrt(x); }\n",
    )
    .unwrap();
    let out = dir.path().join("m.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .args([
            "-Wl,-soname,m.so",
            "-Wl,--no-as-needed",
            "-lm",
            "-Wl,-rpath,$ORIGIN/../system",
            "-Wl,--enable-new-dtags",
        ])
        .status()
        .expect("cc runs");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// Damages the small module anywhere (up to 8 bytes, and a cut in a quarter of the cases) and
/// counts how far each damaged copy gets through the reader: refused, headers read, dynamic
/// entries read, the module's symbol found, the magic block found. Every stage must be reached
/// by damaged input, so the reader's own code — not only goblin's — sees it; none may panic.
#[test]
fn elf_reader_on_small_modules_damaged_anywhere() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let module = small_module();
    let clean = parse_elf(&module).unwrap();
    assert_eq!(clean.soname.as_deref(), Some("m.so"));
    assert_eq!(clean.pg_major, Some(18));
    assert!(clean.needed.iter().any(|n| n.starts_with("libm.so")));
    let len = module.len();
    let stages: [AtomicUsize; 5] = Default::default();
    // a fixed number of cases: the stage counts are asserted
    let cases = 2000;
    // the same cases on every run: the stage counts are asserted
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let damage = (prop::collection::vec((0..len, any::<u8>()), 1..8), prop::option::weighted(0.25, 0..len));
    runner
        .run(&damage, |(edits, cut)| {
            let mut bytes = module.clone();
            for (at, value) in edits {
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            let stage = match parse_elf(&bytes) {
                Err(_) => 0,
                Ok(info) if info.pg_major.is_some() => 4,
                Ok(info) if info.is_pg_module => 3,
                Ok(info) if !info.needed.is_empty() || info.soname.is_some() => 2,
                Ok(_) => 1,
            };
            stages[stage].fetch_add(1, Relaxed);
            Ok(())
        })
        .unwrap();
    let counts: Vec<usize> = stages.iter().map(|c| c.load(Relaxed)).collect();
    eprintln!(
        "{cases} damaged copies of a {len}-byte module: {} refused, {} stopped after the headers, \
         {} after the dynamic entries, {} after the module's symbol, {} read through the magic block",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    for (stage, count) in counts.iter().enumerate() {
        assert!(*count > 0, "no damaged copy ended at stage {stage}: {counts:?}");
    }
}

fn libc_bytes() -> Vec<u8> {
    ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("a libc.so.6 to mutate")
}

proptest! {
    #[test]
    fn path_parser_never_hides_system_and_keeps_only_absolute_prefixes(value in ".{0,300}") {
        let p = SearchPath::parse(&value);
        prop_assert_eq!(p.elements.iter().filter(|e| **e == Element::System).count(), 1);
        for e in &p.elements {
            if let Element::Prefix(dir) = e {
                prop_assert!(dir.is_absolute());
            }
        }
    }

    #[test]
    fn path_parser_on_path_like_values(parts in prop::collection::vec(prop_oneof![
        Just("$system".to_string()), Just(String::new()), Just("$libdir".to_string()),
        "/[a-z/.]{0,20}", "[a-z.]{1,10}", "\\$system/[a-z]{1,5}",
        "/r/server/gen-[0-9]{1,2}/share", "/r/session-[a-z]{1,2}/gen-1/share", Just("/r/server".to_string()),
        Just("/r/server/".to_string()), Just("/r/server/current/lib".to_string()), Just("/r/".to_string())], 0..12)) {
        let value = parts.join(":");
        let p = SearchPath::parse(&value);
        prop_assert_eq!(p.elements.iter().filter(|e| **e == Element::System).count(), 1);
        let ours = "/r/server/gen-7/share";
        let merged = merge_core_path(&value, ours, "/r/");
        // the catalog an element of ours belongs to: its first component under the root
        let own = |e: &str| e.strip_prefix("/r/").and_then(|r| r.split('/').next()) == Some("server");
        if parts.iter().any(|p| p.starts_with("/r/") && !own(p)) {
            // a value naming another catalog of ours (a session's) was written by us (SET
            // semantics): untouched
            prop_assert_eq!(merged, value);
        } else {
            // ours first, once; every other element kept, in order; idempotent
            prop_assert!(merged.starts_with(ours));
            prop_assert_eq!(merged.split(':').filter(|e| e.starts_with("/r/")).count(), 1);
            let others: Vec<&str> = value.split(':').filter(|e| !e.starts_with("/r/")).collect();
            let kept: Vec<&str> = merged.split(':').skip(1).collect();
            if !value.is_empty() {
                prop_assert_eq!(kept, others);
            }
            prop_assert_eq!(merge_core_path(&merged, ours, "/r/"), merged.clone());
        }
    }

    #[test]
    fn control_reader_never_panics(text in "(?s).{0,400}") {
        if let Ok(c) = ControlFile::parse(&text) {
            let _ = c.validate(false);
            let _ = c.requires();
        }
    }

    #[test]
    fn control_values_round_trip(value in "[^\n\r\x00]{0,80}") {
        let text = format!("comment = {}\n", quote(&value));
        let parsed = ControlFile::parse(&text).unwrap();
        prop_assert_eq!(parsed.get("comment"), Some(value.as_str()));
    }

    #[test]
    fn elf_reader_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_elf(&bytes);
    }

    /// Damage where the reader looks: the ELF header, the program headers (both in the first
    /// 4 KiB), and anywhere in the file (the dynamic segment and string table are far apart);
    /// cut anywhere. Most damaged copies still parse, so the reader's own code sees them.
    #[test]
    fn elf_reader_never_panics_on_damaged_libraries(
        cut in 0.0f64..=1.0,
        head in prop::collection::vec((0usize..4096, any::<u8>()), 0..8),
        anywhere in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
    ) {
        let mut bytes = libc_bytes();
        let len = bytes.len();
        for (at, value) in head {
            bytes[at % len] = value;
        }
        for (at, value) in anywhere {
            bytes[((at * len as f64) as usize).min(len - 1)] = value;
        }
        bytes.truncate(((cut * len as f64) as usize).max(1));
        let _ = parse_elf(&bytes);
    }

    #[test]
    fn mountinfo_parser_never_panics(text in "(?s).{0,400}") {
        let _ = parse_mountinfo(&text);
    }
}
