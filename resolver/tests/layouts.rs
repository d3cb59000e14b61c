//! The resolver on real directory trees in temporary directories: layouts, precedence,
//! shadowing, bad elements, and the catalog PostgreSQL reads.

use std::fs;
use std::path::{Path, PathBuf};

use esp_resolver::control::ControlFile;
use esp_resolver::problem::Unusable;
use esp_resolver::safe_fs::TrustPolicy;
use esp_resolver::usable::usable;
use esp_resolver::{Catalog, Index, Layout, SearchPath, SystemDirs};
use tempfile::TempDir;

struct Tree {
    tmp: TempDir,
}

impl Tree {
    fn new() -> Tree {
        let tree = Tree { tmp: tempfile::tempdir().unwrap() };
        tree.file("system/share/extension/plpgsql.control", "default_version = '1.0'\n");
        tree.file("system/share/extension/plpgsql--1.0.sql", "");
        tree.file("system/lib/plpgsql.so", "ELF");
        tree
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn file(&self, rel: &str, content: &str) {
        let path = self.p(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    /// `<prefix>/<name>/<name>.control`, `sql/`, `lib/<name>.so`
    fn rfc(&self, prefix: &str, name: &str) {
        self.file(
            &format!("{prefix}/{name}/{name}.control"),
            &format!("default_version = '1.0'\nmodule_pathname = '$libdir/{name}'\n"),
        );
        self.file(&format!("{prefix}/{name}/sql/{name}--1.0.sql"), "");
        self.file(&format!("{prefix}/{name}/lib/{name}.so"), "ELF");
    }
    /// `<prefix>/<image>/share/extension/<name>.control` for each name, `lib/<image>.so`
    fn cnpg(&self, prefix: &str, image: &str, names: &[&str]) {
        for name in names {
            self.file(&format!("{prefix}/{image}/share/extension/{name}.control"), "default_version = '1.0'\n");
            self.file(&format!("{prefix}/{image}/share/extension/{name}--1.0.sql"), "");
        }
        self.file(&format!("{prefix}/{image}/lib/{image}.so"), "ELF");
    }
    fn system(&self) -> SystemDirs {
        SystemDirs { extension_dir: self.p("system/share/extension"), lib_dir: self.p("system/lib") }
    }
    fn index(&self, path: &str) -> Index {
        let value = path.replace("@", self.tmp.path().to_str().unwrap());
        Index::build(&SearchPath::parse(&value), &self.system())
    }
}

#[test]
fn rfc_layout_is_recognised() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = t.index("$system:@/ext");
    let semver = index.resolve("semver").expect("semver found");
    assert_eq!(semver.layout, Layout::Rfc);
    assert_eq!(semver.control_file, t.p("ext/semver/semver.control"));
    assert_eq!(semver.default_script_dir, t.p("ext/semver/sql"));
    assert_eq!(semver.lib_dir.as_deref(), Some(t.p("ext/semver/lib").as_path()));
    assert_eq!(semver.prefix.as_deref(), Some(t.p("ext").as_path()));
    assert!(index.problems.is_empty(), "{:?}", index.problems);
}

#[test]
fn rfc_without_sql_directory_keeps_scripts_beside_the_control_file() {
    let t = Tree::new();
    t.file("ext/tiny/tiny.control", "default_version = '1'\n");
    t.file("ext/tiny/tiny--1.sql", "");
    let index = t.index("@/ext");
    assert_eq!(index.resolve("tiny").unwrap().default_script_dir, t.p("ext/tiny"));
}

#[test]
fn cnpg_image_may_hold_several_extensions() {
    let t = Tree::new();
    t.cnpg("ext", "postgis", &["postgis", "postgis_topology"]);
    let index = t.index("$system:@/ext");
    for name in ["postgis", "postgis_topology"] {
        let copy = index.resolve(name).unwrap();
        assert_eq!(copy.layout, Layout::Cnpg);
        assert_eq!(copy.dir, t.p("ext/postgis"));
        assert_eq!(copy.default_script_dir, t.p("ext/postgis/share/extension"));
        assert_eq!(copy.script_base, t.p("ext/postgis/share"));
    }
    assert_eq!(index.library_winners().filter(|l| l.prefix.is_some()).count(), 1);
}

#[test]
fn both_layouts_mix_in_one_prefix_and_secondary_controls_are_not_extensions() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.cnpg("ext", "hstore", &["hstore"]);
    t.file("ext/hstore/share/extension/hstore--1.0.control", "");
    t.file("ext/.hidden/.hidden.control", "");
    t.file("ext/notadir", "");
    let index = t.index("@/ext");
    let names: Vec<_> = index.winners().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["hstore", "plpgsql", "semver"]);
}

#[test]
fn earlier_prefix_shadows_later_one() {
    let t = Tree::new();
    t.rfc("a", "semver");
    t.cnpg("b", "semver", &["semver"]);
    let index = t.index("@/b:@/a");
    let copies = index.copies("semver");
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].layout, Layout::Cnpg, "the element listed first wins");
    assert_eq!(copies[1].prefix.as_deref(), Some(t.p("a").as_path()));
    let index = t.index("@/a:@/b");
    assert_eq!(index.resolve("semver").unwrap().layout, Layout::Rfc);
}

#[test]
fn system_position_decides_against_prefixes() {
    let t = Tree::new();
    t.rfc("ext", "plpgsql");
    assert_eq!(t.index("$system:@/ext").resolve("plpgsql").unwrap().layout, Layout::System);
    assert_eq!(t.index("@/ext:$system").resolve("plpgsql").unwrap().layout, Layout::Rfc);
    // left out: searched last, never hidden
    let index = t.index("@/ext");
    assert_eq!(index.resolve("plpgsql").unwrap().layout, Layout::Rfc);
    assert_eq!(index.copies("plpgsql").last().unwrap().layout, Layout::System);
}

#[test]
fn eponymous_directory_wins_within_a_prefix() {
    let t = Tree::new();
    t.cnpg("ext", "aaa-bundle", &["foo", "bar"]);
    t.rfc("ext", "foo");
    t.cnpg("ext", "bar", &["bar"]);
    let index = t.index("@/ext");
    assert_eq!(index.resolve("foo").unwrap().dir, t.p("ext/foo"));
    assert_eq!(index.resolve("bar").unwrap().dir, t.p("ext/bar"));
    assert_eq!(index.copies("bar")[1].dir, t.p("ext/aaa-bundle"));
}

#[test]
fn libraries_follow_the_same_precedence() {
    let t = Tree::new();
    t.file("a/zz/lib/common.so", "");
    t.file("a/common/lib/common.so", "");
    t.file("b/x/lib/common.so", "");
    t.file("a/x/lib/plpgsql.so", "");
    t.file("a/x/lib/bitcode/x.bc", "");
    let index = t.index("$system:@/a:@/b");
    let winners: Vec<_> = index.library_winners().map(|l| (l.file_name.to_str().unwrap(), l.path.clone())).collect();
    assert_eq!(
        winners,
        [("common.so", t.p("a/common/lib/common.so")), ("plpgsql.so", t.p("system/lib/plpgsql.so"))],
        "eponymous first within a prefix; $system listed first keeps its own; no directories"
    );
}

#[test]
fn missing_and_bad_elements_are_reported_and_the_rest_still_works() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = t.index("relative:@/missing:@/ext:$system");
    assert!(index.resolve("semver").is_some());
    assert!(index.resolve("plpgsql").is_some());
    let text: Vec<String> = index.problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].contains("\"relative\"") && text[0].contains("relative"));
    assert!(text[1].contains(&t.p("missing").display().to_string()) && text[1].contains("could not read directory"));
}

#[test]
fn unreadable_prefix_is_a_problem_not_an_error() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = Index::build(&SearchPath::parse(t.p("ext/semver/semver.control").to_str().unwrap()), &t.system());
    assert_eq!(index.problems.len(), 1);
    assert!(index.resolve("plpgsql").is_some());
}

fn control_of(catalog: &Catalog, name: &str) -> ControlFile {
    let path = catalog.control_path_element().join("extension").join(format!("{name}.control"));
    ControlFile::parse(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn catalog_serves_winners_with_their_real_script_directories() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.cnpg("ext", "hstore", &["hstore"]);
    let index = t.index("$system:@/ext");
    let catalog = Catalog::new(t.p("data/esp/server"));
    let report = catalog.sync(&index, true).unwrap();
    assert_eq!((report.extensions, report.libraries, report.written, report.removed), (2, 2, 4, 0));
    assert!(report.problems.is_empty());

    let semver = control_of(&catalog, "semver");
    assert_eq!(semver.get("directory"), Some(t.p("ext/semver/sql").to_str().unwrap()));
    assert_eq!(semver.module_pathname(), Some("$libdir/semver"), "the original settings are kept");
    assert_eq!(
        control_of(&catalog, "hstore").get("directory"),
        Some(t.p("ext/hstore/share/extension").to_str().unwrap())
    );
    assert!(!catalog.control_path_element().join("extension/plpgsql.control").exists(), "$system is not copied");
    assert_eq!(fs::read_link(catalog.library_dir().join("semver.so")).unwrap(), t.p("ext/semver/lib/semver.so"));

    // idempotent
    assert_eq!(catalog.sync(&index, true).unwrap().written, 0);

    // an image removed: its entries go
    fs::remove_dir_all(t.p("ext/hstore")).unwrap();
    let report = catalog.sync(&t.index("$system:@/ext"), true).unwrap();
    assert_eq!((report.extensions, report.libraries, report.written, report.removed), (1, 1, 0, 2));
    assert!(!catalog.library_dir().join("hstore.so").exists());

    // the path changed: a new winner replaces the old entry
    t.rfc("first", "semver");
    let report = catalog.sync(&t.index("@/first:$system:@/ext"), true).unwrap();
    assert_eq!(report.written, 2);
    assert_eq!(control_of(&catalog, "semver").get("directory"), Some(t.p("first/semver/sql").to_str().unwrap()));
}

#[test]
fn catalog_copies_a_prefix_winner_over_system() {
    let t = Tree::new();
    t.rfc("ext", "plpgsql");
    let catalog = Catalog::new(t.p("cat"));
    catalog.sync(&t.index("@/ext:$system"), true).unwrap();
    assert!(catalog.control_path_element().join("extension/plpgsql.control").exists());
    assert!(catalog.library_dir().join("plpgsql.so").exists());
    catalog.sync(&t.index("$system:@/ext"), true).unwrap();
    assert!(!catalog.control_path_element().join("extension/plpgsql.control").exists());
    assert!(!catalog.library_dir().join("plpgsql.so").exists());
}

#[test]
fn control_directory_settings_are_honoured() {
    let t = Tree::new();
    t.file("ext/rel/share/extension/rel.control", "directory = 'rel-scripts'\n");
    t.file("ext/abs/share/extension/abs.control", &format!("directory = '{}'", t.p("opt/abs").display()));
    t.file("ext/rel/share/rel-scripts/rel--1.sql", "");
    t.file("ext/rfcrel/rfcrel.control", "directory = 'scripts'");
    t.file("ext/rfcrel/scripts/rfcrel--1.sql", "");
    // written for a classic install (sharedir/classic): in the RFC layout, sql/ is used
    t.file("ext/classic/classic.control", "directory = 'classic'");
    t.file("ext/classic/sql/classic--1.sql", "");
    // the scripts are nowhere: left out, with the directory named
    t.file("ext/lost/share/extension/lost.control", "directory = 'gone'");
    t.file("opt/abs/abs--1.sql", "");
    let index = t.index("@/ext");
    let generated_control = |name: &str| {
        usable(index.resolve(name).unwrap(), &TrustPolicy::for_this_process(false))
            .map(|usable| String::from_utf8(usable.generated).unwrap())
    };
    let rel = generated_control("rel").unwrap();
    let rel = ControlFile::parse(&rel).unwrap();
    assert_eq!(rel.get("directory"), Some(t.p("ext/rel/share/rel-scripts").to_str().unwrap()));
    let abs = ControlFile::parse(&generated_control("abs").unwrap()).unwrap();
    assert_eq!(abs.get("directory"), Some(t.p("opt/abs").to_str().unwrap()));
    let rfc = ControlFile::parse(&generated_control("rfcrel").unwrap()).unwrap();
    assert_eq!(rfc.get("directory"), Some(t.p("ext/rfcrel/scripts").to_str().unwrap()));
    let classic = ControlFile::parse(&generated_control("classic").unwrap()).unwrap();
    assert_eq!(classic.get("directory"), Some(t.p("ext/classic/sql").to_str().unwrap()));
    let lost = generated_control("lost").unwrap_err();
    assert_eq!(lost, Unusable::NoScriptDirectory(t.p("ext/lost/share/gone")));
    let lost = lost.to_string();
    assert!(lost.contains(&format!("\"{}\" does not exist", t.p("ext/lost/share/gone").display())), "{lost}");
}

#[test]
fn a_broken_control_file_is_reported_and_left_out() {
    let t = Tree::new();
    t.rfc("ext", "good");
    t.file("ext/bad/bad.control", "default_version = 'unterminated\n");
    let catalog = Catalog::new(t.p("cat"));
    let report = catalog.sync(&t.index("@/ext"), true).unwrap();
    assert_eq!(report.extensions, 1);
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].subject.ends_with("bad/bad.control"));
    assert!(report.problems[0].to_string().contains("unterminated"), "{:?}", report.problems);
    assert!(
        matches!(&report.problems[0].kind, esp_resolver::ProblemKind::Unusable(Unusable::ControlInvalid(_))),
        "{:?}",
        report.problems
    );
}

#[test]
fn names_from_paths_never_escape() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = t.index("@/ext");
    for bad in ["../ext/semver", "semver/..", "", ".."] {
        assert!(index.resolve(bad).is_none());
    }
    assert!(Path::new(&index.resolve("semver").unwrap().control_file).starts_with(t.p("ext")));
}

#[test]
fn untrusted_and_invalid_control_files_are_left_out() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    t.rfc("ext", "good");
    t.rfc("ext", "loose");
    fs::set_permissions(t.p("ext/loose/loose.control"), fs::Permissions::from_mode(0o666)).unwrap();
    t.file("ext/odd/odd.control", "default_version = '1.0'\ncolour = 'blue'\n");
    t.file("ext/odd/sql/odd--1.0.sql", "");
    t.rfc("ext", "loosescript");
    fs::set_permissions(t.p("ext/loosescript/sql/loosescript--1.0.sql"), fs::Permissions::from_mode(0o666)).unwrap();
    t.rfc("ext", "badsecondary");
    t.file("ext/badsecondary/sql/badsecondary--1.0.control", "default_version = '2'\n");
    let catalog = Catalog::new(t.p("cat"));
    let report = catalog.sync(&t.index("@/ext"), true).unwrap();
    assert_eq!(report.extensions, 1, "{:?}", report.problems);
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.contains("loose.control")
            && p.contains("not trusted, left out")
            && p.contains("writable by group or others")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains("odd.control") && p.contains("unrecognized parameter \"colour\"")),
        "{text:?}"
    );
    assert!(text.iter().any(|p| p.contains("loosescript--1.0.sql\" is writable by group or others")), "{text:?}");
    assert!(text.iter().any(|p| p.contains("badsecondary--1.0.control") && p.contains("secondary")), "{text:?}");
    // relaxed: reported by check() but served
    let relaxed =
        Catalog::new(t.p("cat2")).with_trust(esp_resolver::safe_fs::TrustPolicy { enforce: false, server_uid: 0 });
    assert_eq!(relaxed.sync(&t.index("@/ext"), true).unwrap().extensions, 3);
}

#[test]
fn directories_changing_during_scans_never_break_them() {
    let t = Tree::new();
    t.rfc("ext", "stable");
    let root = t.p("ext");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let dir = root.join(format!("churn{}", i % 7));
                let _ = fs::create_dir_all(dir.join("sql"));
                let _ = fs::write(dir.join(format!("churn{}.control", i % 7)), "default_version = '1'\n");
                let _ = fs::create_dir_all(dir.join("share/extension"));
                let _ = fs::remove_dir_all(root.join(format!("churn{}", (i + 3) % 7)));
                i += 1;
            }
        })
    };
    let catalog = Catalog::new(t.p("cat"));
    for _ in 0..200 {
        let index = t.index("@/ext");
        assert!(index.resolve("stable").is_some());
        catalog.sync(&index, true).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

#[test]
fn an_index_knows_when_images_come_and_go() {
    let t = Tree::new();
    t.rfc("ext", "first");
    let index = t.index("$system:@/ext");
    assert!(index.is_current());
    // directory mtimes have a granularity; make the change visible
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.rfc("ext", "second");
    assert!(!index.is_current(), "a new image directory");
    let index = t.index("$system:@/ext");
    assert!(index.is_current());
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::remove_dir_all(t.p("ext/first")).unwrap();
    assert!(!index.is_current(), "an image removed");
    let index = t.index("$system:@/ext");
    std::thread::sleep(std::time::Duration::from_millis(20));
    t.file("system/share/extension/new.control", "");
    assert!(!index.is_current(), "a new $system extension");
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A restart keeps the generation it finds when nothing it serves changed, and builds a new one
/// when a served file was edited or `chmod`ed in place (no entry of a prefix changed).
#[test]
fn a_start_rebuilds_only_when_a_served_file_changed() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.rfc("ext", "other");
    let catalog = Catalog::new(t.p("cat"));
    let first = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert!(!first.unchanged, "{first:?}");
    drop(first);
    let again = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert!(again.unchanged && again.written == 0, "nothing written at an unchanged restart: {again:?}");
    assert_eq!(again.generation, Some(t.p("cat/gen-1")));
    drop(again);
    // a control file edited in place: the prefix's entries are the same, the file is not
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(t.p("ext/semver/semver.control"), "default_version = '2.0'\nrelocatable = true\n").unwrap();
    assert!(catalog.sync(&t.index("@/ext"), false).unwrap().unchanged, "a backend's sync looks at the prefixes only");
    let edited = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert!(!edited.unchanged, "{edited:?}");
    let served = fs::read_to_string(t.p("cat/current/share/extension/semver.control")).unwrap();
    assert!(served.contains("'2.0'"), "{served}");
    drop(edited);
    // a chmod (trust) of a served file
    fs::set_permissions(t.p("ext/other/other.control"), fs::Permissions::from_mode(0o666)).unwrap();
    let loose = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert!(!loose.unchanged && loose.extensions == 1, "left out once untrusted: {loose:?}");
    drop(loose);
    // a script directory named by an absolute `directory`, outside the image, removed
    fs::set_permissions(t.p("ext/other/other.control"), fs::Permissions::from_mode(0o644)).unwrap();
    t.file(
        "ext/abs/abs.control",
        &format!("default_version = '1.0'\ndirectory = '{}'\n", t.p("outside/abs").display()),
    );
    t.file("outside/abs/abs--1.0.sql", "");
    let with_abs = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert_eq!(with_abs.extensions, 3, "{with_abs:?}");
    drop(with_abs);
    fs::remove_dir_all(t.p("outside/abs")).unwrap();
    let gone = catalog.try_sync_if_files_changed(&t.index("@/ext")).unwrap().unwrap();
    assert!(!gone.unchanged && gone.extensions == 2, "its scripts are gone: left out at the next start: {gone:?}");
}

#[test]
fn syncs_are_stamped_locked_and_leave_nothing_postgres_would_list() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = t.index("$system:@/ext");
    let catalog = Catalog::new(t.p("cat"));
    let first = catalog.sync(&index, false).unwrap();
    assert!(!first.unchanged && first.written == 2, "{first:?}");
    assert_eq!(first.generation, Some(t.p("cat/gen-1")));
    // another process (or this one) syncing the same state does nothing
    let again = catalog.sync(&index, false).unwrap();
    assert!(again.unchanged && again.generation == first.generation, "{again:?}");
    // (a report holds the generation it names until it is dropped)
    drop((first, again));
    // unless forced (files may change inside an image): a new generation, the old one removed
    // (nobody holds it), unchanged entries linked rather than written
    let forced = catalog.sync(&index, true).unwrap();
    assert!(!forced.unchanged && forced.written == 0 && forced.collected == 1, "{forced:?}");
    assert_eq!(names(&t.p("cat")), [".lock", "current", "gen-2"]);
    // a sync cut short (a killed backend): a generation never made current, and a link never
    // renamed over `current`; PostgreSQL reads neither, the next sync removes both
    fs::create_dir_all(t.p("cat/gen-3/share/extension")).unwrap();
    fs::write(t.p("cat/gen-3/share/extension/semver.control"), "partial").unwrap();
    std::os::unix::fs::symlink("gen-3", t.p("cat/.current.tmp-99999")).unwrap();
    assert_eq!(catalog.current(), Some(t.p("cat/gen-2")));
    let redo = catalog.sync(&index, false).unwrap();
    assert!(redo.unchanged && redo.collected == 1, "{redo:?}");
    assert_eq!(names(&t.p("cat")), [".lock", "current", "gen-2"]);
    assert_eq!(names(&t.p("cat/gen-2/share/extension")), ["semver.control"]);
    // a catalog held by another process: try_sync does not wait
    let lock = fs::File::open(t.p("cat/.lock")).unwrap();
    lock.lock().unwrap();
    let other = Catalog::new(t.p("cat"));
    let (tx, rx) = std::sync::mpsc::channel();
    let index2 = t.index("$system:@/ext");
    std::thread::spawn(move || tx.send(other.try_sync(&index2, true).unwrap().is_none()).unwrap());
    assert!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), "try_sync waited or synced under a held lock");
    lock.unlock().unwrap();
}

#[test]
fn a_held_generation_stays_whole_while_newer_ones_come_and_go() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.rfc("ext", "gone");
    let catalog = Catalog::new(t.p("cat"));
    catalog.sync(&t.index("@/ext"), true).unwrap();
    // a reader names this generation (its settings point at it) and lists it
    let held = catalog.adopt().unwrap().unwrap();
    assert_eq!(held.dir, t.p("cat/gen-1"));
    let listed = names(&esp_resolver::catalog::control_path_element(&held.dir).join("extension"));
    assert_eq!(listed, ["gone.control", "semver.control"]);
    // meanwhile an image goes away, and two newer generations are made
    fs::remove_dir_all(t.p("ext/gone")).unwrap();
    catalog.sync(&t.index("@/ext"), true).unwrap();
    let report = catalog.sync(&t.index("@/ext"), true).unwrap();
    assert_eq!(report.generation, Some(t.p("cat/gen-3")));
    assert_eq!(report.collected, 1, "gen-2: nobody held it");
    // what the reader listed can still be opened: its generation is untouched
    for name in &listed {
        assert!(esp_resolver::catalog::control_path_element(&held.dir).join("extension").join(name).is_file());
    }
    assert_eq!(names(&t.p("cat/gen-3/share/extension")), ["semver.control"]);
    // released: the next sync removes it
    drop(held);
    assert_eq!(catalog.sync(&t.index("@/ext"), false).unwrap().collected, 1);
    assert_eq!(names(&t.p("cat")), [".lock", "current", "gen-3"]);
}

#[test]
fn unused_session_catalogs_are_collected_never_one_in_use() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let index = t.index("@/ext");
    let (used, unused) = (Catalog::new(t.p("root/session-a")), Catalog::new(t.p("root/session-b")));
    used.sync(&index, true).unwrap();
    let held = used.adopt().unwrap().unwrap();
    unused.sync(&index, true).unwrap();
    {
        let _briefly = unused.adopt().unwrap().unwrap();
        assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 0, "both held");
    }
    Catalog::new(t.p("root/server")).sync(&index, true).unwrap();
    assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 1);
    assert!(t.p("root/session-a/gen-1/share/extension/semver.control").exists(), "held: kept");
    assert!(!t.p("root/session-b").exists(), "released: removed");
    assert!(t.p("root/server/gen-1").exists(), "other catalogs are not touched");
    drop(held);
    assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 1);
    assert!(!t.p("root/session-a").exists());
    // a session using that path again rebuilds it
    used.sync(&index, false).unwrap();
    let again = used.adopt().unwrap().unwrap();
    assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 0);
    assert!(again.dir.join(".inuse").exists());
}

#[test]
fn secondary_control_files_are_read_on_top_of_the_primary() {
    let t = Tree::new();
    t.file("ext/sx/sx.control", "default_version = '1.0'\nschema = s\n");
    t.file("ext/sx/sql/sx--1.0.sql", "");
    t.file("ext/sx/sql/sx--1.0.control", "relocatable = true\n");
    let index = t.index("@/ext");
    let err = usable(index.resolve("sx").unwrap(), &TrustPolicy::for_this_process(false)).unwrap_err();
    assert!(matches!(err, Unusable::SecondaryInvalid { combined: true, .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("read on top of the primary one") && err.contains("\"schema\" cannot be specified"), "{err}");
}

#[test]
fn odd_directory_names_are_written_so_postgres_reads_them_back() {
    let t = Tree::new();
    t.file("ext/img\nnl/share/extension/nlx.control", "default_version = '1.0'\n");
    t.file("ext/img\nnl/share/extension/nlx--1.0.sql", "");
    let index = t.index("@/ext");
    let text = usable(index.resolve("nlx").unwrap(), &TrustPolicy::for_this_process(false)).unwrap().generated;
    let control = ControlFile::parse_bytes(&text).unwrap();
    assert_eq!(control.get("directory"), Some(t.p("ext/img\nnl/share/extension").to_str().unwrap()));
}

#[test]
fn in_one_directory_the_rfc_control_file_comes_before_share_extension() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.cnpg("ext", "semver", &["semver"]);
    let index = t.index("@/ext");
    let copies = index.copies("semver");
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].layout, Layout::Rfc);
    assert_eq!(copies[0].control_file, t.p("ext/semver/semver.control"));
    assert_eq!(copies[1].control_file, t.p("ext/semver/share/extension/semver.control"));
}

#[test]
fn a_directory_is_read_up_to_100000_entries() {
    let t = Tree::new();
    // 100,000 entries that are no extensions, then more: the scan stops at the limit, in time
    for i in 0..100_010 {
        fs::create_dir_all(t.p("ext").join(format!("d{i:06}"))).unwrap();
    }
    t.rfc("ext", "semver");
    let started = std::time::Instant::now();
    let index = t.index("@/ext");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // exactly 100,000 of the 100,011 entries are read (which ones is the directory's order)
    assert_eq!(index.images.len(), 100_000);
}

#[test]
fn trust_is_judged_on_a_symlink_s_target_and_on_libraries() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    // control files that are links: judged by what they point to
    t.rfc("ext", "goodlink");
    t.rfc("ext", "badlink");
    t.file("elsewhere/goodlink.control", "default_version = '1.0'\n");
    t.file("elsewhere/badlink.control", "default_version = '1.0'\n");
    fs::set_permissions(t.p("elsewhere/badlink.control"), fs::Permissions::from_mode(0o666)).unwrap();
    for name in ["goodlink", "badlink"] {
        let control = t.p(&format!("ext/{name}/{name}.control"));
        fs::remove_file(&control).unwrap();
        std::os::unix::fs::symlink(t.p(&format!("elsewhere/{name}.control")), &control).unwrap();
    }
    // the link itself is 0777 like every symlink: only the target's mode may count
    assert_eq!(fs::symlink_metadata(t.p("ext/goodlink/goodlink.control")).unwrap().permissions().mode() & 0o777, 0o777);
    // a library writable by others
    t.rfc("ext", "loosely");
    fs::set_permissions(t.p("ext/loosely/lib/loosely.so"), fs::Permissions::from_mode(0o666)).unwrap();
    let catalog = Catalog::new(t.p("cat"));
    let report = catalog.sync(&t.index("@/ext"), true).unwrap();
    let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.contains("badlink.control") && p.contains("writable by group or others")),
        "{text:?}"
    );
    assert!(!text.iter().any(|p| p.contains("goodlink")), "{text:?}");
    assert!(text.iter().any(|p| p.contains("loosely.so") && p.contains("not trusted, left out")), "{text:?}");
    let served = catalog.control_path_element().join("extension");
    assert!(served.join("goodlink.control").exists(), "{text:?}");
    assert!(!served.join("badlink.control").exists());
    assert!(served.join("loosely.control").exists(), "loosely's control file is fine");
    assert!(catalog.library_dir().join("goodlink.so").exists());
    assert!(!catalog.library_dir().join("loosely.so").exists());
}

#[test]
fn a_generation_just_built_is_held_until_the_builder_adopts_it() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let session = Catalog::new(t.p("root/session-x"));
    let path = SearchPath::parse(t.p("ext").to_str().unwrap());
    let (report, _) = session.sync_lazily(&path, &t.system(), &|| true).unwrap();
    assert!(report.held.is_some());
    // a reload collecting unused session catalogs between the sync and the adoption
    assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 0);
    let adopted = session.adopt().unwrap().expect("the generation is still there");
    assert_eq!(Some(adopted.dir.clone()), report.generation);
    drop((report, adopted));
    assert_eq!(esp_resolver::catalog::collect_unused(&t.p("root"), "session-"), 1);
}

#[test]
fn adopting_never_waits_for_a_collector() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let catalog = Catalog::new(t.p("cat"));
    catalog.sync(&t.index("@/ext"), true).unwrap();
    // a collector's exclusive lock on the generation's claim file
    let collector = fs::OpenOptions::new().write(true).open(t.p("cat/gen-1/.inuse")).unwrap();
    collector.try_lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let other = catalog.clone();
    std::thread::spawn(move || tx.send(other.adopt().map(|h| h.is_some()).unwrap()).unwrap());
    let adopted = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("adopt() waited for the collector");
    assert!(!adopted, "a generation being removed is not adopted");
    drop(collector);
    assert!(catalog.adopt().unwrap().is_some());
}

#[test]
fn a_failed_build_leaves_nothing_behind() {
    let t = Tree::new();
    t.rfc("ext", "semver");
    let catalog = Catalog::new(t.p("cat"));
    catalog.sync(&t.index("@/ext"), true).unwrap();
    // the root cannot take a new link: the swap fails after the generation was written
    fs::create_dir_all(
        t.p("cat/.current.tmp-").with_file_name(format!(".current.tmp-{}", std::process::id())).join("x"),
    )
    .unwrap();
    assert!(catalog.sync(&t.index("@/ext"), true).is_err());
    assert_eq!(names(&t.p("cat")).iter().filter(|n| n.starts_with("gen-")).count(), 1, "{:?}", names(&t.p("cat")));
    assert_eq!(catalog.current(), Some(t.p("cat/gen-1")));
}

/// A library PostgreSQL reaches through a catalog generation's lib/ is known to be served
/// without an index; anything else is not taken for one.
#[test]
fn a_library_reached_through_the_catalog_is_served_without_an_index() {
    use esp_resolver::catalog::served_through;
    let t = Tree::new();
    t.rfc("ext", "semver");
    t.file("ext/semver/lib/semver.so", "not really a library");
    let catalog = Catalog::new(t.p("root/server"));
    let report = catalog.sync(&t.index("@/ext"), true).unwrap();
    assert_eq!(report.libraries, 1, "{report:?}");
    let link = t.p("root/server/gen-1/lib/semver.so");
    let real = fs::canonicalize(t.p("ext/semver/lib/semver.so")).unwrap();
    assert_eq!(served_through(&t.p("root"), &link), Some(real));
    // the current link, a file that is no generation's, a path outside the catalogs
    assert_eq!(served_through(&t.p("root"), &t.p("root/server/current/lib/semver.so")), None);
    fs::write(t.p("root/server/gen-1/stray.so"), "").unwrap();
    assert_eq!(served_through(&t.p("root"), &t.p("root/server/gen-1/stray.so")), None);
    assert_eq!(served_through(&t.p("root"), &t.p("ext/semver/lib/semver.so")), None);
    // and with no index at hand, the free function finds the same file PostgreSQL will load
    let dlp = format!("{}:$libdir", t.p("root/server/gen-1/lib").display());
    let found = esp_resolver::index::served_file(
        "$libdir/semver",
        esp_resolver::dfmgr::Loader::Function,
        &dlp,
        &SearchPath::parse(t.p("ext").to_str().unwrap()),
        &t.p("none/lib"),
        &t.p("root"),
        || -> &esp_resolver::Index { panic!("no index needed") },
    );
    assert_eq!(found, Some(fs::canonicalize(t.p("ext/semver/lib/semver.so")).unwrap()));
    // PostgreSQL's own library (in pkglibdir, which no prefix holds): not ours, no index asked
    t.file("none/lib/plain.so", "");
    let system = esp_resolver::index::served_file(
        "plain",
        esp_resolver::dfmgr::Loader::File,
        "$libdir",
        &SearchPath::parse(t.p("ext").to_str().unwrap()),
        &t.p("none/lib"),
        &t.p("root"),
        || -> &esp_resolver::Index { panic!("no index needed") },
    );
    assert_eq!(system, None);
    // a catalog entry of a path this session does not use: the index decides (here: not served)
    let other = SearchPath::parse(t.p("none").to_str().unwrap());
    let index = Index::build(&other, &SystemDirs { extension_dir: t.p("none/extension"), lib_dir: t.p("none/lib") });
    let elsewhere = esp_resolver::index::served_file(
        "$libdir/semver",
        esp_resolver::dfmgr::Loader::Function,
        &dlp,
        &other,
        &t.p("none/lib"),
        &t.p("root"),
        || &index,
    );
    assert_eq!(elsewhere, None);
}

#[test]
fn nested_images_are_served_like_separate_images_one_level_deep() {
    let t = Tree::new();
    // CloudNativePG's multi-extension image: one subdirectory per extension
    t.cnpg("ext/geospatial", "postgis", &["postgis", "postgis_raster"]);
    t.file("ext/geospatial/postgis/system/libgeos_c.so.1", "ELF");
    t.cnpg("ext/geospatial", "pgrouting", &["pgrouting"]);
    t.rfc("ext/geospatial", "h3");
    // two levels down is not an image (nor is `deeper`, which holds only another directory)
    t.cnpg("ext/geospatial/deeper", "toodeep", &["toodeep"]);
    // an image's own directories are never nested images
    t.file("ext/geospatial/lib/lib/x.so", "ELF");
    let index = t.index("@/ext");
    let postgis = index.resolve("postgis").unwrap();
    assert_eq!(postgis.dir, t.p("ext/geospatial/postgis"));
    assert_eq!(postgis.default_script_dir, t.p("ext/geospatial/postgis/share/extension"));
    assert_eq!(postgis.lib_dir.as_deref(), Some(t.p("ext/geospatial/postgis/lib").as_path()));
    assert_eq!(postgis.prefix.as_deref(), Some(t.p("ext").as_path()));
    assert!(postgis.nested);
    assert_eq!(index.resolve("pgrouting").unwrap().dir, t.p("ext/geospatial/pgrouting"));
    assert_eq!(index.resolve("h3").unwrap().layout, Layout::Rfc);
    assert!(index.resolve("toodeep").is_none());
    assert_eq!(index.find_library("postgis").unwrap().path, t.p("ext/geospatial/postgis/lib/postgis.so"));
    let dirs: Vec<_> = index.images.iter().map(|i| (i.dir.clone(), i.source.as_str())).collect();
    assert_eq!(
        dirs,
        [
            (t.p("ext/geospatial"), "prefix"),
            (t.p("ext/geospatial/h3"), "nested"),
            (t.p("ext/geospatial/pgrouting"), "nested"),
            (t.p("ext/geospatial/postgis"), "nested"),
        ]
    );
    // bundled libraries of a nested image are looked for in its own system/
    assert!(index.image_library_dirs().contains(&t.p("ext/geospatial/postgis/system")));
    // the catalog serves them like any other image
    let catalog = Catalog::new(t.p("catalog"));
    catalog.sync(&index, true).unwrap();
    assert_eq!(
        control_of(&catalog, "pgrouting").get("directory").map(PathBuf::from),
        Some(t.p("ext/geospatial/pgrouting/share/extension"))
    );
}

#[test]
fn a_top_level_eponymous_image_wins_over_a_nested_one_which_wins_over_the_rest() {
    let t = Tree::new();
    t.cnpg("ext", "aaa", &["postgis"]);
    t.cnpg("ext/geospatial", "postgis", &["postgis"]);
    let index = t.index("@/ext");
    assert_eq!(index.resolve("postgis").unwrap().dir, t.p("ext/geospatial/postgis"), "nested eponymous before others");
    t.cnpg("ext", "postgis", &["postgis"]);
    let index = t.index("@/ext");
    let order: Vec<_> = index.copies("postgis").iter().map(|c| c.dir.clone()).collect();
    assert_eq!(order, [t.p("ext/postgis"), t.p("ext/geospatial/postgis"), t.p("ext/aaa")]);
}

#[test]
fn images_the_operator_named_in_the_core_settings_are_indexed_behind_the_path() {
    use esp_resolver::path::operator_images;
    let t = Tree::new();
    // CloudNativePG's custom per-image lists, in a directory that is no prefix of ours
    t.cnpg("mnt/geospatial", "postgis", &["postgis"]);
    t.file("mnt/geospatial/postgis/lib/postgis-3.so", "ELF");
    t.file("mnt/geospatial/postgis/system/libgeos_c.so.1", "ELF");
    t.file("mnt/plain/extension/plain.control", "default_version = '1.0'\n");
    t.file("mnt/plain/extension/plain--1.0.sql", "");
    t.cnpg("ext", "postgis", &["postgis"]);
    let root = t.tmp.path().display().to_string();
    let control =
        format!("{root}/catalog/gen-1/share:$system:{root}/mnt/geospatial/postgis/share:{root}/mnt/plain:relative");
    let library = format!("$libdir:{root}/mnt/geospatial/postgis/lib:{root}/catalog/gen-1/lib");
    let operator = operator_images(&control, &library, &format!("{root}/catalog/"));
    let images = &operator.images;
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(images[0].dir, t.p("mnt/geospatial/postgis"));
    assert_eq!(images[0].library, Some(t.p("mnt/geospatial/postgis/lib")));
    assert_eq!((images[0].control_rank, images[0].library_rank), (Some(2), Some(1)));
    assert_eq!(images[1].dir, t.p("mnt/plain"));
    assert_eq!((operator.system_rank, operator.libdir_rank), (Some(1), Some(0)));
    let images = operator.clone();
    let path = SearchPath::parse(&format!("$system:{root}/ext")).with_operator_images(images);
    let index = Index::build(&path, &t.system());
    // behind the path: the prefix's copy wins, the operator's is the second
    let copies: Vec<_> = index.copies("postgis").iter().map(|c| c.dir.clone()).collect();
    assert_eq!(copies, [t.p("ext/postgis"), t.p("mnt/geospatial/postgis")]);
    let plain = index.resolve("plain").unwrap();
    assert_eq!(plain.default_script_dir, t.p("mnt/plain/extension"));
    assert_eq!(index.find_library("postgis-3").unwrap().path, t.p("mnt/geospatial/postgis/lib/postgis-3.so"));
    assert!(index.image_library_dirs().contains(&t.p("mnt/geospatial/postgis/system")));
    let sources: Vec<_> = index.images.iter().map(|i| i.source.as_str()).collect();
    assert_eq!(sources, ["prefix", "setting", "setting"]);
    // served by PostgreSQL through the operator's own elements: never copied into the catalog
    let catalog = Catalog::new(t.p("catalog"));
    catalog.sync(&index, true).unwrap();
    let current = catalog.control_path_element().join("extension");
    assert!(current.join("postgis.control").exists());
    assert!(!current.join("plain.control").exists());
    // an operator's element naming an image a prefix holds already is that image
    let again = operator_images(&format!("{root}/ext/postgis/share"), "", "/none/");
    let path = SearchPath::parse(&format!("{root}/ext")).with_operator_images(again);
    assert_eq!(Index::build(&path, &t.system()).images.len(), 1);
}

#[test]
fn an_operator_s_image_listed_before_system_wins_where_our_catalog_serves_nothing() {
    use esp_resolver::path::operator_images;
    let t = Tree::new();
    // plpgsql in $system, and in an image the operator lists before $system / $libdir
    t.cnpg("mnt", "x", &["plpgsql"]);
    t.file("mnt/x/lib/plpgsql.so", "ELF");
    t.cnpg("ext", "mine", &["mine"]);
    let root = t.tmp.path().display().to_string();
    let build = |control: &str, library: &str| {
        let operator = operator_images(control, library, "/none/");
        Index::build(&SearchPath::parse(&format!("$system:{root}/ext")).with_operator_images(operator), &t.system())
    };
    let before = build(&format!("{root}/mnt/x/share:$system"), &format!("{root}/mnt/x/lib:$libdir"));
    assert_eq!(before.resolve("plpgsql").unwrap().dir, t.p("mnt/x"), "PostgreSQL finds the operator's first");
    assert_eq!(before.find_library("plpgsql").unwrap().path, t.p("mnt/x/lib/plpgsql.so"));
    let after = build(&format!("$system:{root}/mnt/x/share"), &format!("$libdir:{root}/mnt/x/lib"));
    assert_eq!(after.resolve("plpgsql").unwrap().layout, Layout::System);
    assert_eq!(after.find_library("plpgsql").unwrap().path, t.p("system/lib/plpgsql.so"));
    // what a prefix of ours serves stays first whatever the operator wrote (the catalog is first)
    t.cnpg("mnt", "y", &["mine"]);
    let ours = build(&format!("{root}/mnt/y/share:$system"), "");
    assert_eq!(ours.resolve("mine").unwrap().dir, t.p("ext/mine"));
}
