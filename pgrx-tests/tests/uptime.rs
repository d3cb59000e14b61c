//! End to end: long uptimes. Reloads and rescans with thousands of images leave the postmaster's
//! and a backend's memory flat.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, run_chmod_readable, tempdir};

/// `n` pure-SQL images under `prefix`.
fn images(prefix: &Path, n: usize) {
    for i in 0..n {
        let dir = prefix.join(format!("esp_img{i}/share/extension"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("esp_img{i}.control")), "default_version = '1.0'\nrelocatable = true\n").unwrap();
        fs::write(dir.join(format!("esp_img{i}--1.0.sql")), "SELECT 1;\n").unwrap();
    }
    run_chmod_readable(prefix);
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
    let pid = fs::read_to_string(s.data.join("postmaster.pid")).unwrap().lines().next().unwrap().trim().to_string();
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
