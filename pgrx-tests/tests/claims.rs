//! End to end: README claims that no other test pinned — when changes under a prefix are seen,
//! what stays in one session, the reserved prefix and hidden settings, the merge rule on RESET
//! and for extensions found twice, preload order, session_preload_libraries, and bundled
//! libraries at ALTER EXTENSION, CREATE FUNCTION and CASCADE.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, cc, deb, fixtures, mkimage, pg_module_source, run_chmod_readable, sql_extension, tempdir};

fn available(s: &Server, name: &str) -> String {
    s.sql(&format!("SELECT count(*) FROM pg_available_extensions WHERE name = '{name}'"))
}

#[test]
fn changes_under_a_prefix_are_seen_at_the_next_alter_or_load_and_removals_too() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    mkimage("cnpg", "contrib:seg", &p.join("seg"));
    let s = Server::with_path(&format!("$system:{}", p.display()), &[]);
    s.sql("CREATE EXTENSION extension_search_path");
    // an image mounted: the next ALTER EXTENSION (of anything) brings it in
    mkimage("cnpg", "contrib:citext", &p.join("citext"));
    run_chmod_readable(dir.path());
    assert_eq!(available(&s, "citext"), "0", "not before a statement that looks");
    s.sql("ALTER EXTENSION plpgsql UPDATE");
    assert_eq!(available(&s, "citext"), "1", "seen after an ALTER EXTENSION");
    // the next LOAD (of anything) too
    mkimage("cnpg", "contrib:hstore", &p.join("hstore"));
    run_chmod_readable(dir.path());
    s.sql("LOAD 'plpgsql'");
    assert_eq!(available(&s, "hstore"), "1", "seen after a LOAD");
    // an image removed: gone at the next CREATE, which then says it is not available
    fs::remove_dir_all(p.join("citext")).unwrap();
    let err = s.sql_err("CREATE EXTENSION citext");
    assert!(err.contains("extension \"citext\" is not available"), "{err}");
    assert_eq!(available(&s, "citext"), "0");
    // files changed inside an existing image: not seen by the cheap check, seen by rescan()
    let control = p.join("seg/share/extension/seg.control");
    let text = fs::read_to_string(&control).unwrap();
    let comment = |s: &Server| s.sql("SELECT comment FROM pg_available_extensions WHERE name = 'seg'");
    let before = comment(&s);
    fs::write(&control, text.replace("comment = '", "comment = 'changed: ")).unwrap();
    s.sql("CREATE EXTENSION hstore");
    assert_eq!(comment(&s), before, "images are immutable: a CREATE does not reread them");
    s.sql("SELECT count(*) FROM extension_search_path.rescan()");
    assert!(comment(&s).starts_with("changed: "), "rescan() rereads them: {}", comment(&s));
    s.assert_no_crash();
}

#[test]
fn a_session_s_settings_stay_in_that_session_and_ours_are_guarded() {
    let (cnpg, rfc) = (fixtures().prefix("cnpg"), fixtures().prefix("rfc"));
    let s = Server::with_path(&format!("$system:{cnpg}"), &[]);
    s.sql("CREATE ROLE plain LOGIN");
    // one session with a path of its own, alive while others look
    s.hold_until_go();
    std::thread::scope(|scope| {
        let own = scope.spawn(|| {
            s.sql(&format!(
                "SET extension_search_path.path = '$system:{rfc}'; CREATE EXTENSION cube; {}; \
                 SELECT count(*) FROM pg_available_extensions WHERE name = 'cube'",
                Server::WAIT_FOR_GO
            ))
        });
        s.wait_active("EXISTS (SELECT FROM esp_go)");
        assert_eq!(s.sql("SHOW extension_search_path.path"), format!("$system:{cnpg}"));
        assert_eq!(available(&s, "cube"), "0", "another session does not see that session's path");
        assert_eq!(available(&s, "hstore"), "1");
        s.go();
        assert_eq!(own.join().unwrap().lines().last(), Some("1"), "the session itself does");
    });
    // the setting is superuser-only: hidden from plain roles
    let err = s.try_sql_as("plain", "SHOW extension_search_path.path").unwrap_err();
    assert!(err.contains("permission denied to examine \"extension_search_path.path\""), "{err}");
    assert_eq!(
        s.try_sql_as("plain", "SELECT count(*) FROM pg_settings WHERE name = 'extension_search_path.path'").unwrap(),
        "0"
    );
    // the prefix is reserved: a misspelt setting is an error, not a silent placeholder
    let err = s.sql_err("SET extension_search_path.pth = '/x'");
    assert!(err.contains("invalid configuration parameter name \"extension_search_path.pth\""), "{err}");
    assert!(err.contains("\"extension_search_path\" is a reserved prefix"), "{err}");
    // RESET of a core path gives the merged value again
    let ours = s.sql("SHOW extension_control_path");
    let out = s.sql("SET extension_control_path = '/tmp:$system'; SHOW extension_control_path");
    let first = ours.split(':').next().unwrap();
    assert_eq!(out, format!("{first}:/tmp:$system"));
    assert_eq!(
        s.sql("SET extension_control_path = '/tmp'; RESET extension_control_path; SHOW extension_control_path"),
        ours
    );
    s.assert_no_crash();
}

#[test]
fn an_extension_found_through_our_path_and_an_operator_element_is_ours() {
    // hstore 1.8 through the operator's own element; hstore 1.4 (the `early` RFC copy) through ours
    let operator = fixtures().prefix("cnpg");
    let s = Server::with_path(
        &format!("$system:{}", fixtures().prefix("early")),
        &[&format!("extension_control_path = '$system:{operator}/hstore/share'")],
    );
    s.sql("CREATE EXTENSION hstore");
    assert_eq!(s.sql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
    s.assert_no_crash();
}

#[test]
fn preload_order_and_session_preload_libraries() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    mkimage("cnpg", "contrib:auto_explain", &p.join("auto_explain"));
    let path = format!("$system:{}", p.display());
    // listed before us, a module only an image has is PostgreSQL's alone to find: it does not
    let mut s = Server::new(&[
        "shared_preload_libraries = 'auto_explain, extension_search_path'",
        &format!("extension_search_path.path = '{path}'"),
    ]);
    let err = s.try_start().unwrap_err();
    let log = s.log();
    assert!(log.contains("could not access file \"auto_explain\": No such file or directory"), "{err}\n{log}");
    drop(s);
    // session_preload_libraries: every new session loads it from the image
    let s = Server::with_path(&path, &["session_preload_libraries = 'auto_explain'"]);
    assert_eq!(s.sql("SHOW auto_explain.log_min_duration"), "-1");
    assert_eq!(s.sql("SHOW auto_explain.log_analyze"), "off");
    s.assert_no_crash();
}

/// A module `lib/<name>.so` answering `value`, needing `needs` (file name = soname) bundled in
/// the image's `system/`, which exports `int <symbol>(void)`.
fn module_with_bundled(image: &Path, name: &str, needs: &str, symbol: &str, value: i32) {
    let lib = image.join("system").join(needs);
    cc(&lib, &format!("int {symbol}(void) {{ return {value}; }}"), &[]);
    cc(
        &image.join(format!("lib/{name}.so")),
        &pg_module_source(&format!("{name}_value"), &format!("int {symbol}(void);"), &format!("{symbol}()")),
        &[&lib],
    );
}

#[test]
fn bundled_libraries_at_alter_create_function_and_cascade_and_they_win_over_the_system_s() {
    let dir = tempdir();
    let c = dir.path().join("c");
    // esp_upd: 1.0 is plain SQL; the 1.0--1.1 update script LOADs the module and creates its C
    // function, whose library needs a bundled one
    let upd = c.join("esp_upd");
    module_with_bundled(&upd, "esp_upd", "libesp_updleaf.so.1", "esp_updleaf", 11);
    sql_extension(
        &upd,
        "esp_upd",
        "CREATE FUNCTION esp_upd_version() RETURNS text LANGUAGE sql AS $$ SELECT '1.0' $$;\n",
    );
    let share = upd.join("share/extension");
    fs::write(
        share.join("esp_upd.control"),
        "default_version = '1.1'\nmodule_pathname = '$libdir/esp_upd'\nrelocatable = true\n",
    )
    .unwrap();
    fs::write(
        share.join("esp_upd--1.0--1.1.sql"),
        "LOAD '$libdir/esp_upd';\nCREATE FUNCTION esp_upd_value() RETURNS int AS 'MODULE_PATHNAME' LANGUAGE C;\n",
    )
    .unwrap();
    // esp_shadow needs libexpat.so.1, which the system has too: the image's copy must win (the
    // system's has no esp_shadow_bundled, so the module would not load with it)
    let system_copy =
        ["/lib/x86_64-linux-gnu/libexpat.so.1", "/lib/aarch64-linux-gnu/libexpat.so.1", "/usr/lib64/libexpat.so.1"];
    assert!(system_copy.iter().any(|p| Path::new(p).exists()), "the system has no libexpat.so.1 to compete with");
    let shadow = c.join("esp_shadow");
    module_with_bundled(&shadow, "esp_shadow", "libexpat.so.1", "esp_shadow_bundled", 7);
    sql_extension(
        &shadow,
        "esp_shadow",
        "CREATE FUNCTION esp_shadow_value() RETURNS int AS 'MODULE_PATHNAME' LANGUAGE C;\n",
    );
    // esp_needs: plain SQL, requires esp_shadow
    let needs = c.join("esp_needs");
    sql_extension(&needs, "esp_needs", "SELECT 1;\n");
    let control = needs.join("share/extension/esp_needs.control");
    fs::write(&control, "default_version = '1.0'\nrelocatable = true\nrequires = 'esp_shadow'\n").unwrap();
    // esp_direct: a module with no extension, for CREATE FUNCTION
    module_with_bundled(&c.join("esp_direct"), "esp_direct", "libesp_directleaf.so.1", "esp_directleaf", 5);
    run_chmod_readable(dir.path());
    let s = Server::with_path(&format!("$system:{}", c.display()), &[]);

    // ALTER EXTENSION … UPDATE whose script LOADs the module: its bundled library comes first
    s.sql("CREATE EXTENSION esp_upd VERSION '1.0'; ALTER EXTENSION esp_upd UPDATE");
    assert_eq!(s.sql("SELECT esp_upd_value()"), "11", "a fresh backend calls the C function");
    // CREATE FUNCTION … LANGUAGE C of an image's module, no extension involved
    s.sql("CREATE FUNCTION direct() RETURNS int AS 'esp_direct', 'esp_direct_value' LANGUAGE C");
    assert_eq!(s.sql("SELECT direct()"), "5");
    // CASCADE: the required extension's module, with the image's libexpat.so.1 over the system's
    s.sql("CREATE EXTENSION esp_needs CASCADE");
    assert_eq!(s.sql("SELECT esp_shadow_value()"), "7");
    let loaded = s.sql(
        "SELECT esp_shadow_value(); \
         SELECT count(*) FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), '\\n') l \
         WHERE l LIKE '%libexpat.so.1%' AND l NOT LIKE '%/esp_shadow/system/%'",
    );
    assert_eq!(loaded.lines().last(), Some("0"), "the system's libexpat was mapped: {loaded}");
    // the documented limit: a SECURITY DEFINER C function, called first in a fresh backend, is
    // loaded by PostgreSQL without needs_fmgr_hook, so its bundled library is not there yet
    s.sql("CREATE FUNCTION definer() RETURNS int AS 'esp_direct', 'esp_direct_value' LANGUAGE C SECURITY DEFINER");
    let err = s.sql_err("SELECT definer()");
    assert!(err.contains("libesp_directleaf.so.1"), "{err}");
    assert_eq!(s.sql("SELECT direct(); SELECT definer()"), "5\n5", "once something prepared the module");
    s.assert_no_crash();
}

#[test]
fn a_missing_bundled_library_is_sqlstate_58p01() {
    let s = Server::with_path(&format!("$system:{}", esp_e2e::c_fixtures().prefix("c")), &[]);
    let out = s.psql_script("\\set VERBOSITY verbose\nCREATE EXTENSION esp_ghost;\n");
    assert!(out.contains("ERROR:  58P01: could not load library"), "{out}");
    assert!(out.contains("required library \"libesp_ghost.so.1\" was not found"), "{out}");
    s.assert_no_crash();
}

#[test]
fn debian_s_plpgsql_check_preloaded_and_pg_ivm_served_from_images() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    mkimage("cnpg", &deb("postgresql-18-plpgsql-check"), &p.join("plpgsql_check"));
    mkimage("rfc", &deb("postgresql-18-pg-ivm"), &p.join("pg_ivm"));
    let s = Server::with_path(
        &format!("$system:{}", p.display()),
        // pg_ivm asks to be preloaded (shared or session): here from its image, per session
        &["shared_preload_libraries = 'extension_search_path, plpgsql_check'", "session_preload_libraries = 'pg_ivm'"],
    );
    // plpgsql_check: preloaded by bare name from its image, and doing its job
    assert_eq!(s.sql("SHOW plpgsql_check.mode"), "by_function");
    s.sql("CREATE EXTENSION plpgsql_check");
    s.sql("CREATE FUNCTION buggy() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN no_such_column; END $$");
    let found = s.sql("SELECT * FROM plpgsql_check_function('buggy()')");
    assert!(found.contains("column \"no_such_column\" does not exist"), "{found}");
    // pg_ivm: C functions and triggers keep a view up to date, in fresh backends
    s.sql("CREATE EXTENSION pg_ivm; CREATE TABLE base(a int); INSERT INTO base VALUES (1), (2)");
    s.sql("SELECT pgivm.create_immv('total', 'SELECT sum(a) AS s FROM base')");
    s.sql("INSERT INTO base VALUES (39)");
    assert_eq!(s.sql("SELECT s FROM total"), "42");
    s.assert_no_crash();
}

#[test]
fn reset_of_an_operator_set_core_path_gives_the_merged_operator_value() {
    let op = fixtures().prefix("operator/isn");
    let s = Server::with_path(
        "$system",
        &[
            &format!("extension_control_path = '$system:{op}/share'"),
            &format!("dynamic_library_path = '$libdir:{op}/lib'"),
        ],
    );
    let merged = s.sql("SHOW extension_control_path");
    assert!(merged.ends_with(&format!("/share:$system:{op}/share")), "{merged}");
    let out = s.sql("SET extension_control_path = '/tmp'; RESET extension_control_path; SHOW extension_control_path");
    assert_eq!(out, merged, "RESET gives the operator's value, merged");
    s.sql("SET extension_control_path = '/tmp'; RESET extension_control_path; CREATE EXTENSION isn");
    assert_eq!(s.sql("SELECT isbn('978-0-393-04002-9')::text"), "0-393-04002-X");
    s.assert_no_crash();
}
