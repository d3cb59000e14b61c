//! End to end: modules in images with bundled dependency libraries, preloading by bare name,
//! LOAD with `$libdir/`, errors that name what is missing, collisions between images.

use esp_e2e::{Server, c_fixtures, deb, fixtures, mkimage};

fn c_prefix() -> String {
    c_fixtures().prefix("c")
}

#[test]
fn bundled_libraries_load_at_create_in_fresh_backends_and_after_restart() {
    let mut s = Server::with_path(&format!("$system:{}", c_prefix()), &[]);
    // the install script starts with LOAD '$libdir/esp_bundled', and defines AS '$libdir/…'
    s.sql("CREATE EXTENSION esp_bundled");
    assert_eq!(s.sql("SELECT esp_bundled_value()"), "42", "a fresh backend");
    assert_eq!(s.sql("SELECT esp_bundled_value()"), "42", "another fresh backend");
    s.restart();
    assert_eq!(s.sql("SELECT esp_bundled_value()"), "42", "after a restart");
    s.sql("DROP EXTENSION esp_bundled; CREATE EXTENSION esp_bundled;");
    s.assert_no_crash();
}

#[test]
fn a_bundled_module_preloads_by_bare_name() {
    let mut s = Server::with_path(
        &format!("$system:{}", c_prefix()),
        &["shared_preload_libraries = 'extension_search_path, esp_bundled'"],
    );
    s.sql("CREATE EXTENSION esp_bundled");
    assert_eq!(s.sql("SELECT esp_bundled_value()"), "42");
    s.restart();
    assert_eq!(s.sql("SELECT esp_bundled_value()"), "42");
    s.assert_no_crash();
}

#[test]
fn load_finds_image_modules_with_and_without_libdir() {
    let s = Server::with_path(&format!("$system:{}", c_prefix()), &[]);
    s.sql("LOAD 'esp_bundled'");
    s.sql("LOAD '$libdir/esp_bundled'");
    s.sql("LOAD '$libdir/esp_bundled.so'");
    // PostgreSQL's own modules are untouched
    s.sql("LOAD '$libdir/plpgsql'");
    s.assert_no_crash();
}

#[test]
fn a_missing_bundled_library_is_named_and_a_missing_module_is_postgres_own_error() {
    let s = Server::with_path(&format!("$system:{}", c_prefix()), &[]);
    let err = s.sql_err("CREATE EXTENSION esp_ghost");
    assert!(
        err.contains(
            "ERROR:  could not load library \"$libdir/esp_ghost\": required library \"libesp_ghost.so.1\" was not found"
        ),
        "{err}"
    );
    let image = format!("{}/esp_ghost", c_prefix());
    assert!(err.contains(&format!("DETAIL:  \"{image}/lib/esp_ghost.so\" needs \"libesp_ghost.so.1\". Directories searched: {image}/lib, {image}/system")), "{err}");
    assert!(err.contains("HINT:  Bundle \"libesp_ghost.so.1\" in the image's lib/ or system/ directory"), "{err}");
    // A library that no image and no directory has is PostgreSQL's to report, as without us.
    for (statement, name) in [
        ("LOAD '$libdir/esp_nowhere'", "$libdir/esp_nowhere"),
        ("LOAD 'esp_nowhere'", "esp_nowhere"),
        ("CREATE FUNCTION f() RETURNS int AS 'esp_nowhere', 'f' LANGUAGE C", "esp_nowhere"),
    ] {
        let err = s.sql_err(statement);
        let expected = format!("ERROR:  could not access file \"{name}\": No such file or directory");
        assert!(err.contains(&expected) && !err.contains("DETAIL") && !err.contains("HINT"), "{err}");
    }
    s.assert_no_crash();
}

#[test]
fn same_named_modules_in_two_images_resolve_by_prefix_order() {
    let (first, second) = (c_fixtures().prefix("first"), c_fixtures().prefix("second"));
    let s = Server::with_path(&format!("{first}:{second}"), &[]);
    let create =
        "CREATE FUNCTION esp_collide_value() RETURNS int AS '$libdir/esp_collide', 'esp_collide_value' LANGUAGE C";
    s.sql(create);
    assert_eq!(s.sql("SELECT esp_collide_value()"), "1");
    let flipped = format!("{second}:{first}");
    s.sql(&format!("ALTER SYSTEM SET extension_search_path.path = '{flipped}'"));
    s.reload_until("extension_search_path.path", &flipped);
    assert_eq!(s.sql("SELECT esp_collide_value()"), "2", "a new backend after the reload");
    s.assert_no_crash();
}

#[test]
fn contrib_modules_load_and_preload_from_images() {
    let dir = esp_e2e::tempdir();
    let prefix = dir.path().join("extensions");
    mkimage("cnpg", "contrib:auto_explain", &prefix.join("auto_explain"));
    mkimage("cnpg", "contrib:pg_stat_statements", &prefix.join("pg_stat_statements"));
    mkimage("cnpg", &deb("postgresql-18-pg-wait-sampling"), &prefix.join("pg_wait_sampling"));
    let path = format!("$system:{}", prefix.display());
    // LOAD-only module, no control file
    let s = Server::with_path(&path, &[]);
    assert_eq!(
        s.sql("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SHOW auto_explain.log_min_duration"),
        "0"
    );
    assert_eq!(s.sql("LOAD '$libdir/auto_explain'; SHOW auto_explain.log_analyze"), "off");
    drop(s);
    // preloaded by bare name, only in images
    let mut s = Server::with_path(
        &path,
        &["shared_preload_libraries = 'extension_search_path, auto_explain, pg_stat_statements, pg_wait_sampling'"],
    );
    s.sql("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_wait_sampling;");
    assert_eq!(s.sql("SHOW auto_explain.log_min_duration"), "-1");
    assert_eq!(s.sql("SELECT count(*) > 0 FROM pg_stat_statements"), "t");
    // the collector of the image's module samples the server's processes
    s.wait_for("SELECT count(*) > 0 FROM pg_wait_sampling_profile", |out| out == "t");
    s.restart();
    assert_eq!(s.sql("SELECT count(*) > 0 FROM pg_stat_statements"), "t");
    s.assert_no_crash();
}

#[test]
fn preload_of_a_module_found_nowhere_fails_as_postgres_does() {
    let mut s = esp_e2e::Server::new(&[
        "shared_preload_libraries = 'extension_search_path, esp_nowhere'",
        &format!("extension_search_path.path = '$system:{}'", fixtures().prefix("cnpg")),
    ]);
    assert!(s.try_start().is_err());
    let log = s.log();
    assert!(log.contains("FATAL:  could not access file \"esp_nowhere\": No such file or directory"), "{log}");
}
