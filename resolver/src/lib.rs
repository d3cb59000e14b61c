#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! The PostgreSQL-free core of `extension_search_path`.
//!
//! Everything here is plain Rust over the filesystem, unit tested with `cargo test` on temporary
//! directories:
//!
//! * [`path`] parses `extension_search_path.path` and merges our catalog into the core
//!   `extension_control_path` / `dynamic_library_path` values;
//! * [`scan`] recognises the two layouts under a prefix (RFC and CloudNativePG image);
//! * [`meta`] reads an image's `META.json` (with `pgxn_meta`): versions, platforms, declared preloads;
//! * [`index`] orders every copy it found by precedence and answers "which one wins";
//! * [`control`] reads PostgreSQL's extension control-file syntax (the one reader);
//! * [`usable`] decides whether a copy can be served, and why not (one decision for the
//!   catalog, the warnings and `check()`);
//! * [`catalog`] materialises the winners as a directory PostgreSQL 18 can read natively;
//! * [`dfmgr`] says which file PostgreSQL loads for a library name, as `dfmgr.c` does;
//! * [`dependencies`] plans the bundled libraries a module needs, and whether it may load;
//! * [`problem`] types what can go wrong (the shell maps each kind to a SQLSTATE);
//! * [`report`] builds what the SQL reporting functions show.
//!
//! The PostgreSQL side (`src/` of the extension crate) only converts settings and results.

pub mod catalog;
pub mod control;
pub mod dependencies;
pub mod dfmgr;
pub mod elf;
pub mod index;
pub mod meta;
pub mod mounts;
pub mod name;
pub mod path;
pub mod problem;
pub mod report;
pub mod safe_fs;
pub mod scan;
pub mod usable;
pub mod versions;

pub use catalog::{Catalog, SyncReport};
pub use index::{ExtensionCopy, Image, ImageSource, Index, Layout, LibraryCopy};
pub use path::{Element, SearchPath};
pub use problem::{Problem, ProblemKind};
pub use scan::SystemDirs;
