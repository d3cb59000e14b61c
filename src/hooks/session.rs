//! ClientAuthentication_hook: a new session moves to the server catalog's newest generation.
//!
//! Backends inherit the postmaster's generation at fork; a backend's own sync after a change
//! under a prefix (without a reload) makes a newer one. A session that starts afterwards uses
//! the newer one from its first statement — `pg_available_extensions` runs through none of our
//! other hooks. Cost when nothing changed: one readlink per connection.

use std::ffi::c_void;

use pgrx::prelude::*;

/// `ClientAuthentication_hook_type` of `libpq/auth.h` (not in pgrx's bindings): the `Port` is
/// only passed on, so it stays opaque here.
type ClientAuthenticationHook = Option<unsafe extern "C-unwind" fn(port: *mut c_void, status: i32)>;

unsafe extern "C" {
    /// PostgreSQL's `ClientAuthentication_hook` (PGDLLIMPORT in `libpq/auth.h`).
    static mut ClientAuthentication_hook: ClientAuthenticationHook;
}

static mut PREV_CLIENT_AUTHENTICATION: ClientAuthenticationHook = None;

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded; the declaration above
    // matches auth.h.
    unsafe {
        PREV_CLIENT_AUTHENTICATION = ClientAuthentication_hook;
        ClientAuthentication_hook = Some(client_authentication);
    }
}

/// The hook itself: no `#[pg_guard]`, nothing with a destructor in this frame (see [`super`]).
/// The previous hook runs first: a connection it refuses never reaches our part.
unsafe extern "C-unwind" fn client_authentication(port: *mut c_void, status: i32) {
    // SAFETY: PREV_CLIENT_AUTHENTICATION is written once, in init; the arguments are the ones
    // PostgreSQL gave us. An ERROR below siglongjmps over this frame, which owns nothing to drop
    // and is in no catch_unwind.
    unsafe {
        if let Some(previous) = PREV_CLIENT_AUTHENTICATION {
            previous(port, status);
        }
    }
    // (nothing changed: nothing else of ours runs in this connection's start)
    if crate::generations::follows_newest() {
        return;
    }
    // SAFETY: `follow_newest` is guarded: it returns, or raises an ERROR through PostgreSQL.
    unsafe { follow_newest() };
}

#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn follow_newest() {
    crate::generations::adopt_server_generation();
}
