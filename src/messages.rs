//! Our own messages below ERROR (WARNINGs, server-log lines).
//!
//! PostgreSQL's `errfinish` services pending interrupts after a message below ERROR: a query
//! cancel or statement timeout arriving then would raise an ERROR that jumps straight over the
//! Rust frames that emitted the message, skipping their destructors. So interrupts are held
//! while we emit; PostgreSQL services them at its next check, right after our hook returns.

use std::sync::Mutex;

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
    Message::new(level, code, format!("extension_search_path: {problem}"), function)
        .hint(problem.kind.hint().to_string())
        .emit();
}

/// A message of ours below ERROR, kept as its parts so that it can also be carried to another
/// process and reported there (see `crate::offload`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub level: PgLogLevel,
    pub code: PgSqlErrorCode,
    pub text: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub function: &'static str,
}

/// Where a child process sends its messages instead of reporting them (see `crate::offload`):
/// each one as it is emitted, so that a child killed half-way has sent what it found so far.
static OUTBOX: Mutex<Option<Outbox>> = Mutex::new(None);

type Outbox = Box<dyn FnMut(&Message) + Send>;

impl Message {
    pub fn new(level: PgLogLevel, code: PgSqlErrorCode, text: String, function: &'static str) -> Self {
        Message { level, code, text, detail: None, hint: None, function }
    }

    pub fn detail(self, detail: String) -> Self {
        Message { detail: Some(detail), ..self }
    }

    pub fn hint(self, hint: String) -> Self {
        Message { hint: Some(hint), ..self }
    }

    /// Reports it (with interrupts held, see [`emit`]), or sends it to the outbox while there
    /// is one. Never at ERROR or above: it would jump out of the caller (in the postmaster, end
    /// the server); such a level is reported as a WARNING.
    pub fn emit(self) {
        if let Some(outbox) = OUTBOX.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            outbox(&self);
            return;
        }
        let level = if self.level >= PgLogLevel::ERROR { PgLogLevel::WARNING } else { self.level };
        let mut report = ErrorReport::new(self.code, self.text, self.function);
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        emit(level, report);
    }
}

/// From now on, this process's messages go to `outbox` (see [`Message::emit`]).
pub fn send_to(outbox: impl FnMut(&Message) + Send + 'static) {
    *OUTBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(outbox));
}
