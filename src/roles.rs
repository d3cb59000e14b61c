//! Who may see what: server paths appear in our messages only for roles PostgreSQL lets read
//! server files.

use pgrx::pg_sys;

/// Superusers and members of `pg_read_server_files` — the roles the SQL functions serve — and
/// the postmaster (its messages go to the server log).
pub fn may_see_paths() -> bool {
    // SAFETY: plain globals and catalog lookups on the main thread; in a backend the user is
    // set before any statement or hook runs.
    unsafe {
        if !pg_sys::IsUnderPostmaster {
            return true;
        }
        let user = pg_sys::GetUserId();
        pg_sys::superuser() || pg_sys::has_privs_of_role(user, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_SERVER_FILES))
    }
}
