//! pglock's shared memory, which exists only when pglock is in shared_preload_libraries: one
//! pair of hooks sizes and attaches every shared structure (the name map, the lease table, the
//! range of fencing tokens, the statistics table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::compat;
use crate::lease;
use crate::shared_names;
use crate::stats;
use crate::tokens;

/// The hooks that were installed before ours, called first from ours.
static PREVIOUS_HOOKS: OnceLock<(
    pg_sys::shmem_request_hook_type,
    pg_sys::shmem_startup_hook_type,
)> = OnceLock::new();

/// Set once pglock's shared memory is attached (in the postmaster; inherited by every backend).
static ATTACHED: AtomicBool = AtomicBool::new(false);

/// Whether pglock was loaded through shared_preload_libraries (its shared memory exists).
pub fn preloaded() -> bool {
    ATTACHED.load(Ordering::Relaxed)
}

/// Called from _PG_init while shared_preload_libraries is being processed.
pub fn init_preloaded() {
    // SAFETY: _PG_init runs once in the postmaster, before any hook can be called.
    unsafe {
        let _ = PREVIOUS_HOOKS.set((pg_sys::shmem_request_hook, pg_sys::shmem_startup_hook));
        pg_sys::shmem_request_hook = Some(request_shared_memory);
        pg_sys::shmem_startup_hook = Some(attach_shared_memory);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn request_shared_memory() {
    // SAFETY: called by the postmaster at shmem request time, with MaxBackends final; the
    // only time add-in memory and LWLocks may be requested.
    unsafe {
        if let Some(&(Some(previous), _)) = PREVIOUS_HOOKS.get() {
            previous();
        }
        pg_sys::RequestAddinShmemSpace(
            shared_names::shmem_size()
                + lease::shmem_size()
                + tokens::shmem_size()
                + stats::shmem_size(),
        );
        lease::request_lwlock();
        stats::request_lwlock();
        tokens::request_lwlock();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn attach_shared_memory() {
    // SAFETY: the documented pattern for add-in shared memory: every structure is found or
    // created under AddinShmemInitLock (in the postmaster, and again after a crash restart).
    unsafe {
        if let Some(&(_, Some(previous))) = PREVIOUS_HOOKS.get() {
            previous();
        }
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(compat::ADDIN_SHMEM_INIT_LOCK)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        shared_names::attach();
        lease::attach();
        tokens::attach();
        stats::attach();
        pg_sys::LWLockRelease(lock);
        ATTACHED.store(true, Ordering::Relaxed);
    }
}
