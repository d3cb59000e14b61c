//! Which catalog generations this process uses and holds.
//!
//! Each catalog is a series of immutable generations (see `esp_resolver::catalog`). A process
//! points PostgreSQL's settings at one generation and holds it while they may name it; it moves
//! to the newest one at the points it cannot be reading: session start, a reload, and before
//! CREATE/ALTER EXTENSION, LOAD and `rescan()`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use esp_resolver::Catalog;
use esp_resolver::catalog::InUse;
use esp_resolver::path::names_generation;

use crate::locations::try_locations;

/// The generations this process's settings may name (the current value, the reset value, values
/// saved by SET LOCAL or function SET clauses), held so that no other process removes them.
static HELD: Mutex<Vec<Arc<InUse>>> = Mutex::new(Vec::new());

/// The server catalog generation this process points PostgreSQL at (inherited from the
/// postmaster, then followed at session start, reloads and refreshes).
static SERVER_GENERATION: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Keeps `held` among this process's claims (once per generation).
pub fn keep(held: Arc<InUse>) {
    let mut all = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|h| h.dir == held.dir) {
        all.push(held);
    }
}

/// Gives up the claims on generations that no value of the core settings names any more (the
/// server generation this process uses is always kept: the settings name it from start on).
pub fn release_unnamed() {
    let values = crate::core_paths::all_values();
    let own = SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let named = |dir: &Path| own.as_deref() == Some(dir) || values.iter().any(|v| names_generation(v, dir));
    HELD.lock().unwrap_or_else(|e| e.into_inner()).retain(|h| named(&h.dir));
}

/// The server catalog's generation this process uses: what the core settings name.
pub fn server_generation() -> PathBuf {
    let adopted = SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).clone();
    adopted.unwrap_or_else(|| crate::locations::locations().server.current_link())
}

/// Holds the current generation of `catalog`; its directory, or `None` if it has none yet (or
/// it cannot be held: then the settings keep naming what they named).
pub fn adopt(catalog: &Catalog) -> Option<PathBuf> {
    let held = catalog.adopt().ok()??;
    let dir = held.dir.clone();
    keep(Arc::new(held));
    Some(dir)
}

/// Moves this process to the server catalog's current generation (cheap when it already uses
/// it: one readlink). Never raises an error.
pub fn adopt_server_generation() {
    let Some(locations) = try_locations() else { return };
    if locations.server.current().as_ref() == SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return;
    }
    let Some(dir) = adopt(&locations.server) else { return };
    remember_followed(&locations.server.current_link(), &dir);
    *SERVER_GENERATION.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
    crate::core_paths::follow_server_generation();
    // Backends forked earlier keep their own claims on older generations: a claim is shared
    // with the processes forked while it was held.
    release_unnamed();
}

/// The server catalog's `current` link and the name of the generation this process follows, for
/// [`follows_newest`]. Replaced (the old one freed) only by the process that adopts: every
/// process is single-threaded, and a forked one has its own copy.
struct Followed {
    link: CString,
    generation: Vec<u8>,
}

static FOLLOWED: AtomicPtr<Followed> = AtomicPtr::new(std::ptr::null_mut());

fn remember_followed(link: &Path, generation: &Path) {
    let (Ok(link), Some(name)) = (CString::new(link.as_os_str().as_bytes()), generation.file_name()) else {
        return;
    };
    let new = Box::into_raw(Box::new(Followed { link, generation: name.as_bytes().to_vec() }));
    let old = FOLLOWED.swap(new, Ordering::Relaxed);
    if !old.is_null() {
        // SAFETY: made by Box::into_raw above and no longer reachable through FOLLOWED; no other
        // thread reads it (see Followed).
        drop(unsafe { Box::from_raw(old) });
    }
}

/// Whether the server catalog's `current` link still names the generation this process
/// follows: what every new session asks first. One readlink into a buffer on the stack, no
/// allocation, nothing that can fail or raise an error: a connection with nothing changed runs
/// almost none of our code (every page of code a forked backend runs is a page fault of its own).
pub fn follows_newest() -> bool {
    let followed = FOLLOWED.load(Ordering::Relaxed);
    if followed.is_null() {
        return false;
    }
    // SAFETY: set by remember_followed from a Box, freed only when replaced there, in this
    // single-threaded process.
    let followed = unsafe { &*followed };
    let mut target = [0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let length = unsafe { libc::readlink(followed.link.as_ptr(), target.as_mut_ptr().cast(), target.len()) };
    let Ok(length) = usize::try_from(length) else { return false };
    if length >= target.len() {
        return false;
    }
    let target = &target[..length];
    let name = target.rsplit(|b| *b == b'/').next().unwrap_or(target);
    name == followed.generation.as_slice()
}
