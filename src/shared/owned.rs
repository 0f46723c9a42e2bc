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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{fence_held_by_me, fence_tag, AdvisoryLock, Mode};
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
    ReachedMaxXidAge,
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
    /// When the worker first found a fence_ok transaction in the way of ending it (0: never).
    fence_blocked_since: pg_sys::TimestampTz,
    /// When it was granted, as its GID says (0: prepared by 0.4.0, whose GIDs do not say).
    gid_since: pg_sys::TimestampTz,
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

    /// The prepared transaction's GID. It names the lock, not a capability: pg_prepared_xacts
    /// shows it to every role, and a token renews or releases a lock only for a role that may
    /// act for its owner (find_mine).
    fn gid(&self) -> CString {
        let mut gid = format!(
            "{GID_PREFIX}{}:{}:{}:{}:{}:{}",
            self.token,
            self.database,
            self.key,
            if self.shared { 's' } else { 'x' },
            self.prepared_ttl_us,
            self.role,
        );
        if self.gid_since != 0 {
            gid.push_str(&format!(":{}", self.gid_since));
        }
        CString::new(gid).expect("digits and colons")
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
        if memory::preloaded() {
            errors::token_locks_turned_off()
        }
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
    /// Already counted in pglock.stats (a timeout): giving it up counts nothing more.
    counted: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            give_up(self.table, self.index, self.generation);
            if self.counted {
                return;
            }
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
        counted: false,
    };
    wake_worker(table);
    // The worker's answer to the try, granted or refused: it never waits for a lock, so it
    // answers at once, unless its WAL cannot be flushed or confirmed (a synchronous standby
    // that is gone). So the answer, like a grant on its way below, is waited for past the
    // caller's deadline, but not for ever.
    let patient_until = |deadline: Option<pg_sys::TimestampTz>| {
        deadline.map(|at| at.max(backend::now() + WORKER_PATIENCE_US))
    };
    let answered = wait_for(table, index, generation, patient_until(deadline), |entry| {
        entry.state != State::Asked
    });
    let state = match answered {
        Some(State::Refused) if wait_us == Some(0) => {
            count(request.key, request.name, |counts| counts.busy = 1);
            // Counted as busy, not also as a cancel when the guard gives the request up.
            pending.counted = true;
            return None;
        }
        Some(State::Refused) => {
            // A hold of this session's own would keep the waiter out for good: the lock
            // manager cannot see that the session waits for the waiter.
            if holds_in_conflict(request) {
                errors::token_lock_waits_for_own_hold();
            }
            pending.waiting_since = Some(backend::now());
            let waiting = match start_waiter(table, index, generation) {
                Some(state) => Some(state),
                None => poll(table, index, generation, deadline),
            };
            match waiting {
                Some(state) => state,
                None => return pending.timed_out(request),
            }
        }
        Some(other) => other,
        None => return pending.timed_out(request),
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
            return pending.timed_out(request);
        }
    }
    // A grant on its way (its transaction being prepared) is waited for past the deadline, as
    // the answer above.
    let prepared = wait_for(table, index, generation, patient_until(deadline), |entry| {
        entry.state != State::Granting
    });
    if prepared.is_none() {
        return pending.timed_out(request);
    }
    let held = with_entry(table, index, generation, |entry| {
        (entry.state == State::Held).then(|| {
            entry.requester = 0;
            entry.token
        })
    })
    .flatten();
    let Some(token) = held else {
        // Failed, or ended before it was Held (its waiter or the worker exited meanwhile): the
        // Pending guard gives up whatever is left.
        errors::token_lock_failed()
    };
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

/// How long past the caller's deadline a session waits for the token worker's answer, or for a
/// grant whose prepared transaction is being flushed, before it takes the worker for stuck.
const WORKER_PATIENCE_US: i64 = 5_000_000;

impl Pending<'_> {
    /// The caller's time ran out: the request is given up (by the guard, as it drops) and
    /// counted as a timeout, once.
    fn timed_out(mut self, request: &Request) -> Option<i64> {
        let since = self.waiting_since;
        count(request.key, request.name, |counts| {
            counts.timeouts = 1;
            if let Some(since) = since {
                counts.waited_for(backend::now() - since);
            }
        });
        self.counted = true;
        None
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
/// A cancel or statement_timeout raises its ERROR from the sleep; so does a client that went
/// away (FATAL, checked every pglock.client_check_interval as a lock wait does), so that a
/// request is not granted for a client that is gone. Once a second it also checks that the
/// entry's waiter process, if it has one, still runs: one that ended without a word (killed)
/// fails the request.
fn wait_for(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
    done: impl Fn(&Entry) -> bool,
) -> Option<State> {
    let cv = table.changed.get();
    let client_check = wait::ClientCheck::arm();
    let outcome = loop {
        let (state, waiter) = table.read(|entries, _| {
            let entry = &entries[index];
            if entry.generation != generation {
                (Some(State::Free), 0)
            } else if done(entry) {
                (Some(entry.state), 0)
            } else if matches!(entry.state, State::Waiting | State::Granting) {
                (None, entry.waiter)
            } else {
                (None, 0)
            }
        });
        if let Some(state) = state {
            break Some(state);
        }
        if waiter != 0 && !process_exists(waiter) {
            waiter_gone(table, index, generation, waiter);
            continue;
        }
        let left_ms = match deadline {
            Some(deadline) => {
                let left_us = deadline - backend::now();
                if left_us <= 0 {
                    break None;
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
    };
    // SAFETY: ends the sleep this loop may have prepared.
    unsafe { pg_sys::ConditionVariableCancelSleep() };
    drop(client_check);
    outcome
}

/// Whether process `pid` runs (it may be another process that got the pid since, which only
/// delays noticing).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The waiter process of entry `index` ended without recording why: the request fails (a
/// lock it may have prepared is ended by the worker).
fn waiter_gone(table: &Table, index: usize, generation: u32, pid: i32) {
    with_entry(table, index, generation, |entry| {
        if entry.waiter == pid {
            abandon_waiters_work(entry);
        }
    });
    wake_worker(table);
    changed(table);
}

/// What is left of a request whose waiter process ended before the lock was Held: while
/// Waiting nothing is held, and the request fails; while Granting a prepared transaction may
/// exist, so the worker ends it (or finds it gone).
fn abandon_waiters_work(entry: &mut Entry) {
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

/// How often a request that has no waiter process asks the token worker again.
const POLL_US: i64 = 25_000;

/// Starts the waiter process for a refused request: Some(Waiting) when it started, Some(Free)
/// when the request was given up meanwhile, and None when the request must poll instead: its
/// role has pglock.max_token_waiters_per_role waiter processes already, or every background
/// worker slot is taken (a slot of a waiter that just ended comes back a moment later).
fn start_waiter(table: &Table, index: usize, generation: u32) -> Option<State> {
    let cap = settings::max_token_waiters_per_role();
    let moved = table.update(|entries, _| {
        let entry = &entries[index];
        if entry.generation != generation || entry.state != State::Refused || entry.abandoned {
            return Some(false);
        }
        let role = entry.role;
        let waiting = entries
            .iter()
            .filter(|e| e.state == State::Waiting && e.role == role)
            .count();
        if waiting >= cap {
            return None;
        }
        entries[index].state = State::Waiting;
        Some(true)
    });
    match moved {
        Some(true) => {}
        Some(false) => return Some(State::Free),
        None => return None,
    }
    let started = BackgroundWorkerBuilder::new("pglock token waiter")
        .set_type("pglock token waiter")
        .set_library("pglock")
        .set_function("pglock_token_waiter")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(index)))
        .set_extra(&generation.to_string())
        .load_dynamic();
    if started.is_ok() {
        return Some(State::Waiting);
    }
    let back = with_entry(table, index, generation, |entry| {
        if entry.state == State::Waiting && entry.waiter == 0 {
            entry.state = State::Refused;
            true
        } else {
            false
        }
    });
    match back {
        Some(true) => None,
        _ => Some(State::Free),
    }
}

/// Waits for a refused request by asking the token worker again every POLL_US (the request
/// has no waiter process: see start_waiter), starting a waiter process as soon as one may be
/// had. Returns the state it came to (Waiting, Granting, ...), or None when `deadline` passed.
fn poll(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
) -> Option<State> {
    loop {
        let pause_until = backend::now() + POLL_US;
        let until = deadline.map_or(pause_until, |deadline| deadline.min(pause_until));
        if wait_for(table, index, generation, Some(until), |entry| {
            entry.state != State::Refused
        })
        .is_none()
            && deadline.is_some_and(|deadline| backend::now() >= deadline)
        {
            return None;
        }
        let asked = with_entry(table, index, generation, |entry| {
            let ask = entry.state == State::Refused && !entry.abandoned;
            if ask {
                entry.state = State::Asked;
            }
            ask
        });
        if asked != Some(true) {
            return Some(State::Free);
        }
        wake_worker(table);
        let patient_until = deadline.map(|at| at.max(backend::now() + WORKER_PATIENCE_US));
        match wait_for(table, index, generation, patient_until, |entry| {
            entry.state != State::Asked
        }) {
            Some(State::Refused) => {}
            Some(other) => return Some(other),
            None => return None,
        }
        if let Some(state) = start_waiter(table, index, generation) {
            return Some(state);
        }
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
    let addr = backend::read_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
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

/// Whether the current user may renew, release or fence-check a lock taken by `role`:
/// PostgreSQL's rule for signalling another role's session (pg_cancel_backend): the role itself,
/// a role that has its privileges, or a superuser. A token alone is not enough: tokens are
/// numbers that grow, not secrets (docs/token-locks.md, "Who may do what").
fn may_act_for(role: u32) -> bool {
    // SAFETY: a catalog lookup through the role membership cache, inside a transaction (every
    // SQL function runs in one); never called with the table's LWLock held.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), pg_sys::Oid::from(role)) }
}

/// Whether the prepared transaction `xid` that holds a lock still exists: an administrator's
/// ROLLBACK PREPARED (or COMMIT PREPARED) ends it behind pglock's back, and the key is free.
/// A prepared transaction stays in the proc array, as in progress, until it is finished.
fn still_prepared(xid: u32) -> bool {
    // SAFETY: a proc-array lookup, inside a transaction.
    unsafe { pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(xid)) }
}

/// The entry (index, generation) holding `key` in this database under `token`, unexpired, when
/// the current user may act on it; None otherwise, whatever the reason, so that a wrong token
/// and another role's token look the same. An entry whose prepared transaction was finished by
/// hand is freed on the way (its key is free already).
fn find_mine(table: &Table, key: i64, token: i64) -> Option<(usize, u32)> {
    let (index, generation, role, xid) = table.read(|entries, _| {
        let index = find_held(entries, key, token)?;
        let entry = &entries[index];
        Some((index, entry.generation, entry.role, entry.xid))
    })?;
    if !may_act_for(role) {
        return None;
    }
    if !still_prepared(xid) {
        let gone = with_entry(table, index, generation, |entry| {
            (entry.state == State::Held).then(|| {
                let gone = (entry.describe(), entry.token);
                entry.free();
                gone
            })
        })
        .flatten();
        if let Some((what, token)) = gone {
            pgrx::log!("pglock: token-owned {what} (token {token}) was ended outside pglock: its prepared transaction is gone");
            changed(table);
        }
        return None;
    }
    Some((index, generation))
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
/// past pglock.token_max_hold from when it was taken. True when it now lasts the TTL asked;
/// false when the token does not own it (or the current user may not act for its role), and
/// false too when pglock.token_max_hold cut the extension short: the lock is then kept to that
/// bound, but its holder must not count on the TTL it asked for.
pub fn renew(key: i64, token: i64, ttl_us: Option<i64>) -> bool {
    let table = usable_table();
    let Some((index, generation)) = find_mine(table, key, token) else {
        return false;
    };
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    with_entry(table, index, generation, |entry| {
        if entry.state != State::Held || entry.expires_at <= now {
            return false;
        }
        let ttl = ttl_us.unwrap_or(entry.ttl_us);
        entry.ttl_us = ttl;
        let asked = now.saturating_add(ttl);
        entry.expires_at = asked.min(entry.since.saturating_add(max_hold));
        entry.expires_at == asked
    })
    .unwrap_or(false)
}

/// Releases the lock `key` held under `token`; false when the token does not own it (or the
/// current user may not act for its role). Returns once the token worker has ended its
/// prepared transaction, so that the caller may take it again at once; but when this very
/// transaction checked the token with fence_ok, the worker can end it only after this
/// transaction ends, so release returns at once and the lock passes on at commit or rollback.
pub fn release(key: i64, token: i64) -> bool {
    let table = usable_table();
    let Some((index, generation)) = find_mine(table, key, token) else {
        return false;
    };
    let now = backend::now();
    let ending = with_entry(table, index, generation, |entry| {
        let held = entry.state == State::Held && entry.expires_at > now;
        if held {
            entry.state = State::Ending;
            entry.end = End::Released;
        }
        held
    });
    if ending != Some(true) {
        return false;
    }
    wake_worker(table);
    changed(table);
    if !fence_held_by_me(backend::database_id(), key) {
        wait_for(table, index, generation, None, |_| false);
    }
    true
}

/// Whether `key` is held in this database under `token` by a token-owned lock that the current
/// user may act for. When it is, takes a share of the key's fence tag until the transaction
/// ends: the worker ends a lock only once it has that tag exclusively, so a write checked here
/// commits before the lock can pass on (for pglock.token_fence_timeout at most, after which the
/// worker ends the session that keeps such a transaction open). A wrong token takes nothing
/// and holds nothing back.
pub fn fence_holds(key: i64, token: i64) -> bool {
    let Some(table) = table() else { return false };
    if find_mine(table, key, token).is_none() {
        return false;
    }
    let tag = fence_tag(backend::database_id(), key);
    // SAFETY: a transaction-scope lock on pglock's own fence tag of the key, waiting if the
    // worker is ending that key's lock right now (it holds the tag only for a moment).
    unsafe { pg_sys::LockAcquire(&tag, pg_sys::AccessShareLock as _, false, false) };
    let holds = table.read(|entries, _| find_held(entries, key, token).is_some());
    if !holds {
        // Ended meanwhile: this check must not hold its end back.
        // SAFETY: releases the one transaction hold taken just above.
        unsafe { pg_sys::LockRelease(&tag, pg_sys::AccessShareLock as _, false) };
    }
    holds
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
                // As pg_stat_activity: the application name for everyone, the client's address
                // only for those who may read the role's statistics.
                client_addr: (!addr.is_empty() && sees_name).then(|| addr.into_owned()),
                since: entry.since,
                expires_at: entry.expires_at,
                xid: entry.xid as i64,
            }
        })
        .collect()
}

/// An acquire of a token-owned lock that waits in the lock's queue, as pglock.token_waiters()
/// shows it.
pub struct WaitRow {
    /// The waiter process, whose request pg_locks shows.
    pub waiter: i32,
    pub key: i64,
    pub name: Option<String>,
    /// The session that called acquire.
    pub requester: i32,
    pub role: pg_sys::Oid,
}

/// The acquires waiting in this database through a waiter process; names as the current user
/// may see them.
pub fn waiting() -> Vec<WaitRow> {
    let Some(table) = table() else {
        return Vec::new();
    };
    let database = backend::database_id();
    let waiting: Vec<Entry> = table.read(|entries, _| {
        entries
            .iter()
            .filter(|entry| {
                entry.state == State::Waiting && entry.waiter != 0 && entry.database == database
            })
            .copied()
            .collect()
    });
    waiting
        .iter()
        .map(|entry| {
            let role = pg_sys::Oid::from(entry.role);
            WaitRow {
                waiter: entry.waiter,
                key: entry.key,
                name: entry.name().filter(|_| backend::may_read_stats_of(role)),
                requester: entry.requester,
                role,
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
    prepared.since = backend::now();
    prepared.gid_since = prepared.since;
    let gid = prepared.gid();
    // Recorded before the PREPARE: should this process die during it, whoever ends the entry
    // knows the GID to roll back.
    with_entry(table, index, generation, |entry| {
        entry.token = token;
        entry.prepared_ttl_us = prepared.prepared_ttl_us;
        entry.since = prepared.since;
        entry.gid_since = prepared.gid_since;
        entry.xid = xid.into_inner();
    });
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
        entry.expires_at = now
            .saturating_add(entry.ttl_us)
            .min(entry.since.saturating_add(max_hold));
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
            let now = backend::now();
            let blocked_since = with_entry(table, index, generation, |entry| {
                if entry.fence_blocked_since == 0 {
                    entry.fence_blocked_since = now;
                }
                entry.fence_blocked_since
            })
            .unwrap_or(now);
            let blocked_for = now - blocked_since;
            let in_the_way = if blocked_for >= settings::token_fence_timeout_us() {
                crate::compat::pids_in_conflict(&fence, pg_sys::AccessExclusiveLock as _)
            } else {
                Vec::new()
            };
            pg_sys::AbortCurrentTransaction();
            for pid in in_the_way {
                end_fence_holder(pid, &entry, blocked_for);
            }
            return false;
        }
        pg_sys::ffi::pg_guard_ffi_boundary(|| FinishPreparedTransaction(gid.as_ptr(), false));
        // Inside the transaction: the report looks the role's name up in the catalog.
        if matches!(
            entry.end,
            End::Expired | End::ReachedMaxHold | End::ReachedMaxXidAge
        ) {
            report_expiry(&entry);
        }
        pg_sys::CommitTransactionCommand();
    }
    with_entry(table, index, generation, Entry::free);
    changed(table);
    true
}

/// Ends the session `pid`, whose open transaction checked `entry`'s token with fence_ok and has
/// kept the lock from ending for `blocked_for` µs, past pglock.token_fence_timeout: as
/// pg_terminate_backend and idle_in_transaction_session_timeout do, so that the lock passes on.
fn end_fence_holder(pid: i32, entry: &Entry, blocked_for: i64) {
    if pid == backend::pid() || pid <= 0 {
        return;
    }
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!(
            "pglock token worker: terminating process {pid}, whose transaction keeps token-owned {} from ending",
            entry.describe()
        ),
        "",
    )
    .set_detail(format!(
        "The transaction checked the lock's token with pglock.fence_ok and has been open {:.3} s since the lock was to end, past pglock.token_fence_timeout.",
        blocked_for as f64 / 1e6
    ))
    .report(PgLogLevel::LOG);
    // SAFETY: SIGTERM, as pg_terminate_backend sends it: the backend ends its session, and
    // its transaction's locks (the fence tag among them) with it.
    unsafe { libc::kill(pid, libc::SIGTERM) };
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
        End::ReachedMaxXidAge => "its transaction ID reached pglock.token_max_xid_age",
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

/// A prepared transaction of pg_prepared_xacts whose GID starts with pglock's prefix.
struct Prepared {
    gid: String,
    xid: u32,
    database: u32,
    /// Made by the bootstrap superuser, as the token worker's are (any other role can PREPARE
    /// a transaction with a GID of its choosing).
    by_worker: bool,
}

/// Parses a GID of pglock's: token:database:key:mode:ttl:role, and since 0.5.0 :since (the
/// time the lock was granted, µs since 2000). None when it is not one.
fn parse_gid(gid: &str, xid: u32, now: pg_sys::TimestampTz) -> Option<Entry> {
    let fields: Vec<&str> = gid.strip_prefix(GID_PREFIX)?.split(':').collect();
    let (token, database, key, mode, ttl, role, since) = match fields[..] {
        [token, database, key, mode, ttl, role] => (token, database, key, mode, ttl, role, None),
        [token, database, key, mode, ttl, role, since] => (
            token,
            database,
            key,
            mode,
            ttl,
            role,
            Some(since.parse().ok()?),
        ),
        _ => return None,
    };
    // SAFETY: an all-zero Entry is a valid Free one.
    let mut entry: Entry = unsafe { std::mem::zeroed() };
    entry.token = token.parse().ok()?;
    entry.database = database.parse().ok()?;
    entry.key = key.parse().ok()?;
    entry.shared = match mode {
        "s" => true,
        "x" => false,
        _ => return None,
    };
    entry.ttl_us = ttl.parse().ok()?;
    entry.prepared_ttl_us = entry.ttl_us;
    entry.role = role.parse().ok()?;
    entry.xid = xid;
    entry.state = State::Held;
    entry.gid_since = since.unwrap_or(0);
    if entry.gid().to_str().ok()? != gid {
        return None;
    }
    // The hold counts from the grant (a clock that went back counts it from now); a lock of
    // 0.4.0 did not record its grant, so its hold counts from now.
    entry.since = match since {
        Some(since) if since > 0 => since.min(now),
        _ => now,
    };
    Some(entry)
}

/// Reads back, after a start, the token-owned locks whose prepared transactions survived (a
/// restart, a crash, a promotion): each gets a full TTL from now, within pglock.token_max_hold
/// of when it was granted, so that its holder can renew it. Names are not kept across a
/// restart.
///
/// Adopts only what the token worker prepared: a transaction prepared by the bootstrap
/// superuser, in this database, that holds its GID's key in its GID's mode, with a token below
/// the current WAL position (tokens are WAL positions). Any other transaction with pglock's
/// prefix (another role's PREPARE TRANSACTION 'pglock:...', or a lock left in another database
/// by a change of pglock.token_database, or one that no longer fits the table) is left alone
/// and logged with the command that ends it.
fn read_back(table: &Table) {
    let (prepared, wal_now): (Vec<Prepared>, i64) = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT gid, transaction::text::bigint, \
                        (SELECT oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) p.database)::bigint, \
                        owner OPERATOR(pg_catalog.=) pg_catalog.pg_get_userbyid(10) \
                 FROM pg_catalog.pg_prepared_xacts p WHERE gid LIKE 'pglock:%' ORDER BY prepared",
                None,
                &[],
            )?;
            let mut found = Vec::new();
            for row in rows {
                if let (Some(gid), Some(xid), Some(database), Some(by_worker)) = (
                    row.get::<String>(1)?,
                    row.get::<i64>(2)?,
                    row.get::<i64>(3)?,
                    row.get::<bool>(4)?,
                ) {
                    found.push(Prepared {
                        gid,
                        xid: xid as u32,
                        database: database as u32,
                        by_worker,
                    });
                }
            }
            let wal_now = client
                .select(
                    "SELECT (pg_catalog.pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::bigint",
                    None,
                    &[],
                )?
                .first()
                .get::<i64>(1)?
                .unwrap_or(i64::MAX);
            Ok::<_, pgrx::spi::Error>((found, wal_now))
        })
        .unwrap_or_default()
    });
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    let here = backend::database_id();
    for found in prepared {
        let gid = &found.gid;
        let refuse = |why: &str| {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!("pglock token worker: prepared transaction \"{gid}\" is not adopted as a token-owned lock"),
                "",
            )
            .set_detail(why.to_owned())
            .set_hint(format!("If nothing needs it, end it with ROLLBACK PREPARED '{gid}' in its database."))
            .report(PgLogLevel::WARNING);
        };
        let Some(mut restored) = parse_gid(gid, found.xid, now) else {
            refuse("Its GID is not one that pglock makes.");
            continue;
        };
        // Still known: the worker restarted, not the server.
        let known = table.read(|entries, _| {
            entries
                .iter()
                .any(|e| e.state != State::Free && e.token == restored.token && e.xid == found.xid)
        });
        if known {
            continue;
        }
        if !found.by_worker {
            refuse("It was prepared by a role other than the one the token worker runs as.");
            continue;
        }
        // The lock may be in any database; its prepared transaction is in the worker's.
        if found.database != here {
            refuse(&format!(
                "It was prepared in another database than pglock.token_database (\"{}\"), where the token worker cannot finish it.",
                settings::token_database()
            ));
            continue;
        }
        if restored.token <= 0 || restored.token > wal_now {
            refuse("Its token is beyond the current WAL position, so pglock did not hand it out.");
            continue;
        }
        if !holds_its_key(&restored) {
            refuse("It does not hold the advisory lock its GID names.");
            continue;
        }
        restored.expires_at = now
            .saturating_add(restored.ttl_us)
            .min(restored.since.saturating_add(max_hold));
        let adopted = table.update(|entries, _| {
            if entries
                .iter()
                .any(|e| e.state != State::Free && e.token == restored.token)
            {
                return true; // still known (the worker restarted, not the server)
            }
            match entries.iter_mut().find(|e| e.state == State::Free) {
                Some(free) => {
                    let generation = free.generation;
                    *free = restored;
                    free.generation = generation;
                    true
                }
                None => false,
            }
        });
        if !adopted {
            refuse("The table of token-owned locks is full (pglock.max_token_locks was lowered).");
        }
    }
}

/// Whether the prepared transaction `entry.xid` holds `entry`'s key in `entry`'s mode. In
/// pg_locks a prepared transaction's locks have no pid and share the virtual transaction of the
/// lock on its own transaction ID: -1/xid after a restart, but the preparing backend's until
/// then (a worker that restarts finds them so).
fn holds_its_key(entry: &Entry) -> bool {
    let tag = entry.tag();
    let mode = if entry.shared {
        "ShareLock"
    } else {
        "ExclusiveLock"
    };
    let sql = format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks a JOIN pg_catalog.pg_locks x \
           ON x.locktype OPERATOR(pg_catalog.=) 'transactionid' AND x.pid IS NULL \
           AND x.transactionid::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.=) {} \
           AND x.virtualtransaction OPERATOR(pg_catalog.=) a.virtualtransaction \
           WHERE a.locktype OPERATOR(pg_catalog.=) 'advisory' AND a.granted AND a.pid IS NULL \
           AND a.database OPERATOR(pg_catalog.=) {}::pg_catalog.oid AND a.classid OPERATOR(pg_catalog.=) {}::pg_catalog.oid \
           AND a.objid OPERATOR(pg_catalog.=) {}::pg_catalog.oid AND a.objsubid OPERATOR(pg_catalog.=) {} \
           AND a.mode OPERATOR(pg_catalog.=) '{mode}')",
        entry.xid,
        tag.locktag_field1,
        tag.locktag_field2,
        tag.locktag_field3,
        tag.locktag_field4
    );
    BackgroundWorker::transaction(|| backend::read_one::<bool>(&sql)).unwrap_or(false)
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
    // Grants left half-done by an earlier run of this worker (it was terminated, or exited with
    // an ERROR): its PREPARE may or may not have happened, so the lock is ended (a prepared
    // transaction that is not there is simply forgotten) and its acquire fails. Grants of
    // waiter processes are theirs to finish.
    table.update(|entries, _| {
        for entry in entries.iter_mut() {
            if entry.state == State::Granting && entry.waiter == 0 {
                entry.state = State::Ending;
                entry.end = End::Abandoned;
                entry.abandoned = true;
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
    // Ended by SIGTERM: at shutdown, or by pg_terminate_backend. A background worker that exits
    // with status 0 is never started again; status 1 has the postmaster start it again after
    // its restart interval (at shutdown nothing is started again anyway).
    // SAFETY: what a background worker does to exit, outside any transaction.
    unsafe { pg_sys::proc_exit(1) };
}

/// One round of the worker's work; returns when it must look again (i64::MAX: when woken).
fn serve(table: &Table) -> pg_sys::TimestampTz {
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    let max_xid_age = settings::token_max_xid_age();
    // SAFETY: reads the next transaction ID from shared memory (under its own LWLock).
    let next_xid = unsafe { pg_sys::ReadNextTransactionId() }.into_inner();
    let (asked, ending) = table.update(|entries, _| {
        let mut asked = Vec::new();
        let mut ending = Vec::new();
        for (index, entry) in entries.iter_mut().enumerate() {
            // How many transaction IDs were assigned since this lock's: what its hold costs
            // vacuum on a busy server, however short in time.
            let xid_age = next_xid.wrapping_sub(entry.xid);
            if entry.state == State::Held
                && max_xid_age > 0
                && entry.xid != 0
                && xid_age as u64 > max_xid_age
            {
                entry.state = State::Ending;
                entry.end = End::ReachedMaxXidAge;
            }
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
    let (next_expiry, ending_left) = table.read(|entries, _| {
        let next = entries
            .iter()
            .filter(|entry| entry.state == State::Held)
            .map(|entry| entry.expires_at)
            .min()
            .unwrap_or(i64::MAX);
        (
            next,
            entries.iter().any(|entry| entry.state == State::Ending),
        )
    });
    // Ending locks left over: a rollback that failed is tried again in a second; one that a
    // fence_ok transaction is in the way of (or one marked since this round began) in 10 ms.
    // Never at once: their time has passed, and looking again at once would make the worker
    // spin while the transaction in the way stays open.
    let again_in = if failed {
        Some(1_000_000)
    } else if retry || ending_left {
        Some(10_000)
    } else {
        None
    };
    let after_now = backend::now();
    let next = match again_in {
        Some(us) => next_expiry.min(after_now + us),
        None => next_expiry,
    };
    // While locks are held under pglock.token_max_xid_age, their transaction IDs' age is
    // looked at every second: nothing wakes the worker when other transactions start.
    if max_xid_age > 0 && next_expiry != i64::MAX {
        next.min(after_now + XID_AGE_LOOK_US)
    } else {
        next
    }
}

/// How often the token worker looks at held locks' transaction ID age.
const XID_AGE_LOOK_US: i64 = 1_000_000;

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
    // A FATAL (pg_terminate_backend, the postmaster's SIGTERM) ends this process without
    // returning here: the exit callback leaves the entry as the catch below does.
    WAITER_OF.store(((index as u64) << 32) | generation as u64, Ordering::SeqCst);
    backend::at_exit(waiter_exiting);
    // An ERROR was logged by `caught` (a cancel only at DEBUG1); the entry says the rest.
    let outcome = caught("waiting for a lock", || {
        // SAFETY: a background worker connected to pglock.token_database, outside any
        // transaction.
        unsafe { take(table, index, generation, false) };
    });
    // A wait or PREPARE that ended in an ERROR other than the session's cancel leaves the
    // entry Waiting or Granting with its transaction rolled back: nothing is held, and the
    // request fails (or is freed, if its session gave it up).
    with_entry(table, index, generation, |entry| {
        if outcome.is_err()
            && matches!(entry.state, State::Waiting | State::Granting)
            && entry.waiter == backend::pid()
        {
            if entry.abandoned {
                entry.free();
            } else {
                entry.state = State::Failed;
                entry.waiter = 0;
            }
        }
    });
    WAITER_OF.store(u64::MAX, Ordering::SeqCst);
    changed(table);
}

/// The entry a waiter process serves, as index << 32 | generation (u64::MAX: none).
static WAITER_OF: AtomicU64 = AtomicU64::new(u64::MAX);

/// At a waiter process's exit: a request it was still serving (it was ended by a signal, not
/// by a grant or an ERROR) is failed, or ended if it may have been prepared.
fn waiter_exiting() {
    let serving = WAITER_OF.swap(u64::MAX, Ordering::SeqCst);
    let Some(table) = table().filter(|_| serving != u64::MAX) else {
        return;
    };
    let (index, generation) = ((serving >> 32) as usize, serving as u32);
    if index >= table.capacity() {
        return;
    }
    let pid = backend::pid();
    with_entry(table, index, generation, |entry| {
        if entry.waiter == pid {
            abandon_waiters_work(entry);
        }
    });
    wake_worker(table);
    changed(table);
}
