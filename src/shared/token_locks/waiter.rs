//! Waiter processes: one dynamic background worker per acquire that waits in a lock's queue
//! for its session, then prepares the lock; what is left of its request when it ends.

use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::record::take;
use super::table::{abandon_waiters_work, changed, table, wake_worker, with_entry, State, Table};
use super::worker::caught;
use crate::backend;
use crate::settings;

/// The waiter process of entry `index` ended without recording why: the request fails (a
/// lock it may have prepared is ended by the worker).
pub(super) fn waiter_gone(table: &Table, index: usize, generation: u32, pid: i32) {
    with_entry(table, index, generation, |entry| {
        if entry.waiter == pid {
            abandon_waiters_work(entry);
        }
    });
    wake_worker(table);
    changed(table);
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
    // A FATAL (pg_terminate_backend, the postmaster's SIGTERM) ends this process without
    // returning here: the exit callback leaves the entry as the catch below does. It runs after
    // the exit has aborted this process's transaction, which takes it out of the lock's queue
    // (an on_shmem_exit callback, not a before_shmem_exit one): the session that sees its
    // request failed must not find the key granted to a process that is still leaving.
    WAITER_OF.store(((index as u64) << 32) | generation as u64, Ordering::SeqCst);
    // SAFETY: registers a callback for the rest of this process's life; it runs while shared
    // memory and this process's PGPROC are still attached (before ProcKill, registered earlier).
    unsafe { pg_sys::on_shmem_exit(Some(waiter_exiting_callback), pg_sys::Datum::from(0)) };
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

unsafe extern "C-unwind" fn waiter_exiting_callback(_code: i32, _arg: pg_sys::Datum) {
    waiter_exiting();
}

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
