//! Statistics per lock, across sessions (the pglock.stats view): how often each name was taken,
//! how often and how long callers waited, timed out, hit a deadlock or were cancelled while
//! waiting, and how long the locks were held. Needs pglock in shared_preload_libraries.
//!
//! A backend counts in its own memory (the registry's entries count acquisitions and holds,
//! [`add`] takes everything else) and adds its counts to the shared table once per transaction, at
//! its end, and when the session exits: the fast path pays a few additions and, when a hold
//! ends, one clock read. The shared table is a PostgreSQL hash table under one LWLock, keyed by
//! (database, key) and bounded by pglock.stats_max: when new entries do not fit, the least used
//! of the table's entries and the new ones are evicted, at least 5% of the table in one pass
//! (older use decaying at every pass, as in pg_stat_statements), and counted. It lives in shared
//! memory only, so a crash restart empties it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::hash::BuildHasherDefault;
use std::mem::{size_of, MaybeUninit};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::names::fast_hash::FastHasher;
use crate::names::name::{LockName, ServerText, MAX_NAME_BYTES};
use crate::session::counts::{Counters, NEVER};
use crate::session::events::Listener;
use crate::settings;
use crate::shared::memory;

/// How much use `counts` are, for eviction: every counted event is one.
fn uses(counts: &Counters) -> f64 {
    (counts.acquisitions
        + counts.busy
        + counts.timeouts
        + counts.deadlocks
        + counts.cancels
        + counts.session_holds
        + counts.xact_holds) as f64
}

/// Statistics as a listener of the session's events: they count what it hands on and add it
/// to the shared table at every transaction end and at exit.
pub struct Statistics;

pub static LISTENER: Statistics = Statistics;

impl Listener for Statistics {
    fn counting(&self) -> bool {
        tracking()
    }

    fn counted(&self, key: i64, name: &mut dyn FnMut() -> Option<Box<str>>, counts: &Counters) {
        add_named(key, name, counts);
    }

    fn transaction_ended(&self) {
        flush();
    }

    fn session_exiting(&self) {
        flush();
    }
}

/// Whether this backend counts: pglock is preloaded and pglock.track is on.
pub fn tracking() -> bool {
    settings::track() && memory::preloaded()
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

/// Adds `counters` for `key` to this backend's pending counts, with the name given by `name()`,
/// called only when the pending counts of `key` have no name yet (a caller that drops its copy
/// of the name can hand it over).
pub fn add_named(key: i64, name: impl FnOnce() -> Option<Box<str>>, counters: &Counters) {
    let full = PENDING.with_borrow_mut(|pending| {
        let entry = pending.entry(key).or_insert_with(|| Pending {
            name: None,
            counters: Counters::default(),
        });
        if entry.name.is_none() {
            entry.name = name();
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

/// Adds this backend's pending counts to the shared table.
pub fn flush() {
    let Some(table) = table() else {
        return;
    };
    let database = backend::database_id();
    let role = backend::login_role().to_u32();
    PENDING.with_borrow_mut(|pending| {
        if pending.is_empty() {
            return;
        }
        table.exclusive(|evictions| {
            // Counts are read in place, and the map is cleared, not replaced: it keeps its
            // capacity, and nothing is copied or allocated per lock but the list of new ones.
            let mut new = Vec::new();
            for (&key, pending) in pending.iter() {
                let id = StatsKey::new(database, key);
                // SAFETY: under the table's LWLock, held exclusively.
                match unsafe { table.find(&id) } {
                    Some(entry) => entry.add(pending, role),
                    None => new.push((id, pending)),
                }
            }
            // SAFETY: as above.
            unsafe {
                *evictions += table.make_room(&mut new);
                for (id, pending) in new {
                    table.insert(&id).add(pending, role);
                }
            }
        });
        pending.clear();
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
    /// The role the session that gave the name connected as: who may see the name follows
    /// pg_stat_activity's rule for that session's query text, as in pglock.locks.
    name_role: u32,
    name: [u8; MAX_NAME_BYTES],
}

impl SharedEntry {
    /// Adds pending counts of this backend's (whose session connected as `role`).
    fn add(&mut self, pending: &Pending, role: u32) {
        self.counters.add(&pending.counters);
        self.usage += uses(&pending.counters);
        if !self.has_name {
            if let Some(name) = pending.name.as_deref() {
                self.set_name(name, role);
            }
        }
    }

    fn set_name(&mut self, name: &str, role: u32) {
        let len = name.len().min(MAX_NAME_BYTES);
        self.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.name_len = len as u16;
        self.name_role = role;
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

/// The shared memory the table needs (see memory.rs).
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

    /// The entry of `id`, if it has one.
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    #[allow(clippy::mut_from_ref)]
    unsafe fn find(&self, id: &StatsKey) -> Option<&mut SharedEntry> {
        // SAFETY: the caller holds the LWLock exclusively; entries are SharedEntry.
        unsafe {
            let entry = pg_sys::hash_search(
                self.hash,
                (id as *const StatsKey).cast(),
                pg_sys::HASHACTION::HASH_FIND,
                ptr::null_mut(),
            );
            entry.cast::<SharedEntry>().as_mut()
        }
    }

    /// The entry of `id`, new and empty unless it has one; make_room() made sure it fits.
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    #[allow(clippy::mut_from_ref)]
    unsafe fn insert(&self, id: &StatsKey) -> &mut SharedEntry {
        // SAFETY: the caller holds the LWLock exclusively; the table has room (never more
        // than stats_max entries), so dynahash finds memory for the entry.
        unsafe {
            let mut found = false;
            let entry = pg_sys::hash_search(
                self.hash,
                (id as *const StatsKey).cast(),
                pg_sys::HASHACTION::HASH_ENTER,
                &mut found,
            )
            .cast::<SharedEntry>();
            if !found {
                // Every field but the name's bytes, which only name_len of are ever read (and
                // set_name writes): a new entry costs no kilobyte of zeroes.
                (&raw mut (*entry).counters).write(Counters::default());
                (&raw mut (*entry).usage).write(0.0);
                (&raw mut (*entry).has_name).write(false);
                (&raw mut (*entry).name_len).write(0);
                (&raw mut (*entry).name_role).write(0);
            }
            &mut *entry
        }
    }

    /// Makes room for the `new` entries: when they do not all fit, the least used of the
    /// table's entries and the new ones go, at least EVICT_PERCENT of the table at once, in one
    /// pass (the rest of the table's use decays). A new entry that loses is dropped from `new`
    /// and counted as evicted on arrival. Returns how many were evicted.
    ///
    /// # Safety
    /// Only with the LWLock held exclusively.
    unsafe fn make_room(&self, new: &mut Vec<(StatsKey, &Pending)>) -> i64 {
        let max = settings::stats_max();
        // SAFETY: the caller holds the LWLock exclusively.
        let entries = unsafe { pg_sys::hash_get_num_entries(self.hash) } as usize;
        if entries + new.len() <= max {
            return 0;
        }
        let total = entries + new.len();
        let evict = (total - max)
            .max((max as f64 * EVICT_PERCENT / 100.0) as usize)
            .min(total);
        // Candidates: Ok(an entry of the table) or Err(the index of a new one).
        let mut candidates: Vec<(f64, Result<StatsKey, usize>)> = Vec::with_capacity(total);
        // SAFETY: as above; the scan only reads and decays usage.
        unsafe {
            self.for_each(|entry| {
                (*entry).usage *= USAGE_DECAY;
                candidates.push(((*entry).usage, Ok((*entry).id)));
            });
        }
        candidates.extend(
            new.iter()
                .enumerate()
                .map(|(index, (_, pending))| (uses(&pending.counters), Err(index))),
        );
        if evict < candidates.len() {
            candidates.select_nth_unstable_by(evict, |a, b| a.0.total_cmp(&b.0));
        }
        let mut dropped = vec![false; new.len()];
        for (_, candidate) in &candidates[..evict] {
            match candidate {
                // SAFETY: as above.
                Ok(id) => unsafe { self.remove(id) },
                Err(index) => dropped[*index] = true,
            }
        }
        let mut index = 0;
        new.retain(|_| {
            index += 1;
            !dropped[index - 1]
        });
        evict as i64
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

fn timestamp(at: pg_sys::TimestampTz) -> Option<TimestampWithTimeZone> {
    (at != NEVER)
        .then(|| TimestampWithTimeZone::try_from(at).ok())
        .flatten()
}

/// Every row of the shared table the current user may see: this database's, and every
/// database's for members of pg_read_all_stats; a name only where pg_stat_activity would show
/// the query text of the session that gave it (as in pglock.locks). This session's own counts
/// are added first.
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
                    rows.push((entry.id, entry.name(), entry.name_role, entry.counters));
                }
            })
        }
    });
    // Who may see each name is decided after the LWLock is released (it reads the catalog).
    let mut may_see: HashMap<u32, bool> = HashMap::new();
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|(id, name, role, counters)| {
            let shown = name.filter(|_| {
                all_databases
                    || *may_see
                        .entry(role)
                        .or_insert_with(|| backend::may_read_stats_of(pg_sys::Oid::from(role)))
            });
            (id, shown, counters)
        })
        .collect();
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
    let key = name.map(|name| crate::names::memo::key_of(&LockName::checked(Some(name))));
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
