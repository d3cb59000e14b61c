//! Property tests: the parsers never panic on any input, and keep their promises.
//! PROPTEST_CASES bounds the run (scripts/test sets it).

use esp_resolver::control::{ControlFile, quote};
use esp_resolver::elf::parse_elf;
use esp_resolver::mounts::parse_mountinfo;
use esp_resolver::path::{Element, SearchPath, merge_core_path};
use proptest::prelude::*;

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
        "/r/server/gen-[0-9]{1,2}/share", "/r/session-[a-z]{1,2}/gen-1/share"], 0..12)) {
        let value = parts.join(":");
        let p = SearchPath::parse(&value);
        prop_assert_eq!(p.elements.iter().filter(|e| **e == Element::System).count(), 1);
        let ours = "/r/server/gen-7/share";
        let merged = merge_core_path(&value, ours, "/r/");
        if parts.iter().any(|p| p.starts_with("/r/") && !p.starts_with("/r/server/")) {
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
