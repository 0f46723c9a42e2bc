//! Leases: a holder that stops renewing loses its lock. A session gives a lock it holds a lease
//! (pglock.set_lease) and renews it (pglock.renew); when a lease runs out, a background worker
//! ends the holder's session, which releases every lock it holds (or, with pglock.lease_action
//! = log, only logs it). Needs pglock in shared_preload_libraries.
//!
//! The leases live in one table in shared memory under one LWLock. The table is dense (a
//! removed lease's place takes the last one), so the worker reads the leases and nothing else:
//! its work grows with the number of leases, never with the number of sessions. A lease
//! belongs to (database, pid, key) and ends when pglock sees the lock released, at the end of a
//! transaction in which it was released some other way, or when the session exits. The worker
//! also checks in the lock table that the holder still holds the key before it acts.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{field4, key_held_in_any_mode, AdvisoryLock, Mode};
use crate::lock::wait;
use crate::names::name::LockName;
use crate::session::registry;
use crate::session::request::{refuse_parallel_worker, LockRequest};
use crate::settings::{self, LeaseAction};
use crate::shared::memory;

/// Bytes of the lock's name kept for the worker's log message (longer names are cut).
const NAME_BYTES: usize = 128;
/// Bytes of the holder's application_name kept for the log message.
const APP_BYTES: usize = 64;

/// One lease, read and written only under the table's LWLock.
#[repr(C)]
#[derive(Clone, Copy)]
struct Lease {
    database: u32,
    pid: i32,
    key: i64,
    lease_us: i64,
    expires_at: pg_sys::TimestampTz,
    renewed_at: pg_sys::TimestampTz,
    /// What the worker has done about this expiry so far.
    acted: Acted,
    name_len: u8,
    app_len: u8,
    name: [u8; NAME_BYTES],
    app: [u8; APP_BYTES],
}

/// What the lease worker did about an expired lease. Logging and terminating are different
/// outcomes: a lease only logged (under pglock.lease_action = log) is still enforced once the
/// action in force is terminate.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acted {
    /// Nothing yet (all-zero shared memory reads as this).
    Nothing = 0,
    /// The expiry was logged; the holder kept its locks.
    Logged = 1,
    /// The holder was signalled to terminate (or had gone already).
    Terminated = 2,
}

impl Acted {
    /// Whether an expired lease in this state still calls for `action`.
    fn awaits(self, action: LeaseAction) -> bool {
        match self {
            Acted::Nothing => true,
            Acted::Logged => action == LeaseAction::Terminate,
            Acted::Terminated => false,
        }
    }

    fn after(action: LeaseAction) -> Self {
        match action {
            LeaseAction::Log => Acted::Logged,
            LeaseAction::Terminate => Acted::Terminated,
        }
    }
}

/// The lease worker's fields of the table's header.
#[repr(C)]
struct Fields {
    /// The worker's latch while it runs, else null.
    worker_latch: AtomicPtr<pg_sys::Latch>,
    /// When the worker looks next; i64::MAX while it scans or sleeps without a deadline, so
    /// that every new lease sets its latch then.
    worker_wakes_at: AtomicI64,
}

/// The leases, 0..used of the table's entries.
type Table = memory::Table<Fields, Lease>;

/// The table in shared memory, set by the shmem startup hook; none when pglock is not
/// preloaded or pglock.max_leases is 0.
static TABLE: memory::SharedTable<Fields, Lease> = memory::SharedTable::new(c"pglock leases");

/// The shared memory the table needs (see memory.rs).
pub fn shmem_size() -> usize {
    TABLE.size(settings::max_leases())
}

/// Asks for the table's LWLock.
///
/// # Safety
/// Only from the shmem request hook.
pub unsafe fn request_lwlock() {
    // SAFETY: the caller's.
    unsafe { TABLE.request_lwlock(settings::max_leases()) }
}

/// Finds or creates the table in shared memory.
///
/// # Safety
/// Only from the shmem startup hook, with AddinShmemInitLock held.
pub unsafe fn attach() {
    // SAFETY: the caller's.
    unsafe {
        TABLE.attach(settings::max_leases(), |fields| {
            fields.worker_wakes_at = AtomicI64::new(i64::MAX)
        })
    }
}

/// Registers the lease worker (from _PG_init while preloading).
pub fn register_worker() {
    if settings::max_leases() == 0 {
        return;
    }
    BackgroundWorkerBuilder::new("pglock lease worker")
        .set_type("pglock lease worker")
        .set_library("pglock")
        .set_function("pglock_lease_worker")
        .enable_shmem_access(None)
        // Connected to no database (as the logical replication launcher is), so that it shows
        // in pg_stat_activity.
        .enable_spi_access()
        // Also on a hot standby, where it does nothing until a promotion.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn table() -> Option<&'static Table> {
    TABLE.get()
}

/// The place of (pid, key) among the leases in use, trying `hint` first.
fn find(leases: &[Lease], used: u32, hint: Option<usize>, pid: i32, key: i64) -> Option<usize> {
    let used = &leases[..used as usize];
    let matches = |lease: &Lease| lease.pid == pid && lease.key == key;
    match hint {
        Some(index) if used.get(index).is_some_and(matches) => Some(index),
        _ => used.iter().position(matches),
    }
}

fn remove_at(leases: &mut [Lease], used: &mut u32, index: usize) {
    *used -= 1;
    leases[index] = leases[*used as usize];
}

/// Copies up to N bytes of `text`, cut at a character boundary.
fn clipped<const N: usize>(text: &str) -> ([u8; N], u8) {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut bytes = [0; N];
    bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
    (bytes, end as u8)
}

thread_local! {
    /// This session's leases: key → the lease's place in the table when last seen (a hint,
    /// checked before use, since removals move leases).
    static OWN: RefCell<HashMap<i64, usize>> = RefCell::new(HashMap::new());
    /// Whether the exit callback that removes this session's leases is registered.
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn application_name() -> String {
    // SAFETY: the application_name setting: a valid C string (or null) while the backend runs.
    unsafe {
        let name = pg_sys::application_name;
        if name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }
}

/// Gives this session's hold of `key` a lease of `lease_us` (or removes it: None). False when
/// the session does not hold the key.
fn set(key: i64, name: Option<&str>, lease_us: Option<i64>) -> bool {
    refuse_parallel_worker();
    let Some(table) = table() else {
        errors::leases_need_preload()
    };
    if backend::recovery_in_progress() {
        errors::lease_on_standby();
    }
    let Some(lease_us) = lease_us else {
        let held = key_held_in_any_mode(key);
        remove_own(table, key);
        return held;
    };
    if !key_held_in_any_mode(key) {
        remove_own(table, key);
        return false;
    }
    registry::watch_transaction_ends();
    if !EXIT_CALLBACK.replace(true) {
        // SAFETY: registers a callback for the rest of this backend's life.
        unsafe { pg_sys::before_shmem_exit(Some(remove_all_own), pg_sys::Datum::from(0)) };
    }
    let now = backend::now();
    let (name, name_len) = clipped::<NAME_BYTES>(name.unwrap_or(""));
    let (app, app_len) = clipped::<APP_BYTES>(&application_name());
    let lease = Lease {
        database: backend::database_id(),
        pid: backend::pid(),
        key,
        lease_us,
        expires_at: now.saturating_add(lease_us),
        renewed_at: now,
        acted: Acted::Nothing,
        name_len,
        app_len,
        name,
        app,
    };
    let hint = OWN.with_borrow(|own| own.get(&key).copied());
    let placed = table.update(|leases, used| {
        let index = match find(leases, *used, hint, lease.pid, key) {
            Some(index) => index,
            None if (*used as usize) < leases.len() => {
                *used += 1;
                *used as usize - 1
            }
            None => return None,
        };
        leases[index] = lease;
        Some(index)
    });
    let Some(index) = placed else {
        errors::too_many_leases(table.capacity())
    };
    OWN.with_borrow_mut(|own| own.insert(key, index));
    wake_worker_for(table, lease.expires_at);
    true
}

/// Extends this session's lease on `key` by its interval from now; false when there is none
/// (or the key is no longer held, which ends the lease).
fn renew_lease(key: i64) -> bool {
    refuse_parallel_worker();
    let Some(table) = table() else {
        errors::leases_need_preload()
    };
    let Some(hint) = OWN.with_borrow(|own| own.get(&key).copied()) else {
        return false;
    };
    if !key_held_in_any_mode(key) {
        remove_own(table, key);
        return false;
    }
    let now = backend::now();
    let pid = backend::pid();
    let (app, app_len) = clipped::<APP_BYTES>(&application_name());
    let renewed = table.update(|leases, used| {
        let index = find(leases, *used, Some(hint), pid, key)?;
        let lease = &mut leases[index];
        lease.expires_at = now.saturating_add(lease.lease_us);
        lease.renewed_at = now;
        lease.acted = Acted::Nothing;
        (lease.app, lease.app_len) = (app, app_len);
        Some(index)
    });
    OWN.with_borrow_mut(|own| match renewed {
        Some(index) => own.insert(key, index),
        // The worker removed it (the key was released outside pglock and taken again).
        None => own.remove(&key),
    });
    renewed.is_some()
}

/// Sets the worker's latch if it would otherwise look only after `expires_at`.
fn wake_worker_for(table: &Table, expires_at: pg_sys::TimestampTz) {
    if expires_at < table.worker_wakes_at.load(Ordering::SeqCst) {
        let latch = table.worker_latch.load(Ordering::SeqCst);
        if !latch.is_null() {
            // SAFETY: the worker's latch lives in its PGPROC (shared memory, never freed);
            // setting it after the worker exited only wakes whoever uses that PGPROC next.
            unsafe { pg_sys::SetLatch(latch) };
        }
    }
}

/// Removes this session's lease on `key`, if any.
fn remove_own(table: &Table, key: i64) {
    let Some(hint) = OWN.with_borrow_mut(|own| own.remove(&key)) else {
        return;
    };
    let pid = backend::pid();
    table.update(|leases, used| {
        if let Some(index) = find(leases, *used, Some(hint), pid, key) {
            remove_at(leases, used, index);
        }
    });
}

/// Called by the registry when pglock released a hold of `key` and this session holds the
/// lock in no mode any more: the lease ends with the hold. One thread-local read when the
/// session has no lease.
pub fn released(key: i64) {
    if OWN.with_borrow(|own| own.is_empty() || !own.contains_key(&key)) || key_held_in_any_mode(key)
    {
        return;
    }
    if let Some(table) = table() {
        remove_own(table, key);
    }
}

/// Leases as a listener of the session's events: a lease ends with the hold it was set on.
pub struct Leases;

pub static LISTENER: Leases = Leases;

impl crate::session::events::Listener for Leases {
    fn hold_began(&self, lock: AdvisoryLock) {
        hold_began(lock);
    }

    fn maybe_released(&self, key: i64) {
        released(key);
    }

    fn transaction_ended(&self) {
        forget_released();
    }
}

/// Called by the registry when pglock began a new hold of `lock`. If the session held the key
/// in no other mode, a lease it still has on the key belonged to a hold that ended unseen (a
/// built-in unlock, a savepoint rollback, DISCARD ALL) and ends now: the new hold has none.
/// One thread-local read when the session has no lease on the key.
pub fn hold_began(lock: AdvisoryLock) {
    if !Mode::ON_KEY.contains(&lock.mode)
        || OWN.with_borrow(|own| own.is_empty() || !own.contains_key(&lock.key))
    {
        return;
    }
    let joins_another_hold = Mode::ON_KEY
        .into_iter()
        .filter(|&mode| mode != lock.mode)
        .any(|mode| {
            AdvisoryLock {
                key: lock.key,
                mode,
            }
            .is_held()
        });
    if !joins_another_hold {
        if let Some(table) = table() {
            remove_own(table, lock.key);
        }
    }
}

/// At the end of a transaction (before its locks go): leases of keys that this session will
/// not hold after it end now. That covers keys released some other way (pg_advisory_unlock,
/// DISCARD ALL) and transaction-scope holds.
pub fn forget_released() {
    let Some(table) = table() else { return };
    let ended: Vec<i64> = OWN.with_borrow(|own| {
        own.keys()
            .copied()
            .filter(|&key| {
                !Mode::ON_KEY.into_iter().any(|mode| {
                    let lock = AdvisoryLock { key, mode };
                    lock.is_held() && lock.holds().session > 0
                })
            })
            .collect()
    });
    for key in ended {
        remove_own(table, key);
    }
}

/// Removes every lease of this backend as it exits.
#[pg_guard]
unsafe extern "C-unwind" fn remove_all_own(_code: i32, _arg: pg_sys::Datum) {
    let Some(table) = table() else { return };
    // This backend never raises with the table's LWLock held, but an exit must not wait for
    // itself.
    if table.lock_held_by_me() {
        return;
    }
    let pid = backend::pid();
    table.update(|leases, used| {
        let mut index = 0;
        while index < *used as usize {
            if leases[index].pid == pid {
                remove_at(leases, used, index);
            } else {
                index += 1;
            }
        }
    });
    OWN.with_borrow_mut(HashMap::clear);
}

/// A lease length in microseconds from a SQL interval: positive, at most a century.
fn lease_micros(lease: Option<Interval>) -> Option<i64> {
    let micros = lease?.as_micros();
    if micros <= 0 {
        errors::lease_not_positive();
    }
    Some(wait::at_most_a_century(micros))
}

/// Gives this session's hold of `name` a lease: unless renewed within `lease`, the session
/// is ended and its locks released. NULL removes the lease. False when `name` is not held.
#[pg_extern(volatile, parallel_restricted, name = "set_lease")]
fn set_lease(name: Option<LockName>, lease: Option<Interval>) -> bool {
    let request = LockRequest::named(name, Mode::Exclusive);
    set(
        request.lock.key,
        request.name.as_deref(),
        lease_micros(lease),
    )
}

#[pg_extern(volatile, parallel_restricted, name = "set_lease")]
fn set_lease_key(key: Option<i64>, lease: Option<Interval>) -> bool {
    let request = LockRequest::keyed(key, Mode::Exclusive);
    set(request.lock.key, None, lease_micros(lease))
}

/// Extends this session's lease on `name` by its interval from now; false when there is none.
#[pg_extern(volatile, parallel_restricted, name = "renew")]
fn renew(name: Option<LockName>) -> bool {
    renew_lease(LockRequest::named(name, Mode::Exclusive).lock.key)
}

#[pg_extern(volatile, parallel_restricted, name = "renew")]
fn renew_key(key: Option<i64>) -> bool {
    renew_lease(LockRequest::keyed(key, Mode::Exclusive).lock.key)
}

/// Every lease in this database: who holds it, on which key, its length and when it expires.
/// Empty when pglock is not preloaded. Backs pglock.locks.lease_expires_at.
#[pg_extern(volatile, parallel_restricted)]
fn leases() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(key, i64),
        name!(lease, Interval),
        name!(expires_at, TimestampWithTimeZone),
    ),
> {
    let database = backend::database_id();
    let rows: Vec<Lease> = table()
        .map(|table| {
            table.read(|leases, used| {
                leases[..used as usize]
                    .iter()
                    .filter(|lease| lease.database == database)
                    .copied()
                    .collect()
            })
        })
        .unwrap_or_default();
    TableIterator::new(rows.into_iter().map(|lease| {
        (
            lease.pid,
            lease.key,
            Interval::from_micros(lease.lease_us),
            TimestampWithTimeZone::try_from(lease.expires_at)
                .expect("a lease's expiry is within a century of now"),
        )
    }))
}

/// The lease table's use for a status report: (leases now, capacity, whether the worker
/// runs); None when there is no table.
pub fn occupancy() -> Option<(usize, usize, bool)> {
    let table = table()?;
    let used = table.read(|_, used| used as usize);
    let worker = !table.worker_latch.load(Ordering::SeqCst).is_null();
    Some((used, table.capacity(), worker))
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// The lease worker's main function: sleeps until the next lease expires (or a new lease
/// needs it sooner), then acts on every expired lease whose holder still holds its key.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pglock_lease_worker(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let Some(table) = table() else { return };
    // SAFETY: MyLatch is this process's shared latch (its PGPROC's) once it has started.
    table
        .worker_latch
        .store(unsafe { pg_sys::MyLatch }, Ordering::SeqCst);
    loop {
        table.worker_wakes_at.store(i64::MAX, Ordering::SeqCst);
        let next = if backend::recovery_in_progress() {
            // A standby: no lease can be set here; after a promotion the first one wakes us.
            i64::MAX
        } else {
            act_on_expired(table)
        };
        table.worker_wakes_at.store(next, Ordering::SeqCst);
        if !memory::worker_sleep_until(next) {
            break;
        }
    }
    table.worker_latch.store(ptr::null_mut(), Ordering::SeqCst);
    memory::worker_exit_to_be_restarted();
}

/// Acts on every lease that has expired and not been acted on; returns when the next one
/// expires (i64::MAX: none).
fn act_on_expired(table: &Table) -> pg_sys::TimestampTz {
    let now = backend::now();
    let action = settings::lease_action();
    let (expired, next) = table.read(|leases, used| {
        let mut expired = Vec::new();
        let mut next = i64::MAX;
        for lease in leases[..used as usize]
            .iter()
            .filter(|lease| lease.acted.awaits(action))
        {
            if lease.expires_at <= now {
                expired.push(*lease);
            } else {
                next = next.min(lease.expires_at);
            }
        }
        (expired, next)
    });
    if expired.is_empty() {
        return next;
    }
    let held = keys_held(&expired);
    for (lease, held) in expired.iter().zip(held) {
        // A later renewal or removal changed the lease: it is no longer this expiry's.
        let still = |candidate: &Lease| {
            candidate.pid == lease.pid
                && candidate.key == lease.key
                && candidate.expires_at == lease.expires_at
        };
        if !held {
            table.update(|leases, used| {
                if let Some(index) = leases[..*used as usize].iter().position(still) {
                    remove_at(leases, used, index);
                }
            });
            continue;
        }
        let current = table.update(|leases, used| {
            let index = leases[..*used as usize].iter().position(still)?;
            leases[index].acted = Acted::after(action);
            Some(())
        });
        if current.is_some() {
            report_expiry(lease, now, action);
        }
    }
    next
}

/// For each lease, whether its holder still holds its key in the shared lock table.
fn keys_held(leases: &[Lease]) -> Vec<bool> {
    let mut context = PgMemoryContexts::new("pglock lease check");
    // SAFETY: GetLockStatusData copies the lock table (taking each partition lock in turn)
    // into memory of the current context, which is dropped with `context`.
    unsafe {
        context.switch_to(|_| {
            let data = pg_sys::GetLockStatusData();
            let locks =
                std::slice::from_raw_parts((*data).locks, (*data).nelements.max(0) as usize);
            leases
                .iter()
                .map(|lease| {
                    locks.iter().any(|lock| {
                        let tag = &lock.locktag;
                        lock.pid == lease.pid
                            && lock.holdMask != 0
                            && tag.locktag_type == pg_sys::LockTagType::LOCKTAG_ADVISORY as u8
                            && tag.locktag_field1 == lease.database
                            && tag.locktag_field2 == ((lease.key as u64) >> 32) as u32
                            && tag.locktag_field3 == lease.key as u64 as u32
                            && tag.locktag_field4 == field4::KEY
                    })
                })
                .collect()
        })
    }
}

/// Logs an expired lease and, with pglock.lease_action = terminate, signals its holder as
/// pg_terminate_backend does.
fn report_expiry(lease: &Lease, now: pg_sys::TimestampTz, action: LeaseAction) {
    let name = String::from_utf8_lossy(&lease.name[..lease.name_len as usize]);
    let lock = if lease.name_len == 0 {
        format!("lock with key {}", lease.key)
    } else if lease.name_len as usize == NAME_BYTES {
        format!("lock \"{name}...\"")
    } else {
        format!("lock \"{name}\"")
    };
    let app = String::from_utf8_lossy(&lease.app[..lease.app_len as usize]);
    let detail = format!(
        "The lease is {} s; it was last set or renewed {:.3} s ago, so the renewal is {:.3} s overdue.",
        lease.lease_us as f64 / 1e6,
        (now - lease.renewed_at) as f64 / 1e6,
        (now - lease.expires_at) as f64 / 1e6,
    );
    // SAFETY: looks the pid up among live backends (a shared array read under its lock).
    let alive = !unsafe { pg_sys::BackendPidGetProc(lease.pid) }.is_null();
    let message = match action {
        LeaseAction::Terminate if alive => format!(
            "terminating process {} (application_name \"{app}\"): its lease on {lock} expired",
            lease.pid
        ),
        _ => format!(
            "lease on {lock} held by process {} (application_name \"{app}\") expired",
            lease.pid
        ),
    };
    let mut report = ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message, "")
        .set_detail(detail);
    if action == LeaseAction::Log {
        report = report.set_hint("pglock.lease_action is log, so the holder keeps its locks.");
    }
    report.report(PgLogLevel::LOG);
    if action == LeaseAction::Terminate && alive {
        // SAFETY: what pg_terminate_backend sends; the pid is a live backend that set the lease.
        unsafe { libc::kill(lease.pid, libc::SIGTERM) };
    }
}
