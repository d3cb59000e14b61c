//! #[pg_test]s: run inside a server with the extension preloaded.
