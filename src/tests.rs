//! `#[pg_test]`s: run inside a server that preloads the extension (`cargo pgrx test`).
//! Fixtures are small pure-SQL extensions written by the tests into temporary prefixes; the
//! end-to-end tier (`pgrx-tests/`) covers real extensions, restarts and several sessions.

/// Test builds only: a prefix whose name ends in `esp-inject-panic` panics inside the hook path
/// (called where a refresh starts), to show a Rust panic reaching PostgreSQL as an ERROR.
#[cfg(feature = "pg_test")]
pub fn inject_panic(value: &str) {
    if value.split(':').any(|e| e.ends_with("esp-inject-panic")) {
        panic!("extension_search_path: injected panic");
    }
}

#[pgrx::pg_schema]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use pgrx::prelude::*;

    /// A fresh prefix under the temporary directory, readable by the server.
    fn prefix() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "esp-pgtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A pure-SQL extension `name` with versions 1.0 and 1.1 (and the 1.0--1.1 update), whose
    /// function `<name>_version()` answers with the version installed.
    fn sql_extension(scripts: &Path, control: &Path, name: &str, requires: &str) {
        write(control, &format!("default_version = '1.1'\nrelocatable = true\nrequires = '{requires}'\n"));
        for v in ["1.0", "1.1"] {
            write(
                &scripts.join(format!("{name}--{v}.sql")),
                &format!("CREATE FUNCTION {name}_version() RETURNS text LANGUAGE sql AS $$ SELECT '{v}' $$;"),
            );
        }
        write(
            &scripts.join(format!("{name}--1.0--1.1.sql")),
            &format!("CREATE OR REPLACE FUNCTION {name}_version() RETURNS text LANGUAGE sql AS $$ SELECT '1.1' $$;"),
        );
    }

    fn rfc(prefix: &Path, name: &str, requires: &str) {
        let dir = prefix.join(name);
        sql_extension(&dir.join("sql"), &dir.join(format!("{name}.control")), name, requires);
    }

    fn cnpg(prefix: &Path, image: &str, name: &str, requires: &str) {
        let dir = prefix.join(image).join("share/extension");
        sql_extension(&dir, &dir.join(format!("{name}.control")), name, requires);
    }

    fn set_path(value: &str) {
        Spi::run(&format!("SET extension_search_path.path = '{value}'")).unwrap();
    }

    fn one(query: &str) -> String {
        Spi::get_one::<String>(query).unwrap().unwrap_or_default()
    }

    #[pg_test]
    fn setting_defaults_to_system_and_is_superuser_only() {
        assert_eq!(one("SHOW extension_search_path.path"), "$system");
        assert_eq!(one("SELECT context FROM pg_settings WHERE name = 'extension_search_path.path'"), "superuser");
    }

    #[pg_test]
    fn preload_declared_is_off_and_set_only_at_server_start() {
        assert_eq!(one("SHOW extension_search_path.preload_declared"), "off");
        assert_eq!(
            one(
                "SELECT context || ':' || boot_val FROM pg_settings WHERE name = 'extension_search_path.preload_declared'"
            ),
            "postmaster:off"
        );
        // off: nothing declared is loaded, so the hook that loads session modules is not there
        // SAFETY: a plain global read on the main thread.
        let hook = unsafe { pg_sys::post_parse_analyze_hook };
        assert!(hook.is_none(), "no post_parse_analyze_hook installed with the setting off");
    }

    #[pg_test(
        error = "parameter \"extension_search_path.preload_declared\" cannot be changed without restarting the server"
    )]
    fn preload_declared_cannot_be_set_in_a_session() {
        Spi::run("SET extension_search_path.preload_declared = on").unwrap();
    }

    /// `s` with the catalog generation (`/gen-<n>`) left out of every path.
    fn without_generation(s: &str) -> String {
        let generation = |seg: &str| seg.strip_prefix("gen-").is_some_and(|n| n.parse::<u64>().is_ok());
        s.split('/').filter(|seg| !generation(seg)).collect::<Vec<_>>().join("/")
    }

    #[pg_test]
    fn core_paths_are_merged_not_replaced() {
        let control = without_generation(&one("SHOW extension_control_path"));
        assert!(control.ends_with("/extension_search_path/server/share:$system"), "{control}");
        let libs = without_generation(&one("SHOW dynamic_library_path"));
        assert!(libs.ends_with("/extension_search_path/server/lib:$libdir"), "{libs}");
        // an operator's value keeps its elements, in order, behind ours
        Spi::run("SET extension_control_path = '$system:/extensions/a/share:/extensions/b/share'").unwrap();
        let merged = without_generation(&one("SHOW extension_control_path"));
        assert!(merged.ends_with("/server/share:$system:/extensions/a/share:/extensions/b/share"), "{merged}");
    }

    #[pg_test]
    fn rfc_extension_is_created_updated_and_listed() {
        let p = prefix();
        rfc(&p, "esp_rfc", "");
        set_path(&format!("$system:{}", p.display()));
        Spi::run("CREATE EXTENSION esp_rfc VERSION '1.0'").unwrap();
        assert_eq!(one("SELECT esp_rfc_version()"), "1.0");
        Spi::run("ALTER EXTENSION esp_rfc UPDATE").unwrap();
        assert_eq!(one("SELECT esp_rfc_version()"), "1.1");
        assert_eq!(one("SELECT extversion FROM pg_extension WHERE extname = 'esp_rfc'"), "1.1");
        assert_eq!(
            one(
                "SELECT string_agg(version, ',' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'esp_rfc'"
            ),
            "1.0,1.1"
        );
        Spi::run("DROP EXTENSION esp_rfc").unwrap();
        assert_eq!(one("SELECT count(*)::text FROM pg_extension WHERE extname = 'esp_rfc'"), "0");
    }

    #[pg_test]
    fn cascade_pulls_requirements_from_other_images_and_prefixes() {
        let (a, b) = (prefix(), prefix());
        cnpg(&a, "bundle", "esp_top", "esp_base");
        rfc(&b, "esp_base", "");
        set_path(&format!("{}:$system:{}", a.display(), b.display()));
        Spi::run("CREATE EXTENSION esp_top CASCADE").unwrap();
        assert_eq!(one("SELECT esp_base_version() || '/' || esp_top_version()"), "1.1/1.1");
    }

    #[pg_test]
    fn an_earlier_prefix_shadows_a_later_one() {
        let (first, second) = (prefix(), prefix());
        rfc(&second, "esp_dup", "");
        cnpg(&first, "esp_dup", "esp_dup", "");
        // the first prefix's copy only has 1.0
        fs::remove_file(first.join("esp_dup/share/extension/esp_dup--1.1.sql")).unwrap();
        fs::remove_file(first.join("esp_dup/share/extension/esp_dup--1.0--1.1.sql")).unwrap();
        write(&first.join("esp_dup/share/extension/esp_dup.control"), "default_version = '1.0'\n");
        set_path(&format!("{}:{}", first.display(), second.display()));
        Spi::run("CREATE EXTENSION esp_dup").unwrap();
        assert_eq!(one("SELECT esp_dup_version()"), "1.0");
        let rows = one("SELECT string_agg(layout || ':' || winner, ',') FROM extension_search_path.resolve('esp_dup')");
        assert_eq!(rows, "cnpg:true,rfc:false");
    }

    #[pg_test]
    fn a_directory_added_later_is_seen_at_the_next_create() {
        let p = prefix();
        set_path(&p.display().to_string());
        Spi::run("CREATE EXTENSION IF NOT EXISTS plpgsql").unwrap();
        rfc(&p, "esp_late", "");
        Spi::run("CREATE EXTENSION esp_late").unwrap();
        assert_eq!(one("SELECT esp_late_version()"), "1.1");
    }

    #[pg_test(
        error = "invalid value for parameter \"extension_search_path.path\": \"relative/dir::/does/not/exist:$system/x\""
    )]
    fn bad_elements_are_refused_when_set_interactively() {
        set_path("relative/dir::/does/not/exist:$system/x");
    }

    #[pg_test]
    fn system_left_out_is_searched_last_never_hidden() {
        // a path without $system: PostgreSQL's own extensions stay available, behind the prefix
        let p = prefix();
        rfc(&p, "plpgsql", "");
        set_path(&p.display().to_string());
        assert_eq!(one("SHOW extension_search_path.path"), p.display().to_string());
        // in both: the prefix wins, $system is listed after it
        let rows = one("SELECT string_agg(layout || ':' || winner, ',') FROM extension_search_path.resolve('plpgsql')");
        assert_eq!(rows, "rfc:true,system:false");
        // only in $system: still found
        let only_system = "SELECT string_agg(layout || ':' || winner, ',') \
                           FROM extension_search_path.resolve('extension_search_path')";
        assert_eq!(one(only_system), "system:true");
        assert_eq!(one("SELECT cardinality(problems)::text FROM extension_search_path.rescan()"), "0");
        assert_eq!(one("SELECT count(*)::text FROM pg_available_extensions WHERE name = 'plpgsql'"), "1");
        assert_eq!(one("SELECT count(*)::text FROM pg_available_extensions WHERE name = 'extension_search_path'"), "1");
    }

    #[pg_test(error = "permission denied to set parameter \"extension_search_path.path\"")]
    fn plain_roles_cannot_set_the_path() {
        Spi::run("CREATE ROLE esp_plain").unwrap();
        Spi::run("SET ROLE esp_plain").unwrap();
        Spi::run("SET extension_search_path.path = '/tmp'").unwrap();
    }

    #[pg_test(error = "permission denied for function resolve")]
    fn plain_roles_cannot_see_paths() {
        Spi::run("CREATE ROLE esp_plain2").unwrap();
        Spi::run("GRANT USAGE ON SCHEMA extension_search_path TO esp_plain2").unwrap();
        Spi::run("SET ROLE esp_plain2").unwrap();
        Spi::run("SELECT * FROM extension_search_path.resolve('plpgsql')").unwrap();
    }

    #[pg_test]
    fn pg_read_server_files_members_can_see_paths() {
        Spi::run("CREATE ROLE esp_reader IN ROLE pg_read_server_files").unwrap();
        Spi::run("SET ROLE esp_reader").unwrap();
        assert_eq!(one("SELECT layout FROM extension_search_path.resolve('plpgsql')"), "system");
    }

    #[pg_test]
    fn a_panic_in_the_hook_path_is_an_error_not_a_crash() {
        let p = prefix().join("esp-inject-panic");
        fs::create_dir_all(&p).unwrap();
        set_path(&p.display().to_string());
        Spi::run(
            "CREATE FUNCTION pg_temp.try_create() RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN CREATE EXTENSION esp_anything; RETURN 'created'; \
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
        )
        .unwrap();
        // an ERROR PL/pgSQL can catch, like any other
        assert_eq!(one("SELECT pg_temp.try_create()"), "XX000 extension_search_path: injected panic");
        // and the session goes on: a CREATE EXTENSION works once the cause is gone
        assert_eq!(one("SELECT 'alive'"), "alive");
        let q = prefix();
        rfc(&q, "esp_after_panic", "");
        set_path(&q.display().to_string());
        Spi::run("CREATE EXTENSION esp_after_panic").unwrap();
        assert_eq!(one("SELECT esp_after_panic_version()"), "1.1");
    }

    #[pg_test(error = "invalid extension name: \"../etc\"")]
    fn names_with_separators_are_refused() {
        Spi::run("SELECT * FROM extension_search_path.resolve('../etc')").unwrap();
    }

    /// The one map from our typed errors to SQLSTATEs (`crate::errors`), against what
    /// PostgreSQL itself uses for the same causes.
    #[pg_test]
    fn every_error_of_ours_gets_the_sqlstate_postgres_would_give() {
        use crate::errors::{for_file_access, for_library, for_problem};
        use esp_resolver::control::ControlError;
        use esp_resolver::dependencies::LibraryRefusal;
        use esp_resolver::elf::ElfError;
        use esp_resolver::problem::{FileError, PathProblem, ProblemKind, Unusable};
        use pgrx::PgSqlErrorCode::*;
        // errcode_for_file_access
        for (errno, code) in [
            (libc::EACCES, ERRCODE_INSUFFICIENT_PRIVILEGE),
            (libc::EROFS, ERRCODE_INSUFFICIENT_PRIVILEGE),
            (libc::ENOENT, ERRCODE_UNDEFINED_FILE),
            (libc::EEXIST, ERRCODE_DUPLICATE_FILE),
            (libc::ENOTDIR, ERRCODE_WRONG_OBJECT_TYPE),
            (libc::ENOSPC, ERRCODE_DISK_FULL),
            (libc::EMFILE, ERRCODE_INSUFFICIENT_RESOURCES),
            (libc::EIO, ERRCODE_IO_ERROR),
            (libc::ELOOP, ERRCODE_INTERNAL_ERROR),
        ] {
            assert_eq!(for_file_access(Some(errno)), code, "errno {errno}");
        }
        let file = |errno| FileError { errno: Some(errno), kind: std::io::ErrorKind::Other, message: String::new() };
        let own = |kind| FileError { errno: None, kind, message: String::new() };
        let unreadable = |e| for_problem(&ProblemKind::Unusable(Unusable::ControlUnreadable(e)));
        assert_eq!(unreadable(own(std::io::ErrorKind::InvalidInput)), ERRCODE_WRONG_OBJECT_TYPE, "not a regular file");
        assert_eq!(unreadable(own(std::io::ErrorKind::InvalidData)), ERRCODE_PROGRAM_LIMIT_EXCEEDED, "too large");
        assert_eq!(unreadable(own(std::io::ErrorKind::Other)), ERRCODE_IO_ERROR);
        assert_eq!(crate::errors::for_io(&std::io::Error::other("lock not taken")), ERRCODE_IO_ERROR);
        let unusable = |u: Unusable| for_problem(&ProblemKind::Unusable(u));
        assert_eq!(for_problem(&ProblemKind::Directory(file(libc::EACCES))), ERRCODE_INSUFFICIENT_PRIVILEGE);
        assert_eq!(for_problem(&PathProblem::Relative.into()), ERRCODE_INVALID_PARAMETER_VALUE);
        assert_eq!(for_problem(&PathProblem::Unusable(file(libc::ENOENT)).into()), ERRCODE_UNDEFINED_FILE);
        assert_eq!(unusable(Unusable::NotTrusted(String::new())), ERRCODE_INSUFFICIENT_PRIVILEGE);
        assert_eq!(unusable(Unusable::ControlInvalid(ControlError::Syntax(String::new()))), ERRCODE_SYNTAX_ERROR);
        assert_eq!(
            unusable(Unusable::ControlInvalid(ControlError::InvalidValue(String::new()))),
            ERRCODE_INVALID_PARAMETER_VALUE
        );
        assert_eq!(
            unusable(Unusable::ControlInvalid(ControlError::UnknownEncoding(String::new()))),
            ERRCODE_UNDEFINED_OBJECT
        );
        assert_eq!(unusable(Unusable::ControlUnreadable(file(libc::EACCES))), ERRCODE_INSUFFICIENT_PRIVILEGE);
        assert_eq!(unusable(Unusable::NoScriptDirectory(PathBuf::new())), ERRCODE_UNDEFINED_FILE);
        let refused = |r: LibraryRefusal| for_library("x", &r).code;
        let path = PathBuf::from("/x.so");
        assert_eq!(
            refused(LibraryRefusal::NotTrusted { file: path.clone(), why: String::new() }),
            ERRCODE_INSUFFICIENT_PRIVILEGE
        );
        assert_eq!(
            refused(ElfError::Invalid { file: path.clone(), why: String::new() }.into()),
            ERRCODE_WRONG_OBJECT_TYPE
        );
        assert_eq!(
            refused(ElfError::Unreadable { file: path.clone(), error: file(libc::ENOENT) }.into()),
            ERRCODE_UNDEFINED_FILE
        );
        let missing =
            LibraryRefusal::MissingDependency { soname: "l".into(), needed_by: path.clone(), searched: vec![] };
        assert_eq!(refused(missing), ERRCODE_UNDEFINED_FILE);
        assert_eq!(refused(LibraryRefusal::LoadFailed { file: path, message: String::new() }), ERRCODE_IO_ERROR);
    }

    #[pg_test(error = "extension \"esp_missing\" is not available")]
    fn a_missing_extension_is_the_usual_error() {
        let p = prefix();
        set_path(&p.display().to_string());
        Spi::run("CREATE EXTENSION esp_missing").unwrap();
    }

    /// The postmaster's scans run in a child process (`crate::offload`): its answer comes back,
    /// its memory does not, and a child that is killed or raises an ERROR is "not done" — never
    /// a crash of the process that waits for it.
    #[pg_test]
    fn work_in_a_child_process_comes_back_as_its_answer_or_as_not_done() {
        use crate::offload::in_child;
        static TOUCHED: AtomicUsize = AtomicUsize::new(0);
        assert!(in_child("a test", || {
            TOUCHED.store(1, Ordering::Relaxed);
            true
        }));
        assert_eq!(TOUCHED.load(Ordering::Relaxed), 0, "the child's memory is its own");
        assert!(!in_child("a test", || false));
        assert!(!in_child("a test", || {
            // SAFETY: the child kills itself, as a crash would end it.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            true
        }));
        assert!(!in_child("a test", || pgrx::error!("extension_search_path: an error in a child")));
        assert!(!in_child("a test", || panic!("extension_search_path: a panic in a child")));
        // the session goes on as before
        assert_eq!(Spi::get_one::<i32>("SELECT 1").unwrap(), Some(1));
    }

    /// What a child process reports travels through a pipe to the postmaster, which reports it:
    /// every field arrives as it was sent, and a cut-off stream keeps what came whole.
    #[pg_test]
    fn a_child_s_messages_and_answer_arrive_whole() {
        use crate::messages::Message;
        use crate::offload::{decoded, encoded};
        let round_trip = |messages: &[Message], answer| decoded(&encoded(messages, answer));
        let messages = vec![
            Message::new(PgLogLevel::WARNING, PgSqlErrorCode::ERRCODE_UNDEFINED_FILE, "é\0x".into(), "refresh")
                .detail("a detail".into())
                .hint("a hint".into()),
            Message::new(PgLogLevel::LOG, PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, String::new(), "in_child"),
            Message::new(PgLogLevel::LOG_SERVER_ONLY, PgSqlErrorCode::ERRCODE_IO_ERROR, "x".into(), "refresh"),
        ];
        assert_eq!(round_trip(&messages, Some(true)), (messages.clone(), Some(true)));
        assert_eq!(round_trip(&messages, Some(false)), (messages.clone(), Some(false)));
        assert_eq!(round_trip(&messages, None), (messages.clone(), None));
        assert_eq!(round_trip(&[], Some(true)), (vec![], Some(true)));
        // a stream cut anywhere (a child killed while writing) keeps the whole messages before
        // the cut, has no answer, and never panics; a level the postmaster does not know is a
        // WARNING, never an ERROR (which would end the postmaster)
        let bytes = encoded(&messages, Some(true));
        for cut in 0..bytes.len() {
            let (got, answer) = decoded(&bytes[..cut]);
            assert_eq!(answer, None);
            assert!(messages.starts_with(&got), "cut at {cut}: {got:?}");
        }
        let mut bytes = encoded(&messages[1..2], Some(true));
        bytes[1..5].copy_from_slice(&1000i32.to_le_bytes());
        assert_eq!(decoded(&bytes).0[0].level, PgLogLevel::WARNING);
    }
}
