//! A per-process memo that holds only under the `dynamic_library_path` and trust setting it was
//! filled under: the value names the catalog generation, so a change under a prefix, a reload
//! that changes what is served, or a session's own path starts it afresh. Asked on hot paths (every
//! C function's FmgrInfo set-up), so looking costs no allocation and no system call: the setting
//! is compared in place. A static, never dropped: nothing to free at backend exit.

use std::sync::Mutex;

pub struct UnderLibrarySettings<T>(Mutex<Option<(Vec<u8>, bool, T)>>);

impl<T: Default> UnderLibrarySettings<T> {
    pub const fn new() -> Self {
        UnderLibrarySettings(Mutex::new(None))
    }

    /// What `f` finds in the memo, if it was filled under the current settings.
    pub fn get<R>(&self, f: impl FnOnce(&T) -> Option<R>) -> Option<R> {
        let trusted_files_only = crate::gucs::trusted_files_only();
        crate::gucs::with_dynamic_library_path(|path| {
            let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let (_, _, value) =
                guard.as_ref().filter(|(p, t, _)| *t == trusted_files_only && p.as_slice() == path.to_bytes())?;
            f(value)
        })
    }

    /// Lets `f` add to the memo; one filled under other settings is emptied first.
    pub fn update(&self, f: impl FnOnce(&mut T)) {
        let trusted_files_only = crate::gucs::trusted_files_only();
        crate::gucs::with_dynamic_library_path(|path| {
            let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let current =
                guard.as_ref().is_some_and(|(p, t, _)| *t == trusted_files_only && p.as_slice() == path.to_bytes());
            if !current {
                *guard = Some((path.to_bytes().to_vec(), trusted_files_only, T::default()));
            }
            if let Some((_, _, value)) = guard.as_mut() {
                f(value);
            }
        })
    }

    /// Empties the memo.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
