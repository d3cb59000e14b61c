-- Paths are sensitive: the functions are for superusers and members of pg_read_server_files.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO pg_read_server_files;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA @extschema@ TO pg_read_server_files;
-- rescan() writes the server's catalog: superusers only.
REVOKE EXECUTE ON FUNCTION @extschema@.rescan() FROM pg_read_server_files;
