//! End to end: preloaded, the extension is invisible to everything outside its job. The same
//! psql script (verbose errors, context always shown) prints byte for byte the same on a stock
//! server and on one that preloads extension_search_path with `RUST_BACKTRACE=1` in its
//! environment: errors and notices raised while our hooks are on the stack keep every field.
//! PostgreSQL's own regression suites (scripts/suites, tier 4 of scripts/test) check the rest.

use std::fs;
use std::path::Path;

use esp_e2e::{Server, run_chmod_readable, tempdir};

/// An image holding `esp_bad` (its install script fails on line 3, after a WARNING) and `esp_ok`
/// (its install script raises a WARNING from a DO block and succeeds).
fn image(dir: &Path) {
    let ext = dir.join("share/extension");
    fs::create_dir_all(&ext).unwrap();
    for name in ["esp_bad", "esp_ok"] {
        fs::write(ext.join(format!("{name}.control")), "default_version = '1.0'\nrelocatable = true\n").unwrap();
    }
    fs::write(
        ext.join("esp_bad--1.0.sql"),
        "CREATE TABLE esp_bad_t(a int CONSTRAINT esp_bad_pk PRIMARY KEY);\n\
         DO $$ BEGIN RAISE WARNING 'about to fail'; END $$;\n\
         INSERT INTO esp_bad_t VALUES (1), (1);\n",
    )
    .unwrap();
    fs::write(
        ext.join("esp_ok--1.0.sql"),
        "DO $$ BEGIN RAISE WARNING 'installing esp_ok'; END $$;\nCREATE FUNCTION esp_ok() RETURNS int LANGUAGE sql AS 'SELECT 1';\n",
    )
    .unwrap();
    run_chmod_readable(dir);
}

const SCRIPT: &str = r#"\set VERBOSITY verbose
\set SHOW_CONTEXT always
CREATE TABLE u(a int CONSTRAINT u_pk PRIMARY KEY);
INSERT INTO u VALUES (1);
CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO u VALUES (1); END $$;
CALL p();
CREATE TYPE xx (input = xin, like = no_such_type);
CREATE TABLE v(a int REFERENCES no_such_table);
CREATE TABLE t2(a no_such_type);
ALTER TABLE u ADD CONSTRAINT u_big CHECK (a > 5);
CREATE DOMAIN pos AS int CONSTRAINT pos_check CHECK (VALUE > 0);
CREATE TABLE w(a pos);
DO $$ BEGIN INSERT INTO w VALUES (-1); END $$;
DO $$ BEGIN RAISE NOTICE 'a notice from a DO block'; END $$;
DO $$
BEGIN
  EXECUTE 'CREATE TABLE u(a int)';
EXCEPTION WHEN duplicate_table THEN
  RAISE NOTICE 'caught % (%)', SQLERRM, SQLSTATE;
END $$;
DO $$
DECLARE ctx text; tbl text; con text;
BEGIN
  EXECUTE 'ALTER TABLE u ADD CONSTRAINT u_pk2 UNIQUE (a); INSERT INTO u VALUES (1)';
EXCEPTION WHEN unique_violation THEN
  GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT, tbl = TABLE_NAME, con = CONSTRAINT_NAME;
  RAISE NOTICE 'table %, constraint %, context: %', tbl, con, ctx;
END $$;
CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS $$ SELECT 1/$1 $$;
CREATE VIEW vv AS SELECT f(0);
SELECT * FROM vv;
CREATE EXTENSION esp_bad;
CREATE EXTENSION esp_ok;
SELECT esp_ok();
CREATE EXTENSION no_such_extension;
LOAD 'no_such_library';
LOAD '$libdir/no_such_library';
CREATE FUNCTION nolib() RETURNS int AS 'no_such_library', 'f' LANGUAGE C;
CREATE FUNCTION nolib() RETURNS int AS '$libdir/no_such_library', 'f' LANGUAGE C;
CREATE FUNCTION "C"() RETURNS int AS 'no_such_library', 'f' LANGUAGE "C";
CREATE FUNCTION ld() RETURNS int LANGUAGE plpgsql PARALLEL SAFE AS $$ BEGIN LOAD 'no_such_library'; RETURN 1; END $$;
SET extension_search_path.path = '$system';
SET debug_parallel_query = on;
SELECT ld();
RESET debug_parallel_query;
RESET extension_search_path.path;
SET check_function_bodies = off;
CREATE FUNCTION nolib() RETURNS int AS '$libdir/no_such_library', 'f' LANGUAGE C;
SELECT nolib();
"#;

#[test]
fn errors_and_notices_reach_the_client_exactly_as_without_the_extension() {
    let dir = tempdir();
    let img = dir.path().join("extensions/esp_fields");
    image(&img);
    // Stock PostgreSQL finds the image through its own setting; we find it under a prefix.
    let mut stock = Server::new(&[&format!("extension_control_path = '$system:{}'", img.join("share").display())]);
    stock.start();
    let mut ours = Server::new(&[
        "shared_preload_libraries = 'extension_search_path'",
        &format!("extension_search_path.path = '$system:{}'", dir.path().join("extensions").display()),
    ]);
    ours.set_env("RUST_BACKTRACE", "1");
    ours.start();

    let expected = stock.psql_script(SCRIPT);
    let got = ours.psql_script(SCRIPT);
    // The stock output really holds the fields this test is about.
    for field in [
        "LINE 1: CREATE TABLE t2(a no_such_type);",
        "SCHEMA NAME:  public",
        "TABLE NAME:  u",
        "CONSTRAINT NAME:  u_pk",
        "DATATYPE NAME:  pos",
        "CONTEXT:  SQL statement \"INSERT INTO u VALUES (1)\"",
        "extension script file \"esp_bad--1.0.sql\", near line 3",
        "WARNING:  01000: about to fail",
        "WARNING:  01000: installing esp_ok",
        "could not access file \"no_such_library\": No such file or directory",
        "could not access file \"$libdir/no_such_library\": No such file or directory",
        "LOCATION:  ",
        "language \"C\" does not exist",
        "cannot execute LOAD during a parallel operation",
    ] {
        assert!(expected.contains(field), "stock output lacks {field:?}:\n{expected}");
    }
    for rust in ["pgrx_pg_sys::", "std::panicking", "rust_begin_unwind", "stack backtrace"] {
        assert!(!got.contains(rust), "a Rust backtrace reached the client:\n{got}");
    }
    if got != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| format!("line {}:\n  stock: {a}\n  ours:  {b}", i + 1))
            .collect();
        panic!(
            "output differs from stock PostgreSQL ({} vs {} lines):\n{}\n--- ours ---\n{got}",
            expected.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
    ours.assert_no_crash();
}
