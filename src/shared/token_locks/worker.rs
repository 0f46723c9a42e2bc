//! The token worker: serves new requests without waiting, ends released, expired and abandoned
//! locks (after any fence_ok transaction in the way, within pglock.token_fence_timeout), and
//! sleeps until the next expiry or request.

use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use super::record::{finish, read_back, take, Taken};
use super::table::{changed, table, with_entry, End, Entry, State, Table};
use crate::backend;
use crate::lock::wait;
use crate::settings;
use crate::shared::memory;

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

/// Ends the session `pid`, whose open transaction checked `entry`'s token with fence_ok and has
/// kept the lock from ending for `blocked_for` µs, past pglock.token_fence_timeout: as
/// pg_terminate_backend and idle_in_transaction_session_timeout do, so that the lock passes on.
pub(super) fn end_fence_holder(pid: i32, entry: &Entry, blocked_for: i64) {
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
pub(super) fn report_expiry(entry: &Entry) {
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
pub(super) fn caught(what: &str, f: impl FnOnce()) -> Result<(), PgSqlErrorCode> {
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
        if !memory::worker_sleep_until(next) {
            break;
        }
    }
    table.worker_latch.store(ptr::null_mut(), Ordering::SeqCst);
    table.ready.store(false, Ordering::SeqCst);
    memory::worker_exit_to_be_restarted();
}

/// One round of the worker's work; returns when it must look again (i64::MAX: when woken).
pub(super) fn serve(table: &Table) -> pg_sys::TimestampTz {
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
    let mut failed = false;
    for (index, generation) in ending {
        match caught("ending a lock", || {
            // SAFETY: the token worker, outside any transaction.
            unsafe { finish(table, index, generation) };
        }) {
            Ok(()) => {}
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
        let answer = match (ok, taken) {
            (false, _) => Some(State::Failed),
            (true, Taken::NotAvailable) => Some(State::Refused),
            _ => None,
        };
        if let Some(answer) = answer {
            // A request its session gave up meanwhile is done with.
            with_entry(table, index, generation, |entry| {
                if entry.abandoned {
                    entry.free();
                } else {
                    entry.state = answer;
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
    // fence_ok transaction is in the way of (finish left it Ending), or one marked since this
    // round began, in 10 ms.
    // Never at once: their time has passed, and looking again at once would make the worker
    // spin while the transaction in the way stays open.
    let again_in = if failed {
        Some(1_000_000)
    } else if ending_left {
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
