//! Work the postmaster hands to a short-lived child process of its own.
//!
//! Every connection forks the postmaster, and the new backend inherits its heap as it is. A
//! scan of thousands of images makes and frees hundreds of thousands of small allocations; done
//! in the postmaster, it leaves the main heap megabytes long and fragmented (some allocation of
//! PostgreSQL's or ours made meanwhile pins its top), and every backend's first allocations then
//! walk and split free chunks in inherited pages: tens of page faults more per connection, more
//! with more images. A child that does the scan and the catalog sync and exits takes all of that
//! with it; the postmaster keeps only the answer.
//!
//! The child is made as PostgreSQL makes its own (`fork_process`: signals blocked across the
//! fork, its own `MyProcPid`, the OOM score adjustment of `PG_OOM_ADJUST_FILE`), then lets go of
//! what is the postmaster's: its exit callbacks, its death-watch pipe and listen sockets (at a
//! reload), its shared memory; it dies with the postmaster (`PR_SET_PDEATHSIG`) and a plain
//! `kill` ends it. It reports nothing itself: its messages come back through a pipe with its
//! answer and the postmaster reports them, so they are the postmaster's lines in the log (its
//! pid, its line numbers, its `emit_log_hook`). The postmaster waits for it as it waited for its
//! own scan before: a scan that hangs (a stalled network mount under a prefix) holds the
//! postmaster as long either way, but can now be ended by killing the child.

use std::ffi::c_int;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::messages::Message;

unsafe extern "C" {
    /// `fork_process` (postmaster/fork_process.h): PostgreSQL's own fork of the postmaster.
    fn fork_process() -> libc::pid_t;
    /// `PGSharedMemoryDetach` (storage/pg_shmem.h).
    fn PGSharedMemoryDetach();
    /// `UnBlockSig` (libpq/pqsignal.h).
    static UnBlockSig: libc::sigset_t;
}

/// At most this much of a child's messages is read into the postmaster's memory.
const MAX_MESSAGES_BYTES: u64 = 16 << 20;

/// `POSTMASTER_FD_OWN` of storage/pmsignal.h: the postmaster's end of the death-watch pipe.
const POSTMASTER_FD_OWN: usize = 1;

/// Whether this process is the postmaster (not a standalone backend, which has no children to
/// spare this and whose caller wants the work's by-products in its own memory).
pub fn in_postmaster() -> bool {
    // SAFETY: plain globals PostgreSQL sets before loading any library, read on the main thread.
    unsafe { pg_sys::IsPostmasterEnvironment && !pg_sys::IsUnderPostmaster }
}

/// Runs `work` in a child process and returns its answer, after reporting the messages it
/// emitted (see [`Message::emit`]); `work` must leave nothing in memory the postmaster needs
/// afterwards. When no child can be made, the postmaster does the work itself (as it did
/// before this module). A child that does not come back with an answer (killed, or an ERROR or
/// a panic in `work`) is reported as a WARNING and taken as `false`.
pub fn in_child(what: &str, work: impl FnOnce() -> bool) -> bool {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 fills the two descriptors of the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return in_this_process(what, work, "pipe", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made by pipe2 and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the postmaster is single-threaded, so the child is a consistent copy of it; the
    // child runs `work` and leaves with _exit, never returning into PostgreSQL.
    let parent = unsafe { libc::getpid() };
    // SAFETY: as above.
    let pid = unsafe { fork_process() };
    if pid < 0 {
        // (the error taken before closing the pipe, which could change errno)
        let error = std::io::Error::last_os_error();
        drop((reader, writer));
        return in_this_process(what, work, "fork", error);
    }
    if pid == 0 {
        drop(reader);
        // SAFETY: the child of `parent`, before anything else runs in it.
        unsafe { become_a_helper(parent) };
        let pipe = std::sync::Arc::new(std::sync::Mutex::new(std::fs::File::from(writer)));
        let out = pipe.clone();
        crate::messages::send_to(move |message| {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = std::io::Write::write_all(&mut *out, &encode(std::slice::from_ref(message), None));
        });
        let answer = answer_of(work);
        let mut out = pipe.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::io::Write::write_all(&mut *out, &encode(&[], answer));
        // SAFETY: ends the child at once: nothing of the postmaster's may run here on exit.
        unsafe { libc::_exit(0) };
    }
    drop(writer);
    // (until the child exits: it writes each message as it goes, then its answer; what passes
    // the cap is read and dropped, so the postmaster's heap never holds an unbounded stream)
    let mut bytes = Vec::new();
    let mut reader = std::fs::File::from(reader);
    let _ = (&mut reader).take(MAX_MESSAGES_BYTES).read_to_end(&mut bytes);
    let dropped = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_or(0);
    let status = reap(pid);
    let (messages, answer) = decode(&bytes);
    drop(bytes);
    for message in messages {
        message.emit();
    }
    if dropped > 0 {
        let text = format!("extension_search_path: {dropped} bytes of messages of {what} were not reported");
        Message::new(PgLogLevel::WARNING, PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, text, "in_child").emit();
    }
    match (answer, status) {
        (Some(answer), _) => answer,
        (None, Err(why)) => failed(what, &why),
        (None, Ok(())) => failed(what, "it raised an error"),
    }
}

/// No child could be made (no file descriptor or process left: said in the log): the work is
/// done here, as it was before this module, still never raising an ERROR.
fn in_this_process(what: &str, work: impl FnOnce() -> bool, call: &str, error: std::io::Error) -> bool {
    let text = format!("extension_search_path: {what} runs in the postmaster: {call} failed: {error}");
    Message::new(PgLogLevel::LOG, crate::errors::for_io(&error), text, "in_child").emit();
    answer_of(work).unwrap_or_else(|| failed(what, "it raised an error"))
}

/// In the child: lets go of the postmaster's exit callbacks, its death-watch pipe and listen
/// sockets, its shared memory and its signal handlers, as PostgreSQL's own children do first.
///
/// # Safety
/// Only in the child of `parent`, just after the fork, single-threaded.
unsafe fn become_a_helper(parent: libc::pid_t) {
    // SAFETY: all plain calls on this process's own state (see the function's contract).
    unsafe {
        pg_sys::on_exit_reset();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // (at server start there is no pipe yet, and closing would be a FATAL)
        if pg_sys::postmaster_alive_fds[POSTMASTER_FD_OWN] >= 0 {
            pg_sys::ClosePostmasterPorts(false);
        }
        PGSharedMemoryDetach();
        for signal in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGCHLD,
            libc::SIGALRM,
        ] {
            libc::signal(signal, libc::SIG_DFL);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &raw const UnBlockSig, std::ptr::null_mut());
        // (in a backend, as in the tests) its client connection is the parent's: nothing of
        // the child's may reach it.
        if pg_sys::whereToSendOutput == pg_sys::CommandDest::DestRemote {
            pg_sys::whereToSendOutput = pg_sys::CommandDest::DestNone;
        }
    }
}

/// `work`'s answer; `None` when it raised an ERROR or panicked (what stopped it is kept as a
/// WARNING among the messages).
fn answer_of(work: impl FnOnce() -> bool) -> Option<bool> {
    // (nothing of the child's state outlives it: no unwind safety to keep)
    let work = std::panic::AssertUnwindSafe(work);
    let caught = std::panic::catch_unwind(|| {
        PgTryBuilder::new(move || {
            let work = work;
            Some((work.0)())
        })
        .catch_others(|caught| {
            let (CaughtError::PostgresError(r)
            | CaughtError::ErrorReport(r)
            | CaughtError::RustPanic { ereport: r, .. }) = caught;
            let mut message = Message::new(PgLogLevel::WARNING, r.sql_error_code(), r.message().into(), "in_child");
            message.detail = r.detail().map(str::to_string);
            message.hint = r.hint().map(str::to_string);
            message.emit();
            None
        })
        .execute()
    });
    caught.ok().flatten()
}

/// Waits for the child `pid` (never leaves it to PostgreSQL's reaping, which would take an
/// unknown child's abnormal exit for a crash of a backend).
fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; the status is an out parameter on our stack.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("waitpid failed: {error}"));
        }
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!("its process was terminated by signal {}", libc::WTERMSIG(status)));
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        code => Err(format!("its process exited with code {code}")),
    }
}

fn failed(what: &str, why: &str) -> bool {
    let message = format!("extension_search_path: {what} did not complete: {why}");
    Message::new(PgLogLevel::WARNING, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message, "in_child")
        .detail("CREATE EXTENSION and LOAD use the catalog as it was.".into())
        .hint("Backends update the catalog before CREATE EXTENSION, ALTER EXTENSION and LOAD; rescan() does it on demand.".into())
        .emit();
    false
}

// What the child writes: each message (a tag byte 1, level, SQLSTATE, text, detail, hint,
// function), then the answer (a tag byte 2 and 0 or 1). Strings are a length (u32, or u32::MAX
// for none) and their bytes.

/// The functions our messages name (a message names one of these, as its `&'static str`).
const FUNCTIONS: [&str; 3] = ["refresh", "in_child", "make_loadable"];

/// The levels a message below ERROR may have, by their place here (never ERROR or above: in the
/// postmaster that would end the server). An unknown one is a WARNING.
const LEVELS: [PgLogLevel; 10] = [
    PgLogLevel::WARNING,
    PgLogLevel::LOG,
    PgLogLevel::LOG_SERVER_ONLY,
    PgLogLevel::NOTICE,
    PgLogLevel::INFO,
    PgLogLevel::DEBUG1,
    PgLogLevel::DEBUG2,
    PgLogLevel::DEBUG3,
    PgLogLevel::DEBUG4,
    PgLogLevel::DEBUG5,
];

fn encode(messages: &[Message], answer: Option<bool>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            None => out.extend(u32::MAX.to_le_bytes()),
        }
    }
    let mut out = Vec::new();
    for m in messages {
        out.push(1);
        let level = LEVELS.iter().position(|l| *l == m.level).unwrap_or(0);
        out.extend((level as i32).to_le_bytes());
        out.extend((m.code as i32).to_le_bytes());
        string(&mut out, Some(&m.text));
        string(&mut out, m.detail.as_deref());
        string(&mut out, m.hint.as_deref());
        string(&mut out, Some(m.function));
    }
    if let Some(answer) = answer {
        out.extend([2, u8::from(answer)]);
    }
    out
}

fn decode(mut bytes: &[u8]) -> (Vec<Message>, Option<bool>) {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn int(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    fn string(bytes: &mut &[u8]) -> Option<Option<String>> {
        let length = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
        if length == u32::MAX {
            return Some(None);
        }
        Some(Some(String::from_utf8_lossy(take(bytes, length as usize)?).into_owned()))
    }
    let mut messages = Vec::new();
    loop {
        match take(&mut bytes, 1) {
            Some([1]) => {
                let mut one = || -> Option<Message> {
                    let level = usize::try_from(int(&mut bytes)?).ok().and_then(|l| LEVELS.get(l).copied());
                    let level = level.unwrap_or(PgLogLevel::WARNING);
                    let code = PgSqlErrorCode::from(int(&mut bytes)?);
                    let (text, detail, hint) = (string(&mut bytes)??, string(&mut bytes)?, string(&mut bytes)?);
                    let function = string(&mut bytes)??;
                    let function = FUNCTIONS.into_iter().find(|f| *f == function).unwrap_or("in_child");
                    Some(Message { level, code, text, detail, hint, function })
                };
                match one() {
                    Some(message) => messages.push(message),
                    None => return (messages, None),
                }
            }
            Some([2]) => return (messages, take(&mut bytes, 1).map(|b| b[0] == 1)),
            _ => return (messages, None),
        }
    }
}

/// Test builds: what a child's pipe carries, and what the postmaster makes of it.
#[cfg(any(test, feature = "pg_test"))]
pub fn encoded(messages: &[Message], answer: Option<bool>) -> Vec<u8> {
    encode(messages, answer)
}

#[cfg(any(test, feature = "pg_test"))]
pub fn decoded(bytes: &[u8]) -> (Vec<Message>, Option<bool>) {
    decode(bytes)
}
