//! End to end, the CloudNativePG way: OCI images built with buildah, unpacked with umoci as a
//! kubelet would, bind-mounted read-only at `<root>/extensions/<name>` in a mount namespace;
//! this extension itself is one of the images. One setting serves them all.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use esp_e2e::{Server, deb, mkimage, oci_image, repo, run_command, tempdir, umoci_unpack};

/// Builds an OCI image from `source` in `layout` and unpacks it; returns the rootfs.
fn image(root: &Path, name: &str, layout: &str, source: &str) -> PathBuf {
    let dir = root.join("build").join(name);
    mkimage(layout, source, &dir);
    let oci = root.join("oci").join(name);
    oci_image(&dir, "1", &oci);
    let rootfs = root.join("unpacked").join(name);
    umoci_unpack(&oci, "1", &rootfs);
    rootfs
}

#[test]
fn oci_images_mounted_read_only_are_served_by_one_setting() {
    let dir = tempdir();
    let root = dir.path();
    // this extension, packaged by scripts/package
    let pkg = root.join("pkg");
    run_command(Command::new(repo().join("scripts/package")).arg(&pkg))
        .unwrap_or_else(|e| panic!("scripts/package: {e}"));
    let version = fs::read_dir(pkg.join("extension_search_path/share/extension"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            e.file_name().to_str()?.strip_prefix("extension_search_path--")?.strip_suffix(".sql").map(String::from)
        })
        .unwrap();
    let ours = root.join("unpacked/extension_search_path");
    umoci_unpack(&pkg.join("oci"), &version, &ours);

    let mut images = vec![
        ("extension_search_path".to_string(), ours),
        ("hstore".to_string(), image(root, "hstore", "cnpg", "contrib:hstore")),
        ("earthdistance".to_string(), image(root, "earthdistance", "cnpg", "contrib:earthdistance")),
        ("cube".to_string(), image(root, "cube", "rfc", "contrib:cube")),
        ("jsquery".to_string(), image(root, "jsquery", "cnpg", &deb("postgresql-18-jsquery"))),
    ];
    let extensions = root.join("extensions");
    let mounts = |images: &[(String, PathBuf)]| -> Vec<(PathBuf, PathBuf)> {
        images.iter().map(|(name, rootfs)| (rootfs.clone(), extensions.join(name))).collect()
    };
    let ext = extensions.display().to_string();
    let mut s = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{ext}'"),
        // what CloudNativePG writes for the one image that must load before anything else: ours
        &format!("dynamic_library_path = '{ext}/extension_search_path/lib:$libdir'"),
        &format!("extension_control_path = '{ext}/extension_search_path/share:$system'"),
    ]);
    let start = |s: &mut Server, m: &[(PathBuf, PathBuf)]| {
        let m: Vec<(&Path, &Path)> = m.iter().map(|(a, b)| (a.as_path(), b.as_path())).collect();
        s.start_with_read_only_mounts(&m);
    };
    start(&mut s, &mounts(&images));

    // the postmaster loaded this extension from its image
    let pid = fs::read_to_string(s.data.join("postmaster.pid")).unwrap().lines().next().unwrap().to_string();
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.contains(&format!("{ext}/extension_search_path/lib/extension_search_path.so")),
        "not loaded from the image"
    );

    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION hstore; CREATE EXTENSION earthdistance CASCADE; CREATE EXTENSION jsquery;");
    assert_eq!(s.sql("SELECT ('a=>1'::hstore) -> 'a'"), "1");
    assert_eq!(s.sql("SELECT earth_distance(ll_to_earth(0, 0), ll_to_earth(0, 1))::int"), "111320");
    assert_eq!(s.sql(r#"SELECT '{"a": 1}'::jsonb @@ 'a = 1'::jsquery"#), "t");
    assert_eq!(
        s.sql("SELECT string_agg(name || ':' || mount_point || ':' || read_only, ',' ORDER BY name) FROM extension_search_path.images()"),
        "cube:true:true,earthdistance:true:true,extension_search_path:true:true,hstore:true:true,jsquery:true:true"
    );

    // Kubernetes adds an image by restarting the pod: no setting changes
    images.push(("seg".to_string(), image(root, "seg", "cnpg", "contrib:seg")));
    s.stop();
    start(&mut s, &mounts(&images));
    s.sql("CREATE EXTENSION seg");
    assert_eq!(s.sql("SELECT seg_lower('1 .. 2'::seg)"), "1");
    assert_eq!(s.sql("SELECT ('b=>2'::hstore) -> 'b'"), "2");
    assert_eq!(s.sql("SELECT count(*) FROM extension_search_path.images() WHERE read_only"), "6");
    s.assert_no_crash();
}

#[test]
fn the_same_inputs_give_the_same_layer_digest() {
    let dir = tempdir();
    let build = dir.path().join("hstore");
    mkimage("cnpg", "contrib:hstore", &build);
    let first = oci_image(&build, "a", &dir.path().join("oci1"));
    // laid out again: new files, new timestamps, same content
    mkimage("cnpg", "contrib:hstore", &build);
    let second = oci_image(&build, "b", &dir.path().join("oci2"));
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, second);
}
