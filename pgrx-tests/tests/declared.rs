//! End to end: images that describe themselves. Multi-extension images (one subdirectory per
//! extension), images named only by the operator's own core settings (CloudNativePG's custom
//! per-image lists), and modules an image's `META.json` declares for preloading — loaded with
//! `extension_search_path.preload_declared = on` after one restart, reported otherwise.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, mkimage, tempdir};

/// A PGXN Meta Spec v2 `META.json` declaring `modules` (name, type, preload).
fn meta_json(name: &str, modules: &[(&str, &str, &str)], postgres: &str) -> String {
    let modules: Vec<String> = modules
        .iter()
        .map(|(m, kind, preload)| format!(r#""{m}": {{"type": "{kind}", "lib": "{m}", "preload": "{preload}"}}"#))
        .collect();
    format!(
        r#"{{"name": "{name}", "abstract": "{name} as an image", "version": "1.0.0",
  "maintainers": [{{"name": "Ann Example", "email": "ann@example.org"}}], "license": "PostgreSQL",
  "contents": {{"modules": {{{}}}}}, "dependencies": {{"postgres": {{"version": "{postgres}"}}}},
  "meta-spec": {{"version": "2.0.0"}}}}"#,
        modules.join(", ")
    )
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    esp_e2e::run_chmod_readable(path.parent().unwrap());
}

#[test]
fn a_multi_extension_image_is_served_like_separate_images() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    // one image, one subdirectory per extension, each in either layout
    mkimage("cnpg", "contrib:earthdistance", &prefix.join("geo/earthdistance"));
    mkimage("rfc", "contrib:cube", &prefix.join("geo/cube"));
    mkimage("cnpg", "contrib:seg", &prefix.join("geo/seg"));
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
    ]);
    s.start();
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION earthdistance CASCADE; CREATE EXTENSION seg");
    // a fresh backend: the C functions of both nested images answer
    assert_eq!(s.sql("SELECT earth_distance(ll_to_earth(0, 0), ll_to_earth(0, 1))::int"), "111320");
    assert_eq!(s.sql("SELECT seg_lower('1 .. 2'::seg)"), "1");
    assert_eq!(
        s.sql(
            "SELECT string_agg(name || ':' || source || ':' || layout || ':' || array_to_string(extensions, ','), ' ' \
             ORDER BY path) FROM extension_search_path.images()"
        ),
        "geo:prefix:other: cube:nested:rfc:cube earthdistance:nested:cnpg:earthdistance seg:nested:cnpg:seg"
    );
    assert_eq!(
        s.sql("SELECT prefix FROM extension_search_path.extensions() WHERE name = 'earthdistance'"),
        prefix.display().to_string()
    );
    assert_eq!(s.sql("SELECT count(*) FROM extension_search_path.check() WHERE severity = 'error'"), "0");
    s.assert_no_crash();
}

#[test]
fn images_named_by_the_operator_s_core_settings_are_reported_and_their_libraries_prepared() {
    let dir = tempdir();
    // CloudNativePG's custom per-image lists: a multi-extension image whose elements the
    // operator wrote, in no prefix of ours
    let mounted = dir.path().join("mnt");
    mkimage("cnpg", "contrib:seg", &mounted.join("bundle/seg"));
    mkimage("cnpg", "contrib:cube", &mounted.join("bundle/cube"));
    let m = mounted.display();
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        "extension_search_path.path = '$system'",
        &format!("extension_control_path = '$system:{m}/bundle/seg/share:{m}/bundle/cube/share'"),
        &format!("dynamic_library_path = '$libdir:{m}/bundle/seg/lib:{m}/bundle/cube/lib'"),
    ]);
    s.start();
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION seg; CREATE EXTENSION cube");
    assert_eq!(s.sql("SELECT seg_lower('1 .. 2'::seg)"), "1");
    assert_eq!(
        s.sql(
            "SELECT string_agg(name || ':' || layout || ':' || winner || ':' || prefix, ' ' ORDER BY name) \
             FROM extension_search_path.extensions() WHERE layout <> 'system'"
        ),
        format!("cube:cnpg:true:{m}/bundle/cube seg:cnpg:true:{m}/bundle/seg")
    );
    assert_eq!(
        s.sql("SELECT string_agg(name || ':' || source, ' ' ORDER BY name) FROM extension_search_path.images()"),
        "cube:setting seg:setting"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM extension_search_path.libraries() WHERE file LIKE '%/bundle/seg/lib/seg.so'"),
        "1"
    );
    // served by PostgreSQL through the operator's elements, never copied into our catalog
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extensions WHERE name IN ('seg', 'cube')"), "2");
    s.assert_no_crash();
}

fn stats_image(prefix: &Path) {
    // pg_stat_statements needs shared memory: only shared_preload_libraries (or a declared
    // server preload) can load it; auto_explain is a per-session module
    mkimage("cnpg", "contrib:pg_stat_statements", &prefix.join("stats"));
    let auto_explain = prefix.join("explain");
    mkimage("cnpg", "contrib:auto_explain", &auto_explain);
    write(
        &prefix.join("stats/META.json"),
        &meta_json("stats", &[("pg_stat_statements", "extension", "server")], ">= 13"),
    );
    write(&auto_explain.join("META.json"), &meta_json("explain", &[("auto_explain", "hook", "session")], "0"));
}

#[test]
fn declared_preloads_load_after_one_restart_with_nothing_else_changed() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    fs::create_dir_all(&prefix).unwrap();
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
    ]);
    s.start();
    s.sql("CREATE EXTENSION extension_search_path");
    // the images are mounted; the setting is off (the default): nothing is loaded, check() says
    // what would be
    stats_image(&prefix);
    s.restart();
    assert!(s.try_sql("CREATE EXTENSION pg_stat_statements; SELECT count(*) FROM pg_stat_statements").is_err());
    assert_eq!(
        s.sql(
            "SELECT string_agg(module || ':' || preload || ':' || loaded || ':' || reason, ' ' ORDER BY module) \
             FROM extension_search_path.declared_preloads()"
        ),
        "auto_explain:session:false:extension_search_path.preload_declared is off \
         pg_stat_statements:server:false:extension_search_path.preload_declared is off"
    );
    assert_eq!(
        s.sql(
            "SELECT count(*) FROM extension_search_path.check() WHERE severity = 'notice' \
             AND message LIKE 'module \"pg_stat_statements\" is declared for preloading (server)%would be loaded from%'"
        ),
        "1"
    );
    assert_eq!(s.sql("SELECT current_setting('auto_explain.log_min_duration', true) IS NULL"), "t");

    // one restart with the setting on: loaded, the views answer
    s.append_conf("extension_search_path.preload_declared = on");
    s.restart();
    s.sql("DROP EXTENSION IF EXISTS pg_stat_statements; CREATE EXTENSION pg_stat_statements");
    s.sql("SELECT 42 AS answer");
    assert_eq!(s.sql("SELECT count(*) > 0 FROM pg_stat_statements WHERE query LIKE 'SELECT $1 AS answer'"), "t");
    // every session has the session module, from its first statement
    assert_eq!(s.sql("SHOW auto_explain.log_min_duration"), "-1");
    assert_eq!(
        s.sql(
            "SELECT string_agg(module || ':' || loaded || ':' || coalesce(reason, '-'), ' ' ORDER BY module) \
             FROM extension_search_path.declared_preloads()"
        ),
        "auto_explain:true:- pg_stat_statements:true:-"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM extension_search_path.check() WHERE message LIKE '%declared for preloading%'"),
        "0"
    );
    assert_eq!(s.sql("SELECT count(*) FROM extension_search_path.images() WHERE declared_preload <> '{}'"), "2");
    s.assert_no_crash();
}

#[test]
fn a_declared_module_also_listed_is_loaded_once_and_a_broken_one_never_keeps_the_server_down() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    fs::create_dir_all(&prefix).unwrap();
    stats_image(&prefix);
    // an image whose declared module is no shared object, and one for another PostgreSQL
    let broken = prefix.join("broken");
    fs::create_dir_all(broken.join("lib")).unwrap();
    write(&broken.join("lib/broken.so"), "not a shared object");
    write(&broken.join("META.json"), &meta_json("broken", &[("broken", "hook", "server")], "0"));
    let old = prefix.join("old");
    fs::create_dir_all(old.join("lib")).unwrap();
    write(&old.join("lib/old.so"), "never read");
    write(&old.join("META.json"), &meta_json("old", &[("old", "hook", "server")], "< 17"));
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path, pg_stat_statements'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
        "extension_search_path.preload_declared = on",
        "log_error_verbosity = verbose",
    ]);
    s.start();
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION pg_stat_statements");
    assert_eq!(s.sql("SELECT count(*) >= 0 FROM pg_stat_statements"), "t");
    let rows = s.sql(
        "SELECT string_agg(module || ':' || loaded || ':' || coalesce(reason, '-'), E'\\n' ORDER BY module) \
         FROM extension_search_path.declared_preloads()",
    );
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "auto_explain:true:-", "{rows}");
    assert!(lines[1].starts_with("broken:false:loading it failed: "), "{rows}");
    assert!(
        lines[2].starts_with("old:false:the image is not for this server: it declares PostgreSQL \"< 17\""),
        "{rows}"
    );
    assert_eq!(lines[3], "pg_stat_statements:false:listed in shared_preload_libraries: PostgreSQL loads it", "{rows}");
    assert!(
        s.log().contains("WARNING:  55000: module \"broken\" declared for preloading (server) by image"),
        "{}",
        s.log()
    );
    let findings = s.sql("SELECT severity || ': ' || message FROM extension_search_path.check() ORDER BY 1");
    assert!(findings.contains("warning: module \"broken\" is declared for preloading (server) by the image's META.json, but is not loaded: loading it failed"), "{findings}");
    assert!(
        findings
            .contains("error: the image is not for this server: it declares PostgreSQL \"< 17\"; this server is 18."),
        "{findings}"
    );
    // pg_stat_statements is mapped once
    let pid = fs::read_to_string(s.data.join("postmaster.pid")).unwrap().lines().next().unwrap().to_string();
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let files: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter(|l| l.contains("pg_stat_statements.so"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    s.assert_no_crash();
}
