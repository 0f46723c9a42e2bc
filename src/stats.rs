//! Statistics per lock, across sessions (the pglock.stats view): how often each name was taken,
//! how often and how long callers waited, timed out, hit a deadlock or were cancelled while
//! waiting, and how long the locks were held. Needs pglock in shared_preload_libraries.
//!
//! A backend counts in its own memory (the registry's entries count acquisitions and holds,
//! [`add`] takes everything else) and adds its counts to the shared table once per transaction, at
//! its end, and when the session exits: the fast path pays a few additions and, when a hold
//! ends, one clock read. The shared table is a PostgreSQL hash table under one LWLock, keyed by
//! (database, key) and bounded by pglock.stats_max: when it is full, the least used 5% of its
//! entries are evicted (their use decaying as pg_stat_statements' does) and counted. It lives in
//! shared memory only, so a crash restart empties it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::hash::BuildHasherDefault;
use std::mem::{size_of, MaybeUninit};
use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::backend;
use crate::errors;
use crate::fast_hash::FastHasher;
use crate::name::{LockName, ServerText, MAX_NAME_BYTES};
use crate::settings;
use crate::shmem;
use crate::wait::Outcome;

/// What is counted for one lock. Times are in microseconds; the view shows milliseconds.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub struct Counters {
    /// Locks granted (a stacked re-acquisition counts again).
    pub acquisitions: i64,
    /// Acquisitions granted after a wait.
    pub waited: i64,
    /// Tries without a wait that found the lock taken.
    pub busy: i64,
    /// Waits that ran out of their timeout.
    pub timeouts: i64,
    /// Waits ended by a deadlock (40P01).
    pub deadlocks: i64,
    /// Waits ended by any other ERROR: a cancel, statement_timeout, lock_timeout.
    pub cancels: i64,
    pub wait_us: i64,
    pub max_wait_us: i64,
    /// Session-scope holds that ended (from the first acquisition to the last release).
    pub session_holds: i64,
    pub session_hold_us: i64,
    pub max_session_hold_us: i64,
    /// Transaction-scope holds that ended.
    pub xact_holds: i64,
    pub xact_hold_us: i64,
    pub max_xact_hold_us: i64,
    pub first_acquired: Option<pg_sys::TimestampTz>,
    pub last_acquired: Option<pg_sys::TimestampTz>,
}

impl Counters {
    /// Adds `other` (counted later) to these.
    pub fn add(&mut self, other: &Counters) {
        self.acquisitions += other.acquisitions;
        self.waited += other.waited;
        self.busy += other.busy;
        self.timeouts += other.timeouts;
        self.deadlocks += other.deadlocks;
        self.cancels += other.cancels;
        self.wait_us += other.wait_us;
        self.max_wait_us = self.max_wait_us.max(other.max_wait_us);
        self.session_holds += other.session_holds;
        self.session_hold_us += other.session_hold_us;
        self.max_session_hold_us = self.max_session_hold_us.max(other.max_session_hold_us);
        self.xact_holds += other.xact_holds;
        self.xact_hold_us += other.xact_hold_us;
        self.max_xact_hold_us = self.max_xact_hold_us.max(other.max_xact_hold_us);
        self.first_acquired = match (self.first_acquired, other.first_acquired) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_acquired = self.last_acquired.max(other.last_acquired);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }

    /// Counts an acquisition at `at`.
    pub fn acquired(&mut self, at: pg_sys::TimestampTz) {
        self.acquisitions += 1;
        self.first_acquired.get_or_insert(at);
        self.last_acquired = Some(at);
    }

    /// Counts a hold that ended after `us` microseconds, in session scope or not.
    pub fn hold_ended(&mut self, session: bool, us: i64) {
        let us = us.max(0);
        let (holds, total, max) = if session {
            (
                &mut self.session_holds,
                &mut self.session_hold_us,
                &mut self.max_session_hold_us,
            )
        } else {
            (
                &mut self.xact_holds,
                &mut self.xact_hold_us,
                &mut self.max_xact_hold_us,
            )
        };
        *holds += 1;
        *total += us;
        *max = (*max).max(us);
    }

    fn waited_for(&mut self, us: i64) {
        let us = us.max(0);
        self.wait_us += us;
        self.max_wait_us = self.max_wait_us.max(us);
    }

    /// How much use these counts are, for eviction: every counted event is one.
    fn uses(&self) -> f64 {
        (self.acquisitions
            + self.busy
            + self.timeouts
            + self.deadlocks
            + self.cancels
            + self.session_holds
            + self.xact_holds) as f64
    }
}

/// Whether this backend counts: pglock is preloaded and pglock.track is on.
pub fn tracking() -> bool {
    settings::track() && shmem::preloaded()
}

// ---------------------------------------------------------------------------------------------
// What this backend counted and has not yet added to the shared table.

struct Pending {
    name: Option<Box<str>>,
    counters: Counters,
}

/// Pending counts beyond which they are added to the shared table before the transaction ends
/// (a statement that takes many distinct names).
const MAX_PENDING: usize = 4096;

thread_local! {
    static PENDING: RefCell<HashMap<i64, Pending, BuildHasherDefault<FastHasher>>> =
        RefCell::new(HashMap::default());
    static FLUSH_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Adds `counters` for `key` (by `name`, if any) to this backend's pending counts.
pub fn add(key: i64, name: Option<&str>, counters: &Counters) {
    let full = PENDING.with_borrow_mut(|pending| {
        let entry = pending.entry(key).or_insert_with(|| Pending {
            name: None,
            counters: Counters::default(),
        });
        if entry.name.is_none() {
            entry.name = name.map(Box::from);
        }
        entry.counters.add(counters);
        pending.len() >= MAX_PENDING
    });
    if !FLUSH_REGISTERED.replace(true) {
        backend::at_every_transaction_end(flush);
    }
    if full {
        flush();
    }
}

/// Counts a try without a wait that found `key` taken.
pub fn busy(key: i64, name: Option<&str>) {
    if tracking() {
        add(
            key,
            name,
            &Counters {
                busy: 1,
                ..Counters::default()
            },
        );
    }
}

/// Runs the wait `wait` for `key` and counts how it ended and how long it took: granted,
/// timed out, or ended by an ERROR (which goes on unchanged).
pub fn timed_wait(key: i64, name: Option<&str>, wait: impl FnOnce() -> Outcome) -> Outcome {
    if !tracking() {
        return wait();
    }
    let started = backend::now();
    let outcome = PgTryBuilder::new(AssertUnwindSafe(wait))
        .catch_others(|error| {
            let deadlock = match &error {
                CaughtError::PostgresError(report)
                | CaughtError::ErrorReport(report)
                | CaughtError::RustPanic {
                    ereport: report, ..
                } => report.sql_error_code() == PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED,
            };
            let mut counters = Counters::default();
            if deadlock {
                counters.deadlocks = 1;
            } else {
                counters.cancels = 1;
            }
            counters.waited_for(backend::now() - started);
            add(key, name, &counters);
            error.rethrow()
        })
        .execute();
    let mut counters = Counters::default();
    match outcome {
        Outcome::Granted(_) => counters.waited = 1,
        Outcome::TimedOut => counters.timeouts = 1,
    }
    counters.waited_for(backend::now() - started);
    add(key, name, &counters);
    outcome
}

/// Adds this backend's pending counts to the shared table.
pub fn flush() {
    let Some(table) = table() else {
        return;
    };
    let pending = PENDING.with_borrow_mut(std::mem::take);
    if pending.is_empty() {
        return;
    }
    let database = backend::database_id();
    table.exclusive(|evictions| {
        for (key, pending) in pending {
            let id = StatsKey::new(database, key);
            // SAFETY: under the table's LWLock, held exclusively.
            let entry = unsafe { table.find_or_insert(&id, evictions) };
            entry.counters.add(&pending.counters);
            entry.usage += pending.counters.uses();
            if !entry.has_name {
                if let Some(name) = pending.name.as_deref() {
                    entry.set_name(name);
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The shared table.

/// A lock across the cluster: its database and key (no padding left uninitialised, as the hash
/// compares the bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct StatsKey {
    database: u32,
    zero: u32,
    key: i64,
}

impl StatsKey {
    fn new(database: u32, key: i64) -> Self {
        StatsKey {
            database,
            zero: 0,
            key,
        }
    }
}

#[repr(C)]
struct SharedEntry {
    /// First, as dynahash wants its key.
    id: StatsKey,
    counters: Counters,
    usage: f64,
    has_name: bool,
    name_len: u16,
    name: [u8; MAX_NAME_BYTES],
}

impl SharedEntry {
    fn set_name(&mut self, name: &str) {
        let len = name.len().min(MAX_NAME_BYTES);
        self.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.name_len = len as u16;
        self.has_name = true;
    }

    fn name(&self) -> Option<String> {
        self.has_name
            .then(|| String::from_utf8_lossy(&self.name[..self.name_len as usize]).into_owned())
    }
}

#[repr(C)]
struct Header {
    lock: *mut pg_sys::LWLock,
    /// Entries evicted since the table was created or reset (under the LWLock).
    evictions: i64,
    /// When everything was last reset (or the table created).
    reset_at: pg_sys::TimestampTz,
}

struct Table {
    header: *mut Header,
    hash: *mut pg_sys::HTAB,
}

const TRANCHE: &CStr = c"pglock stats";

static HEADER: AtomicPtr<Header> = AtomicPtr::new(ptr::null_mut());
static HASH: AtomicPtr<pg_sys::HTAB> = AtomicPtr::new(ptr::null_mut());

/// Share of the entries evicted at once when the table is full.
const EVICT_PERCENT: f64 = 5.0;
/// Each eviction multiplies the remaining entries' use by this, so that old use fades.
const USAGE_DECAY: f64 = 0.99;

/// The shared memory the table needs (see shmem.rs).
pub fn shmem_size() -> usize {
    // SAFETY: a pure size computation.
    let hash =
        unsafe { pg_sys::hash_estimate_size(settings::stats_max() as _, size_of::<SharedEntry>()) };
    size_of::<Header>().next_multiple_of(8) + hash
}

/// Asks for the table's LWLock.
///
/// # Safety
/// Only from the shmem request hook.
pub unsafe fn request_lwlock() {
    // SAFETY: the request hook is the time to ask for named LWLocks.
    unsafe { pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1) };
}

/// Finds or creates the table in shared memory.
///
/// # Safety
/// Only from the shmem startup hook, with AddinShmemInitLock held.
pub unsafe fn attach() {
    // SAFETY: ShmemInitStruct and ShmemInitHash under AddinShmemInitLock (held by the caller);
    // a new header is zeroed and given the tranche's LWLock. Shared memory is mapped at the
    // same address in every backend.
    unsafe {
        let mut found = false;
        let header =
            pg_sys::ShmemInitStruct(c"pglock stats".as_ptr(), size_of::<Header>(), &mut found)
                as *mut Header;
        if !found {
            header.write(Header {
                lock: &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock,
                evictions: 0,
                reset_at: pg_sys::GetCurrentTimestamp(),
            });
        }
        let mut info: pg_sys::HASHCTL = MaybeUninit::zeroed().assume_init();
        info.keysize = size_of::<StatsKey>();
        info.entrysize = size_of::<SharedEntry>();
        let max = settings::stats_max() as _;
        let hash = pg_sys::ShmemInitHash(
            c"pglock stats hash".as_ptr(),
            max,
            max,
            &mut info,
            (pg_sys::HASH_ELEM | pg_sys::HASH_BLOBS) as i32,
        );
        HEADER.store(header, Ordering::Release);
        HASH.store(hash, Ordering::Release);
    }
}

fn table() -> Option<Table> {
    let header = HEADER.load(Ordering::Acquire);
    let hash = HASH.load(Ordering::Acquire);
    (!header.is_null() && !hash.is_null()).then_some(Table { header, hash })
}

/// The table, or 55000 when pglock is not preloaded.
fn table_or_raise() -> Table {
    table().unwrap_or_else(|| errors::stats_need_preload())
}

impl Table {
    /// Runs `f` with the LWLock held exclusively, on the eviction counter. `f` must not raise
    /// an ERROR.
    fn exclusive<R>(&self, f: impl FnOnce(&mut i64) -> R) -> R {
        // SAFETY: the header was set up by attach(); the LWLock guards the counter.
        unsafe {
            pg_sys::LWLockAcquire((*self.header).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let result = f(&mut (*self.header).evictions);
            pg_sys::LWLockRelease((*self.header).lock);
            result
        }
    }

    /// Runs `f` with the LWLock held in shared mode.
    fn shared<R>(&self, f: impl FnOnce(&Header) -> R) -> R {
        // SAFETY: as in exclusive().
        unsafe {
            pg_sys::LWLockAcquire((*self.header).lock, pg_sys::LWLockMode::LW_SHARED);
            let result = f(&*self.header);
            pg_sys::LWLockRelease((*self.header).lock);
            result
        }
    }

    /// The entry of `id`, created (evicting the least used first if the table is full).
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    #[allow(clippy::mut_from_ref)]
    unsafe fn find_or_insert(&self, id: &StatsKey, evictions: &mut i64) -> &mut SharedEntry {
        // SAFETY: the caller holds the LWLock exclusively; entries are SharedEntry.
        unsafe {
            let key = (id as *const StatsKey).cast();
            let mut found = false;
            let entry =
                pg_sys::hash_search(self.hash, key, pg_sys::HASHACTION::HASH_FIND, &mut found);
            if !entry.is_null() {
                return &mut *entry.cast::<SharedEntry>();
            }
            if pg_sys::hash_get_num_entries(self.hash) >= settings::stats_max() as i64 {
                *evictions += self.evict_least_used();
            }
            let entry =
                pg_sys::hash_search(self.hash, key, pg_sys::HASHACTION::HASH_ENTER, &mut found)
                    .cast::<SharedEntry>();
            let id = *id;
            entry.write(SharedEntry {
                id,
                counters: Counters::default(),
                usage: 0.0,
                has_name: false,
                name_len: 0,
                name: [0; MAX_NAME_BYTES],
            });
            &mut *entry
        }
    }

    /// Calls `f` on every entry.
    ///
    /// # Safety
    /// Only with the LWLock held (exclusively if `f` changes or removes entries; removing the
    /// entry just returned is allowed during a scan).
    unsafe fn for_each(&self, mut f: impl FnMut(*mut SharedEntry)) {
        // SAFETY: the scan is completed (hash_seq_search returns null) before returning.
        unsafe {
            let mut scan: pg_sys::HASH_SEQ_STATUS = MaybeUninit::zeroed().assume_init();
            pg_sys::hash_seq_init(&mut scan, self.hash);
            loop {
                let entry = pg_sys::hash_seq_search(&mut scan).cast::<SharedEntry>();
                if entry.is_null() {
                    break;
                }
                f(entry);
            }
        }
    }

    /// Removes the entry of `id`, if there is one.
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    unsafe fn remove(&self, id: &StatsKey) {
        // SAFETY: the caller holds the LWLock exclusively.
        unsafe {
            pg_sys::hash_search(
                self.hash,
                (id as *const StatsKey).cast(),
                pg_sys::HASHACTION::HASH_REMOVE,
                ptr::null_mut(),
            );
        }
    }

    /// Evicts the least used EVICT_PERCENT of the entries (at least one) and decays the use of
    /// the rest; returns how many went.
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    unsafe fn evict_least_used(&self) -> i64 {
        let mut uses: Vec<(f64, StatsKey)> = Vec::new();
        // SAFETY: the caller holds the LWLock exclusively.
        unsafe {
            self.for_each(|entry| {
                (*entry).usage *= USAGE_DECAY;
                uses.push(((*entry).usage, (*entry).id));
            });
        }
        uses.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = ((uses.len() as f64 * EVICT_PERCENT / 100.0) as usize).max(1);
        for (_, id) in &uses[..count.min(uses.len())] {
            // SAFETY: as above.
            unsafe { self.remove(id) };
        }
        count.min(uses.len()) as i64
    }
}

/// Entries, capacity, evictions and the time of the last reset, for status(); None when pglock
/// is not preloaded.
pub fn occupancy() -> Option<(i64, usize, i64, pg_sys::TimestampTz)> {
    let table = table()?;
    Some(table.shared(|header| {
        // SAFETY: under the LWLock.
        let entries = unsafe { pg_sys::hash_get_num_entries(table.hash) };
        (
            entries,
            settings::stats_max(),
            header.evictions,
            header.reset_at,
        )
    }))
}

// ---------------------------------------------------------------------------------------------
// SQL.

fn millis(us: i64) -> f64 {
    us as f64 / 1000.0
}

fn timestamp(at: Option<pg_sys::TimestampTz>) -> Option<TimestampWithTimeZone> {
    at.and_then(|at| TimestampWithTimeZone::try_from(at).ok())
}

/// Every row of the shared table the current user may see: this database's, and every
/// database's for members of pg_read_all_stats. This session's own counts are added first.
/// Backs the pglock.stats view; raises 55000 when pglock is not preloaded.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_restricted)]
fn lock_stats() -> TableIterator<
    'static,
    (
        name!(database, pg_sys::Oid),
        name!(key, i64),
        name!(name, Option<ServerText>),
        name!(acquisitions, i64),
        name!(waited, i64),
        name!(busy, i64),
        name!(timeouts, i64),
        name!(deadlocks, i64),
        name!(cancels, i64),
        name!(total_wait_time, f64),
        name!(max_wait_time, f64),
        name!(session_holds, i64),
        name!(total_session_hold_time, f64),
        name!(max_session_hold_time, f64),
        name!(xact_holds, i64),
        name!(total_xact_hold_time, f64),
        name!(max_xact_hold_time, f64),
        name!(first_acquired, Option<TimestampWithTimeZone>),
        name!(last_acquired, Option<TimestampWithTimeZone>),
    ),
> {
    let table = table_or_raise();
    flush();
    let database = backend::database_id();
    let all_databases = backend::may_read_all_stats();
    let mut rows = Vec::new();
    table.shared(|_| {
        // SAFETY: under the LWLock in shared mode; entries are only read.
        unsafe {
            table.for_each(|entry| {
                let entry = &*entry;
                if entry.id.database == database || all_databases {
                    rows.push((entry.id, entry.name(), entry.counters));
                }
            })
        }
    });
    rows.sort_by_key(|(id, _, _)| (id.database, id.key));
    TableIterator::new(rows.into_iter().map(|(id, name, c)| {
        (
            pg_sys::Oid::from(id.database),
            id.key,
            name.map(ServerText),
            c.acquisitions,
            c.waited,
            c.busy,
            c.timeouts,
            c.deadlocks,
            c.cancels,
            millis(c.wait_us),
            millis(c.max_wait_us),
            c.session_holds,
            millis(c.session_hold_us),
            millis(c.max_session_hold_us),
            c.xact_holds,
            millis(c.xact_hold_us),
            millis(c.max_xact_hold_us),
            timestamp(c.first_acquired),
            timestamp(c.last_acquired),
        )
    }))
}

/// Forgets the statistics of one lock of this database (by name), or of every lock of every
/// database (no name). Counts a session has not yet added are not affected.
#[pg_extern(volatile, parallel_restricted, name = "stats_reset")]
fn stats_reset_name(name: default!(Option<LockName>, "NULL")) {
    // Bad arguments are refused before anything else.
    let key = name.map(|name| crate::key_cache::key_of(&LockName::checked(Some(name))));
    let table = table_or_raise();
    match key {
        Some(key) => reset_key(&table, key),
        None => table.exclusive(|evictions| {
            // SAFETY: under the LWLock held exclusively; removing the entry just returned by
            // the scan is allowed.
            unsafe {
                table.for_each(|entry| table.remove(&(*entry).id));
                *evictions = 0;
                (*table.header).reset_at = pg_sys::GetCurrentTimestamp();
            }
        }),
    }
}

/// Forgets the statistics of one lock of this database, by key.
#[pg_extern(volatile, parallel_restricted, name = "stats_reset")]
fn stats_reset_key(key: Option<i64>) {
    let Some(key) = key else { errors::null_key() };
    reset_key(&table_or_raise(), key);
}

fn reset_key(table: &Table, key: i64) {
    let id = StatsKey::new(backend::database_id(), key);
    // SAFETY: under the LWLock held exclusively.
    table.exclusive(|_| unsafe { table.remove(&id) });
}

extension_sql!(
    r#"
CREATE VIEW stats AS
SELECT d.datname AS database, s.key, s.name,
       s.acquisitions, s.waited, s.busy, s.timeouts, s.deadlocks, s.cancels,
       s.total_wait_time, s.max_wait_time,
       s.session_holds, s.total_session_hold_time, s.max_session_hold_time,
       s.xact_holds, s.total_xact_hold_time, s.max_xact_hold_time,
       s.first_acquired, s.last_acquired
FROM @extschema@.lock_stats() s
LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.database;

COMMENT ON VIEW stats IS 'Statistics per lock across sessions since the last reset: acquisitions, waits, timeouts, deadlocks, cancels, wait and hold times (ms). Needs shared_preload_libraries.';
GRANT SELECT ON stats TO PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.stats_reset(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.stats_reset(bigint) FROM PUBLIC;
"#,
    name = "stats_view",
    requires = [lock_stats, stats_reset_name, stats_reset_key]
);
