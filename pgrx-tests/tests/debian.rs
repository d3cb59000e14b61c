//! Real Debian: Debian's own PostgreSQL 18 (sid) in a minimal root, serving PostGIS and pgRouting
//! from images cut from Debian's packages by `scripts/debian-roots` (modules, scripts and the
//! ~100 shared libraries they need that the server's root lacks, under `system/`), mounted
//! read-only at `/extensions/<name>` like CloudNativePG's image volumes. This extension comes
//! from its own image. One setting serves them all: no per-image path, no `LD_LIBRARY_PATH`.

use esp_e2e::debian::{DebianServer, EXTENSION_SETTINGS, extension_image, image};
use esp_e2e::tempdir;

#[test]
fn debian_postgis_and_pgrouting_from_flat_images() {
    let dir = tempdir();
    let mut settings = EXTENSION_SETTINGS.to_vec();
    settings.push("extension_search_path.path = '$system:/extensions'");
    let mut s = DebianServer::new(&settings);
    s.mount("extension_search_path", &extension_image(dir.path()));
    s.mount("postgis", &image("postgis"));
    s.mount("pgrouting", &image("pgrouting"));
    s.start();
    assert!(s.sql("SELECT version()").contains("Debian"), "not Debian's server");

    s.sql("CREATE EXTENSION postgis");
    // a new session: the module and GEOS/PROJ are loaded from the image by a fresh backend
    assert_eq!(
        s.sql("SELECT ST_AsText(ST_SnapToGrid(ST_Transform(ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326), 3857), 1))"),
        "POINT(261601 6249448)"
    );

    s.sql("CREATE EXTENSION pgrouting CASCADE");
    s.sql(
        "CREATE TABLE edges (id bigint, source bigint, target bigint, cost float8, reverse_cost float8);
         INSERT INTO edges VALUES (1, 1, 2, 1, 1), (2, 2, 3, 1, 1), (3, 1, 3, 5, 5);",
    );
    assert_eq!(
        s.sql(
            "SELECT string_agg(node::text, ',' ORDER BY seq) || ':' || max(agg_cost) \
             FROM pgr_dijkstra('SELECT id, source, target, cost, reverse_cost FROM edges', 1, 3)"
        ),
        "1,2,3:2"
    );
    s.assert_no_crash();
}

/// The routing query of both multi-extension tests, in a fresh backend.
fn route(s: &DebianServer) -> String {
    s.sql(
        "CREATE TABLE IF NOT EXISTS edges (id bigint, source bigint, target bigint, cost float8, reverse_cost float8);
         TRUNCATE edges; INSERT INTO edges VALUES (1, 1, 2, 1, 1), (2, 2, 3, 1, 1), (3, 1, 3, 5, 5);",
    );
    s.sql(
        "SELECT string_agg(node::text, ',' ORDER BY seq) || ':' || max(agg_cost) \
         FROM pgr_dijkstra('SELECT id, source, target, cost, reverse_cost FROM edges', 1, 3)",
    )
}

#[test]
fn debian_geospatial_multi_extension_image_with_no_per_image_setting() {
    let dir = tempdir();
    let mut settings = EXTENSION_SETTINGS.to_vec();
    settings.push("extension_search_path.path = '$system:/extensions'");
    let mut s = DebianServer::new(&settings);
    s.mount("extension_search_path", &extension_image(dir.path()));
    // CloudNativePG's multi-extension image: geospatial/postgis/, geospatial/pgrouting/
    s.mount("geospatial", &image("geospatial"));
    s.start();
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION pgrouting CASCADE");
    assert_eq!(
        s.sql("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension WHERE extname LIKE 'p%'"),
        "pgrouting,plpgsql,postgis"
    );
    assert_eq!(route(&s), "1,2,3:2");
    assert_eq!(
        s.sql("SELECT ST_AsText(ST_SnapToGrid(ST_Transform(ST_SetSRID(ST_MakePoint(2.35, 48.85), 4326), 3857), 1))"),
        "POINT(261601 6249448)"
    );
    assert_eq!(
        s.sql(
            "SELECT string_agg(name || ':' || source || ':' || read_only, ' ' ORDER BY path) FROM extension_search_path.images() \
             WHERE path LIKE '/extensions/geospatial%'"
        ),
        "geospatial:prefix:true pgrouting:nested:true postgis:nested:true"
    );
    // Debian's alias control files (postgis-3, postgis_raster-3, …) are notices that say what
    // they are; nothing on this image is an error
    let findings =
        s.sql("SELECT severity || ' ' || coalesce(extension, '-') FROM extension_search_path.check() ORDER BY 1");
    assert!(!findings.lines().any(|l| l.starts_with("error")), "{findings}");
    for alias in ["postgis-3", "postgis_raster-3", "postgis_sfcgal-3", "postgis_topology-3"] {
        assert!(findings.lines().any(|l| l == format!("notice {alias}")), "{alias}: {findings}");
    }
    s.assert_no_crash();
}

#[test]
fn debian_geospatial_through_cloudnativepg_custom_per_image_elements() {
    let dir = tempdir();
    let mut settings = EXTENSION_SETTINGS.to_vec();
    // what CloudNativePG writes for the image's custom lists (postgis/share, pgrouting/share,
    // postgis/lib, pgrouting/lib); no LD_LIBRARY_PATH for postgis/system
    let ours = "/extensions/extension_search_path";
    let geo = "/extensions/geospatial";
    let control = format!("extension_control_path = '$system:{ours}/share:{geo}/postgis/share:{geo}/pgrouting/share'");
    let library = format!("dynamic_library_path = '$libdir:{ours}/lib:{geo}/postgis/lib:{geo}/pgrouting/lib'");
    settings.extend(["extension_search_path.path = '$system'", &control, &library]);
    let mut s = DebianServer::new(&settings);
    s.mount("extension_search_path", &extension_image(dir.path()));
    s.mount("geospatial", &image("geospatial"));
    s.start();
    s.sql("CREATE EXTENSION extension_search_path; CREATE EXTENSION pgrouting CASCADE");
    // a fresh backend: postgis-3.so needs GEOS, PROJ, … from postgis/system, loaded by us
    assert_eq!(route(&s), "1,2,3:2");
    assert_eq!(s.sql("SELECT ST_Area(ST_Buffer(ST_MakePoint(0, 0), 1, 64)) > 3.14"), "t");
    assert_eq!(
        s.sql(
            "SELECT string_agg(name || ':' || layout || ':' || prefix, ' ' ORDER BY name) FROM extension_search_path.extensions() \
             WHERE name IN ('postgis', 'pgrouting') AND winner"
        ),
        format!("pgrouting:cnpg:{geo}/pgrouting postgis:cnpg:{geo}/postgis")
    );
    assert_eq!(
        s.sql(
            "SELECT string_agg(name || ':' || source, ' ' ORDER BY path) FROM extension_search_path.images() \
             WHERE path LIKE '/extensions/geospatial%'"
        ),
        "pgrouting:setting postgis:setting"
    );
    s.assert_no_crash();
}
