//! images(), libraries() and check() material, on trees with every problem planted.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use esp_resolver::dependencies::{LibraryContext, system_library_dirs};
use esp_resolver::meta::{Decision, Declarations, Preload, ThisServer, declared_preloads, metas};
use esp_resolver::mounts::Mount;
use esp_resolver::report::{Severity, check, image_reports, library_reports};
use esp_resolver::safe_fs::TrustPolicy;
use esp_resolver::{Index, SearchPath, SystemDirs};

struct T(tempfile::TempDir);

impl T {
    fn p(&self, rel: &str) -> PathBuf {
        self.0.path().join(rel)
    }
    fn file(&self, rel: &str, text: &str) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    fn cc(&self, rel: &str, source: &str, needs: &[&Path]) {
        let out = self.p(rel);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let src = out.with_extension("c");
        fs::write(&src, source).unwrap();
        let soname = out.file_name().unwrap().to_str().unwrap().to_string();
        let mut cmd = Command::new("cc");
        cmd.args(["-shared", "-fPIC", "-o"]).arg(&out).arg(&src).arg(format!("-Wl,-soname,{soname}"));
        cmd.args(needs);
        assert!(cmd.status().unwrap().success());
        fs::remove_file(src).unwrap();
    }
    fn index(&self, path: &str) -> Index {
        let system = SystemDirs { extension_dir: self.p("none/extension"), lib_dir: self.p("none/lib") };
        Index::build(&SearchPath::parse(&path.replace('@', self.0.path().to_str().unwrap())), &system)
    }
}

fn tree() -> T {
    let t = T(tempfile::tempdir().unwrap());
    // a good RFC extension with metadata
    t.file("ext/good/good.control", "default_version = '1.1'\n");
    t.file("ext/good/sql/good--1.0.sql", "");
    t.file("ext/good/sql/good--1.0--1.1.sql", "");
    t.file("ext/good/META.json", r#"{"name": "good", "version": "1.1.0"}"#);
    // a control file that does not parse
    t.file("ext/broken/broken.control", "default_version = '1.0\n");
    // scripts nowhere
    t.file("ext/lost/share/extension/lost.control", "default_version = '1.0'\ndirectory = 'gone'\n");
    // an update-path gap: 0.9 cannot reach 1.1
    t.file("ext/gappy/share/extension/gappy.control", "default_version = '1.1'\n");
    t.file("ext/gappy/share/extension/gappy--0.9.sql", "");
    t.file("ext/gappy/share/extension/gappy--1.0.sql", "");
    t.file("ext/gappy/share/extension/gappy--1.0--1.1.sql", "");
    // default version not installable
    t.file("ext/nodefault/nodefault.control", "default_version = '2.0'\n");
    t.file("ext/nodefault/sql/nodefault--1.0.sql", "");
    // a shadowed copy in a later prefix, with bad metadata
    t.file("later/good/good.control", "default_version = '1.0'\n");
    t.file("later/good/sql/good--1.0.sql", "");
    t.file("later/good/trunk.json", "{ not json");
    // group/world-writable
    t.file("ext/loose/loose.control", "default_version = '1.0'\n");
    t.file("ext/loose/sql/loose--1.0.sql", "");
    fs::set_permissions(t.p("ext/loose/sql/loose--1.0.sql"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(t.p("ext/loose/sql"), fs::Permissions::from_mode(0o777)).unwrap();
    // libraries: a missing soname, another PostgreSQL major, another architecture, a collision
    t.cc("build/libgone.so.1", "int gone(void) { return 1; }", &[]);
    t.cc("ext/needy/lib/needy.so", "int gone(void); int needy(void) { return gone(); }", &[&t.p("build/libgone.so.1")]);
    fs::remove_dir_all(t.p("build")).unwrap();
    t.cc(
        "ext/old/lib/old.so",
        "struct m { int len; int v, a, b, c, d; char x[32]; const char *n, *ver; };\n\
         static const struct m data = { sizeof(struct m), 1700, 100, 32, 64, 1, \"\", 0, 0 };\n\
         const struct m *Pg_magic_func(void) { return &data; }",
        &[],
    );
    t.cc("ext/arm/lib/arm.so", "int arm(void) { return 1; }", &[]);
    let mut bytes = fs::read(t.p("ext/arm/lib/arm.so")).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = AArch64
    fs::write(t.p("ext/arm/lib/arm.so"), bytes).unwrap();
    t.cc("ext/a1/lib/dup.so", "int dup1(void) { return 1; }", &[]);
    t.cc("later/a2/lib/dup.so", "int dup2(void) { return 2; }", &[]);
    // control files PostgreSQL refuses: a capitalised name, an unquoted $libdir
    t.file("ext/capital/capital.control", "Default_Version = '1.0'\n");
    t.file("ext/capital/sql/capital--1.0.sql", "");
    t.file("ext/unquoted/unquoted.control", "default_version = '1.0'\nmodule_pathname = $libdir/baz\n");
    t.file("ext/unquoted/sql/unquoted--1.0.sql", "");
    // absolute directories: missing, and world-writable
    t.file(
        "ext/absmissing/absmissing.control",
        &format!("default_version = '1.0'\ndirectory = '{}'\n", t.p("nowhere").display()),
    );
    t.file(
        "ext/absloose/absloose.control",
        &format!("default_version = '1.0'\ndirectory = '{}'\n", t.p("outside/loose").display()),
    );
    t.file("outside/loose/absloose--1.0.sql", "");
    fs::set_permissions(t.p("outside/loose"), fs::Permissions::from_mode(0o777)).unwrap();
    // a group-writable prefix
    t.file("gw/shared/shared.control", "default_version = '1.0'\n");
    t.file("gw/shared/sql/shared--1.0.sql", "");
    t.cc("gw/shared/lib/shared.so", "int shared(void) { return 1; }", &[]);
    fs::set_permissions(t.p("gw"), fs::Permissions::from_mode(0o775)).unwrap();
    // untrusted and also refused by PostgreSQL: with trust not enforced, still left out
    t.file("ext/loosebad/loosebad.control", "default_version = '1.0'\ncolour = 'blue'\n");
    t.file("ext/loosebad/sql/loosebad--1.0.sql", "");
    fs::set_permissions(t.p("ext/loosebad/loosebad.control"), fs::Permissions::from_mode(0o666)).unwrap();
    // a control file owned by another user
    t.file("ext/foreign/foreign.control", "default_version = '1.0'\n");
    t.file("ext/foreign/sql/foreign--1.0.sql", "");
    let c = std::ffi::CString::new(t.p("ext/foreign/foreign.control").to_str().unwrap()).unwrap();
    // SAFETY: a plain libc call with a valid path; it fails harmlessly when not root.
    unsafe { libc::chown(c.as_ptr(), 12345, 12345) };
    // text search files, which PostgreSQL reads only from its own share/tsearch_data
    t.file("ext/dict/share/extension/dict.control", "default_version = '1.0'\n");
    t.file("ext/dict/share/extension/dict--1.0.sql", "");
    t.file("ext/dict/share/tsearch_data/dict.rules", "a b\n");
    t.file("ext/dict/share/tsearch_data/dict.syn", "c d\n");
    t.file("ext/rfcdict/rfcdict.control", "default_version = '1.0'\n");
    t.file("ext/rfcdict/sql/rfcdict--1.0.sql", "");
    t.file("ext/rfcdict/tsearch_data/rfcdict.ths", "e : f\n");
    fs::create_dir_all(t.p("ext/good/tsearch_data")).unwrap(); // empty: nothing to report
    t
}

fn ctx(index: &Index) -> LibraryContext {
    LibraryContext {
        image_dirs: index.image_library_dirs(),
        system_dirs: system_library_dirs(),
        loaded: Default::default(),
    }
}

#[test]
fn check_finds_every_planted_problem() {
    let t = tree();
    let index = t.index("@/ext:relative:@/missing:@/later:@/gw");
    let libs = library_reports(&index, &ctx(&index));
    let findings = check(&index, &libs, &Declarations::none(180006), &TrustPolicy::for_this_process(true));
    let text: Vec<String> = findings.iter().map(|f| format!("{}: {}", f.severity.as_str(), f.message)).collect();
    let expect =
        |needle: &str| assert!(text.iter().any(|t| t.contains(needle)), "no finding with {needle:?} in {text:#?}");
    expect("warning: \"relative\": relative path element ignored");
    expect(&format!("warning: {}: could not read directory", t.p("missing").display()));
    expect(&format!(
        "error: \"{}\": control file cannot be used: syntax error in line 1",
        t.p("ext/broken/broken.control").display()
    ));
    expect(&format!("script directory \"{}\" does not exist", t.p("ext/lost/share/gone").display()));
    expect("warning: no update path to 1.1 from version(s) 0.9");
    expect("error: default version 2.0 of nodefault cannot be installed");
    expect(&format!("notice: good here is shadowed by \"{}\" (rfc)", t.p("ext/good").display()));
    expect(&format!(
        "error: \"{}\": not trusted, left out: \"{}\" is writable by group or others",
        t.p("ext/loose/loose.control").display(),
        t.p("ext/loose/sql").display()
    ));
    // control files PostgreSQL would refuse
    expect("\"Default_Version\"");
    expect(&format!(
        "error: \"{}\": control file cannot be used: syntax error",
        t.p("ext/unquoted/unquoted.control").display()
    ));
    // an absolute directory is held to the same rules
    expect(&format!("script directory \"{}\" does not exist", t.p("nowhere").display()));
    expect(&format!(
        "error: \"{}\": not trusted, left out: \"{}\" is writable by group or others",
        t.p("ext/absloose/absloose.control").display(),
        t.p("outside/loose").display()
    ));
    // a group that can write a prefix can replace everything in it
    expect(&format!(
        "error: \"{}\": not trusted, left out: \"{}\" is writable by group or others",
        t.p("gw/shared/shared.control").display(),
        t.p("gw").display()
    ));
    expect(&format!(
        "library \"{}\": not trusted, left out: \"{}\"",
        t.p("gw/shared/lib/shared.so").display(),
        t.p("gw").display()
    ));
    // a control file owned by another user
    if unsafe { libc::geteuid() } == 0 {
        expect(&format!(
            "error: \"{0}\": not trusted, left out: \"{0}\" is owned by uid 12345, neither root nor the server's user",
            t.p("ext/foreign/foreign.control").display()
        ));
    }
    expect("requires \"libgone.so.1\", which was not found");
    expect(&format!(
        "error: module \"{}\" is built for PostgreSQL 17, this server is 18",
        t.p("ext/old/lib/old.so").display()
    ));
    expect(&format!("error: library \"{}\" is built for aarch64", t.p("ext/arm/lib/arm.so").display()));
    expect(&format!(
        "warning: library \"dup.so\" is provided by 2 images ({}, {}); \"{}\" is used",
        t.p("ext/a1").display(),
        t.p("later/a2").display(),
        t.p("ext/a1/lib/dup.so").display()
    ));
    expect(&format!(
        "warning: text search files in \"{}\" cannot be used (dict.rules, dict.syn): PostgreSQL reads dictionary, \
         synonym and thesaurus files only from its own share/tsearch_data",
        t.p("ext/dict/share/tsearch_data").display()
    ));
    expect(&format!(
        "warning: text search files in \"{}\" cannot be used (rfcdict.ths)",
        t.p("ext/rfcdict/tsearch_data").display()
    ));
    assert!(!text.iter().any(|t| t.contains("ext/good/tsearch_data")), "{text:#?}");
    // with trusted_files_only off, untrusted files are served: warnings, with another hint
    let relaxed = check(&index, &libs, &Declarations::none(180006), &TrustPolicy::for_this_process(false));
    let loose = relaxed.iter().find(|f| f.message.contains("ext/loose/sql\" is writable")).unwrap();
    assert_eq!(loose.severity, Severity::Warning);
    assert!(loose.hint.contains("trusted_files_only is off"), "{}", loose.hint);
    // ... and what the catalog leaves out anyway is said as such: trust a warning, the control
    // file an error (check() judges a copy by the catalog's own decision, trust on or off)
    let loosebad: Vec<_> = relaxed.iter().filter(|f| f.extension.as_deref() == Some("loosebad")).collect();
    let said: Vec<_> = loosebad.iter().map(|f| (f.severity, f.message.contains("unrecognized parameter"))).collect();
    assert_eq!(said, [(Severity::Error, true), (Severity::Warning, false)], "{loosebad:#?}");
    assert!(findings.windows(2).all(|w| w[0].severity <= w[1].severity), "most severe first");
    assert!(findings.iter().all(|f| !f.hint.is_empty()));
    // the good extension has no finding of its own
    assert!(!findings.iter().any(|f| f.extension.as_deref() == Some("good") && f.severity != Severity::Notice));
}

#[test]
fn libraries_report_kind_and_resolution() {
    let t = tree();
    let index = t.index("@/ext:@/later");
    let libs = library_reports(&index, &ctx(&index));
    let needy = libs.iter().find(|l| l.path.ends_with("needy.so")).unwrap();
    assert_eq!(
        (needy.kind, needy.needed.clone(), needy.resolved.clone()),
        ("library", vec!["libgone.so.1".to_string()], vec!["not found".to_string()])
    );
    let old = libs.iter().find(|l| l.path.ends_with("old.so")).unwrap();
    assert_eq!((old.kind, old.pg_major), ("module", Some(17)));
    let dups: Vec<_> = libs.iter().filter(|l| l.path.ends_with("dup.so")).map(|l| l.winner).collect();
    assert_eq!(dups, [true, false]);
}

#[test]
fn images_report_layout_contents_mounts_and_metadata() {
    let t = tree();
    let index = t.index("@/ext:@/later");
    let mounts = vec![
        Mount { mount_point: PathBuf::from("/"), read_only: false, fs_type: "ext4".into(), source: "/dev/vda".into() },
        Mount { mount_point: t.p("ext/good"), read_only: true, fs_type: "overlay".into(), source: "image".into() },
    ];
    let images = image_reports(&index, &mounts);
    let good = images.iter().find(|i| i.dir == t.p("ext/good")).unwrap();
    assert_eq!((good.layout.as_str(), good.extensions.clone()), ("rfc", vec!["good".to_string()]));
    assert_eq!((good.mount_point, good.read_only, good.fs_type.as_deref()), (true, Some(true), Some("overlay")));
    assert_eq!(good.metadata.as_ref().unwrap()["version"], "1.1.0");
    assert!(good.size_bytes > 0);
    let gappy = images.iter().find(|i| i.dir == t.p("ext/gappy")).unwrap();
    assert_eq!((gappy.layout.as_str(), gappy.mount_point, gappy.read_only), ("cnpg", false, Some(false)));
    assert!(gappy.metadata.is_none() && gappy.metadata_error.is_none());
    let needy = images.iter().find(|i| i.dir == t.p("ext/needy")).unwrap();
    assert_eq!(needy.libraries, ["needy.so"]);
    let shadowed = images.iter().find(|i| i.dir == t.p("later/good")).unwrap();
    assert!(
        shadowed.metadata_error.as_deref().unwrap().contains("key must be a string"),
        "{:?}",
        shadowed.metadata_error
    );
}

/// A PGXN Meta Spec v2 `META.json` declaring `modules` (`name`, `preload`) and, optionally,
/// the PostgreSQL versions and platforms it is for.
fn meta_json(name: &str, modules: &[(&str, &str)], postgres: Option<&str>, platforms: &[&str]) -> String {
    let modules: Vec<String> = modules
        .iter()
        .map(|(m, preload)| format!(r#""{m}": {{"type": "hook", "lib": "src/{m}", "preload": "{preload}"}}"#))
        .collect();
    let mut dependencies = Vec::new();
    if let Some(range) = postgres {
        dependencies.push(format!(r#""postgres": {{"version": "{range}"}}"#));
    }
    if !platforms.is_empty() {
        let list: Vec<String> = platforms.iter().map(|p| format!("\"{p}\"")).collect();
        dependencies.push(format!(r#""platforms": [{}]"#, list.join(", ")));
    }
    let dependencies = if dependencies.is_empty() {
        String::new()
    } else {
        format!(r#", "dependencies": {{{}}}"#, dependencies.join(", "))
    };
    format!(
        r#"{{"name": "{name}", "abstract": "a test image", "version": "1.0.0",
  "maintainers": [{{"name": "Ann Example", "email": "ann@example.org"}}], "license": "PostgreSQL",
  "contents": {{"modules": {{{}}}}}, "meta-spec": {{"version": "2.0.0"}}{dependencies}}}"#,
        modules.join(", ")
    )
}

/// A PostgreSQL 18 module: a magic block (default ABI values) and nothing else.
const PG18_MODULE: &str = "struct m { int len; int v, a, b, c, d; char x[32]; const char *n, *ver; };\n\
    static const struct m data = { sizeof(struct m), 1800, 100, 32, 64, 1, \"PostgreSQL\", 0, 0 };\n\
    const struct m *Pg_magic_func(void) { return &data; }";

#[test]
fn images_declare_themselves_in_meta_json_and_check_says_what_follows() {
    let t = T(tempfile::tempdir().unwrap());
    // an image declaring one module for server start and one per session
    t.cc("ext/stats/lib/pg_stat_statements.so", PG18_MODULE, &[]);
    t.cc("ext/stats/lib/auto_explain.so", PG18_MODULE, &[]);
    t.file(
        "ext/stats/META.json",
        &meta_json(
            "stats",
            &[("pg_stat_statements", "server"), ("auto_explain", "session")],
            Some(">= 17, < 19"),
            &["linux"],
        ),
    );
    // one for another PostgreSQL, one for another platform, one broken, one with no file
    t.file("ext/old/lib/old.so", "ELF");
    t.file("ext/old/META.json", &meta_json("old", &[("old", "server")], Some(">= 13, < 17"), &[]));
    t.file("ext/mac/lib/mac.so", "ELF");
    t.file("ext/mac/META.json", &meta_json("mac", &[("mac", "server")], None, &["darwin-arm64"]));
    t.file("ext/broken/META.json", r#"{"name": "broken"}"#);
    // a file pgxn_meta's validator panics on: invalid, never a failure
    t.file("ext/euro/META.json", r#"{"name": "p", "version": "1.0.0", "meta-spec": {"version": "€"}}"#);
    t.file("ext/nofile/META.json", &meta_json("nofile", &[("gone", "server")], None, &[]));
    // a second image declaring the same module, and one listed in shared_preload_libraries
    t.file("ext/zz/lib/pg_stat_statements.so", "ELF");
    t.file("ext/zz/lib/listed.so", "ELF");
    // one that is no module at all: refused before anything would load it
    t.file("ext/zz/lib/notelf.so", "not an ELF file");
    t.file(
        "ext/zz/META.json",
        &meta_json("zz", &[("pg_stat_statements", "server"), ("listed", "server"), ("notelf", "session")], None, &[]),
    );
    let index = t.index("$system:@/ext");
    let metas = metas(&index);
    assert_eq!(metas.len(), 7);
    assert!(metas.iter().any(|(dir, m)| dir.ends_with("euro") && m.declared.is_err()));
    let server = ThisServer { version_num: 180006, os: "linux", arch: &["amd64", "x86_64"] };
    let listed = vec![("shared_preload_libraries", vec!["extension_search_path".to_string(), "listed".to_string()])];
    let policy = TrustPolicy::for_this_process(false);
    let preloads = declared_preloads(&index, &metas, &server, &listed, &policy);
    let got: Vec<(String, Preload, Decision)> =
        preloads.iter().map(|p| (p.module.clone(), p.preload, p.decision.clone())).collect();
    let pgss = t.p("ext/stats/lib/pg_stat_statements.so");
    assert_eq!(
        got,
        [
            (
                "mac".to_string(),
                Preload::Server,
                Decision::Excluded(got[0].2.reason().unwrap().replace("the image is not for this server: ", ""))
            ),
            ("gone".to_string(), Preload::Server, Decision::NoFile),
            ("old".to_string(), Preload::Server, got[2].2.clone()),
            ("auto_explain".to_string(), Preload::Session, Decision::Load),
            ("pg_stat_statements".to_string(), Preload::Server, Decision::Load),
            ("listed".to_string(), Preload::Server, Decision::Listed("shared_preload_libraries")),
            ("notelf".to_string(), Preload::Session, got[6].2.clone()),
            ("pg_stat_statements".to_string(), Preload::Server, Decision::Duplicate(t.p("ext/stats"))),
        ]
    );
    assert!(
        matches!(&got[6].2, Decision::Unloadable(why) if why.contains("not a valid ELF shared object")),
        "{:?}",
        got[6]
    );
    assert!(
        matches!(&got[2].2, Decision::Excluded(why) if why.contains(">= 13, < 17") && why.contains("18.6")),
        "{:?}",
        got[2]
    );
    assert!(matches!(&got[0].2, Decision::Excluded(why) if why.contains("darwin-arm64")));
    assert_eq!(preloads[4].file.as_deref(), Some(pgss.as_path()));

    // images() shows what each declares, and why a file is not valid
    let reports = image_reports(&index, &[]);
    let stats = reports.iter().find(|r| r.name == "stats").unwrap();
    assert_eq!(stats.declared_preload, ["auto_explain (session)", "pg_stat_statements (server)"]);
    assert_eq!(stats.source, "prefix");
    let broken = reports.iter().find(|r| r.name == "broken").unwrap();
    assert!(broken.metadata_error.is_some(), "a META.json missing required fields is not valid");

    // check(): the broken file, the images not for this server, and — with the setting off —
    // what would be loaded
    let declarations = Declarations { server: server.clone(), metas, preloads, acted_on: false };
    let findings = check(&index, &[], &declarations, &policy);
    let text = |f: &esp_resolver::report::Finding| format!("{}: {}", f.severity.as_str(), f.message);
    let all: Vec<String> = findings.iter().map(text).collect();
    let has = |needle: &str| all.iter().any(|f| f.contains(needle));
    assert!(has("error: the image is not for this server: it declares PostgreSQL \">= 13, < 17\""), "{all:#?}");
    assert!(has("error: the image is not for this server: it declares the platforms darwin-arm64"), "{all:#?}");
    assert!(has("warning: \"") && has("broken/META.json\" is not a valid PGXN META.json"), "{all:#?}");
    assert!(
        has(
            "notice: module \"pg_stat_statements\" is declared for preloading (server) by the image's META.json; extension_search_path.preload_declared is off: it would be loaded from"
        ),
        "{all:#?}"
    );
    assert!(
        has(
            "warning: module \"gone\" is declared for preloading (server) by the image's META.json, but is not loaded: the image has no such library in lib/"
        ),
        "{all:#?}"
    );
    assert!(!has("\"listed\""), "listed modules are PostgreSQL's: {all:#?}");
    // acted on, a module to load is no finding
    let declarations = Declarations { acted_on: true, ..declarations };
    let findings = check(&index, &[], &declarations, &policy);
    assert!(!findings.iter().any(|f| f.message.contains("preload_declared is off")));
}

#[test]
fn a_package_s_alias_control_file_is_a_notice_not_an_error() {
    let t = T(tempfile::tempdir().unwrap());
    // Debian's PostGIS: postgis.control with scripts, postgis-3.control with none
    t.file("ext/postgis/share/extension/postgis.control", "default_version = '3.7.0'\n");
    t.file("ext/postgis/share/extension/postgis--3.7.0.sql", "");
    t.file("ext/postgis/share/extension/postgis-3.control", "default_version = '3.7.0'\n");
    // an extension whose default version has no script but others do: still an error
    t.file("ext/postgis/share/extension/half.control", "default_version = '2.0'\n");
    t.file("ext/postgis/share/extension/half--1.0.sql", "");
    let index = t.index("@/ext");
    let findings = check(&index, &[], &Declarations::none(180006), &TrustPolicy::for_this_process(false));
    let of = |name: &str| {
        findings.iter().find(|f| f.extension.as_deref() == Some(name)).map(|f| (f.severity, f.message.clone()))
    };
    let (severity, message) = of("postgis-3").unwrap();
    assert_eq!(severity, Severity::Notice);
    assert!(message.starts_with("postgis-3 has a control file but no scripts: PostgreSQL lists it"), "{message}");
    assert_eq!(of("half").unwrap().0, Severity::Error);
    assert_eq!(of("postgis"), None);
    // no scripts and no sibling it is an alias of: an extension that cannot be installed
    t.file("ext/postgis/share/extension/lonely-2.control", "default_version = '1.0'\n");
    t.file("ext/postgis/share/extension/broken.control", "default_version = '1.0'\n");
    let index = t.index("@/ext");
    let findings = check(&index, &[], &Declarations::none(180006), &TrustPolicy::for_this_process(false));
    for name in ["lonely-2", "broken"] {
        let finding = findings.iter().find(|f| f.extension.as_deref() == Some(name)).unwrap();
        assert_eq!(finding.severity, Severity::Error, "{name}: {}", finding.message);
    }
}

#[test]
fn the_meta_json_examples_of_the_docs_are_valid_and_declare_a_server_preload() {
    for (doc, introduction) in [
        ("../README.md", "A `META.json` for an image that ships"),
        ("../docs/cloudnativepg.md", "the image declares it instead"),
    ] {
        let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
        let after = text.split(introduction).nth(1).expect("the example's introduction");
        let json = after.split("```json\n").nth(1).and_then(|b| b.split("```").next()).expect("a json block");
        meta_example_is_valid(json);
    }
}

fn meta_example_is_valid(json: &str) {
    let t = T(tempfile::tempdir().unwrap());
    t.file("img/META.json", json);
    let meta = esp_resolver::meta::read(&t.p("img")).expect("found");
    let declared = meta.declared.expect("valid PGXN metadata");
    assert_eq!(declared.modules.len(), 1);
    assert_eq!(declared.modules[0].library_name(), "pg_stat_statements");
    assert_eq!(declared.modules[0].preload, Some(Preload::Server));
    assert!(declared.excludes(&ThisServer { version_num: 180006, os: "linux", arch: &["amd64"] }).is_empty());
    assert!(!declared.excludes(&ThisServer { version_num: 170004, os: "linux", arch: &["amd64"] }).is_empty());
}
