//! The table of token-owned locks in shared memory: one entry per lock asked for, held or
//! ending, the states an entry goes through, and the one LWLock and condition variable that
//! every move of an entry goes through.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, Ordering};

use pgrx::pg_sys;

use crate::backend;
use crate::lock::manager::{AdvisoryLock, Mode};
use crate::names::name::MAX_NAME_BYTES;
use crate::settings;
use crate::shared::memory;

/// Bytes of the taker's application_name and client address kept for pglock.locks and the log.
pub(super) const APP_BYTES: usize = 64;

pub(super) const ADDR_BYTES: usize = 64;

/// Where an entry is in its life; only ever changed under the table's LWLock.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Unused (all-zero shared memory reads as this).
    Free = 0,
    /// A session asked the token worker to take the lock without waiting.
    Asked,
    /// The token worker found the key taken, or waited for.
    Refused,
    /// A waiter process waits in the key's lock queue for the session.
    Waiting,
    /// Granted: the transaction that holds it is being prepared.
    Granting,
    /// Held by a prepared transaction.
    Held,
    /// To be ended by the token worker (released, expired, or granted to a session that left).
    Ending,
    /// The worker could not take it (the error is in the server log).
    Failed,
}

/// Why a lock ends, for the server log.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Released = 0,
    Expired,
    ReachedMaxHold,
    ReachedMaxXidAge,
    Abandoned,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub(super) state: State,
    pub(super) shared: bool,
    /// The session that asked gave up: a grant goes straight to Ending.
    pub(super) abandoned: bool,
    pub(super) end: End,
    /// Changes whenever the entry is freed, so that a late waiter or worker sees it is stale.
    pub(super) generation: u32,
    pub(super) database: u32,
    /// The role that called acquire.
    pub(super) role: u32,
    /// The prepared transaction's xid (pg_locks.virtualtransaction is -1/xid).
    pub(super) xid: u32,
    /// The session that asked, while the entry is not yet Held (for its exit callback).
    pub(super) requester: i32,
    /// The waiter process, while Waiting (0 until it has started).
    pub(super) waiter: i32,
    pub(super) key: i64,
    pub(super) token: i64,
    /// The TTL in force (a renewal may give another).
    pub(super) ttl_us: i64,
    /// The TTL the lock was prepared with, part of its GID.
    pub(super) prepared_ttl_us: i64,
    pub(super) since: pg_sys::TimestampTz,
    pub(super) expires_at: pg_sys::TimestampTz,
    /// When the worker first found a fence_ok transaction in the way of ending it (0: never).
    pub(super) fence_blocked_since: pg_sys::TimestampTz,
    /// When it was granted, as its GID says (0: prepared by 0.4.0, whose GIDs do not say).
    pub(super) gid_since: pg_sys::TimestampTz,
    pub(super) name_len: u16,
    pub(super) app_len: u8,
    pub(super) addr_len: u8,
    pub(super) name: [u8; MAX_NAME_BYTES],
    pub(super) app: [u8; APP_BYTES],
    pub(super) addr: [u8; ADDR_BYTES],
}

impl Entry {
    pub(super) fn mode(&self) -> Mode {
        if self.shared {
            Mode::Shared
        } else {
            Mode::Exclusive
        }
    }

    /// The key's advisory tag in the entry's database, as pg_advisory_lock takes it there.
    pub(super) fn tag(&self) -> pg_sys::LOCKTAG {
        AdvisoryLock {
            key: self.key,
            mode: self.mode(),
        }
        .tag_in(self.database)
    }

    pub(super) fn name(&self) -> Option<String> {
        (self.name_len > 0)
            .then(|| String::from_utf8_lossy(&self.name[..self.name_len as usize]).into_owned())
    }

    pub(super) fn describe(&self) -> String {
        match self.name() {
            Some(name) => format!("lock \"{name}\""),
            None => format!("lock with key {}", self.key),
        }
    }

    pub(super) fn free(&mut self) {
        let generation = self.generation.wrapping_add(1);
        // SAFETY: an all-zero Entry is a valid Free one.
        *self = unsafe { std::mem::zeroed() };
        self.generation = generation;
    }
}

/// The token worker's fields of the table's header.
#[repr(C)]
pub(super) struct Fields {
    /// The token worker's latch while it runs, else null.
    pub(super) worker_latch: AtomicPtr<pg_sys::Latch>,
    /// Set once the worker has read back the locks of pg_prepared_xacts after a start.
    pub(super) ready: AtomicBool,
    /// When the worker looks next (i64::MAX: when woken).
    pub(super) worker_wakes_at: AtomicI64,
    /// Broadcast whenever an entry changes state; sessions waiting for theirs sleep on it.
    pub(super) changed: std::cell::UnsafeCell<pg_sys::ConditionVariable>,
}

/// The token locks: every entry in use is one (the table is not kept dense: an entry's index
/// and generation name a request for as long as it lives).
pub(super) type Table = memory::Table<Fields, Entry>;

static TABLE: memory::SharedTable<Fields, Entry> = memory::SharedTable::new(c"pglock token locks");

/// The shared memory the table needs (see memory.rs).
pub fn shmem_size() -> usize {
    TABLE.size(settings::max_token_locks())
}

/// Asks for the table's LWLock.
///
/// # Safety
/// Only from the shmem request hook.
pub unsafe fn request_lwlock() {
    // SAFETY: the caller's.
    unsafe { TABLE.request_lwlock(settings::max_token_locks()) }
}

/// Finds or creates the table in shared memory: a new one has every entry Free.
///
/// # Safety
/// Only from the shmem startup hook, with AddinShmemInitLock held.
pub unsafe fn attach() {
    // SAFETY: the caller's; the condition variable is initialised once, here, in the table's
    // place in shared memory, where it stays.
    unsafe {
        TABLE.attach(settings::max_token_locks(), |fields| {
            fields.worker_wakes_at = AtomicI64::new(i64::MAX);
            pg_sys::ConditionVariableInit(fields.changed.get());
        })
    }
}

pub(super) fn table() -> Option<&'static Table> {
    TABLE.get()
}

/// Runs `f` on entry `index` if it is still of `generation`.
pub(super) fn with_entry<R>(
    table: &Table,
    index: usize,
    generation: u32,
    f: impl FnOnce(&mut Entry) -> R,
) -> Option<R> {
    table.update(|entries, _| {
        let entry = &mut entries[index];
        (entry.generation == generation).then(|| f(entry))
    })
}

pub(super) fn changed(table: &Table) {
    // SAFETY: the table's condition variable, initialised at attach.
    unsafe { pg_sys::ConditionVariableBroadcast(table.changed.get()) };
}

pub(super) fn wake_worker(table: &Table) {
    let latch = table.worker_latch.load(Ordering::SeqCst);
    if !latch.is_null() {
        // SAFETY: the worker's PGPROC latch, valid while the worker runs (and harmless to set
        // for a moment after: the slot's next owner only wakes once).
        unsafe { pg_sys::SetLatch(latch) };
    }
}

unsafe extern "C" {
    /// twophase.h: max_prepared_transactions.
    static max_prepared_xacts: std::ffi::c_int;
}

/// max_prepared_transactions, fixed at server start.
pub fn max_prepared_transactions() -> i32 {
    // SAFETY: a plain int, set before any backend runs.
    unsafe { max_prepared_xacts }
}

/// What is left of a request whose waiter process ended before the lock was Held: while
/// Waiting nothing is held, and the request fails; while Granting a prepared transaction may
/// exist, so the worker ends it (or finds it gone).
pub(super) fn abandon_waiters_work(entry: &mut Entry) {
    match entry.state {
        State::Waiting if entry.abandoned => entry.free(),
        State::Waiting => {
            entry.state = State::Failed;
            entry.waiter = 0;
        }
        State::Granting => {
            entry.state = State::Ending;
            entry.end = End::Abandoned;
            entry.abandoned = true;
            entry.waiter = 0;
        }
        _ => {}
    }
}

/// The index of the entry holding `key` in this database under `token`, while it has not
/// expired.
pub(super) fn find_held(entries: &[Entry], key: i64, token: i64) -> Option<usize> {
    let database = backend::database_id();
    let now = backend::now();
    entries.iter().position(|entry| {
        entry.state == State::Held
            && entry.database == database
            && entry.key == key
            && entry.token == token
            && entry.expires_at > now
    })
}
