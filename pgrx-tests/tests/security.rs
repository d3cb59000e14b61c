//! End to end: nothing of ours runs for a role PostgreSQL would refuse, paths stay with the
//! roles that may see them, only the postmaster's configuration shapes the server catalog, and
//! library names mean what dfmgr.c makes of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use esp_e2e::{Server, cc, mkimage, pg_module_source, run_chmod_readable, sql_extension, tempdir};

/// An image `esp_mark` under `<prefix>`: module `lib/esp_mark.so` needs `lib/libesp_mark.so.1`,
/// whose constructor creates the file `<marks>/<name>` — proof that something loaded it.
fn marking_image(prefix: &Path, marks: &Path) {
    let img = prefix.join("esp_mark");
    let lib = img.join("lib/libesp_mark.so.1");
    cc(
        &lib,
        &format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void mark(void) {{ int fd = open(\"{}/loaded\", O_CREAT | O_WRONLY, 0666); if (fd >= 0) close(fd); }}\n\
             int esp_mark(void) {{ return 7; }}\n",
            marks.display()
        ),
        &[],
    );
    cc(&img.join("lib/esp_mark.so"), &pg_module_source("esp_mark_value", "int esp_mark(void);", "esp_mark()"), &[&lib]);
    sql_extension(&img, "esp_mark", "CREATE FUNCTION esp_mark_value() RETURNS int AS 'MODULE_PATHNAME' LANGUAGE C;\n");
    run_chmod_readable(prefix);
}

fn marks_dir(root: &Path) -> PathBuf {
    let marks = root.join("marks");
    fs::create_dir_all(&marks).unwrap();
    fs::set_permissions(&marks, fs::Permissions::from_mode(0o777)).unwrap();
    marks
}

#[test]
fn nothing_is_loaded_for_a_role_postgres_refuses() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    let marks = marks_dir(dir.path());
    marking_image(&prefix, &marks);
    // the same module outside any prefix, as an arbitrary directory a role might name
    let loose = dir.path().join("loose");
    fs::create_dir_all(&loose).unwrap();
    for f in ["esp_mark.so", "libesp_mark.so.1"] {
        fs::copy(prefix.join("esp_mark/lib").join(f), loose.join(f)).unwrap();
    }
    run_chmod_readable(dir.path());
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    s.sql("CREATE ROLE plain LOGIN");
    let loaded = || marks.join("loaded").exists();
    for (statement, stock_error) in [
        ("LOAD '$libdir/esp_mark'", "access to library \"$libdir/esp_mark\" is not allowed"),
        ("LOAD 'esp_mark'", "access to library \"esp_mark\" is not allowed"),
        (&format!("LOAD '{}/esp_mark.so'", loose.display()) as &str, "is not allowed"),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int AS '$libdir/esp_mark', 'esp_mark_value' LANGUAGE C",
            "permission denied for language c",
        ),
        ("CREATE EXTENSION esp_mark", "permission denied to create extension \"esp_mark\""),
    ] {
        let err = s.try_sql_as("plain", statement).unwrap_err();
        assert!(err.contains(stock_error), "{statement}: {err}");
        assert!(!loaded(), "{statement} ran the bundled library's code for a role PostgreSQL refuses");
    }
    // A superuser's LOAD of a file that is no copy under a prefix: PostgreSQL's own attempt,
    // nothing of ours (its dependency is not found by the loader).
    let err = s.sql_err(&format!("LOAD '{}/esp_mark.so'", loose.display()));
    assert!(err.contains("libesp_mark.so.1: cannot open shared object file"), "{err}");
    assert!(!loaded(), "a dependency of a file outside the prefixes was loaded");
    // and the image's own module, for a superuser, is served with its bundled library
    s.sql("CREATE EXTENSION esp_mark");
    assert_eq!(s.sql("SELECT esp_mark_value()"), "7");
    assert!(loaded());
    s.assert_no_crash();
}

#[test]
fn paths_in_errors_are_for_roles_that_may_see_them() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    let marks = marks_dir(dir.path());
    marking_image(&prefix, &marks);
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    s.sql("CREATE EXTENSION esp_mark; CREATE ROLE plain LOGIN; GRANT EXECUTE ON FUNCTION esp_mark_value() TO plain");
    // the bundled library goes missing: every new backend's first call reports it
    fs::remove_file(prefix.join("esp_mark/lib/libesp_mark.so.1")).unwrap();
    s.sql(
        "CREATE ROLE reader LOGIN IN ROLE pg_read_server_files; GRANT EXECUTE ON FUNCTION esp_mark_value() TO reader",
    );
    let message =
        "ERROR:  could not load library \"$libdir/esp_mark\": required library \"libesp_mark.so.1\" was not found";
    let plain = s.try_sql_as("plain", "SELECT esp_mark_value()").unwrap_err();
    assert!(plain.contains(message), "{plain}");
    assert!(!plain.contains("DETAIL") && !plain.contains(&dir.path().display().to_string()), "{plain}");
    assert!(plain.contains("HINT:  Bundle \"libesp_mark.so.1\""), "{plain}");
    for role in ["reader", "postgres"] {
        let err = s.try_sql_as(role, "SELECT esp_mark_value()").unwrap_err();
        assert!(err.contains(message) && err.contains(&format!("DETAIL:  \"{}", prefix.display())), "{role}: {err}");
    }
    // statements that load nothing in PostgreSQL load nothing with us either
    let out = s.psql_script("CREATE EXTENSION IF NOT EXISTS esp_mark;\nALTER EXTENSION esp_mark UPDATE;\n");
    assert!(out.contains("extension \"esp_mark\" already exists, skipping"), "{out}");
    assert!(out.contains("version \"1.0\" of extension \"esp_mark\" is already installed"), "{out}");
    assert!(!out.contains("ERROR"), "{out}");
    // what a refresh meets goes to the server log, never to a client, whatever it asks for
    fs::create_dir_all(prefix.join("esp_broken")).unwrap();
    fs::write(prefix.join("esp_broken/esp_broken.control"), "default_version = '1.0\n").unwrap();
    run_chmod_readable(&prefix);
    let out = s.psql_script("SET client_min_messages = debug5;\nCREATE EXTENSION esp_nothing;\n");
    assert!(out.contains("extension \"esp_nothing\" is not available"), "{out}");
    assert!(!out.contains("extension_search_path:") && !out.contains("esp_broken"), "{out}");
    let out = s.try_sql_as("plain", "SET client_min_messages = debug5; CREATE EXTENSION esp_nothing").unwrap_err();
    assert!(!out.contains("extension_search_path:") && !out.contains("esp_broken"), "{out}");
    assert!(s.log().contains("esp_broken.control: control file cannot be used"), "{}", s.log());
}

#[test]
fn per_role_values_get_a_catalog_of_their_own_never_the_servers() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    mkimage("cnpg", "contrib:seg", &a.join("seg"));
    mkimage("cnpg", "contrib:cube", &b.join("cube"));
    let s = Server::with_path(&format!("$system:{}", a.display()), &[]);
    s.sql(&format!(
        "CREATE ROLE other LOGIN SUPERUSER; ALTER ROLE other SET extension_search_path.path = '$system:{}'",
        b.display()
    ));
    s.sql("CREATE DATABASE otherdb");
    s.sql(&format!("ALTER DATABASE otherdb SET extension_search_path.path = '$system:{}'", b.display()));
    // the role's sessions see its path ...
    assert_eq!(s.try_sql_as("other", "CREATE EXTENSION cube; SELECT '(1)'::cube").unwrap(), "(1)");
    // ... and every other session still sees the server-wide one
    let available =
        "SELECT string_agg(name, ',' ORDER BY name) FROM pg_available_extensions WHERE name IN ('seg', 'cube')";
    assert_eq!(s.sql(available), "seg");
    assert_eq!(s.sql("CREATE EXTENSION seg; SELECT '1'::seg"), "1");
    assert_eq!(s.sql(available), "seg");
    s.assert_no_crash();
}

#[test]
fn library_names_follow_dfmgr_at_preload_session_preload_and_load() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    mkimage("cnpg", "contrib:auto_explain", &prefix.join("auto_explain"));
    let file = prefix.join("auto_explain/lib/auto_explain");
    // an absolute path without the suffix, at preload and session preload: stock loads it
    let mut s = Server::with_path(
        &format!("$system:{}", prefix.display()),
        &[
            &format!("shared_preload_libraries = 'extension_search_path, {}'", file.display()),
            &format!("session_preload_libraries = '{}'", file.display()),
        ],
    );
    assert_eq!(s.sql("SHOW auto_explain.log_min_duration"), "-1");
    s.sql(&format!("LOAD '{}'", file.display()));
    // $libdir/plugins/x is pkglibdir's plugins/ only, for every role, as in PostgreSQL
    s.sql("CREATE ROLE plain LOGIN");
    for role in ["plain", "postgres"] {
        let err = s.try_sql_as(role, "LOAD '$libdir/plugins/auto_explain'").unwrap_err();
        assert!(
            err.contains("could not access file \"$libdir/plugins/auto_explain\": No such file or directory"),
            "{err}"
        );
    }
    s.restart();
    assert_eq!(s.sql("SHOW auto_explain.log_min_duration"), "-1");
    s.assert_no_crash();
}

#[test]
fn a_huge_library_is_never_read_whole() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    let lib = prefix.join("esp_huge/lib");
    fs::create_dir_all(&lib).unwrap();
    // 800 MB, sparse: it costs no disk, but reading it whole would cost a backend 800 MB.
    let huge = fs::File::create(lib.join("esp_huge.so")).unwrap();
    huge.set_len(800 << 20).unwrap();
    drop(huge);
    run_chmod_readable(dir.path());
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    let out = s.psql_script(
        "LOAD '$libdir/esp_huge';\n\
         SELECT 'peak ' || substring(pg_read_file('/proc/self/status') from 'VmHWM:\\s*(\\d+) kB');\n",
    );
    assert!(out.contains("could not load library \"$libdir/esp_huge\""), "{out}");
    let peak: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak "))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {out}"));
    assert!(peak < 200 << 10, "the backend's peak memory reached {peak} kB:\n{out}");
    s.assert_no_crash();
}

#[test]
fn what_postgres_would_refuse_or_anyone_could_replace_is_left_out_and_named() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    let gw = dir.path().join("group-writable");
    let rfc = |prefix: &Path, name: &str, control: &str| {
        fs::create_dir_all(prefix.join(name).join("sql")).unwrap();
        fs::write(prefix.join(name).join(format!("{name}.control")), control).unwrap();
        fs::write(prefix.join(name).join(format!("sql/{name}--1.0.sql")), "SELECT 1;\n").unwrap();
    };
    rfc(&p, "esp_good", "default_version = '1.0'\nrelocatable = true\n");
    rfc(&p, "esp_capital", "Default_Version = '1.0'\n");
    rfc(&p, "esp_unquoted", "default_version = '1.0'\nmodule_pathname = $libdir/baz\n");
    rfc(&p, "esp_encoding", "default_version = '1.0'\nencoding = klingon\n");
    rfc(&p, "esp_requires", "default_version = '1.0'\nrequires = 'a,,b'\n");
    rfc(&p, "esp_nowhere", "default_version = '1.0'\ndirectory = '/nonexistent'\n");
    let loose = dir.path().join("loose-scripts");
    rfc(&p, "esp_loose", &format!("default_version = '1.0'\ndirectory = '{}'\n", loose.display()));
    fs::create_dir_all(&loose).unwrap();
    fs::write(loose.join("esp_loose--1.0.sql"), "SELECT 1;\n").unwrap();
    rfc(&p, "esp_foreign", "default_version = '1.0'\n");
    // an image reached through a link into a directory anyone can write (and so swap)
    let open = dir.path().join("open");
    rfc(&open, "esp_linked", "default_version = '1.0'\n");
    std::os::unix::fs::symlink(open.join("esp_linked"), p.join("esp_linked")).unwrap();
    rfc(&gw, "esp_shared", "default_version = '1.0'\n");
    run_chmod_readable(dir.path());
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(loose.join("esp_loose--1.0.sql"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(&gw, fs::Permissions::from_mode(0o775)).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let foreign = p.join("esp_foreign/esp_foreign.control");
    let chown = std::process::Command::new("chown").arg("nobody").arg(&foreign).status().unwrap();
    assert!(chown.success());

    let s = Server::with_path(&format!("$system:{}:{}", p.display(), gw.display()), &[]);
    // PostgreSQL's own views keep working for everybody, and serve only what is usable
    let available =
        s.sql("SELECT string_agg(name, ',' ORDER BY name) FROM pg_available_extensions WHERE name LIKE 'esp%'");
    assert_eq!(available, "esp_good");
    s.sql("SELECT count(*) FROM pg_available_extension_versions");
    s.sql("CREATE EXTENSION esp_good");
    for name in ["esp_capital", "esp_unquoted", "esp_nowhere", "esp_loose", "esp_foreign", "esp_shared", "esp_linked"] {
        let err = s.sql_err(&format!("CREATE EXTENSION {name}"));
        assert!(err.contains(&format!("extension \"{name}\" is not available")), "{err}");
    }
    // the server log and check() say why, each
    s.sql("CREATE EXTENSION extension_search_path");
    let found = s.sql("SELECT severity || ': ' || message FROM extension_search_path.check()");
    for needle in [
        "unrecognized parameter \"Default_Version\"".to_string(),
        "esp_unquoted.control\": control file cannot be used: syntax error in line 2, near token \"$\"".to_string(),
        "\"klingon\" is not a valid encoding name".to_string(),
        "parameter \"requires\" must be a list of extension names".to_string(),
        "script directory \"/nonexistent\" does not exist".to_string(),
        format!("not trusted, left out: \"{}\" is writable by group or others", loose.display()),
        format!("error: \"{0}\": not trusted, left out: \"{0}\" is owned by uid 65534", foreign.display()),
        format!("not trusted, left out: \"{}\" is writable by group or others", gw.display()),
        format!("not trusted, left out: \"{}\" is writable by group or others", open.display()),
    ] {
        assert!(found.contains(&needle), "check() lacks {needle:?}:\n{found}");
    }
    let log = s.log();
    assert!(log.contains(&format!("{}: not trusted, left out", foreign.display())), "{log}");
    s.assert_no_crash();
}

#[test]
fn a_backend_older_than_a_reload_never_undoes_it() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    // an extension whose script is owned by another user: served only with trust off
    fs::create_dir_all(p.join("esp_foreign/sql")).unwrap();
    fs::write(p.join("esp_foreign/esp_foreign.control"), "default_version = '1.0'\n").unwrap();
    fs::write(p.join("esp_foreign/sql/esp_foreign--1.0.sql"), "SELECT 1;\n").unwrap();
    run_chmod_readable(dir.path());
    let script = p.join("esp_foreign/sql/esp_foreign--1.0.sql");
    assert!(std::process::Command::new("chown").arg("nobody").arg(&script).status().unwrap().success());
    let s = Server::with_path(&format!("$system:{}", p.display()), &["extension_search_path.trusted_files_only = off"]);
    let available = "SELECT count(*) FROM pg_available_extensions WHERE name = 'esp_foreign'";
    assert_eq!(s.sql(available), "1");
    s.hold_until_go();
    s.sql("CREATE TABLE esp_seen(trusted_files_only text)");
    std::thread::scope(|scope| {
        // a backend that will refresh after the reload, with the settings it started with (a
        // backend applies a reload only between statements)
        let old = scope.spawn(|| {
            s.sql(
                "DO $$ BEGIN \
                   LOOP EXIT WHEN EXISTS (SELECT FROM esp_go); PERFORM pg_sleep(0.02); END LOOP; \
                   INSERT INTO esp_seen SELECT current_setting('extension_search_path.trusted_files_only'); \
                   EXECUTE 'ALTER EXTENSION plpgsql UPDATE'; END $$",
            )
        });
        s.wait_active("EXISTS (SELECT FROM esp_go)");
        fs::create_dir(p.join("esp_new")).unwrap(); // its cached index is now out of date
        s.sql("ALTER SYSTEM SET extension_search_path.trusted_files_only = on");
        s.reload_until("extension_search_path.trusted_files_only", "on");
        assert_eq!(s.sql(available), "0", "the postmaster left the untrusted extension out");
        s.go();
        old.join().unwrap();
        assert_eq!(s.sql("SELECT * FROM esp_seen"), "off", "the old backend ran its ALTER with its old settings");
    });
    assert_eq!(s.sql(available), "0", "the old backend put it back");
    assert!(s.sql_err("CREATE EXTENSION esp_foreign").contains("is not available"));
    s.assert_no_crash();
}

#[test]
fn a_session_preload_entry_we_refuse_never_stops_the_server() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    let marks = marks_dir(dir.path());
    marking_image(&prefix, &marks);
    fs::remove_file(prefix.join("esp_mark/lib/libesp_mark.so.1")).unwrap();
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
        "session_preload_libraries = 'esp_mark'",
    ]);
    s.try_start().unwrap_or_else(|e| panic!("the server did not start: {e}\n{}", s.log()));
    assert!(s.log().contains("required library \"libesp_mark.so.1\" was not found"), "{}", s.log());
    // connections fail as they would without us: the backend cannot load the module
    let err = s.try_sql("SELECT 1").unwrap_err();
    assert!(err.contains("libesp_mark.so.1"), "{err}");
}
