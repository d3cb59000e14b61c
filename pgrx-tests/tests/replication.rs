//! End to end: physical replication, backups and failover with the extension preloaded. The
//! catalog lives where pg_basebackup and pg_rewind skip by design (pg_stat_tmp/), so a standby
//! is built with no warning, builds its own catalog at start, and a failed-over primary rejoins
//! with pg_rewind.

use esp_e2e::{Server, mkimage, tempdir};

#[test]
fn basebackup_standby_promote_and_pg_rewind_with_the_extension_preloaded() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    mkimage("cnpg", "contrib:seg", &prefix.join("seg"));
    mkimage("cnpg", "contrib:cube", &prefix.join("cube"));
    let path = format!("$system:{}", prefix.display());
    let mut primary = Server::with_path(&path, &["wal_log_hints = on", "hot_standby = on", "wal_keep_size = 512MB"]);
    primary.sql("CREATE EXTENSION seg; CREATE EXTENSION cube; CREATE TABLE t(s seg)");
    primary.sql("INSERT INTO t VALUES ('1 .. 2'); CHECKPOINT");

    // pg_basebackup: nothing of the catalog is copied, nothing to warn about
    let (mut standby, out) = primary.standby();
    assert!(!out.contains("WARNING"), "{out}");
    assert!(!standby.data.join("pg_stat_tmp/extension_search_path/server").exists(), "the catalog was copied");
    standby.start();
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(standby.sql("SELECT seg_upper(s) FROM t"), "2", "the standby serves the image's module");

    // failover: the standby is promoted, both diverge, the old primary is rewound and follows
    standby.tool("pg_ctl", &["promote", "-w", "-D", &standby.data.display().to_string()]).unwrap();
    standby.sql("INSERT INTO t VALUES ('3 .. 4'); CHECKPOINT");
    primary.sql("INSERT INTO t VALUES ('5 .. 6'); CREATE TABLE diverged(a int); CHECKPOINT");
    primary.stop();
    let source = format!("host={} port={} user=postgres dbname=postgres", standby.sock.display(), standby.port);
    let out = primary
        .tool("pg_rewind", &["-R", "--target-pgdata", &primary.data.display().to_string(), "--source-server", &source])
        .unwrap_or_else(|e| panic!("pg_rewind failed: {e}"));
    assert!(out.contains("Done!"), "{out}");
    // pg_rewind copied the new primary's configuration: give the old one back its own port
    primary.append_conf(&format!("port = {}\nunix_socket_directories = '{}'", primary.port, primary.sock.display()));
    primary.start();
    assert_eq!(primary.sql("SELECT pg_is_in_recovery()"), "t");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while primary.sql("SELECT count(*) FROM t") != "2" {
        assert!(std::time::Instant::now() < deadline, "the rewound primary never followed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(primary.sql("SELECT string_agg(seg_upper(s)::text, ',' ORDER BY 1) FROM t"), "2,4");
    assert_eq!(primary.sql("SELECT to_regclass('diverged') IS NULL"), "t");
    assert_eq!(primary.sql("SELECT cube_dim('(1,2)'::cube)"), "2");
    primary.assert_no_crash();
    standby.assert_no_crash();
}
