//! The hooks, one file per family, installed together by [`init`]: `core_settings.rs` (check
//! hooks on `extension_control_path` and `dynamic_library_path`), `utility.rs`
//! (ProcessUtility), `fmgr.rs` (needs_fmgr_hook), `session.rs` (ClientAuthentication_hook), and `statements.rs` (post_parse_analyze_hook, only
//! for declared session preloads).
//!
//! Every hook follows one shape, so that PostgreSQL's own errors pass through us untouched:
//!
//! * the function PostgreSQL calls is a plain `extern "C-unwind"` function **without**
//!   `#[pg_guard]`, whose frame holds nothing but raw pointers and plain values;
//! * our own work runs in a separate `#[pg_guard]` function called from it, where a Rust panic
//!   or an error of ours becomes a PostgreSQL ERROR before control returns;
//! * the previous hook (or PostgreSQL's standard implementation) is then called directly from the
//!   outer frame — not through `pg_guard_ffi_boundary`, which would catch an ERROR raised below,
//!   copy a few of its fields into a Rust panic and raise a new ERROR from those, losing the
//!   cursor position, the CONTEXT lines, the internal query and the schema, table, column,
//!   datatype and constraint names (and adding a Rust backtrace when `RUST_BACKTRACE` is set).
//!
//! An ERROR raised below then `siglongjmp`s straight over the outer frame to PostgreSQL's own
//! handler with its `ErrorData` intact, exactly as it would without us. That is sound because
//! the outer frame is a "plain old frame" (RFC 2945): nothing in it has a destructor that the
//! jump could skip, and it is inside no `catch_unwind`.

mod core_settings;
mod fmgr;
mod session;
mod statements;
mod utility;

pub fn init() {
    core_settings::init();
    utility::init();
    fmgr::init();
    session::init();
}

/// Declared `session` modules are to be loaded: the hook that loads them before each session's
/// first statement (post_parse_analyze_hook), installed only then.
pub fn init_session_modules() {
    statements::init();
}
