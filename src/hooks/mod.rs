//! The hooks, one file per family, installed together by [`init`]. Each keeps the hook it
//! replaces and calls it (through `pg_guard_ffi_boundary`), so other extensions' hooks run too.

mod fmgr;
mod utility;

pub fn init() {
    utility::init();
    fmgr::init();
}
