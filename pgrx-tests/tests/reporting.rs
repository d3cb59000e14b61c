//! End to end: the SQL reporting functions against real servers, read-only image mounts in a
//! mount namespace, every check() problem planted, a Debian package whose library this system
//! lacks, and plain roles refused.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use esp_e2e::{Server, cc, deb, fixtures, mkimage, pg_module_source, tempdir};

fn preloaded(path: &str) -> Server {
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '{path}'"),
    ]);
    s.start();
    s.sql("CREATE EXTENSION extension_search_path");
    s
}

#[test]
fn images_shows_read_only_mounts_and_plain_directories() {
    let dir = tempdir();
    let built = dir.path().join("built");
    mkimage("cnpg", "contrib:hstore", &built.join("hstore"));
    mkimage("rfc", "contrib:cube", &built.join("cube"));
    fs::write(built.join("cube/META.json"), r#"{"name": "cube", "version": "1.5.0", "abstract": "cubes"}"#).unwrap();
    let prefix = dir.path().join("extensions");
    mkimage("cnpg", "contrib:seg", &prefix.join("seg"));
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", prefix.display()),
    ]);
    s.start_with_read_only_mounts(&[
        (&built.join("hstore"), &prefix.join("hstore")),
        (&built.join("cube"), &prefix.join("cube")),
    ]);
    s.sql(
        "CREATE EXTENSION extension_search_path; CREATE EXTENSION hstore; CREATE EXTENSION cube; CREATE EXTENSION seg;",
    );
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1", "served from a read-only mount");
    let rows = s.sql(
        "SELECT name || ':' || layout || ':' || mount_point || ':' || read_only || ':' || array_to_string(extensions, ',') \
         FROM extension_search_path.images() ORDER BY name",
    );
    assert_eq!(rows, "cube:rfc:true:true:cube\nhstore:cnpg:true:true:hstore\nseg:cnpg:false:false:seg");
    assert_eq!(s.sql("SELECT metadata->>'version' FROM extension_search_path.images() WHERE name = 'cube'"), "1.5.0");
    assert_eq!(
        s.sql("SELECT count(*) FROM extension_search_path.images() WHERE size_bytes > 0 AND fs_type IS NOT NULL"),
        "3"
    );
    s.assert_no_crash();
}

/// A PostgreSQL 17 module: the magic block says 1700.
const PG17_MODULE: &str = "struct m { int len; int v, a, b, c, d; char x[32]; const char *n, *ver; };\n\
    static const struct m data = { sizeof(struct m), 1700, 100, 32, 64, 1, \"\", 0, 0 };\n\
    const struct m *Pg_magic_func(void) { return &data; }";

#[test]
fn check_finds_every_planted_problem() {
    let dir = tempdir();
    let p = dir.path().join("ext");
    let later = dir.path().join("later");
    // a real Debian package whose library (libh3.so.1) this system lacks
    mkimage("cnpg", &deb("postgresql-18-h3"), &p.join("h3"));
    // update-path gap: hstore without its 1.2--1.3 script (1.1 and 1.2 can no longer reach 1.8)
    mkimage("cnpg", "contrib:hstore", &p.join("hstore"));
    fs::remove_file(p.join("hstore/share/extension/hstore--1.2--1.3.sql")).unwrap();
    // a control file that does not parse, and one whose scripts are missing
    fs::create_dir_all(p.join("broken")).unwrap();
    fs::write(p.join("broken/broken.control"), "default_version = '1.0\n").unwrap();
    fs::create_dir_all(p.join("lost/share/extension")).unwrap();
    fs::write(p.join("lost/share/extension/lost.control"), "default_version = '1.0'\ndirectory = 'gone'\n").unwrap();
    // world-writable script
    mkimage("rfc", "contrib:citext", &p.join("citext"));
    fs::set_permissions(p.join("citext/sql/citext--1.4.sql"), fs::Permissions::from_mode(0o666)).unwrap();
    // another major version, another architecture
    cc(&p.join("old/lib/old.so"), PG17_MODULE, &[]);
    cc(&p.join("arm/lib/arm.so"), &pg_module_source("arm_value", "", "1"), &[]);
    let mut elf = fs::read(p.join("arm/lib/arm.so")).unwrap();
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    fs::write(p.join("arm/lib/arm.so"), elf).unwrap();
    // the same library in two images; a shadowed extension
    mkimage("cnpg", "contrib:seg", &p.join("seg"));
    mkimage("cnpg", "contrib:seg", &later.join("seg"));
    esp_e2e::run_chmod_readable(dir.path());
    fs::set_permissions(p.join("citext/sql/citext--1.4.sql"), fs::Permissions::from_mode(0o666)).unwrap();

    let s = preloaded(&format!("$system:{}:relative/x:/does/not/exist:{}", p.display(), later.display()));
    let found = s.sql("SELECT severity || ': ' || message FROM extension_search_path.check()");
    let image = |name: &str| p.join(name).display().to_string();
    for needle in [
        format!("error: library \"{}/lib/h3.so\" requires \"libh3.so.1\", which was not found", image("h3")),
        "warning: no update path to 1.8 from version(s) 1.1, 1.2".to_string(),
        format!("error: \"{}/broken.control\": control file cannot be used: syntax error in line 1", image("broken")),
        format!(
            "error: \"{0}/share/extension/lost.control\": script directory \"{0}/share/gone\" does not exist",
            image("lost")
        ),
        format!(
            "error: \"{0}/citext.control\": not trusted, left out: \"{0}/sql/citext--1.4.sql\" is writable by group or others",
            image("citext")
        ),
        format!("error: module \"{}/lib/old.so\" is built for PostgreSQL 17, this server is 18", image("old")),
        format!("error: library \"{}/lib/arm.so\" is built for aarch64, not x86_64", image("arm")),
        format!("warning: library \"seg.so\" is provided by 2 images ({}, {}/seg)", image("seg"), later.display()),
        format!("notice: seg here is shadowed by \"{}\" (cnpg)", image("seg")),
        "warning: \"relative/x\": relative path element ignored".to_string(),
        "warning: /does/not/exist: could not read directory".to_string(),
    ] {
        assert!(found.contains(&needle), "check() lacks {needle:?}:\n{found}");
    }
    assert_eq!(s.sql("SELECT count(*) FROM extension_search_path.check() WHERE hint = ''"), "0");
    // the same library, as libraries() sees it
    assert_eq!(
        s.sql("SELECT kind || ' ' || array_to_string(missing, ',') || ' ' || array_to_string(resolved, ',') FROM extension_search_path.libraries() WHERE file LIKE '%/h3.so'"),
        "module libh3.so.1 not found,already loaded"
    );
    // and what a DBA does about it: the extension is still listed, CREATE fails clearly
    let err = s.sql_err("CREATE EXTENSION h3");
    assert!(err.contains("required library \"libh3.so.1\" was not found"), "{err}");
    s.assert_no_crash();
}

#[test]
fn resolve_reports_modules_versions_and_shadowed_copies() {
    let f = fixtures();
    let s = preloaded(&format!("{}:$system:{}", f.prefix("early"), f.prefix("cnpg")));
    let row = s.sql(
        "SELECT layout || '|' || array_to_string(modules, ',') || '|' || array_to_string(versions, ',') || '|' || array_to_string(shadows, ',') \
         FROM extension_search_path.resolve('hstore') WHERE winner",
    );
    let early = format!("{}/hstore", f.prefix("early"));
    assert_eq!(row, format!("rfc|{early}/lib/hstore.so|1.4,1.5,1.6,1.7,1.8|{}/hstore", f.prefix("cnpg")));
    let settings = s.sql("SELECT string_agg(setting || '#' || position || '#' || origin, ';' ORDER BY setting, position) FROM extension_search_path.settings() WHERE setting <> 'extension_search_path.path'");
    assert_eq!(
        settings,
        "dynamic_library_path#1#extension_search_path catalog;dynamic_library_path#2#PostgreSQL ($libdir);\
         extension_control_path#1#extension_search_path catalog;extension_control_path#2#PostgreSQL ($system)"
    );
}

#[test]
fn operator_elements_show_their_source_in_settings() {
    let op = fixtures().prefix("operator/isn");
    let s = Server::with_path("$system", &[&format!("extension_control_path = '$system:{op}/share'")]);
    s.sql("CREATE EXTENSION extension_search_path");
    assert_eq!(
        s.sql(&format!(
            "SELECT origin || ' ' || exists FROM extension_search_path.settings() WHERE element = '{op}/share'"
        )),
        "operator (configuration file) true"
    );
}

#[test]
fn plain_roles_are_refused_and_readers_are_not() {
    let s = preloaded("$system");
    s.sql("CREATE ROLE plain LOGIN; CREATE ROLE reader LOGIN IN ROLE pg_read_server_files;");
    for f in ["extensions()", "resolve('plpgsql')", "images()", "libraries()", "settings()", "check()", "rescan()"] {
        let err = s.sql_err(&format!("SET ROLE plain; SELECT * FROM extension_search_path.{f}"));
        assert!(err.contains("permission denied"), "{f}: {err}");
    }
    for f in ["extensions()", "resolve('plpgsql')", "images()", "libraries()", "settings()", "check()"] {
        s.sql(&format!("SET ROLE reader; SELECT * FROM extension_search_path.{f}"));
    }
    let err = s.sql_err("SET ROLE reader; SELECT * FROM extension_search_path.rescan()");
    assert!(err.contains("permission denied for function rescan"), "{err}");
}
