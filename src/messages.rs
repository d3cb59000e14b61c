//! Our own messages below ERROR (WARNINGs, server-log lines).
//!
//! PostgreSQL's `errfinish` services pending interrupts after a message below ERROR: a query
//! cancel or statement timeout arriving then would raise an ERROR that jumps straight over the
//! Rust frames that emitted the message, skipping their destructors. So interrupts are held
//! while we emit; PostgreSQL services them at its next check, right after our hook returns.

use esp_resolver::Problem;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Emits `report` at `level` (below ERROR) with interrupts held.
pub fn emit(level: PgLogLevel, report: ErrorReport) {
    debug_assert!(level < PgLogLevel::ERROR);
    // SAFETY: InterruptHoldoffCount is a plain global of the main thread (HOLD_INTERRUPTS /
    // RESUME_INTERRUPTS); a message below ERROR returns, so the count is always restored.
    unsafe { pg_sys::InterruptHoldoffCount += 1 };
    report.report(level);
    // SAFETY: as above.
    unsafe { pg_sys::InterruptHoldoffCount -= 1 };
}

/// A problem met along the path, at `level`, with its SQLSTATE and hint (see `crate::errors`).
pub fn problem(level: PgLogLevel, problem: &Problem, function: &'static str) {
    let code = crate::errors::for_problem(&problem.kind);
    let report = ErrorReport::new(code, format!("extension_search_path: {problem}"), function);
    emit(level, report.set_hint(problem.kind.hint()));
}
