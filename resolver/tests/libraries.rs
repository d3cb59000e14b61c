//! Dependency plans on real shared objects compiled by the test with the system's C compiler.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use esp_resolver::dependencies::{LibraryContext, LibraryRefusal, Resolution, plan, plan_loading, system_library_dirs};
use esp_resolver::elf::ElfError;
use esp_resolver::safe_fs::TrustPolicy;
use esp_resolver::{Index, SearchPath, SystemDirs};

/// Compiles `source` into the shared object `out` with `soname`, linked against `needs`
/// (paths of other objects) and `extra` flags. No rpath unless `extra` says so.
fn cc(out: &Path, soname: &str, source: &str, needs: &[&Path], extra: &[&str]) {
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = out.with_extension("c");
    fs::write(&src, source).unwrap();
    let mut cmd = Command::new("cc");
    cmd.args(["-shared", "-fPIC", "-o"]).arg(out).arg(&src).arg(format!("-Wl,-soname,{soname}"));
    for need in needs {
        cmd.arg(need);
    }
    cmd.args(extra);
    let status = cmd.status().expect("cc runs");
    assert!(status.success(), "cc failed for {}", out.display());
    fs::remove_file(src).unwrap();
}

struct Images {
    tmp: tempfile::TempDir,
}

impl Images {
    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn ctx(&self, path: &str) -> LibraryContext {
        let path = path.replace('@', self.tmp.path().to_str().unwrap());
        let system = SystemDirs { extension_dir: self.p("none/extension"), lib_dir: self.p("none/lib") };
        let index = Index::build(&SearchPath::parse(&path), &system);
        LibraryContext {
            image_dirs: index.image_library_dirs(),
            system_dirs: system_library_dirs(),
            loaded: Default::default(),
        }
    }
}

/// libc_leaf.so.1 in system/, libb_mid.so.1 (needs leaf) in lib/, module m.so (needs mid) in lib/.
fn chain() -> Images {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    let leaf = t.p("ext/m/system/libc_leaf.so.1");
    let mid = t.p("ext/m/lib/libb_mid.so.1");
    cc(&leaf, "libc_leaf.so.1", "#include <unistd.h>\nint leaf(void) { return getpid() > 0 ? 41 : 0; }", &[], &[]);
    cc(&mid, "libb_mid.so.1", "int leaf(void); int mid(void) { return leaf() + 1; }", &[&leaf], &[]);
    cc(&t.p("ext/m/lib/m.so"), "m.so", "int mid(void); int m(void) { return mid(); }", &[&mid], &[]);
    t
}

#[test]
fn bundled_dependencies_load_leaves_first() {
    let t = chain();
    let plan = plan(&t.p("ext/m/lib/m.so"), &t.ctx("@/ext")).unwrap();
    assert_eq!(plan.load_order, [t.p("ext/m/system/libc_leaf.so.1"), t.p("ext/m/lib/libb_mid.so.1")]);
    let kinds: Vec<_> = plan.dependencies.iter().map(|d| (d.soname.as_str(), d.resolution.kind())).collect();
    assert!(kinds.contains(&("libb_mid.so.1", "bundled")), "{kinds:?}");
    assert!(kinds.contains(&("libc_leaf.so.1", "bundled")), "{kinds:?}");
    assert!(kinds.contains(&("libc.so.6", "system")), "{kinds:?}");
    assert_eq!(plan.missing().count(), 0);
}

#[test]
fn something_already_loaded_is_not_loaded_again() {
    let t = chain();
    let mut ctx = t.ctx("@/ext");
    ctx.loaded.insert("libb_mid.so.1".into());
    let plan = plan(&t.p("ext/m/lib/m.so"), &ctx).unwrap();
    assert!(plan.load_order.is_empty());
    assert_eq!(plan.dependencies[0].resolution, Resolution::Loaded);
}

#[test]
fn a_library_that_exists_nowhere_is_reported_with_what_was_searched() {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    let ghost = t.p("build/libghost.so.1");
    cc(&ghost, "libghost.so.1", "int ghost(void) { return 1; }", &[], &[]);
    cc(&t.p("ext/n/lib/n.so"), "n.so", "int ghost(void); int n(void) { return ghost(); }", &[&ghost], &[]);
    fs::remove_dir_all(t.p("build")).unwrap();
    let plan = plan(&t.p("ext/n/lib/n.so"), &t.ctx("@/ext")).unwrap();
    let missing: Vec<_> = plan.missing().collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].soname, "libghost.so.1");
    assert_eq!(missing[0].needed_by, t.p("ext/n/lib/n.so"));
    assert!(missing[0].searched.starts_with(&[t.p("ext/n/lib"), t.p("ext/n/system")]), "{:?}", missing[0].searched);
    assert!(missing[0].searched.iter().any(|d| d.join("libc.so.6").exists()), "system directories searched too");
}

#[test]
fn other_images_resolve_by_prefix_order() {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    for (img, value) in [("first/a/lib", 1), ("second/b/lib", 2)] {
        cc(
            &t.p(&format!("{img}/libshared.so.1")),
            "libshared.so.1",
            &format!("int shared(void) {{ return {value}; }}"),
            &[],
            &[],
        );
    }
    let shared = t.p("first/a/lib/libshared.so.1");
    cc(
        &t.p("third/user/lib/user.so"),
        "user.so",
        "int shared(void); int user(void) { return shared(); }",
        &[&shared],
        &[],
    );
    let module = t.p("third/user/lib/user.so");
    let plan1 = plan(&module, &t.ctx("@/second:@/first:@/third")).unwrap();
    assert_eq!(plan1.load_order, [t.p("second/b/lib/libshared.so.1")]);
    assert_eq!(plan1.dependencies[0].resolution.kind(), "other image");
    let plan2 = plan(&module, &t.ctx("@/first:@/second:@/third")).unwrap();
    assert_eq!(plan2.load_order, [t.p("first/a/lib/libshared.so.1")]);
}

#[test]
fn origin_rpath_is_taken_against_the_real_directory() {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    let dep = t.p("ext/o/lib/deps/libdep.so.1");
    cc(&dep, "libdep.so.1", "int dep(void) { return 3; }", &[], &[]);
    cc(
        &t.p("ext/o/lib/o.so"),
        "o.so",
        "int dep(void); int o(void) { return dep(); }",
        &[&dep],
        &["-Wl,-rpath,$ORIGIN/deps"],
    );
    // loaded through a link elsewhere (like the catalog's), $ORIGIN still means the image
    let link = t.p("catalog/o.so");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(t.p("ext/o/lib/o.so"), &link).unwrap();
    let plan = plan(&link, &t.ctx("@/ext")).unwrap();
    assert_eq!(plan.load_order, [fs::canonicalize(t.p("ext/o/lib")).unwrap().join("deps/libdep.so.1")]);
}

#[test]
fn an_unreadable_module_is_an_error() {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    fs::create_dir_all(t.p("ext/x/lib")).unwrap();
    fs::write(t.p("ext/x/lib/x.so"), b"not elf").unwrap();
    let err = plan(&t.p("ext/x/lib/x.so"), &t.ctx("@/ext")).unwrap_err();
    assert!(matches!(err, ElfError::Invalid { .. }) && err.to_string().contains("not a valid ELF"), "{err}");
}

/// The decision the shell acts on before loading a library from an image: every file trusted
/// and every need met, or the typed reason why not.
#[test]
fn loading_is_planned_or_refused_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let t = chain();
    for dir in ["", "ext", "ext/m", "ext/m/lib", "ext/m/system"] {
        fs::set_permissions(t.p(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let system = SystemDirs { extension_dir: t.p("none/extension"), lib_dir: t.p("none/lib") };
    let index = Index::build(&SearchPath::parse(t.p("ext").to_str().unwrap()), &system);
    let module = fs::canonicalize(t.p("ext/m/lib/m.so")).unwrap();
    let enforce = TrustPolicy::for_this_process(true);
    let others = || index.image_library_dirs();
    let go = |policy: &TrustPolicy| {
        plan_loading(&module, &index.path, others, policy, system_library_dirs(), Default::default())
    };
    let planned = go(&enforce).unwrap();
    assert_eq!(planned.load_order.len(), 2);
    // a bundled library anyone may write: refused, naming it
    fs::set_permissions(t.p("ext/m/system/libc_leaf.so.1"), fs::Permissions::from_mode(0o666)).unwrap();
    match go(&enforce).unwrap_err() {
        LibraryRefusal::NotTrusted { file, why } => {
            assert_eq!(file, t.p("ext/m/system/libc_leaf.so.1"));
            assert!(why.contains("writable by group or others"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(go(&TrustPolicy::for_this_process(false)).is_ok(), "only reported when trust is not enforced");
    // a need met nowhere: refused, with the directories searched
    fs::remove_file(t.p("ext/m/system/libc_leaf.so.1")).unwrap();
    match go(&enforce).unwrap_err() {
        LibraryRefusal::MissingDependency { soname, needed_by, searched } => {
            assert_eq!(soname, "libc_leaf.so.1");
            assert_eq!(needed_by, t.p("ext/m/lib/libb_mid.so.1"));
            assert!(searched.contains(&t.p("ext/m/system")), "{searched:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn find_library_accepts_the_names_postgres_is_given() {
    let t = chain();
    let system = SystemDirs { extension_dir: t.p("none/extension"), lib_dir: t.p("none/lib") };
    let index = Index::build(&SearchPath::parse(t.p("ext").to_str().unwrap()), &system);
    for name in ["m", "m.so", "$libdir/m", "$libdir/m.so"] {
        assert_eq!(index.find_library(name).map(|l| l.path.clone()), Some(t.p("ext/m/lib/m.so")), "{name}");
    }
    let absolute = t.p("ext/m/lib/m.so");
    assert!(index.find_library(absolute.to_str().unwrap()).is_some());
    assert!(index.find_library("nope").is_none());
}

#[test]
fn postgres_modules_and_their_major_version_are_recognised() {
    let t = Images { tmp: tempfile::tempdir().unwrap() };
    let magic = |major: u32| {
        format!(
            "struct magic {{ int len; int version, funcmaxargs, indexmaxkeys, namedatalen, float8byval; char extra[32]; const char *n, *v; }};\n\
             static const struct magic data = {{ sizeof(struct magic), {}, 100, 32, 64, 1, \"PostgreSQL\", 0, 0 }};\n\
             const struct magic *Pg_magic_func(void) {{ return &data; }}\n",
            major * 100
        )
    };
    cc(&t.p("m17.so"), "m17.so", &magic(17), &[], &[]);
    cc(&t.p("m18.so"), "m18.so", &magic(18), &[], &[]);
    cc(&t.p("plain.so"), "plain.so", "int plain(void) { return 1; }", &[], &[]);
    let read = |f: &str| esp_resolver::elf::read_elf(&t.p(f)).unwrap();
    assert_eq!((read("m17.so").is_pg_module, read("m17.so").pg_major), (true, Some(17)));
    assert_eq!(read("m18.so").pg_major, Some(18));
    assert_eq!((read("plain.so").is_pg_module, read("plain.so").pg_major), (false, None));
    assert_eq!(read("plain.so").machine, esp_resolver::elf::HOST_MACHINE);
}

#[test]
fn loaded_objects_are_known_by_soname_not_only_by_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    // a library whose file name is not its soname, as the system's libz.so.1.2.13 is libz.so.1
    let file = tmp.path().join("libespdiff.so.1.2.3");
    cc(&file, "libespdiff.so.1", "int espdiff(void) { return 1; }", &[], &[]);
    assert!(!esp_resolver::dependencies::loaded_sonames().contains("libespdiff.so.1"));
    let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: a plain dlopen of a library this test just built (no constructors).
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null());
    let names = esp_resolver::dependencies::loaded_sonames();
    assert!(names.contains("libespdiff.so.1"), "the soname: {names:?}");
    assert!(names.contains("libespdiff.so.1.2.3"), "and the file name");
}

#[test]
fn an_object_loaded_where_an_unloaded_one_was_is_known_by_its_own_names() {
    let tmp = tempfile::tempdir().unwrap();
    let open = |file: &std::path::Path| {
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: a plain dlopen of a library this test just built (no constructors).
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null());
        handle
    };
    let (first, second) = (tmp.path().join("libespfirst.so"), tmp.path().join("libespsecond.so"));
    cc(&first, "libespfirst.so.1", "int first(void) { return 1; }", &[], &[]);
    cc(&second, "libespsecond.so.1", "int second(void) { return 2; }", &[], &[]);
    let handle = open(&first);
    assert!(esp_resolver::dependencies::loaded_sonames().contains("libespfirst.so.1"));
    // SAFETY: nothing of the library is used any more.
    assert_eq!(unsafe { libc::dlclose(handle) }, 0);
    // (the loader usually maps the next object at the address the unloaded one had)
    open(&second);
    let names = esp_resolver::dependencies::loaded_sonames();
    assert!(names.contains("libespsecond.so.1"), "{names:?}");
    assert!(!names.contains("libespfirst.so.1"), "{names:?}");
}
