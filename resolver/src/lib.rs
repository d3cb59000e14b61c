#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! The PostgreSQL-free core of `extension_search_path`.
//!
//! Everything here is plain Rust over the filesystem, unit tested with `cargo test` on temporary
//! directories:
//!
//! * [`path`] parses `extension_search_path.path` and merges our catalog into the core
//!   `extension_control_path` / `dynamic_library_path` values;
//! * [`control`] reads PostgreSQL's extension control-file syntax;
//! * [`scan`] recognises the two layouts under a prefix (RFC and CloudNativePG image);
//! * [`index`] orders every copy it found by precedence and answers "which one wins";
//! * [`catalog`] materialises the winners as a directory PostgreSQL 18 can read natively;
//! * [`dfmgr`] says which file PostgreSQL loads for a library name, as `dfmgr.c` does.
//!
//! The PostgreSQL side (`src/` of the extension crate) only converts settings and results.

pub mod catalog;
pub mod control;
pub mod dfmgr;
pub mod elf;
pub mod index;
pub mod libs;
pub mod mounts;
pub mod name;
pub mod path;
pub mod report;
pub mod safe_fs;
pub mod scan;
pub mod versions;

pub use catalog::{Catalog, SyncReport};
pub use index::{ExtensionCopy, Image, Index, Layout, LibraryCopy};
pub use path::{Element, SearchPath};
pub use scan::SystemDirs;

/// Something wrong with the path or a tree under it. Never fatal: the element or entry is
/// skipped and the rest keeps working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path element (as written in the setting) or file the problem is about.
    pub subject: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}
