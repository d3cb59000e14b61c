//! End to end: bad settings, hostile trees, untrusted files and transactions. The server always
//! starts, good images next to bad ones keep working, nothing hangs or crashes.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use esp_e2e::{Server, fixtures, mkimage, run_chmod_readable, tempdir};

#[test]
fn interactive_set_refuses_bad_values_with_a_clear_error() {
    let s = Server::with_path("$system", &[]);
    let long = format!("/{}", "x".repeat(10_000));
    for (value, detail) in [
        ("relative/dir", "\"relative/dir\": relative path element ignored; elements must be absolute"),
        ("$system/x", "\"$system/x\": unknown macro"),
        ("/does/not/exist", "/does/not/exist: cannot be used: No such file or directory"),
        (long.as_str(), "value is 10001 bytes long, more than 8192"),
    ] {
        let err = s.sql_err(&format!("SET extension_search_path.path = '{value}'"));
        assert!(err.contains("ERROR:  invalid value for parameter \"extension_search_path.path\""), "{err}");
        assert!(err.contains(detail), "{value}: {err}");
        assert!(err.contains("HINT:  Elements must be absolute paths of existing directories"), "{err}");
    }
    let cnpg = fixtures().prefix("cnpg");
    let out = s.psql_script(&format!(
        "SET extension_search_path.path = '$system::{cnpg}';\nSELECT 'shown:' || current_setting('extension_search_path.path');\n"
    ));
    assert!(out.contains("WARNING:  extension_search_path.path: empty path elements are ignored"), "{out}");
    assert!(!out.contains("ERROR"), "empty elements only warn: {out}");
    assert!(out.contains(&format!("shown:$system::{cnpg}")), "the value is taken: {out}");
    let err = s.sql_err("CREATE ROLE r; ALTER ROLE r SET extension_search_path.path = 'relative'");
    assert!(err.contains("invalid value for parameter"), "{err}");
}

#[test]
fn bad_values_from_the_configuration_file_never_stop_the_server() {
    let long = format!("/{}", "y".repeat(10_000));
    let mut s = Server::with_path(&long, &[]);
    assert!(s.log().contains("more than 8192: ignored, only $system is searched"), "{}", s.log());
    s.sql("CREATE EXTENSION extension_search_path");
    // ALTER SYSTEM is validated like the file: accepted, then skipped with a WARNING at reload
    let cnpg = fixtures().prefix("cnpg");
    s.sql(&format!("ALTER SYSTEM SET extension_search_path.path = 'relative:{cnpg}:$libdir:{cnpg}:/nope'"));
    s.reload();
    s.sql("CREATE EXTENSION hstore");
    s.restart();
    let log = s.log();
    assert!(
        log.contains("\"relative\": relative path element ignored") && log.contains("/nope: could not read directory"),
        "{log}"
    );
    assert!(log.contains("\"$libdir\": "), "$libdir is named: {log}");
    assert!(log.contains(&format!("\"{cnpg}\": duplicate path element ignored")), "{log}");
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1");
    s.assert_no_crash();
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn hostile_trees_never_hang_crash_or_hide_good_images() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    mkimage("cnpg", "contrib:hstore", &p.join("hstore"));
    // an image outside the prefix, reached through a symlink: served (trust is checked on the target)
    mkimage("rfc", "contrib:cube", &dir.path().join("elsewhere/cube"));
    symlink(dir.path().join("elsewhere/cube"), p.join("cube")).unwrap();
    // unreadable directory, dangling and looping symlinks
    fs::create_dir_all(p.join("secret/share/extension")).unwrap();
    fs::set_permissions(p.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("/nowhere/at/all", p.join("dangling")).unwrap();
    symlink(p.join("loop2"), p.join("loop1")).unwrap();
    symlink(p.join("loop1"), p.join("loop2")).unwrap();
    // control files that are a directory, FIFOs, random bytes
    fs::create_dir_all(p.join("dirctl/dirctl.control")).unwrap();
    fs::create_dir_all(p.join("fifo/share/extension")).unwrap();
    mkfifo(&p.join("fifo/share/extension/fifo.control"));
    fs::create_dir_all(p.join("fiforfc")).unwrap();
    mkfifo(&p.join("fiforfc/fiforfc.control"));
    fs::create_dir_all(p.join("noise/share/extension")).unwrap();
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    fs::write(p.join("noise/share/extension/noise.control"), &noise).unwrap();
    // a FIFO where PostgreSQL reads secondary control files
    mkimage("cnpg", "contrib:seg", &p.join("seg"));
    mkfifo(&p.join("seg/share/extension/seg--1.4.control"));
    // a non-UTF-8 name, 5,000 directories, a prefix near PATH_MAX; a good image listed after
    // all of them
    let bad = p.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfename/share/extension"));
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("badname.control"), "default_version = '1.0'\n").unwrap();
    fs::write(bad.join("badname--1.0.sql"), "SELECT 1;\n").unwrap();
    for i in 0..5000 {
        fs::create_dir(p.join(format!("empty{i:04}"))).unwrap();
    }
    mkimage("cnpg", "contrib:citext", &p.join("zzz_after_everything"));
    let mut deep = dir.path().join("deep");
    while deep.as_os_str().len() < 3900 {
        deep = deep.join("d".repeat(200));
    }
    mkimage("cnpg", "contrib:isn", &deep.join("isn"));
    run_chmod_readable(dir.path());
    fs::set_permissions(p.join("secret"), fs::Permissions::from_mode(0o700)).unwrap();

    let started = Instant::now();
    let s = Server::with_path(&format!("$system:{}:{}", p.display(), deep.display()), &[]);
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION hstore; CREATE EXTENSION cube;");
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1");
    assert_eq!(s.sql("SELECT cube_dim('(1,2)'::cube)"), "2");
    // an image whose directory name is not UTF-8: PostgreSQL could not be given its script
    // directory, so it is left out, and said so
    let err = s.sql_err("CREATE EXTENSION badname");
    assert!(err.contains("extension \"badname\" is not available"), "{err}");
    // scanned past the non-UTF-8 name and the 5,000 directories
    s.sql("CREATE EXTENSION citext");
    assert_eq!(s.sql("SELECT 'A'::citext = 'a'::citext"), "t");
    // links that lead nowhere and directories without an extension are no extensions
    let ours =
        "SELECT string_agg(name, ',' ORDER BY name) FROM extension_search_path.extensions() WHERE layout <> 'system'";
    // (badname, isn, noise and seg are copies found and left out of the catalog, with their
    // reasons)
    assert_eq!(s.sql(ours), "badname,citext,cube,hstore,isn,noise,seg", "only the images' control files");
    let links = "SELECT count(*) FROM extension_search_path.images() WHERE name LIKE 'loop%' OR name = 'dangling'";
    assert_eq!(s.sql(links), "0");
    let empty = "SELECT count(*) FILTER (WHERE cardinality(extensions) = 0 AND cardinality(libraries) = 0), count(*) \
                 FROM extension_search_path.images() WHERE name LIKE 'empty%'";
    assert_eq!(s.sql(empty), "5000|5000", "listed as mounted, holding nothing");
    s.sql("SELECT count(*) FROM pg_available_extension_versions");
    let seg = s.sql_err("CREATE EXTENSION seg");
    assert!(seg.contains("is not available"), "seg is left out, its FIFO never opened: {seg}");
    // PostgreSQL cuts file names at 1023 bytes: an image that deep is left out, with the reason
    let isn = s.sql_err("CREATE EXTENSION isn");
    assert!(isn.contains("is not available"), "{isn}");
    let found = s.sql("SELECT message FROM extension_search_path.check()");
    assert!(found.contains("is too long: PostgreSQL handles file names up to 1023 bytes"), "{found}");
    assert!(found.contains("noise.control"), "{found}");
    assert!(found.contains("seg--1.4.control") && found.contains("not a regular file"), "{found}");
    assert!(
        found.contains(&format!("{}: could not read directory: Permission denied", p.join("secret").display())),
        "{found}"
    );
    assert!(found.contains("noise.control\": control file cannot be used"), "{found}");
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
    s.assert_no_crash();
}

#[test]
fn untrusted_files_are_refused_until_the_server_is_told_otherwise() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    mkimage("cnpg", "contrib:seg", &p.join("seg"));
    fs::set_permissions(p.join("seg/share/extension/seg.control"), fs::Permissions::from_mode(0o666)).unwrap();
    let s = Server::with_path(&format!("$system:{}", p.display()), &[]);
    let err = s.sql_err("CREATE EXTENSION seg");
    assert!(err.contains("extension \"seg\" is not available"), "{err}");
    let log = s.log();
    assert!(
        log.contains("seg.control: not trusted, left out: ") && log.contains("is writable by group or others"),
        "{log}"
    );
    let err = s.sql_err("SET extension_search_path.trusted_files_only = off");
    assert!(err.contains("cannot be changed now"), "server-wide only: {err}");
    s.sql("ALTER SYSTEM SET extension_search_path.trusted_files_only = off");
    s.reload_until("extension_search_path.trusted_files_only", "off");
    s.sql("CREATE EXTENSION seg");
    assert_eq!(s.sql("SELECT seg_lower('1 .. 2'::seg)"), "1");
}

#[test]
fn rolled_back_and_failed_statements_leave_the_session_settings_as_they_were() {
    let rfc = fixtures().prefix("rfc");
    let cnpg = fixtures().prefix("cnpg");
    let s = Server::with_path("$system", &[]);
    let script = format!(
        "\\set ON_ERROR_STOP 0\n\
         SELECT 'before', current_setting('extension_control_path'), current_setting('dynamic_library_path'), current_setting('extension_search_path.path');\n\
         BEGIN; SET extension_search_path.path = '{rfc}'; CREATE EXTENSION cube; SELECT 'created', count(*) FROM pg_extension WHERE extname = 'cube'; ROLLBACK;\n\
         BEGIN; SET extension_search_path.path = '{rfc}'; CREATE EXTENSION cube VERSION '1.4'; ALTER EXTENSION cube UPDATE; SELECT 'updated', extversion FROM pg_extension WHERE extname = 'cube'; ROLLBACK;\n\
         BEGIN; SET extension_search_path.path = '{rfc}'; CREATE EXTENSION does_not_exist; ROLLBACK;\n\
         BEGIN; SAVEPOINT a; SET extension_search_path.path = '{cnpg}:{rfc}'; CREATE EXTENSION earthdistance CASCADE; SELECT 'cascaded', count(*) FROM pg_extension WHERE extname IN ('cube', 'earthdistance'); ROLLBACK TO a; COMMIT;\n\
         SELECT 'after', current_setting('extension_control_path'), current_setting('dynamic_library_path'), current_setting('extension_search_path.path');\n\
         SELECT count(*) FROM pg_extension WHERE extname IN ('cube', 'earthdistance');\n"
    );
    let out = s.try_sql(&script).unwrap_or_else(|e| e);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("before|") || l.starts_with("after|")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0].trim_start_matches("before"), lines[1].trim_start_matches("after"), "{out}");
    assert!(out.lines().any(|l| l == "created|1"), "the CREATE inside the transaction worked: {out}");
    assert!(out.lines().any(|l| l == "updated|1.5"), "the ALTER inside the transaction worked: {out}");
    assert!(out.lines().any(|l| l == "cascaded|2"), "the CASCADE inside the savepoint worked: {out}");
    assert!(out.ends_with('0'), "{out}");
    s.assert_no_crash();
}
