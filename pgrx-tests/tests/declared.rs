//! End to end: images that describe themselves. Multi-extension images (one subdirectory per
//! extension), images named only by the operator's own core settings (CloudNativePG's custom
//! per-image lists), and modules an image's `META.json` declares for preloading — loaded with
//! `extension_search_path.preload_declared = on` after one restart, reported otherwise.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, cc, mkimage, pg_module_source, tempdir};

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
    // one the dynamic loader refuses (an undefined symbol): PostgreSQL's ERROR comes before any
    // of its code runs
    let unresolved = prefix.join("unresolved");
    cc(
        &unresolved.join("lib/unresolved.so"),
        &pg_module_source("unresolved_value", "int esp_nowhere(void);", "esp_nowhere()"),
        &[],
    );
    write(&unresolved.join("META.json"), &meta_json("unresolved", &[("unresolved", "hook", "server")], "0"));
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
    assert!(
        lines[1].starts_with("broken:false:it cannot be loaded: ") && lines[1].contains("not a valid ELF"),
        "{rows}"
    );
    assert!(
        lines[2].starts_with("old:false:the image is not for this server: it declares PostgreSQL \"< 17\""),
        "{rows}"
    );
    assert_eq!(lines[3], "pg_stat_statements:true:listed in shared_preload_libraries: PostgreSQL loads it", "{rows}");
    assert!(
        lines[4].starts_with("unresolved:false:loading it failed: could not load library")
            && lines[4].contains("esp_nowhere"),
        "{rows}"
    );
    assert!(
        s.log().contains("WARNING:  55000: module \"broken\" declared for preloading (server) by image"),
        "{}",
        s.log()
    );
    let findings = s.sql("SELECT severity || ': ' || message FROM extension_search_path.check() ORDER BY 1");
    assert!(findings.contains("warning: module \"unresolved\" is declared for preloading (server) by the image's META.json, but is not loaded: loading it failed: could not load library"), "{findings}");
    assert!(findings.contains("warning: module \"broken\" is declared for preloading (server) by the image's META.json, but is not loaded: it cannot be loaded"), "{findings}");
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

/// An image holding one module built from C `source` (with `needs` bundled in its `lib/`),
/// declaring it for preloading (`preload`) in its `META.json`.
fn c_image(prefix: &Path, name: &str, source: &str, preload: &str) {
    let image = prefix.join(name);
    cc(&image.join(format!("lib/{name}.so")), source, &[]);
    write(&image.join("META.json"), &meta_json(name, &[(name, "hook", preload)], "0"));
}

/// A module whose `_PG_init` installs a post_parse_analyze_hook logging every statement it
/// sees, then (when `fail`) raises an ERROR with a detail and a hint.
fn hook_module(name: &str, fail: bool) -> String {
    let fail = if fail {
        format!(
            "ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR), errmsg(\"{name} refuses\"), errdetail(\"a detail\"), errhint(\"a hint\")));"
        )
    } else {
        String::new()
    };
    format!(
        "#include \"postgres.h\"\n#include \"fmgr.h\"\n#include \"parser/analyze.h\"\nPG_MODULE_MAGIC;\n\
         static post_parse_analyze_hook_type prev = NULL;\n\
         static void hook(ParseState *p, Query *q, JumbleState *j) {{ elog(LOG, \"{name} saw: %s\", p->p_sourcetext); if (prev) prev(p, q, j); }}\n\
         void _PG_init(void) {{ prev = post_parse_analyze_hook; post_parse_analyze_hook = hook; {fail} }}\n"
    )
}

fn preloading(prefix: &Path) -> Server {
    Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
        "extension_search_path.preload_declared = on",
    ])
}

#[test]
fn a_server_module_failing_in_its_own_initialisation_stops_the_start_as_a_preload_list_entry_would() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    c_image(&prefix, "halfinit", &hook_module("halfinit", true), "server");
    let mut s = preloading(&prefix);
    let failed = s.try_start();
    assert!(failed.is_err(), "a module left half initialised must not be served");
    let log = s.log();
    assert!(
        log.contains("FATAL:  module \"halfinit\" declared for preloading (server) by image")
            && log.contains("failed in its initialisation: halfinit refuses"),
        "{log}"
    );
}

#[test]
fn a_session_module_sees_the_first_statement_and_its_error_reaches_the_client_untouched() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    c_image(&prefix, "ppalog", &hook_module("ppalog", false), "session");
    let mut s = preloading(&prefix);
    s.start();
    s.sql("SELECT 'first statement'");
    assert!(s.log().contains("ppalog saw: SELECT 'first statement'"), "{}", s.log());
    s.sql("CREATE EXTENSION extension_search_path");
    s.stop();

    // a session module whose _PG_init raises an ERROR: the first statement gets it exactly as
    // PostgreSQL raised it (SQLSTATE, detail, hint); the session goes on
    c_image(&prefix, "sessfail", &hook_module("sessfail", true), "session");
    s.start();
    let out = s.psql_script(
        "\\set VERBOSITY verbose\nSELECT 1 AS first;\nSELECT 2 AS second;\n\\pset format unaligned\n\
         SELECT module || ':' || loaded || ':' || coalesce(reason, '-') FROM extension_search_path.declared_preloads() ORDER BY 1;\n",
    );
    assert!(out.contains("ERROR:  F0000: sessfail refuses\nDETAIL:  a detail\nHINT:  a hint\n"), "{out}");
    assert!(out.contains("second \n--------\n      2"), "{out}");
    // what the session has: ppalog (loaded first), not sessfail
    assert!(
        out.contains("ppalog:true:-\nsessfail:false:loading it failed: its load raised an ERROR in this session"),
        "{out}"
    );
    s.assert_no_crash();
}

#[test]
fn a_session_module_s_bundled_libraries_serve_parallel_workers_too() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    let image = prefix.join("sdep");
    let dep = image.join("lib/libesp_sdep.so.1");
    cc(&dep, "int esp_sdep(void) { return 7; }", &[]);
    let module = pg_module_source("sdep_value", "int esp_sdep(void);", "esp_sdep()");
    cc(&image.join("lib/sdep.so"), &module, &[&dep]);
    write(&image.join("META.json"), &meta_json("sdep", &[("sdep", "hook", "session")], "0"));
    let mut s = preloading(&prefix);
    s.start();
    // every parallel worker loads what its leader loaded, where nothing of ours runs
    let out = s.psql_script("SET debug_parallel_query = on;\nSELECT count(*) > 0 AS answered FROM pg_class;\n");
    assert!(!out.contains("ERROR"), "{out}");
    assert!(out.contains(" t\n"), "{out}");
    s.sql("CREATE EXTENSION extension_search_path");
    assert_eq!(
        s.sql("SELECT loaded FROM extension_search_path.declared_preloads() WHERE module = 'sdep'"),
        "t",
        "loaded before the session's first statement"
    );
    s.assert_no_crash();
}

#[test]
fn an_operator_s_untrusted_image_is_loaded_as_postgres_would_but_never_preloaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let mounted = dir.path().join("mnt");
    let image = mounted.join("hello");
    cc(&image.join("lib/hello.so"), &pg_module_source("hello", "", "42"), &[]);
    write(&image.join("META.json"), &meta_json("hello", &[("hello", "hook", "server")], "0"));
    fs::set_permissions(image.join("lib"), fs::Permissions::from_mode(0o777)).unwrap();
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        "extension_search_path.path = '$system'",
        "extension_search_path.preload_declared = on",
        &format!("dynamic_library_path = '$libdir:{}/lib'", image.display()),
    ]);
    s.start();
    // what PostgreSQL would load without us, it loads with us (we only help, never refuse)
    s.sql("CREATE FUNCTION hello() RETURNS int AS 'hello' LANGUAGE C");
    assert_eq!(s.sql("SELECT hello()"), "42");
    // but its declaration is not acted on: the image is writable by others
    s.sql("CREATE EXTENSION extension_search_path");
    let row = s.sql("SELECT loaded || ':' || reason FROM extension_search_path.declared_preloads()");
    assert!(row.starts_with("false:not trusted: ") && row.contains("writable by group or others"), "{row}");
    assert!(!s.log().contains("hello.so"), "{}", s.log());
    s.assert_no_crash();
}

#[test]
fn a_hook_preloaded_after_us_sees_a_session_s_first_statement_once() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    // ppalog, listed in shared_preload_libraries after us, wraps our post_parse_analyze_hook;
    // quiet, a declared session module with no hook of its own
    cc(&prefix.join("ppalog/lib/ppalog.so"), &hook_module("ppalog", false), &[]);
    esp_e2e::run_chmod_readable(&prefix);
    c_image(&prefix, "quiet", &pg_module_source("quiet_value", "", "1"), "session");
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path, ppalog'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
        "extension_search_path.preload_declared = on",
    ]);
    s.start();
    s.sql("SELECT 'the first statement'");
    assert_eq!(s.log().matches("ppalog saw: SELECT 'the first statement'").count(), 1, "{}", s.log());
    s.assert_no_crash();
}
