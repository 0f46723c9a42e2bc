//! pglock's shared memory, which exists only when pglock is in shared_preload_libraries: one
//! pair of hooks sizes and attaches every shared structure of the services it is given (the
//! name map, the lease table, the range of fencing tokens, the statistics table: see
//! shared/mod.rs), knowing none of them by name. `SharedTable` is the table in shared memory
//! (a header, entries, one LWLock) that the lease table and the token-lock table are made of.

use std::ffi::CStr;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
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

/// A table in shared memory: a header with the table's LWLock, its capacity, the count of
/// entries in use (for tables kept dense), and a service's own fields `H` (reached through
/// Deref; atomics and the like, read without the lock), followed by `capacity` entries of `E`,
/// read and written only under the LWLock (`update` and `read`).
#[repr(C)]
pub struct Table<H, E> {
    lock: *mut pg_sys::LWLock,
    capacity: u32,
    /// Entries in use, 0..used, for a table kept dense; written only under the LWLock.
    used: std::cell::UnsafeCell<u32>,
    fields: H,
    /// The first entry, right after the header: a pointer made from ShmemInitStruct's, which
    /// covers the whole region (a reference to the header covers only the header).
    entries: *mut E,
}

impl<H, E> std::ops::Deref for Table<H, E> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.fields
    }
}

impl<H, E> Table<H, E> {
    fn header_size() -> usize {
        size_of::<Self>().next_multiple_of(align_of::<E>().max(8))
    }

    /// The number of entries the table has room for.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Runs `f` on every entry and on the count of entries in use, with the table's LWLock
    /// held exclusively. `f` must not raise an ERROR (the LWLock would be released by the
    /// error's cleanup, but the entries could be left half written).
    pub fn update<R>(&self, f: impl FnOnce(&mut [E], &mut u32) -> R) -> R {
        // SAFETY: the table was attached by SharedTable::attach, with `capacity` entries at
        // `entries`, within the region SharedTable::size gave it; the LWLock held exclusively
        // makes this the only access to the entries and to `used`.
        unsafe {
            pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let entries = std::slice::from_raw_parts_mut(self.entries, self.capacity as usize);
            let result = f(entries, &mut *self.used.get());
            pg_sys::LWLockRelease(self.lock);
            result
        }
    }

    /// Runs `f` on every entry and on the count of entries in use, with the table's LWLock
    /// held in shared mode: others may read at the same time, nobody writes. `f` must not raise
    /// an ERROR.
    pub fn read<R>(&self, f: impl FnOnce(&[E], u32) -> R) -> R {
        // SAFETY: as in `update`; in shared mode every holder of the LWLock only reads.
        unsafe {
            pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_SHARED);
            let entries = std::slice::from_raw_parts(self.entries, self.capacity as usize);
            let result = f(entries, *self.used.get());
            pg_sys::LWLockRelease(self.lock);
            result
        }
    }

    /// Whether this process holds the table's LWLock.
    pub fn lock_held_by_me(&self) -> bool {
        // SAFETY: the table's LWLock, set at attach.
        unsafe { pg_sys::LWLockHeldByMe(self.lock) }
    }
}

/// Where a service finds its `Table` once the shmem startup hook has attached it: the name of
/// its shared memory and LWLock tranche, and the table (null until attached, and when pglock is
/// not preloaded or the service's capacity is 0).
pub struct SharedTable<H: 'static, E: 'static> {
    name: &'static CStr,
    table: AtomicPtr<Table<H, E>>,
}

impl<H, E> SharedTable<H, E> {
    pub const fn new(name: &'static CStr) -> Self {
        SharedTable {
            name,
            table: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The shared memory a table of `capacity` entries needs (none for 0).
    pub fn size(&self, capacity: usize) -> usize {
        match capacity {
            0 => 0,
            _ => Table::<H, E>::header_size() + capacity * size_of::<E>(),
        }
    }

    /// Asks for the table's LWLock, unless `capacity` is 0.
    ///
    /// # Safety
    /// Only from the shmem request hook.
    pub unsafe fn request_lwlock(&self, capacity: usize) {
        if capacity > 0 {
            // SAFETY: the request hook is the time to ask for named LWLocks.
            unsafe { pg_sys::RequestNamedLWLockTranche(self.name.as_ptr(), 1) };
        }
    }

    /// Finds or creates the table in shared memory, unless `capacity` is 0. A new table is
    /// zeroed (entries and fields), then `init` sets the fields that must not start at zero.
    ///
    /// # Safety
    /// Only from the shmem startup hook, with AddinShmemInitLock held, and with the
    /// `capacity` given to `size` and `request_lwlock`.
    pub unsafe fn attach(&self, capacity: usize, init: impl FnOnce(&mut H)) {
        if capacity == 0 {
            return;
        }
        // SAFETY: ShmemInitStruct under AddinShmemInitLock (held by the caller); a new table
        // is zeroed, and its LWLock is the tranche requested at shmem request time. Pointers
        // into shared memory are valid in every backend (forked from the postmaster).
        unsafe {
            let size = self.size(capacity);
            let mut found = false;
            let table =
                pg_sys::ShmemInitStruct(self.name.as_ptr(), size, &mut found) as *mut Table<H, E>;
            if !found {
                std::ptr::write_bytes(table.cast::<u8>(), 0, size);
                (*table).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(self.name.as_ptr())).lock;
                (*table).capacity = capacity as u32;
                (*table).entries = table
                    .cast::<u8>()
                    .add(Table::<H, E>::header_size())
                    .cast::<E>();
                init(&mut (*table).fields);
            }
            self.table.store(table, Ordering::Release);
        }
    }

    /// The attached table.
    pub fn get(&self) -> Option<&'static Table<H, E>> {
        // SAFETY: set once by the shmem startup hook (inherited by every backend) to a table
        // that lives as long as the server.
        unsafe { self.table.load(Ordering::Acquire).as_ref() }
    }
}

/// A service worker's sleep: until `next` (rounded up to the millisecond, so that whatever is
/// due then has come; at most a minute), or until its latch is set; reloads the configuration
/// after a SIGHUP. False once SIGTERM asked the worker to end.
pub fn worker_sleep_until(next: pg_sys::TimestampTz) -> bool {
    use pgrx::bgworkers::BackgroundWorker;
    let sleep_us = next
        .saturating_sub(crate::backend::now())
        .clamp(0, 60_000_000);
    if !BackgroundWorker::wait_latch(Some(std::time::Duration::from_micros(
        sleep_us as u64 + 999,
    ))) {
        return false;
    }
    if BackgroundWorker::sighup_received() {
        // SAFETY: what a background worker does on SIGHUP, outside any transaction.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
    true
}

/// Ends a service worker that SIGTERM stopped (at shutdown, or by pg_terminate_backend) with
/// status 1: a background worker that exits with status 0 is never started again, one that
/// exits with 1 is started again after its restart interval (and at shutdown nothing is).
// PostgreSQL 18's bindings declare proc_exit as returning, the older ones as diverging.
#[allow(unreachable_code)]
pub fn worker_exit_to_be_restarted() -> ! {
    // SAFETY: what a background worker does to exit, outside any transaction.
    unsafe { pg_sys::proc_exit(1) };
    unreachable!("proc_exit does not return")
}
