//! The ProcessUtility hook.
//!
//! * CREATE EXTENSION, ALTER EXTENSION and LOAD (not from inside an extension script): bring the
//!   catalog up to date with the session's path first, so a directory added under a prefix, or
//!   a path changed by reload or SET, is seen without a restart.
//! * LOAD, also from extension scripts: `LOAD '$libdir/x'` of a module that lives only in an
//!   image loads the image's file; the library is made loadable.
//! * CREATE FUNCTION … LANGUAGE C: the library is made loadable (PostgreSQL's validator loads it);
//!   this is also how an extension's modules are made loadable, from its scripts.
//!
//! Every statement then goes to the previous hook, or PostgreSQL's own implementation, called
//! from a frame outside pgrx's error conversion (see [`super`]).

use std::ffi::{CStr, CString, c_char};

use pgrx::PgList;
use pgrx::pg_sys;
use pgrx::prelude::*;

use esp_resolver::dfmgr::Loader;

use crate::loading::{load_target, make_loadable};

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

type ProcessUtilityFn = unsafe extern "C-unwind" fn(
    *mut pg_sys::PlannedStmt,
    *const c_char,
    bool,
    pg_sys::ProcessUtilityContext::Type,
    pg_sys::ParamListInfo,
    *mut pg_sys::QueryEnvironment,
    *mut pg_sys::DestReceiver,
    *mut pg_sys::QueryCompletion,
);

unsafe extern "C-unwind" {
    /// PostgreSQL's own implementation, declared here unwrapped: pgrx's binding of the same
    /// symbol goes through `pg_guard_ffi_boundary`, which rewrites the errors raised below it.
    #[link_name = "standard_ProcessUtility"]
    fn standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

pub fn init() {
    // SAFETY: runs once in the postmaster's _PG_init, single-threaded; we keep the previous
    // hook and call it from ours.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// The hook itself: no `#[pg_guard]`, nothing with a destructor in this frame (see [`super`]).
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: `before_utility` is guarded (it returns, or raises an ERROR through PostgreSQL,
    // never unwinds); it gets the statement PostgreSQL gave us and returns it or a copy.
    let pstmt = unsafe { before_utility(pstmt, read_only_tree) };
    // SAFETY: PREV_PROCESS_UTILITY is written once, in init, before any statement runs. The
    // arguments go on as PostgreSQL gave them (pstmt possibly a modified copy). An ERROR below
    // siglongjmps over this frame, which owns nothing to drop and is in no catch_unwind.
    unsafe {
        let next: ProcessUtilityFn = PREV_PROCESS_UTILITY.unwrap_or(standard_process_utility);
        next(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
    }
}

/// Our part of the hook, before the statement runs. Returns the statement to execute.
#[pg_guard]
#[inline(never)]
unsafe extern "C-unwind" fn before_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    read_only_tree: bool,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: PostgreSQL passes a valid PlannedStmt whose utilityStmt, when set, is a Node of
    // the tag it carries; creating_extension is a plain global.
    unsafe {
        let stmt = if pstmt.is_null() { std::ptr::null_mut() } else { (*pstmt).utilityStmt };
        if stmt.is_null() {
            return pstmt;
        }
        // In a parallel operation PostgreSQL refuses these statements itself; we add nothing.
        if pg_sys::IsInParallelMode() {
            return pstmt;
        }
        let nested = pg_sys::creating_extension;
        // Loading code is for the roles PostgreSQL lets load it: LOAD of anything but
        // $libdir/plugins/x and C functions need a superuser (inside a trusted extension's
        // script, the bootstrap superuser PostgreSQL switches to). For other roles we load
        // nothing and leave the statement, and its refusal, to PostgreSQL. The modules of an
        // extension are prepared where its scripts create its C functions or LOAD them, so a
        // CREATE or ALTER EXTENSION that does nothing (IF NOT EXISTS, already at the version)
        // loads nothing either, as in PostgreSQL.
        // (Asked only for these statements: others, ROLLBACK in an aborted transaction among
        // them, may come when no catalog can be read.)
        let superuser = || pg_sys::superuser();
        match (*stmt).type_ {
            pg_sys::NodeTag::T_CreateExtensionStmt | pg_sys::NodeTag::T_AlterExtensionStmt if !nested => {
                crate::refresh::refresh_session(crate::refresh::Refresh::IfChanged, false);
            }
            pg_sys::NodeTag::T_LoadStmt if superuser() => {
                if !nested {
                    crate::refresh::refresh_session(crate::refresh::Refresh::IfChanged, false);
                }
                return prepare_load(pstmt, read_only_tree);
            }
            pg_sys::NodeTag::T_CreateFunctionStmt if superuser() => {
                if let Some(library) = c_function_library(stmt.cast()) {
                    make_loadable(&library, Loader::Function);
                }
            }
            _ => {}
        }
        pstmt
    }
}

/// LOAD: rewrites `$libdir/x` to the image's file when only an image has it, and makes it
/// loadable.
/// Returns the statement to execute (a copy when it had to change a read-only tree).
unsafe fn prepare_load(pstmt: *mut pg_sys::PlannedStmt, read_only_tree: bool) -> *mut pg_sys::PlannedStmt {
    // SAFETY: the caller checked that utilityStmt is a LoadStmt; copyObjectImpl returns a deep
    // copy in the current memory context, which lives as long as the statement.
    unsafe {
        let load = (*pstmt).utilityStmt.cast::<pg_sys::LoadStmt>();
        if (*load).filename.is_null() {
            return pstmt;
        }
        let filename = CStr::from_ptr((*load).filename).to_string_lossy().into_owned();
        let Some(target) = load_target(&filename) else {
            make_loadable(&filename, Loader::File);
            return pstmt;
        };
        // The same file as a C function's `$libdir/x` finds (what load_target looked up).
        make_loadable(&filename, Loader::Function);
        let target = target.to_string_lossy().into_owned();
        let pstmt =
            if read_only_tree { pg_sys::copyObjectImpl(pstmt.cast()).cast::<pg_sys::PlannedStmt>() } else { pstmt };
        let load = (*pstmt).utilityStmt.cast::<pg_sys::LoadStmt>();
        let target = CString::new(target).expect("paths hold no NUL");
        (*load).filename = pg_sys::pstrdup(target.as_ptr());
        pstmt
    }
}

/// The library (`AS 'obj_file', …`) of a CREATE FUNCTION … LANGUAGE C.
unsafe fn c_function_library(stmt: *mut pg_sys::CreateFunctionStmt) -> Option<String> {
    // SAFETY: the parser builds `options` as a List of DefElem; `language` holds a String
    // node and `as` a List of String nodes.
    unsafe {
        let mut language = None;
        let mut obj_file = None;
        for def in PgList::<pg_sys::DefElem>::from_pg((*stmt).options).iter_ptr() {
            let name = CStr::from_ptr((*def).defname).to_bytes();
            let arg = (*def).arg;
            if arg.is_null() {
                continue;
            }
            if name == b"language" && (*arg).type_ == pg_sys::NodeTag::T_String {
                language = Some(string_node(arg));
            } else if name == b"as" && (*arg).type_ == pg_sys::NodeTag::T_List {
                let items = PgList::<pg_sys::Node>::from_pg(arg.cast());
                obj_file =
                    items.get_ptr(0).filter(|n| (**n).type_ == pg_sys::NodeTag::T_String).map(|n| string_node(n));
            }
        }
        // The parser downcases unquoted names: `LANGUAGE C` arrives as "c", `LANGUAGE "C"` is
        // another (nonexistent) language.
        language.filter(|l| l == "c").and(obj_file)
    }
}

unsafe fn string_node(node: *mut pg_sys::Node) -> String {
    // SAFETY: the caller checked the tag.
    unsafe { CStr::from_ptr((*node.cast::<pg_sys::String>()).sval).to_string_lossy().into_owned() }
}
