//! Locks owned by a token (pglock.acquire): held by prepared transactions, so that they outlive
//! the session that took them and are renewed or released from any connection that has the
//! token. docs/design/token-locks.md gives the reasons; in short:
//!
//! - A token-owned lock is ExclusiveLock (exclusive) or ShareLock (shared) on the key's advisory
//!   tag, the built-ins' own modes, held by a prepared transaction: so it and every session lock
//!   of the key exclude each other both ways, it shows in pg_locks (with no pid), and its
//!   waiters queue in PostgreSQL's own queue, in arrival order, beside the built-ins' waiters.
//!   Two-phase commit is PostgreSQL's only way to hand a lock from one process to another, and
//!   it makes the lock survive a restart, a crash and the promotion of a standby.
//! - A SQL function cannot prepare its caller's transaction, so background workers take and
//!   prepare: the token worker tries each new request without waiting, and ends locks (release,
//!   expiry); when the key is taken, a waiter process (a dynamic background worker) waits in the
//!   lock's queue on the caller's behalf, while the caller's session sleeps on a condition
//!   variable until it is granted or the caller's timeout passes.
//! - The table in shared memory (pglock.max_token_locks entries, one LWLock) says who owns what:
//!   renew and fence_ok read and write only the table.
//!
//! Every entry goes Free -> Asked -> (Refused -> Waiting ->) Granting -> Held -> Ending -> Free.
//! The session that asked owns the entry until it is Held; a session that gives up (timeout,
//! cancel, exit) marks it abandoned, and whoever next moves it frees it or ends the lock.

use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{fence_tag, AdvisoryLock, Mode};
use crate::lock::wait;
use crate::names::name::MAX_NAME_BYTES;
use crate::session::counts::Counters;
use crate::session::events;
use crate::settings;
use crate::shared::memory;
use crate::shared::tokens;

/// Bytes of the taker's application_name and client address kept for pglock.locks and the log.
const APP_BYTES: usize = 64;
const ADDR_BYTES: usize = 64;

/// The prefix of every prepared transaction pglock makes (pg_prepared_xacts.gid).
pub const GID_PREFIX: &str = "pglock:";

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
enum End {
    Released = 0,
    Expired,
    ReachedMaxHold,
    Abandoned,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    state: State,
    shared: bool,
    /// The session that asked gave up: a grant goes straight to Ending.
    abandoned: bool,
    end: End,
    /// Changes whenever the entry is freed, so that a late waiter or worker sees it is stale.
    generation: u32,
    database: u32,
    /// The role that called acquire.
    role: u32,
    /// The prepared transaction's xid (pg_locks.virtualtransaction is -1/xid).
    xid: u32,
    /// The session that asked, while the entry is not yet Held (for its exit callback).
    requester: i32,
    /// The waiter process, while Waiting (0 until it has started).
    waiter: i32,
    key: i64,
    token: i64,
    /// The TTL in force (a renewal may give another).
    ttl_us: i64,
    /// The TTL the lock was prepared with, part of its GID.
    prepared_ttl_us: i64,
    since: pg_sys::TimestampTz,
    expires_at: pg_sys::TimestampTz,
    name_len: u16,
    app_len: u8,
    addr_len: u8,
    name: [u8; MAX_NAME_BYTES],
    app: [u8; APP_BYTES],
    addr: [u8; ADDR_BYTES],
}

impl Entry {
    fn mode(&self) -> Mode {
        if self.shared {
            Mode::Shared
        } else {
            Mode::Exclusive
        }
    }

    /// The key's advisory tag in the entry's database, as pg_advisory_lock takes it there.
    fn tag(&self) -> pg_sys::LOCKTAG {
        AdvisoryLock {
            key: self.key,
            mode: self.mode(),
        }
        .tag_in(self.database)
    }

    fn gid(&self) -> CString {
        CString::new(format!(
            "{GID_PREFIX}{}:{}:{}:{}:{}:{}",
            self.token,
            self.database,
            self.key,
            if self.shared { 's' } else { 'x' },
            self.prepared_ttl_us,
            self.role
        ))
        .expect("digits and colons")
    }

    fn name(&self) -> Option<String> {
        (self.name_len > 0)
            .then(|| String::from_utf8_lossy(&self.name[..self.name_len as usize]).into_owned())
    }

    fn describe(&self) -> String {
        match self.name() {
            Some(name) => format!("lock \"{name}\""),
            None => format!("lock with key {}", self.key),
        }
    }

    fn free(&mut self) {
        let generation = self.generation.wrapping_add(1);
        // SAFETY: an all-zero Entry is a valid Free one.
        *self = unsafe { std::mem::zeroed() };
        self.generation = generation;
    }
}

/// The token worker's fields of the table's header.
#[repr(C)]
struct Fields {
    /// The token worker's latch while it runs, else null.
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// Set once the worker has read back the locks of pg_prepared_xacts after a start.
    ready: AtomicBool,
    /// When the worker looks next (i64::MAX: when woken).
    worker_wakes_at: AtomicI64,
    /// Broadcast whenever an entry changes state; sessions waiting for theirs sleep on it.
    changed: std::cell::UnsafeCell<pg_sys::ConditionVariable>,
}

/// The token locks: every entry in use is one (the table is not kept dense: an entry's index
/// and generation name a request for as long as it lives).
type Table = memory::Table<Fields, Entry>;

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

fn table() -> Option<&'static Table> {
    TABLE.get()
}

/// Registers the token worker (from _PG_init while preloading).
pub fn register_worker() {
    if settings::max_token_locks() == 0 {
        return;
    }
    BackgroundWorkerBuilder::new("pglock token worker")
        .set_type("pglock token worker")
        .set_library("pglock")
        .set_function("pglock_token_worker")
        .enable_spi_access()
        // Prepared transactions can only be made and finished on a primary: after a
        // promotion the worker starts and takes over the locks the standby replayed.
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Runs `f` on entry `index` if it is still of `generation`.
fn with_entry<R>(
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

fn changed(table: &Table) {
    // SAFETY: the table's condition variable, initialised at attach.
    unsafe { pg_sys::ConditionVariableBroadcast(table.changed.get()) };
}

fn wake_worker(table: &Table) {
    let latch = table.worker_latch.load(Ordering::SeqCst);
    if !latch.is_null() {
        // SAFETY: the worker's PGPROC latch, valid while the worker runs (and harmless to set
        // for a moment after: the slot's next owner only wakes once).
        unsafe { pg_sys::SetLatch(latch) };
    }
}

// ---------------------------------------------------------------------------------------------
// The sessions' side.

/// What acquire asks for.
pub struct Request<'a> {
    pub key: i64,
    pub shared: bool,
    pub ttl_us: i64,
    pub name: Option<&'a str>,
}

/// The table if token-owned locks can be taken here, else the reason as an ERROR.
fn usable_table() -> &'static Table {
    let Some(table) = table() else {
        errors::token_locks_need_preload()
    };
    if backend::recovery_in_progress() {
        errors::token_locks_on_standby();
    }
    if max_prepared_transactions() == 0 {
        errors::token_locks_need_prepared_transactions();
    }
    if !table.ready.load(Ordering::SeqCst) || table.worker_latch.load(Ordering::SeqCst).is_null() {
        errors::token_worker_not_running(&settings::token_database());
    }
    table
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

unsafe extern "C-unwind" {
    /// twophase.h: COMMIT PREPARED / ROLLBACK PREPARED without the statement (not in pgrx's
    /// bindings). Called through pgrx's FFI guard, as it may raise an ERROR.
    fn FinishPreparedTransaction(gid: *const std::ffi::c_char, is_commit: bool);
}

/// A request this session made and has not seen through: dropped armed (an ERROR, a cancel)
/// it gives the request up, so that nothing it leads to stays held.
struct Pending<'t> {
    table: &'t Table,
    index: usize,
    generation: u32,
    armed: bool,
    key: i64,
    /// When the wait in the lock's queue began, once it has.
    waiting_since: Option<pg_sys::TimestampTz>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            give_up(self.table, self.index, self.generation);
            // An ERROR (a cancel, statement_timeout) ended the request: pglock.stats counts
            // it as a cancelled wait.
            let since = self.waiting_since;
            count(self.key, None, |counts| {
                counts.cancels = 1;
                if let Some(since) = since {
                    counts.waited_for(backend::now() - since);
                }
            });
        }
    }
}

/// Hands what an acquire came to on to pglock.stats, when it counts. Token-owned locks count
/// acquisitions, waits, busy tries, timeouts and cancels as session locks do; their holds are
/// not counted (they end in another process, often the token worker).
fn count(key: i64, name: Option<&str>, f: impl FnOnce(&mut Counters)) {
    if events::counting() {
        let mut counts = Counters::default();
        f(&mut counts);
        events::counted(key, &mut || name.map(Box::from), &counts);
    }
}

/// Gives up the request in entry `index`: whatever it has come to is undone, now or by whoever
/// moves it next.
fn give_up(table: &Table, index: usize, generation: u32) {
    let waiter = with_entry(table, index, generation, |entry| match entry.state {
        State::Asked | State::Granting => {
            entry.abandoned = true;
            0
        }
        State::Waiting => {
            let waiter = entry.waiter;
            entry.free();
            waiter
        }
        State::Refused | State::Failed => {
            entry.free();
            0
        }
        State::Held => {
            entry.state = State::Ending;
            entry.end = End::Abandoned;
            0
        }
        State::Ending | State::Free => 0,
    });
    if let Some(waiter) = waiter.filter(|&pid| pid != 0) {
        // SAFETY: a cancel, as pg_cancel_backend sends, to the waiter process this request
        // started; its lock wait ends with an ERROR that it catches, and it exits.
        unsafe { libc::kill(waiter, libc::SIGINT) };
    }
    wake_worker(table);
    changed(table);
}

/// At a session's exit: gives up every request it has not seen through (a FATAL skips the
/// Pending guards).
fn give_up_all_mine() {
    let Some(table) = table() else { return };
    let pid = backend::pid();
    let mine: Vec<(usize, u32)> = table.read(|entries, _| {
        entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| {
                entry.requester == pid && !matches!(entry.state, State::Free | State::Held)
            })
            .map(|(index, entry)| (index, entry.generation))
            .collect()
    });
    for (index, generation) in mine {
        give_up(table, index, generation);
    }
}

/// Takes the lock for a new token, waiting at most `wait_us` (None: no deadline of pglock's;
/// Some(0): not at all); returns the token, or None when not granted in time.
pub fn acquire(request: &Request, wait_us: Option<i64>) -> Option<i64> {
    let table = usable_table();
    let deadline = wait_us.map(|us| backend::now().saturating_add(us));
    let (app, addr) = who_am_i();
    let role = backend::login_role().to_u32();
    let pid = backend::pid();
    let database = backend::database_id();
    backend::at_exit(give_up_all_mine);
    let reserved = table.update(|entries, _| {
        let used = entries.iter().filter(|e| e.state != State::Free).count();
        let by_role = entries
            .iter()
            .filter(|e| e.state != State::Free && e.role == role)
            .count();
        if let Some(cap) = settings::max_token_locks_per_role() {
            if by_role >= cap {
                return Err((by_role, cap, true));
            }
        }
        let cap = entries
            .len()
            .min(max_prepared_transactions().max(0) as usize);
        let free = entries.iter().position(|e| e.state == State::Free);
        let Some(index) = free.filter(|_| used < cap) else {
            return Err((used, cap, false));
        };
        let entry = &mut entries[index];
        entry.state = State::Asked;
        entry.shared = request.shared;
        entry.database = database;
        entry.role = role;
        entry.requester = pid;
        entry.key = request.key;
        entry.ttl_us = request.ttl_us;
        let name = request.name.unwrap_or("").as_bytes();
        entry.name_len = name.len() as u16;
        entry.name[..name.len()].copy_from_slice(name);
        entry.app_len = app.len() as u8;
        entry.app[..app.len()].copy_from_slice(app.as_bytes());
        entry.addr_len = addr.len() as u8;
        entry.addr[..addr.len()].copy_from_slice(addr.as_bytes());
        Ok((index, entry.generation))
    });
    let (index, generation) = match reserved {
        Ok(reserved) => reserved,
        Err((count, cap, per_role)) => errors::too_many_token_locks(count, cap, per_role),
    };
    let mut pending = Pending {
        table,
        index,
        generation,
        armed: true,
        key: request.key,
        waiting_since: None,
    };
    wake_worker(table);
    // The worker's answer to the try, granted or refused, whatever the deadline: the worker
    // never waits for a lock, so it answers at once.
    let answered = wait_for(table, index, generation, None, |entry| {
        entry.state != State::Asked
    });
    let state = answered.expect("no deadline");
    let state = match state {
        State::Refused if wait_us == Some(0) => {
            count(request.key, request.name, |counts| counts.busy = 1);
            return None;
        }
        State::Refused => {
            // A hold of this session's own would keep the waiter out for good: the lock
            // manager cannot see that the session waits for the waiter.
            if holds_in_conflict(request) {
                errors::token_lock_waits_for_own_hold();
            }
            pending.waiting_since = Some(backend::now());
            start_waiter(table, index, generation, deadline)
        }
        other => other,
    };
    if state == State::Waiting {
        let answered = wait_for(table, index, generation, deadline, |entry| {
            entry.state != State::Waiting
        });
        // Out of time: unless the grant has come or is on its way, give it up.
        let granted = answered.is_some()
            || with_entry(table, index, generation, |entry| {
                matches!(entry.state, State::Granting | State::Held)
            }) == Some(true);
        if !granted {
            let since = pending.waiting_since;
            count(request.key, request.name, |counts| {
                counts.timeouts = 1;
                if let Some(since) = since {
                    counts.waited_for(backend::now() - since);
                }
            });
            return None;
        }
    }
    // A grant on its way (its transaction being prepared) is waited for, deadline or not.
    wait_for(table, index, generation, None, |entry| {
        entry.state != State::Granting
    });
    let held = with_entry(table, index, generation, |entry| {
        (entry.state == State::Held).then(|| {
            entry.requester = 0;
            entry.token
        })
    })
    .flatten();
    match held {
        Some(token) => {
            pending.armed = false;
            let since = pending.waiting_since;
            count(request.key, request.name, |counts| {
                let now = backend::now();
                counts.acquired(now);
                if let Some(since) = since {
                    counts.waited = 1;
                    counts.waited_for(now - since);
                }
            });
            Some(token)
        }
        None => {
            let failed = with_entry(table, index, generation, |entry| {
                entry.state == State::Failed
            });
            if failed == Some(true) {
                errors::token_lock_failed();
            }
            None
        }
    }
}

/// Whether this session holds `request`'s key in a mode the token-owned lock would wait for.
fn holds_in_conflict(request: &Request) -> bool {
    let held = |mode| {
        AdvisoryLock {
            key: request.key,
            mode,
        }
        .is_held()
    };
    held(Mode::Exclusive) || held(Mode::Upgradeable) || (!request.shared && held(Mode::Shared))
}

/// Sleeps until `done` holds for entry `index` (its state then), or `deadline` passes (None).
/// A cancel or statement_timeout raises its ERROR from the sleep.
fn wait_for(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
    done: impl Fn(&Entry) -> bool,
) -> Option<State> {
    let cv = table.changed.get();
    loop {
        let state = table.read(|entries, _| {
            let entry = &entries[index];
            if entry.generation != generation {
                Some(State::Free)
            } else {
                done(entry).then_some(entry.state)
            }
        });
        if let Some(state) = state {
            // SAFETY: ends the sleep this loop may have prepared.
            unsafe { pg_sys::ConditionVariableCancelSleep() };
            return Some(state);
        }
        let left_ms = match deadline {
            Some(deadline) => {
                let left_us = deadline - backend::now();
                if left_us <= 0 {
                    // SAFETY: as above.
                    unsafe { pg_sys::ConditionVariableCancelSleep() };
                    return None;
                }
                (left_us + 999) / 1000
            }
            None => 1000,
        };
        // SAFETY: the table's condition variable; the sleep services interrupts (a cancel
        // raises its ERROR here, which the caller's Pending guard answers).
        unsafe {
            pg_sys::ConditionVariableTimedSleep(
                cv,
                left_ms.min(1000) as _,
                pg_sys::PG_WAIT_EXTENSION,
            )
        };
    }
}

/// How long a session tries for a background worker slot for its waiter before 53400: slots of
/// waiters that just ended are given back by the postmaster a moment later.
const WORKER_SLOT_PATIENCE_US: i64 = 2_000_000;

/// Starts the waiter process for a refused request, trying again every 10 ms while every
/// background worker slot is taken, until `deadline` or for WORKER_SLOT_PATIENCE_US at most;
/// returns the entry's new state.
fn start_waiter(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
) -> State {
    let moved = with_entry(table, index, generation, |entry| {
        if entry.state == State::Refused && !entry.abandoned {
            entry.state = State::Waiting;
            true
        } else {
            false
        }
    });
    if moved != Some(true) {
        return State::Free;
    }
    let started_at = backend::now();
    let give_up_at = deadline.map_or(started_at + WORKER_SLOT_PATIENCE_US, |deadline| {
        deadline.min(started_at + WORKER_SLOT_PATIENCE_US)
    });
    loop {
        let started = BackgroundWorkerBuilder::new("pglock token waiter")
            .set_type("pglock token waiter")
            .set_library("pglock")
            .set_function("pglock_token_waiter")
            .enable_spi_access()
            .set_argument(Some(pg_sys::Datum::from(index)))
            .set_extra(&generation.to_string())
            .load_dynamic();
        if started.is_ok() {
            return State::Waiting;
        }
        if backend::now() >= give_up_at {
            with_entry(table, index, generation, Entry::free);
            changed(table);
            errors::no_worker_for_token_wait();
        }
        // SAFETY: a timed wait on this backend's own latch; the interrupt check may raise a
        // cancel's ERROR, which the caller's guard answers.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                10,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// The session's application_name and client address, cut to what the table keeps.
fn who_am_i() -> (String, String) {
    // SAFETY: application_name is a GUC string, always set in a backend.
    let app = unsafe { pg_sys::application_name.as_ref() }
        .map(|_| {
            // SAFETY: as just said: a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(pg_sys::application_name) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let addr = Spi::get_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
        .ok()
        .flatten()
        .unwrap_or_default();
    (cut(app, APP_BYTES), cut(addr, ADDR_BYTES))
}

/// `text` cut to at most `bytes` bytes, at a character boundary.
fn cut(mut text: String, bytes: usize) -> String {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// The index of the entry holding `key` in this database under `token`, while it has not
/// expired.
fn find_held(entries: &[Entry], key: i64, token: i64) -> Option<usize> {
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

/// Extends the lock `key` held under `token` by `ttl_us` from now (None: its own TTL), never
/// past pglock.token_max_hold from when it was taken; false when the token does not own it.
pub fn renew(key: i64, token: i64, ttl_us: Option<i64>) -> bool {
    let table = usable_table();
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    table.update(|entries, _| {
        let Some(index) = find_held(entries, key, token) else {
            return false;
        };
        let entry = &mut entries[index];
        let ttl = ttl_us.unwrap_or(entry.ttl_us);
        entry.ttl_us = ttl;
        entry.expires_at = now
            .saturating_add(ttl)
            .min(entry.since.saturating_add(max_hold));
        true
    })
}

/// Releases the lock `key` held under `token`, once the token worker has ended its prepared
/// transaction; false when the token does not own it.
pub fn release(key: i64, token: i64) -> bool {
    let table = usable_table();
    let ending = table.update(|entries, _| {
        let index = find_held(entries, key, token)?;
        let entry = &mut entries[index];
        entry.state = State::Ending;
        entry.end = End::Released;
        Some((index, entry.generation))
    });
    let Some((index, generation)) = ending else {
        return false;
    };
    wake_worker(table);
    // Returns once the lock is free: the caller may take it again at once.
    wait_for(table, index, generation, None, |_| false);
    true
}

/// Whether `key` is held in this database under `token` by a token-owned lock. Takes a share
/// of the key's fence tag until the transaction ends: the worker ends a lock only once it has
/// that tag exclusively, so a write checked here commits before the lock can pass on.
pub fn fence_holds(key: i64, token: i64) -> bool {
    let Some(table) = table() else { return false };
    let tag = fence_tag(backend::database_id(), key);
    // SAFETY: a transaction-scope lock on pglock's own fence tag of the key, waiting if the
    // worker is ending that key's lock right now (it holds the tag only for a moment).
    unsafe { pg_sys::LockAcquire(&tag, pg_sys::AccessShareLock as _, false, false) };
    table.read(|entries, _| find_held(entries, key, token).is_some())
}

/// A token-owned lock as pglock.token_locks() shows it.
pub struct Row {
    pub key: i64,
    pub name: Option<String>,
    /// Shown only to the role that took it (the token is what renews and releases it).
    pub token: Option<i64>,
    pub shared: bool,
    pub role: pg_sys::Oid,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub since: pg_sys::TimestampTz,
    pub expires_at: pg_sys::TimestampTz,
    pub xid: i64,
}

/// The token-owned locks of this database, held now; names and tokens as the current user may
/// see them.
pub fn visible() -> Vec<Row> {
    let Some(table) = table() else {
        return Vec::new();
    };
    let database = backend::database_id();
    let held: Vec<Entry> = table.read(|entries, _| {
        entries
            .iter()
            .filter(|entry| entry.state == State::Held && entry.database == database)
            .copied()
            .collect()
    });
    held.iter()
        .map(|entry| {
            let role = pg_sys::Oid::from(entry.role);
            let sees_name = backend::may_read_stats_of(role);
            // SAFETY: a catalog lookup through the membership cache, inside a transaction.
            let owns = unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) };
            let addr = String::from_utf8_lossy(&entry.addr[..entry.addr_len as usize]);
            Row {
                key: entry.key,
                name: entry.name().filter(|_| sees_name),
                token: owns.then_some(entry.token),
                shared: entry.shared,
                role,
                application_name: String::from_utf8_lossy(&entry.app[..entry.app_len as usize])
                    .into_owned(),
                client_addr: (!addr.is_empty()).then(|| addr.into_owned()),
                since: entry.since,
                expires_at: entry.expires_at,
                xid: entry.xid as i64,
            }
        })
        .collect()
}

/// The table's use for a status report.
pub struct Occupancy {
    pub held: usize,
    pub waiting: usize,
    pub capacity: usize,
    pub worker_running: bool,
    /// The oldest lock's age in seconds (how far back it holds vacuum's horizon).
    pub oldest_hold_s: Option<f64>,
}

pub fn occupancy() -> Option<Occupancy> {
    let table = table()?;
    let now = backend::now();
    let (held, waiting, oldest) = table.read(|entries, _| {
        let held: Vec<&Entry> = entries.iter().filter(|e| e.state == State::Held).collect();
        let waiting = entries.iter().filter(|e| e.state == State::Waiting).count();
        let oldest = held.iter().map(|e| e.since).min();
        (held.len(), waiting, oldest)
    });
    Some(Occupancy {
        held,
        waiting,
        capacity: table.capacity(),
        worker_running: !table.worker_latch.load(Ordering::SeqCst).is_null(),
        oldest_hold_s: oldest.map(|since| (now - since) as f64 / 1e6),
    })
}

// ---------------------------------------------------------------------------------------------
// The workers' side.

/// What a worker's attempt to take a lock came to.
enum Taken {
    Held,
    NotAvailable,
    /// The request was given up or freed meanwhile.
    Gone,
}

/// Starts the transaction block a lock is taken and prepared in (as `BEGIN` does).
///
/// # Safety
/// A background worker connected to a database, outside any transaction.
unsafe fn begin() {
    // SAFETY: what postgres.c does for BEGIN and the next statement.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::BeginTransactionBlock();
        pg_sys::CommitTransactionCommand();
        pg_sys::StartTransactionCommand();
    }
}

/// Takes entry `index`'s lock in a new transaction and prepares it, waiting in the lock's queue
/// unless `dont_wait`.
///
/// # Safety
/// A background worker connected to pglock.token_database, outside any transaction.
unsafe fn take(table: &Table, index: usize, generation: u32, dont_wait: bool) -> Taken {
    let Some(entry) = with_entry(table, index, generation, |entry| *entry) else {
        return Taken::Gone;
    };
    let tag = entry.tag();
    let lockmode = if entry.shared {
        pg_sys::ShareLock
    } else {
        pg_sys::ExclusiveLock
    } as pg_sys::LOCKMODE;
    // SAFETY: the caller's promise; LockAcquire with a valid tag and mode (an ERROR, such as
    // the cancel that ends a waiter, propagates to the caller's catch).
    let result = unsafe {
        begin();
        pg_sys::LockAcquire(&tag, lockmode, false, dont_wait)
    };
    if result == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
        // SAFETY: ends the transaction block begun above.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        return Taken::NotAvailable;
    }
    let claimed = with_entry(table, index, generation, |entry| {
        if matches!(entry.state, State::Asked | State::Waiting) && !entry.abandoned {
            entry.state = State::Granting;
            true
        } else {
            false
        }
    });
    if claimed != Some(true) {
        // SAFETY: as above; the lock goes with the transaction.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        if claimed == Some(false) {
            with_entry(table, index, generation, Entry::free);
        }
        changed(table);
        return Taken::Gone;
    }
    changed(table);
    // The token is the grant's: greater than every token handed out before it.
    let token = tokens::next();
    // SAFETY: inside the transaction begun above.
    let xid = unsafe { pg_sys::GetTopTransactionId() };
    let mut prepared = entry;
    prepared.token = token;
    prepared.prepared_ttl_us = entry.ttl_us;
    let gid = prepared.gid();
    // SAFETY: PREPARE TRANSACTION as postgres.c runs it: the lock moves to the prepared
    // transaction and stays held after this transaction command ends.
    unsafe {
        pg_sys::PrepareTransactionBlock(gid.as_ptr());
        pg_sys::CommitTransactionCommand();
    }
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    with_entry(table, index, generation, |entry| {
        entry.token = token;
        entry.prepared_ttl_us = prepared.prepared_ttl_us;
        entry.xid = xid.into_inner();
        entry.since = now;
        entry.expires_at = now.saturating_add(entry.ttl_us.min(max_hold));
        entry.waiter = 0;
        if entry.abandoned {
            entry.state = State::Ending;
            entry.end = End::Abandoned;
        } else {
            entry.state = State::Held;
        }
    });
    wake_worker(table);
    changed(table);
    Taken::Held
}

/// Ends entry `index`'s lock: rolls its prepared transaction back once no transaction that
/// checked its token with fence_ok is still open. False if such a transaction is in the way
/// (try again later).
///
/// # Safety
/// The token worker, outside any transaction.
unsafe fn finish(table: &Table, index: usize, generation: u32) -> bool {
    let Some(entry) = with_entry(table, index, generation, |entry| *entry) else {
        return true;
    };
    let fence = fence_tag(entry.database, entry.key);
    let gid = entry.gid();
    // SAFETY: a transaction of the worker's; the fence tag exclusively without waiting, then
    // ROLLBACK PREPARED's work (an ERROR propagates to the caller's catch).
    unsafe {
        pg_sys::StartTransactionCommand();
        let fenced = pg_sys::LockAcquire(&fence, pg_sys::AccessExclusiveLock as _, false, true);
        if fenced == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            pg_sys::AbortCurrentTransaction();
            return false;
        }
        pg_sys::ffi::pg_guard_ffi_boundary(|| FinishPreparedTransaction(gid.as_ptr(), false));
        // Inside the transaction: the report looks the role's name up in the catalog.
        if matches!(entry.end, End::Expired | End::ReachedMaxHold) {
            report_expiry(&entry);
        }
        pg_sys::CommitTransactionCommand();
    }
    with_entry(table, index, generation, Entry::free);
    changed(table);
    true
}

/// Logs an expired lock: its name, token, who took it, and how late it is released. Inside a
/// transaction.
fn report_expiry(entry: &Entry) {
    let now = backend::now();
    let app = String::from_utf8_lossy(&entry.app[..entry.app_len as usize]);
    let addr = String::from_utf8_lossy(&entry.addr[..entry.addr_len as usize]);
    // SAFETY: a syscache lookup; noerr gives NULL for a dropped role.
    let role = unsafe { pg_sys::GetUserNameFromId(pg_sys::Oid::from(entry.role), true) };
    let role = if role.is_null() {
        format!("{}", entry.role)
    } else {
        // SAFETY: a palloc'd NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(role) }
            .to_string_lossy()
            .into_owned()
    };
    let from = if addr.is_empty() {
        "over a Unix socket".to_owned()
    } else {
        format!("client address {addr}")
    };
    let why = match entry.end {
        End::ReachedMaxHold => "it reached pglock.token_max_hold",
        _ => "it was not renewed",
    };
    let message = format!(
        "token-owned {} expired: {why}; token {} released",
        entry.describe(),
        entry.token
    );
    let detail = format!(
        "It was taken by role \"{role}\" (application_name \"{app}\", {from}) {:.3} s ago with a TTL of {:.3} s, and released {:.3} s after its expiry.",
        (now - entry.since) as f64 / 1e6,
        entry.ttl_us as f64 / 1e6,
        (now - entry.expires_at).max(0) as f64 / 1e6,
    );
    ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message, "")
        .set_detail(detail)
        .report(PgLogLevel::LOG);
}

/// Runs `f`; an ERROR it raises aborts its transaction and is logged as a WARNING (a cancel,
/// which ends a waiter whose session gave up, only at DEBUG1), and its SQLSTATE is returned,
/// so that the worker goes on.
fn caught(what: &str, f: impl FnOnce()) -> Result<(), PgSqlErrorCode> {
    PgTryBuilder::new(AssertUnwindSafe(|| {
        f();
        Ok(())
    }))
    .catch_others(|error| {
        // SAFETY: cleans up the failed transaction, as PostgresMain does after an ERROR.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        // A cancel raised by ProcessInterrupts left the flags after it (a ProcSignalBarrier
        // that DROP DATABASE waits for, ...) unserviced: the next check must see them.
        wait::rearm_interrupts();
        let report = match &error {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report) => report,
            pg_sys::panic::CaughtError::RustPanic { ereport, .. } => ereport,
        };
        let code = report.sql_error_code();
        if code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
            pgrx::debug1!("pglock: {what}: {}", report.message());
        } else {
            pgrx::warning!("pglock: {what}: {}", report.message());
        }
        Err(code)
    })
    .execute()
}

/// Reads back, after a start, the token-owned locks whose prepared transactions survived (a
/// restart, a crash, a promotion): each gets a full TTL from now, so that its holder can renew
/// it. Names are not kept across a restart.
fn read_back(table: &Table) {
    let gids: Vec<(String, i64)> = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT gid, transaction::text::bigint FROM pg_catalog.pg_prepared_xacts \
                 WHERE gid LIKE 'pglock:%' AND database OPERATOR(pg_catalog.=) pg_catalog.current_database()",
                None,
                &[],
            )?;
            let mut gids = Vec::new();
            for row in rows {
                if let (Some(gid), Some(xid)) = (row.get::<String>(1)?, row.get::<i64>(2)?) {
                    gids.push((gid, xid));
                }
            }
            Ok::<_, pgrx::spi::Error>(gids)
        })
        .unwrap_or_default()
    });
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    for (gid, xid) in gids {
        let fields: Vec<&str> = gid[GID_PREFIX.len()..].split(':').collect();
        let parsed = (|| -> Option<Entry> {
            let [token, database, key, mode, ttl, role] = fields[..] else {
                return None;
            };
            // SAFETY: an all-zero Entry is a valid Free one.
            let mut entry: Entry = unsafe { std::mem::zeroed() };
            entry.token = token.parse().ok()?;
            entry.database = database.parse().ok()?;
            entry.key = key.parse().ok()?;
            entry.shared = mode == "s";
            entry.ttl_us = ttl.parse().ok()?;
            entry.prepared_ttl_us = entry.ttl_us;
            entry.role = role.parse().ok()?;
            entry.xid = xid as u32;
            entry.since = now;
            entry.expires_at = now.saturating_add(entry.ttl_us.min(max_hold));
            entry.state = State::Held;
            Some(entry)
        })();
        let Some(restored) = parsed else {
            pgrx::warning!("pglock token worker: prepared transaction \"{gid}\" is not one of pglock's token locks; left alone");
            continue;
        };
        table.update(|entries, _| {
            if entries
                .iter()
                .any(|e| e.state != State::Free && e.token == restored.token)
            {
                return; // still known (the worker restarted, not the server)
            }
            if let Some(free) = entries.iter_mut().find(|e| e.state == State::Free) {
                let generation = free.generation;
                *free = restored;
                free.generation = generation;
            }
        });
    }
}

/// The token worker: serves new requests without waiting, ends released, expired and abandoned
/// locks, and sleeps until the next expiry or request.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pglock_token_worker(_argument: pg_sys::Datum) {
    use pgrx::bgworkers::SignalWakeFlags;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&settings::token_database()), None);
    let Some(table) = table() else { return };
    read_back(table);
    // Requests left half-done by an earlier run of this worker (it exited with an ERROR): a
    // grant in progress is gone with its transaction.
    table.update(|entries, _| {
        for entry in entries.iter_mut() {
            if entry.state == State::Granting {
                entry.state = State::Failed;
            }
        }
    });
    // SAFETY: MyLatch is this process's shared latch once it has started.
    table
        .worker_latch
        .store(unsafe { pg_sys::MyLatch }, Ordering::SeqCst);
    table.ready.store(true, Ordering::SeqCst);
    changed(table);
    loop {
        table.worker_wakes_at.store(i64::MAX, Ordering::SeqCst);
        let next = serve(table);
        table.worker_wakes_at.store(next, Ordering::SeqCst);
        let sleep_us = next.saturating_sub(backend::now()).clamp(0, 60_000_000);
        if !BackgroundWorker::wait_latch(Some(Duration::from_micros(sleep_us as u64 + 999))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what a background worker does on SIGHUP, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    table.worker_latch.store(ptr::null_mut(), Ordering::SeqCst);
    table.ready.store(false, Ordering::SeqCst);
}

/// One round of the worker's work; returns when it must look again (i64::MAX: when woken).
fn serve(table: &Table) -> pg_sys::TimestampTz {
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    let (asked, ending) = table.update(|entries, _| {
        let mut asked = Vec::new();
        let mut ending = Vec::new();
        for (index, entry) in entries.iter_mut().enumerate() {
            if entry.state == State::Held && entry.expires_at <= now {
                entry.state = State::Ending;
                entry.end = if entry.expires_at >= entry.since.saturating_add(max_hold) {
                    End::ReachedMaxHold
                } else {
                    End::Expired
                };
            }
            match entry.state {
                State::Asked => asked.push((index, entry.generation)),
                State::Ending => ending.push((index, entry.generation)),
                _ => {}
            }
        }
        (asked, ending)
    });
    let mut retry = false;
    let mut failed = false;
    for (index, generation) in ending {
        let mut done = true;
        match caught("ending a lock", || {
            // SAFETY: the token worker, outside any transaction.
            done = unsafe { finish(table, index, generation) };
        }) {
            Ok(()) => retry |= !done,
            Err(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT) => {
                // Its prepared transaction is gone (finished by hand): nothing is held.
                with_entry(table, index, generation, Entry::free);
                changed(table);
            }
            // Anything else: the lock is still held; try again in a while (the WARNING
            // says why).
            Err(_) => failed = true,
        }
    }
    for (index, generation) in asked {
        let mut taken = Taken::Gone;
        let ok = caught("taking a lock", || {
            // SAFETY: the token worker, outside any transaction.
            taken = unsafe { take(table, index, generation, true) };
        })
        .is_ok();
        if !ok {
            with_entry(table, index, generation, |entry| {
                if entry.abandoned {
                    entry.free();
                } else {
                    entry.state = State::Failed;
                }
            });
        } else if let Taken::NotAvailable = taken {
            with_entry(table, index, generation, |entry| {
                if entry.abandoned {
                    entry.free();
                } else {
                    entry.state = State::Refused;
                }
            });
        }
        changed(table);
    }
    let next_expiry = table.read(|entries, _| {
        entries
            .iter()
            .filter(|entry| matches!(entry.state, State::Held | State::Ending))
            .map(|entry| {
                if entry.state == State::Ending {
                    now
                } else {
                    entry.expires_at
                }
            })
            .min()
            .unwrap_or(i64::MAX)
    });
    if failed {
        // An ending lock's rollback failed: look again in a second.
        next_expiry.max(backend::now() + 1_000_000)
    } else if retry {
        // A fence_ok transaction is in the way of an ending lock: look again soon.
        next_expiry.min(backend::now() + 10_000)
    } else {
        next_expiry.max(backend::now() + if next_expiry <= now { 10_000 } else { 0 })
    }
}

/// A waiter process: waits in the key's lock queue for the session that started it, then
/// prepares the lock for it. A cancel (the session gave up) ends the wait and the process.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pglock_token_waiter(argument: pg_sys::Datum) {
    // PostgreSQL's own handlers: SIGINT cancels the lock wait, SIGTERM ends the process.
    // SAFETY: a background worker may unblock its signals once started.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    let index = argument.value();
    let Ok(generation) = BackgroundWorker::get_extra().parse::<u32>() else {
        return;
    };
    let Some(table) = table() else { return };
    BackgroundWorker::connect_worker_to_spi(Some(&settings::token_database()), None);
    let started = with_entry(table, index, generation, |entry| {
        if entry.state == State::Waiting {
            entry.waiter = backend::pid();
            true
        } else {
            false
        }
    });
    if started != Some(true) {
        return;
    }
    // An ERROR was logged by `caught` (a cancel only at DEBUG1); the entry says the rest.
    let _ = caught("waiting for a lock", || {
        // SAFETY: a background worker connected to pglock.token_database, outside any
        // transaction.
        unsafe { take(table, index, generation, false) };
    });
    // A wait that ended in an ERROR other than the session's cancel leaves the entry Waiting:
    // the session's deadline or its next look frees it.
    with_entry(table, index, generation, |entry| {
        if entry.state == State::Waiting && entry.waiter == backend::pid() {
            entry.state = State::Failed;
        }
    });
    changed(table);
}
