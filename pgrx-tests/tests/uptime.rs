//! End to end: long uptimes. Reloads and rescans with thousands of images leave the postmaster's
//! and a backend's memory flat.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, run_chmod_readable, sql_images, tempdir};

/// `n` pure-SQL images under `prefix`.
fn images(prefix: &Path, n: usize) {
    sql_images(prefix, (0..n).map(|i| format!("esp_img{i}")));
}

/// A prefix of `n` pure-SQL images the server can read, in a temporary directory (kept while
/// the returned guard lives).
fn readable_images(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    images(&prefix, n);
    run_chmod_readable(dir.path());
    (dir, prefix)
}

/// The postmaster's process id.
fn postmaster(s: &Server) -> String {
    fs::read_to_string(s.data.join("postmaster.pid")).unwrap().lines().next().unwrap().trim().to_string()
}

fn rss_kb(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[test]
fn reloads_and_rescans_leave_memory_flat_at_3000_images() {
    let dir = tempdir();
    let prefix = dir.path().join("extensions");
    images(&prefix, 3000);
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    let pid = postmaster(&s);
    let postmaster_rss = || rss_kb(&fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    let reload = |i: usize| {
        s.sql(&format!("ALTER SYSTEM SET work_mem = '{}kB'", 5000 + i));
        s.reload_until("work_mem", &format!("{}kB", 5000 + i));
    };
    for i in 0..3 {
        reload(i); // allocator warm-up
    }
    let before = postmaster_rss();
    for i in 3..53 {
        reload(i);
    }
    let after = postmaster_rss();
    assert!(after < before + 16 * 1024, "the postmaster grew from {before} kB to {after} kB over 50 reloads");

    // one backend rescanning 30 times
    let rss = "SELECT 'rss ' || substring(pg_read_file('/proc/self/status') from 'VmRSS:\\s*(\\d+) kB');\n";
    let mut script =
        String::from("CREATE EXTENSION extension_search_path;\nSELECT count(*) FROM extension_search_path.rescan();\n");
    script.push_str(rss);
    for _ in 0..30 {
        script.push_str("SELECT count(*) FROM extension_search_path.rescan();\n");
    }
    script.push_str(rss);
    let out = s.psql_script(&script);
    let values: Vec<u64> =
        out.lines().filter_map(|l| l.trim().strip_prefix("rss ")).map(|v| v.parse().unwrap()).collect();
    assert_eq!(values.len(), 2, "{out}");
    assert!(
        values[1] < values[0] + 16 * 1024,
        "a backend grew from {} kB to {} kB over 30 rescans",
        values[0],
        values[1]
    );
    s.assert_no_crash();
}

#[test]
fn session_catalogs_go_when_no_session_uses_them() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    esp_e2e::mkimage("cnpg", "contrib:seg", &a.join("seg"));
    esp_e2e::mkimage("cnpg", "contrib:cube", &b.join("cube"));
    let s = Server::with_path(&format!("$system:{}", a.display()), &[]);
    let root = s.data.join("pg_stat_tmp/extension_search_path");
    let sessions = || {
        fs::read_dir(&root)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("session-"))
            .count()
    };
    let own_path = format!("SET extension_search_path.path = '$system:{}'; CREATE EXTENSION cube;", b.display());
    // one session that ends, one that lives on while the server reloads
    s.sql(&format!("BEGIN; {own_path} ROLLBACK;"));
    s.hold_until_go();
    let live = std::thread::scope(|scope| {
        let long =
            scope.spawn(|| s.sql(&format!("{own_path} {}; SELECT cube_dim('(1,2)'::cube)", Server::WAIT_FOR_GO)));
        s.wait_active("EXISTS (SELECT FROM esp_go)");
        assert_eq!(sessions(), 1, "both sessions use the same catalog");
        s.reload();
        assert_eq!(sessions(), 1, "a catalog in use is kept");
        s.go();
        long.join().unwrap()
    });
    assert_eq!(live.lines().last(), Some("2"), "the long session kept using its catalog");
    s.sql("SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sessions() != 0 {
        assert!(std::time::Instant::now() < deadline, "an unused session catalog was kept");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.assert_no_crash();
}

#[test]
fn a_reload_during_a_long_sync_is_not_lost() {
    let dir = tempdir();
    let (many, few) = (dir.path().join("many"), dir.path().join("few"));
    images(&many, 3000);
    fs::create_dir_all(&few).unwrap();
    run_chmod_readable(dir.path());
    let s = Server::with_path(&format!("$system:{}", many.display()), &[]);
    s.sql("CREATE EXTENSION extension_search_path");
    let count = "SELECT count(*) FROM pg_available_extensions WHERE name LIKE 'esp_img%'";
    assert_eq!(s.sql(count), "3000");
    let new_path = format!("$system:{}", few.display());
    std::thread::scope(|scope| {
        // a backend busy syncing the catalog for the old path while the path changes
        let long = scope.spawn(|| s.sql("SELECT count(*) > 0 FROM extension_search_path.rescan()"));
        s.wait_active("extension_search_path.rescan()");
        s.sql(&format!("ALTER SYSTEM SET extension_search_path.path = '{new_path}'"));
        s.reload_until("extension_search_path.path", &new_path);
        long.join().unwrap();
    });
    assert_eq!(s.sql(count), "0", "the catalog kept serving the old path after the reload");
    s.assert_no_crash();
}

/// The postmaster's private memory does not grow with the number of images: it keeps no index
/// (every connection forks it, and fork copies the page-table entries of all it has), and gives
/// back what its scans freed, at start and at reload.
#[test]
fn the_postmaster_keeps_no_index_of_thousands_of_images() {
    fn anonymous_kb(s: &Server) -> u64 {
        let rollup = fs::read_to_string(format!("/proc/{}/smaps_rollup", postmaster(s))).unwrap();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no Anonymous in {rollup}"))
    }
    // The extent of the postmaster's malloc heap, which every backend inherits: a scan done in
    // the postmaster left it megabytes long and fragmented (tens of page faults more for every
    // connection); scanned in a child process, it stays the size it has without us.
    fn heap_kb(s: &Server) -> u64 {
        let maps = fs::read_to_string(format!("/proc/{}/maps", postmaster(s))).unwrap();
        let line = maps.lines().find(|l| l.ends_with("[heap]")).unwrap_or_else(|| panic!("no [heap] in {maps}"));
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        (u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap()) / 1024
    }
    let dir = tempdir();
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let prefix = dir.path().join("extensions");
    images(&prefix, 3000);
    run_chmod_readable(dir.path());
    let plain = Server::with_path(&format!("$system:{}", empty.display()), &[]);
    let (baseline, baseline_heap) = (anonymous_kb(&plain), heap_kb(&plain));
    drop(plain);
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &[]);
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extensions WHERE name LIKE 'esp_img%'"), "3000");
    let at_start = anonymous_kb(&s);
    // (an index of 3,000 images, kept, was about 8 MB, and the scan's garbage as much again)
    assert!(
        at_start < baseline + 2048,
        "postmaster: {at_start} kB of private memory at 3,000 images, {baseline} kB with none"
    );
    let heap = heap_kb(&s);
    assert!(
        heap < baseline_heap + 512,
        "postmaster: a heap of {heap} kB at 3,000 images, {baseline_heap} kB with none"
    );
    sql_images(&prefix, ["esp_late".to_string()]);
    run_chmod_readable(&prefix);
    s.reload();
    s.wait_for("SELECT count(*) FROM pg_available_extensions WHERE name = 'esp_late'", |v| v == "1");
    let after_reload = anonymous_kb(&s);
    assert!(after_reload < baseline + 2048, "postmaster: {after_reload} kB after a reload, {baseline} kB with none");
    let heap = heap_kb(&s);
    assert!(heap < baseline_heap + 512, "postmaster: a heap of {heap} kB after a reload, {baseline_heap} kB with none");
    s.assert_no_crash();
}

/// The postmaster's scan runs in a child process whose messages the postmaster reports: in the
/// log they are the postmaster's own lines — its pid, and line numbers that go on without a
/// repeat (csvlog's `(session_id, session_line_num)` is a key), at start and at a reload.
#[test]
fn what_the_catalog_child_finds_is_logged_as_the_postmaster_s_own_lines() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, prefix) = readable_images(3);
    // a directory the server cannot read: a WARNING at start, and another at a reload
    let locked = |name: &str| {
        let locked = prefix.join(name);
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    };
    locked("esp_locked_a");
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &["log_line_prefix = '%p %l '"]);
    let pid = postmaster(&s);
    let check = |found: &str| {
        let log = s.log();
        let warning = log
            .lines()
            .find(|l| l.contains("WARNING") && l.contains(found))
            .unwrap_or_else(|| panic!("no WARNING naming {found}:\n{log}"));
        assert!(warning.starts_with(&format!("{pid} ")), "not the postmaster's line: {warning}\n{log}");
        let numbers: Vec<u64> = log
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{pid} ")))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "the postmaster's line numbers repeat: {numbers:?}\n{log}");
    };
    check("esp_locked_a");
    locked("esp_locked_b");
    s.reload();
    s.wait_for("SELECT 1", |_| s.log().contains("esp_locked_b"));
    check("esp_locked_b");
    assert_eq!(s.sql("SELECT count(*) FROM pg_available_extensions WHERE name LIKE 'esp_img%'"), "3");
    s.assert_no_crash();
}

/// A reload while a backend holds the catalog: the child finds it locked and says so at LOG,
/// which the postmaster reports as its own LOG line (sent as an ERROR it would end the server).
#[test]
fn a_reload_that_finds_the_catalog_locked_logs_it_and_the_server_stays_up() {
    let (_dir, prefix) = readable_images(2);
    let s = Server::with_path(&format!("$system:{}", prefix.display()), &["log_line_prefix = '%p '"]);
    let pid = postmaster(&s);
    // (as a backend syncing it would: the catalog's lock, held by this test)
    let lock = fs::File::open(s.data.join("pg_stat_tmp/extension_search_path/server/.lock")).unwrap();
    lock.lock().unwrap();
    sql_images(&prefix, ["esp_late".to_string()]);
    run_chmod_readable(&prefix);
    s.reload();
    s.wait_for("SELECT 1", |_| s.log().contains("the catalog is being updated by a backend"));
    let log = s.log();
    let line = log.lines().find(|l| l.contains("the catalog is being updated by a backend")).unwrap();
    assert!(line.starts_with(&format!("{pid} LOG:")), "{line}\n{log}");
    drop(lock);
    assert_eq!(s.sql("SELECT 1"), "1");
    assert_eq!(postmaster(&s), pid, "the postmaster is the same process");
    // the next statement that needs it syncs it
    s.sql("CREATE EXTENSION esp_late");
    s.assert_no_crash();
}
