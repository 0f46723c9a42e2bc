//! What the session layer announces, and who hears it. The lock path calls the functions here
//! and knows no listener by name: statistics, leases and the name map subscribe once, when the
//! library is loaded, the way PostgreSQL's own modules use RegisterXactCallback and its hooks.
//! Until then (in server-free unit tests, say) every announcement is a no-op.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::backend;
use crate::lock::manager::AdvisoryLock;
use crate::lock::wait::Outcome;
use crate::session::counts::Counters;

/// One subscriber. Every method has a default that does nothing, so a listener implements
/// only what it cares about. None may raise an ERROR: some are called while an ERROR unwinds.
pub trait Listener: Sync {
    /// Whether acquisitions, waits and holds are to be counted now. Asked before any counting
    /// work, so that the path does none when nobody counts.
    fn counting(&self) -> bool {
        false
    }

    /// Counts of the lock `key` handed on by the session layer. `name` gives the lock's name
    /// (a caller about to drop its copy hands it over); call it only when the name is needed.
    fn counted(&self, _key: i64, _name: &mut dyn FnMut() -> Option<Box<str>>, _counts: &Counters) {}

    /// Whether this listener shows names to other sessions (then the registry hands it the
    /// names of new holds; see registry::acquired). Fixed for the life of the backend.
    fn shows_names(&self) -> bool {
        false
    }

    /// This session may show `name` as the name of `key` to other sessions: it holds the key
    /// by that name, or is about to wait for it.
    fn name_shown(&self, _key: i64, _name: &str) {}

    /// This session holds `key` without a name now: any name shown for it goes.
    fn name_withdrawn(&self, _key: i64) {}

    /// pglock began a new hold of `lock` (PostgreSQL's lock manager did not hold it before).
    fn hold_began(&self, _lock: AdvisoryLock) {}

    /// pglock released a hold of `key`, or a wait for it ended without a grant: this session
    /// may hold the key in no mode now.
    fn maybe_released(&self, _key: i64) {}

    /// A transaction ended; the registry has already forgotten every hold that ended with it.
    fn transaction_ended(&self) {}

    /// The session is exiting; the registry has already ended every hold.
    fn session_exiting(&self) {}
}

static LISTENERS: OnceLock<&'static [&'static dyn Listener]> = OnceLock::new();

/// Subscribes `listeners`, in this order, for the life of the backend (from _PG_init).
pub fn listen(listeners: &'static [&'static dyn Listener]) {
    let _ = LISTENERS.set(listeners);
}

fn listeners() -> &'static [&'static dyn Listener] {
    LISTENERS.get().copied().unwrap_or(&[])
}

/// Whether any listener counts now.
pub fn counting() -> bool {
    listeners().iter().any(|listener| listener.counting())
}

/// Whether any listener shows names to other sessions.
pub fn shows_names() -> bool {
    listeners().iter().any(|listener| listener.shows_names())
}

/// Hands on counts of `key`; `name` is asked for the name only by a listener that needs it.
pub fn counted(key: i64, name: &mut dyn FnMut() -> Option<Box<str>>, counts: &Counters) {
    for listener in listeners() {
        listener.counted(key, name, counts);
    }
}

pub fn name_shown(key: i64, name: &str) {
    for listener in listeners() {
        listener.name_shown(key, name);
    }
}

pub fn name_withdrawn(key: i64) {
    for listener in listeners() {
        listener.name_withdrawn(key);
    }
}

pub fn hold_began(lock: AdvisoryLock) {
    for listener in listeners() {
        listener.hold_began(lock);
    }
}

pub fn maybe_released(key: i64) {
    for listener in listeners() {
        listener.maybe_released(key);
    }
}

pub fn transaction_ended() {
    for listener in listeners() {
        listener.transaction_ended();
    }
}

pub fn session_exiting() {
    for listener in listeners() {
        listener.session_exiting();
    }
}

/// Counts a try without a wait that found `key` taken.
pub fn busy(key: i64, name: Option<&str>) {
    if counting() {
        let counts = Counters {
            busy: 1,
            ..Counters::default()
        };
        counted(key, &mut || name.map(Box::from), &counts);
    }
}

/// Runs the wait `wait` for `key` and, when anybody counts, hands on how it ended and how long
/// it took: granted, timed out, or ended by an ERROR (which goes on unchanged).
pub fn timed_wait(key: i64, name: Option<&str>, wait: impl FnOnce() -> Outcome) -> Outcome {
    if !counting() {
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
            let mut counts = Counters::default();
            if deadlock {
                counts.deadlocks = 1;
            } else {
                counts.cancels = 1;
            }
            counts.waited_for(backend::now() - started);
            counted(key, &mut || name.map(Box::from), &counts);
            error.rethrow()
        })
        .execute();
    let mut counts = Counters::default();
    match outcome {
        Outcome::Granted(_) => counts.waited = 1,
        Outcome::TimedOut => counts.timeouts = 1,
    }
    counts.waited_for(backend::now() - started);
    counted(key, &mut || name.map(Box::from), &counts);
    outcome
}
