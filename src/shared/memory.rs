//! pglock's shared memory, which exists only when pglock is in shared_preload_libraries: one
//! pair of hooks sizes and attaches every shared structure of the services it is given (the
//! name map, the lease table, the range of fencing tokens, the statistics table: see
//! shared/mod.rs), knowing none of them by name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::compat;

/// A service with a part of shared memory of its own.
pub struct Service {
    /// The bytes it needs.
    pub size: fn() -> usize,
    /// Asks for its LWLocks. Safety: only from the shmem request hook.
    pub request_lwlocks: unsafe fn(),
    /// Finds or creates its structures. Safety: only from the shmem startup hook, with
    /// AddinShmemInitLock held.
    pub attach: unsafe fn(),
}

/// The services whose shared memory the hooks set up.
static SERVICES: OnceLock<&'static [Service]> = OnceLock::new();

fn services() -> &'static [Service] {
    SERVICES.get().copied().unwrap_or(&[])
}

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

/// Called from _PG_init while shared_preload_libraries is being processed: sets up the shared
/// memory of `services`.
pub fn init_preloaded(services: &'static [Service]) {
    let _ = SERVICES.set(services);
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
        pg_sys::RequestAddinShmemSpace(services().iter().map(|service| (service.size)()).sum());
        for service in services() {
            (service.request_lwlocks)();
        }
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
        for service in services() {
            (service.attach)();
        }
        pg_sys::LWLockRelease(lock);
        ATTACHED.store(true, Ordering::Relaxed);
    }
}
