//! Golden outputs: what the SQL functions print and the errors this extension raises, with
//! `\set VERBOSITY verbose` (SQLSTATEs and DETAILs included), on a fixed fixture tree, compared
//! with `pgrx-tests/golden/<name>.out`. A change of wording, SQLSTATE or columns fails here until
//! the expected file is updated on purpose: `ESP_GOLDEN_UPDATE=1 cargo test -p esp_e2e --test
//! golden` rewrites it (review the diff before committing).
//!
//! Paths that differ from run to run are replaced: the fixture root by `<tmp>`, the data
//! directory by `<pgdata>`, catalog generations by `gen-<n>`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use esp_e2e::{Server, c_fixtures, mkimage, repo, run_chmod_readable, tempdir};

fn normalize(out: &str, replacements: &[(&Path, &str)]) -> String {
    let mut text = out.to_string();
    for (path, placeholder) in replacements {
        text = text.replace(&path.display().to_string(), placeholder);
    }
    let mut normalized = String::new();
    for line in text.lines() {
        // our own errors' LOCATION names a Rust file and line, which any edit moves
        let located;
        let line = match line.strip_prefix("LOCATION:  ").and_then(|l| l.rsplit_once(".rs:")) {
            Some((file, _)) => {
                located = format!("LOCATION:  {file}.rs");
                located.as_str()
            }
            None => line,
        };
        // the system loader's directories in a DETAIL differ between machines
        let searched;
        let line = match line.split_once("Directories searched: ") {
            Some((head, list)) => {
                let mut dirs: Vec<&str> = Vec::new();
                for dir in list.trim_end_matches('.').split(", ") {
                    let dir = if dir.starts_with('<') { dir } else { "<system>" };
                    if dirs.last() != Some(&dir) {
                        dirs.push(dir);
                    }
                }
                searched = format!("{head}Directories searched: {}.", dirs.join(", "));
                searched.as_str()
            }
            None => line,
        };
        let mut rest = line;
        let mut out = String::new();
        while let Some(at) = rest.find("gen-") {
            out.push_str(&rest[..at + 4]);
            let digits = rest[at + 4..].chars().take_while(char::is_ascii_digit).count();
            out.push_str(if digits > 0 { "<n>" } else { "" });
            rest = &rest[at + 4 + digits..];
        }
        out.push_str(rest);
        normalized.push_str(out.trim_end());
        normalized.push('\n');
    }
    normalized
}

/// Compares `actual` with the expected file `name`; rewrites it under ESP_GOLDEN_UPDATE=1.
fn compare(name: &str, actual: &str) {
    let expected_file = repo().join("pgrx-tests/golden").join(format!("{name}.out"));
    if std::env::var_os("ESP_GOLDEN_UPDATE").is_some() {
        fs::create_dir_all(expected_file.parent().unwrap()).unwrap();
        fs::write(&expected_file, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&expected_file).unwrap_or_default();
    if expected == actual {
        return;
    }
    let new_file: PathBuf = repo().join("target").join(format!("{name}.out.new"));
    fs::create_dir_all(new_file.parent().unwrap()).unwrap();
    fs::write(&new_file, actual).unwrap();
    let diff = Command::new("diff").arg("-u").arg(&expected_file).arg(&new_file).output().unwrap();
    panic!(
        "{name}: output differs from {} (actual in {}; ESP_GOLDEN_UPDATE=1 accepts it):\n{}",
        expected_file.display(),
        new_file.display(),
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn sql_functions_and_our_errors_print_exactly_the_expected_text() {
    let dir = tempdir();
    let root = dir.path();
    let ext = root.join("ext");
    mkimage("cnpg", "contrib:seg", &ext.join("seg"));
    mkimage("rfc", "contrib:cube", &ext.join("cube"));
    mkimage("rfc", "contrib:cube", &root.join("later/cube"));
    // an untrusted control file and one PostgreSQL would refuse
    fs::create_dir_all(ext.join("loose/sql")).unwrap();
    fs::write(ext.join("loose/loose.control"), "default_version = '1.0'\n").unwrap();
    fs::write(ext.join("loose/sql/loose--1.0.sql"), "SELECT 1;\n").unwrap();
    fs::create_dir_all(ext.join("odd/sql")).unwrap();
    fs::write(ext.join("odd/odd.control"), "default_version = '1.0'\ncolour = 'blue'\n").unwrap();
    fs::write(ext.join("odd/sql/odd--1.0.sql"), "SELECT 1;\n").unwrap();
    // a library anyone may write, a file in lib/ that is no shared object, a directory the
    // server cannot read
    mkimage("cnpg", "contrib:isn", &ext.join("isn"));
    fs::create_dir_all(ext.join("junk/lib")).unwrap();
    fs::write(ext.join("junk/lib/junk.so"), "not a library\n").unwrap();
    fs::create_dir_all(ext.join("locked")).unwrap();
    run_chmod_readable(root);
    fs::set_permissions(ext.join("loose/loose.control"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(ext.join("isn/lib/isn.so"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(ext.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let c = PathBuf::from(c_fixtures().prefix("c"));
    let s =
        Server::with_path(&format!("$system:{}:{}:{}", ext.display(), c.display(), root.join("later").display()), &[]);
    s.sql("CREATE ROLE plain LOGIN");
    let script = "\\set VERBOSITY verbose\n\
        \\pset null '<null>'\n\
        \\pset format unaligned\n\
        \\pset fieldsep ' | '\n\
        CREATE EXTENSION extension_search_path;\n\
        SELECT name, winner, layout, directory, control_file, script_directory, module_directory, modules, default_version, versions, shadows \
          FROM extension_search_path.extensions() WHERE layout <> 'system' ORDER BY name, winner DESC, directory;\n\
        SELECT name, winner, layout, directory, default_version, shadows FROM extension_search_path.resolve('cube');\n\
        SELECT name, path, prefix, layout, extensions, libraries, metadata, metadata_file, metadata_error \
          FROM extension_search_path.images() ORDER BY name, path;\n\
        SELECT file, image, kind, winner, soname, pg_major, needed, resolved, missing, error \
          FROM extension_search_path.libraries() ORDER BY regexp_replace(file, '^.*/', ''), file ~ '/later/';\n\
        SELECT setting, position, element, directory, origin, exists FROM extension_search_path.settings() ORDER BY setting, position;\n\
        SELECT severity, image, extension, message, hint FROM extension_search_path.check() ORDER BY severity, extension, regexp_replace(message, '/tmp/esp-e2e-[^/]+', '', 'g');\n\
        SELECT extensions, libraries, problems FROM extension_search_path.rescan();\n\
        SET extension_search_path.path = 'relative:$system/x:/does/not/exist';\n\
        SET extension_search_path.pth = '/x';\n\
        SELECT * FROM extension_search_path.resolve('../etc');\n\
        CREATE EXTENSION esp_ghost;\n\
        CREATE EXTENSION loose;\n\
        CREATE EXTENSION odd;\n\
        LOAD '<ext>/isn/lib/isn.so';\n\
        LOAD '<ext>/junk/lib/junk.so';\n\
        SET extension_search_path.path = '<ext>::';\n\
        RESET extension_search_path.path;\n\
        SET ROLE plain;\n\
        SELECT * FROM extension_search_path.resolve('seg');\n\
        SET extension_search_path.path = '/tmp';\n\
        SHOW extension_search_path.path;\n\
        RESET ROLE;\n";
    let script = script.replace("<ext>", &ext.display().to_string());
    let out = s.psql_script(&script);
    let actual = normalize(&out, &[(&s.data, "<pgdata>"), (root, "<tmp>"), (&c, "<c>")]);
    compare("sql_functions", &actual);
    s.assert_no_crash();
}

/// The error of ours a server that does not preload the extension gives when it is loaded (CREATE
/// EXTENSION gives the same, with the generated script as CONTEXT).
#[test]
fn loading_without_preload_prints_exactly_the_expected_error() {
    let mut s = Server::new(&[]);
    s.start();
    let script = "\\set VERBOSITY verbose\n\
        LOAD 'extension_search_path';\n\
        LOAD '$libdir/extension_search_path';\n\
        SELECT 'the session goes on' AS after;\n";
    let out = s.psql_script(script);
    compare("not_preloaded", &normalize(&out, &[(&s.data, "<pgdata>")]));
    s.assert_no_crash();
}
