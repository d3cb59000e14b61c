-- Paths are sensitive: the functions are for superusers and members of pg_read_server_files.
REVOKE ALL ON FUNCTION @extschema@.resolve(text), @extschema@.extensions(), @extschema@.rescan() FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO pg_read_server_files;
GRANT EXECUTE ON FUNCTION @extschema@.resolve(text), @extschema@.extensions() TO pg_read_server_files;
-- rescan() writes the server's catalog: superusers only.
