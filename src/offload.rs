//! Work the postmaster hands to a short-lived child process of its own.
//!
//! Every connection forks the postmaster, and the new backend inherits its heap as it is. A
//! scan of thousands of images makes and frees hundreds of thousands of small allocations; done
//! in the postmaster, it leaves the main heap megabytes long and fragmented (some allocation of
//! PostgreSQL's or ours made meanwhile pins its top), and every backend's first allocations then
//! walk and split free chunks in inherited pages: tens of page faults more per connection, more
//! with more images. A child that does the scan and the catalog sync and exits takes all of that
//! with it; the postmaster keeps only the answer. The child writes the catalog, which is on disk,
//! and reports its problems to the server log itself: its messages are the postmaster's (it has
//! its settings, its log destination and its process id as `MyProcPid`).

use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;

/// Whether this process is the postmaster (not a standalone backend, which has no children to
/// spare this and whose caller wants the work's by-products in its own memory).
pub fn in_postmaster() -> bool {
    // SAFETY: plain globals PostgreSQL sets before loading any library, read on the main thread.
    unsafe { pg_sys::IsPostmasterEnvironment && !pg_sys::IsUnderPostmaster }
}

/// Runs `work` in a child process and returns its answer; `work` must only report below ERROR
/// and leave nothing in memory the postmaster needs afterwards. When no child can be made, the
/// postmaster does the work itself (as it would without this module). A child that does not
/// come back with an answer (it crashed, or raised an ERROR) is reported as a WARNING and taken
/// as `false`.
pub fn in_child(what: &str, work: impl FnOnce() -> bool) -> bool {
    // SAFETY: the postmaster is single-threaded, so the child is a consistent copy of it; the
    // child only runs `work` and leaves with _exit, never returning into PostgreSQL.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return work();
    }
    if pid == 0 {
        // SAFETY: a plain global of this (now single-threaded, forked) process. A backend's
        // client connection is its parent's: nothing of the child's may reach it.
        unsafe {
            if pg_sys::whereToSendOutput == pg_sys::CommandDest::DestRemote {
                pg_sys::whereToSendOutput = pg_sys::CommandDest::DestNone;
            }
        }
        // (nothing of the child's state outlives it: no unwind safety to keep)
        let work = std::panic::AssertUnwindSafe(work);
        let answer = PgTryBuilder::new(move || {
            let work = work;
            Some((work.0)())
        })
        .catch_others(|caught| {
            // what stopped it, in the server log, where the postmaster would have said it
            let (CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. }) = caught;
            let mut report = ErrorReport::new(r.sql_error_code(), r.message().to_string(), "in_child");
            if let Some(detail) = r.detail() {
                report = report.set_detail(detail.to_string());
            }
            if let Some(hint) = r.hint() {
                report = report.set_hint(hint.to_string());
            }
            crate::messages::emit(PgLogLevel::WARNING, report);
            None
        })
        .execute();
        let code = match answer {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        };
        // SAFETY: ends the child at once: no exit handler of the postmaster's may run here (they
        // would act on its shared memory, sockets and files as if the postmaster were exiting).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; the status is an out parameter on our stack.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            break;
        }
        if reaped < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return failed(what, &format!("waitpid failed: {}", std::io::Error::last_os_error()));
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => return true,
            1 => return false,
            2 => return failed(what, "it raised an error"),
            code => return failed(what, &format!("its process exited with code {code}")),
        }
    }
    if libc::WIFSIGNALED(status) {
        return failed(what, &format!("its process was terminated by signal {}", libc::WTERMSIG(status)));
    }
    failed(what, "its process ended abnormally")
}

fn failed(what: &str, why: &str) -> bool {
    let message = format!("extension_search_path: {what} did not complete: {why}");
    let report = ErrorReport::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, "in_child")
        .set_detail("CREATE EXTENSION and LOAD use the catalog as it was.")
        .set_hint("Backends update the catalog before CREATE EXTENSION, ALTER EXTENSION and LOAD; rescan() does it on demand.");
    crate::messages::emit(PgLogLevel::WARNING, report);
    false
}
