//! End to end: real servers, real extensions (PostgreSQL contrib built into both layouts and
//! Debian binary packages), nothing in extension_control_path or dynamic_library_path edited by
//! the tests unless a test is about an operator's value.

use esp_e2e::{Server, fixtures, mkimage, without_generation};

fn path(prefixes: &[&str]) -> String {
    prefixes
        .iter()
        .map(|p| if *p == "$system" { p.to_string() } else { fixtures().prefix(p) })
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn both_layouts_create_and_answer_in_fresh_backends_and_after_restart() {
    let mut s = Server::with_path(&path(&["$system", "cnpg", "rfc"]), &[]);
    s.sql("CREATE EXTENSION hstore; CREATE EXTENSION cube; CREATE EXTENSION citext;");
    // each call is a new connection: the library is resolved again in a fresh backend
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1");
    assert_eq!(s.sql("SELECT cube_dim('(1,2,3)'::cube)"), "3");
    assert_eq!(s.sql("SELECT 'AbC'::citext = 'abc'"), "t");
    s.restart();
    assert_eq!(s.sql("SELECT ('b=>2'::hstore) -> 'b'"), "2");
    assert_eq!(s.sql("SELECT cube_dim('(1,2)'::cube)"), "2");
    assert_eq!(
        s.sql("SELECT string_agg(name || '=' || default_version, ',' ORDER BY name) FROM pg_available_extensions WHERE name IN ('hstore','cube','citext','seg')"),
        "citext=1.8,cube=1.5,hstore=1.8,seg=1.4"
    );
    s.sql("DROP EXTENSION hstore; DROP EXTENSION citext;");
    assert_eq!(s.sql("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension"), "cube,plpgsql");
}

#[test]
fn update_from_an_old_version_along_update_scripts() {
    let s = Server::with_path(&path(&["$system", "cnpg", "rfc"]), &[]);
    s.sql("CREATE EXTENSION hstore VERSION '1.4'; CREATE EXTENSION cube VERSION '1.2';");
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extension_versions WHERE name = 'hstore'"), "5");
    s.sql("ALTER EXTENSION hstore UPDATE; ALTER EXTENSION cube UPDATE TO '1.4';");
    assert_eq!(s.sql("SELECT string_agg(extname || extversion, ',' ORDER BY extname) FROM pg_extension WHERE extname <> 'plpgsql'"), "cube1.4,hstore1.8");
    assert_eq!(s.sql("SELECT hstore_to_json('a=>1')::text"), r#"{"a": "1"}"#);
}

#[test]
fn cascade_pulls_a_requirement_from_another_image_in_another_layout() {
    let s = Server::with_path(&path(&["$system", "cnpg", "rfc"]), &[]);
    s.sql("CREATE EXTENSION extension_search_path");
    let out = s.sql(
        "CREATE EXTENSION earthdistance CASCADE; SELECT earth_distance(ll_to_earth(0, 0), ll_to_earth(0, 1))::int",
    );
    assert_eq!(out, "111320");
    assert_eq!(
        s.sql(
            "SELECT string_agg(r.name || ':' || r.layout, ',' ORDER BY r.name) \
             FROM unnest(ARRAY['cube', 'earthdistance']) n, extension_search_path.resolve(n) r WHERE r.winner"
        ),
        "cube:rfc,earthdistance:cnpg"
    );
}

#[test]
fn an_earlier_prefix_shadows_a_later_one_and_reordering_by_reload_flips_it() {
    let s = Server::with_path(&path(&["early", "$system", "cnpg"]), &[]);
    assert_eq!(s.sql("SELECT default_version FROM pg_available_extensions WHERE name = 'hstore'"), "1.4");
    s.sql("CREATE EXTENSION hstore");
    assert_eq!(s.sql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.4");
    s.sql("CREATE EXTENSION extension_search_path");
    assert_eq!(
        s.sql("SELECT string_agg(layout || ':' || winner, ',') FROM extension_search_path.resolve('hstore')"),
        "rfc:true,cnpg:false"
    );
    let flipped = path(&["$system", "cnpg", "early"]);
    s.sql(&format!("ALTER SYSTEM SET extension_search_path.path = '{flipped}'"));
    s.reload_until("extension_search_path.path", &flipped);
    assert_eq!(s.sql("SELECT default_version FROM pg_available_extensions WHERE name = 'hstore'"), "1.8");
    s.sql("ALTER EXTENSION hstore UPDATE");
    assert_eq!(s.sql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'"), "1.8");
}

#[test]
fn system_extensions_keep_working_whatever_the_path() {
    // $system left out, bad elements around: it is searched last and never hidden
    let dir = esp_e2e::tempdir();
    let unreadable = dir.path().join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::set_permissions(&unreadable, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let bad = format!("relative/x::{}:/does/not/exist:{}", fixtures().prefix("cnpg"), unreadable.display());
    let s = Server::with_path(&bad, &[]);
    s.sql("CREATE EXTENSION extension_search_path");
    assert_eq!(s.sql("SELECT layout FROM extension_search_path.resolve('plpgsql')"), "system");
    s.sql("CREATE EXTENSION hstore");
    let log = s.log();
    let denied = format!("{}: could not read directory: Permission denied", unreadable.display());
    for named in [
        "\"relative/x\": relative path element ignored",
        "/does/not/exist: could not read directory",
        "\"\": empty path element ignored",
        denied.as_str(),
    ] {
        assert!(log.contains(named), "server log lacks {named:?}:\n{log}");
    }
}

#[test]
fn operator_set_core_paths_are_kept_and_merged() {
    // what CloudNativePG writes for an image: per-image elements in the core settings
    let op = fixtures().prefix("operator/isn");
    let s = Server::with_path(
        &path(&["$system", "cnpg"]),
        &[
            &format!("extension_control_path = '$system:{op}/share'"),
            &format!("dynamic_library_path = '$libdir:{op}/lib'"),
        ],
    );
    s.sql("CREATE EXTENSION isn; CREATE EXTENSION hstore;");
    assert_eq!(s.sql("SELECT isbn('978-0-393-04002-9')::text"), "0-393-04002-X");
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1");
    let control = without_generation(&s.sql("SHOW extension_control_path"));
    assert!(control.ends_with(&format!("/extension_search_path/server/share:$system:{op}/share")), "{control}");
    let libs = without_generation(&s.sql("SHOW dynamic_library_path"));
    assert!(libs.ends_with(&format!("/extension_search_path/server/lib:$libdir:{op}/lib")), "{libs}");
    // the operator changes its own value: still merged after the reload
    s.sql(&format!("ALTER SYSTEM SET extension_control_path = '{op}/share:$system'"));
    s.reload();
    let control = without_generation(&s.sql("SHOW extension_control_path"));
    assert!(control.ends_with(&format!("/extension_search_path/server/share:{op}/share:$system")), "{control}");
    s.sql("DROP EXTENSION isn; CREATE EXTENSION isn;");
}

#[test]
fn a_new_image_is_served_without_restart() {
    let dir = esp_e2e::tempdir();
    let prefix = dir.path().join("extensions");
    std::fs::create_dir(&prefix).unwrap();
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    assert!(s.sql_err("CREATE EXTENSION seg").contains("extension \"seg\" is not available"));
    mkimage("cnpg", "contrib:seg", &prefix.join("seg"));
    s.sql("CREATE EXTENSION seg");
    assert_eq!(s.sql("SELECT seg_lower('1 .. 2'::seg)"), "1");
    // an RFC directory added later: pg_available_extensions shows it after rescan()
    s.sql("CREATE EXTENSION extension_search_path");
    mkimage("rfc", "contrib:citext", &prefix.join("citext"));
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'citext'"), "0");
    assert_eq!(s.sql("SELECT extensions FROM extension_search_path.rescan()"), "2");
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'citext'"), "1");
}

#[test]
fn a_path_changed_by_reload_or_set_takes_effect_without_restart() {
    let s = Server::with_path("$system", &[]);
    let err = s.sql_err("CREATE EXTENSION cube");
    assert!(err.contains("extension \"cube\" is not available"), "{err}");
    // SET: this session only, C functions answer in it
    let rfc = path(&["rfc"]);
    assert_eq!(
        s.sql(&format!(
            "SET extension_search_path.path = '{rfc}'; CREATE EXTENSION cube; SELECT cube_dim('(1)'::cube)"
        )),
        "1"
    );
    s.sql("DROP EXTENSION cube");
    // reload: every new backend
    let both = path(&["$system", "rfc"]);
    s.sql(&format!("ALTER SYSTEM SET extension_search_path.path = '{both}'"));
    s.reload_until("extension_search_path.path", &both);
    s.sql("CREATE EXTENSION cube");
    assert_eq!(s.sql("SELECT cube_dim('(1,2)'::cube)"), "2");
}

#[test]
fn debian_binary_packages_in_both_layouts() {
    let s = Server::with_path(&path(&["$system", "cnpg", "rfc"]), &[]);
    s.sql("CREATE EXTENSION jsquery; CREATE EXTENSION pgfincore; CREATE EXTENSION extension_search_path;");
    assert_eq!(s.sql(r#"SELECT '{"a": 1}'::jsonb @@ 'a = 1'::jsquery"#), "t");
    assert_eq!(s.sql("SELECT count(*) > 0 FROM pgfincore('pg_class')"), "t");
    assert_eq!(
        s.sql("SELECT string_agg(name || ':' || layout, ',' ORDER BY name) FROM extension_search_path.extensions() WHERE name IN ('jsquery','pgfincore')"),
        "jsquery:cnpg,pgfincore:rfc"
    );
}

#[test]
fn loaded_without_preload_it_says_so() {
    let mut s = Server::new(&[]);
    s.start();
    let err = s.sql_err("CREATE EXTENSION extension_search_path");
    assert!(err.contains("extension_search_path must be loaded via shared_preload_libraries"), "{err}");
    assert!(err.contains("HINT:  Add extension_search_path to shared_preload_libraries"), "{err}");
}
