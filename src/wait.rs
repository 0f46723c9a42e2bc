//! Waiting for a lock with a deadline of pglock's own: the lock manager's queue, a timer that
//! ends the sleep, and the bookkeeping that tells that timer from a user's cancel.
//!
//! PostgreSQL's only way out of a lock sleep short of the grant is an ERROR raised by
//! CHECK_FOR_INTERRUPTS. So the wait runs inside an internal subtransaction; the deadline is a
//! timeout of our own (USER_TIMEOUT) whose handler asks for a query cancel; and when the
//! ERROR comes back we decide whose it was:
//!
//! * our deadline passed and no SIGINT reached the backend: it is ours, swallow it, return false;
//! * anything else (a user's cancel, statement_timeout — which also arrives as SIGINT — a
//!   deadlock, a termination): re-raise it unchanged.
//!
//! SIGINT is watched only while we sleep, by a handler that records it and then runs the one
//! PostgreSQL installed, so no cancel is ever lost.

use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::compat::{disable_timeout, enable_timeout_at, RegisterTimeout, ANY_USER_TIMEOUT};
use crate::lockmgr::{AdvisoryLock, Holds, Scope};

/// Set by the deadline timer's handler (in signal context).
static DEADLINE_PASSED: AtomicBool = AtomicBool::new(false);
/// Set by the SIGINT watcher (in signal context).
static SIGINT_SEEN: AtomicBool = AtomicBool::new(false);
/// The SIGINT handler that was installed before the watcher, as an address.
static PREVIOUS_SIGINT: AtomicUsize = AtomicUsize::new(0);
/// Our timeout slot in this backend, registered on first use (never in the postmaster, whose
/// registrations InitializeTimeouts discards in every backend).
static mut DEADLINE_TIMEOUT_ID: i32 = -1;

/// What the wait came to.
pub enum Outcome {
    Granted(Holds),
    TimedOut,
}

/// Waits for `lock` until `deadline`, in the lock manager's queue.
pub fn acquire_until(lock: AdvisoryLock, scope: Scope, deadline: pg_sys::TimestampTz) -> Outcome {
    // SAFETY: single-threaded backend code inside a transaction, the way PL/pgSQL runs an
    // exception block: remember context and owner, start a subtransaction, and put both
    // back whichever way it ends.
    unsafe {
        let caller_context = pg_sys::CurrentMemoryContext;
        let caller_owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(ptr::null());
        pg_sys::MemoryContextSwitchTo(caller_context);

        let saved_lock_timeout = pg_sys::LockTimeout;
        // The explicit timeout is pglock's alone: the session's lock_timeout must not cut it
        // short. Only the C variable changes, never the setting; it is restored below.
        pg_sys::LockTimeout = 0;
        DEADLINE_PASSED.store(false, Ordering::SeqCst);
        let watcher = SigintWatcher::install();
        enable_timeout_at(deadline_timeout_id(), deadline);

        let result: Result<Holds, Box<CaughtError>> =
            PgTryBuilder::new(AssertUnwindSafe(|| Ok(lock.acquire_waiting(scope))))
                .catch_others(|error| Err(Box::new(error)))
                .execute();

        disable_timeout(deadline_timeout_id(), false);
        let cancelled_by_someone_else = watcher.remove();
        pg_sys::LockTimeout = saved_lock_timeout;
        let deadline_passed = DEADLINE_PASSED.load(Ordering::SeqCst);
        if deadline_passed && !cancelled_by_someone_else {
            // Our timer may have asked for a cancel that is still pending (it fired just as
            // the lock was granted); withdraw it, since nobody else asked.
            pg_sys::QueryCancelPending = 0;
        }

        match result {
            Ok(holds) => {
                pg_sys::ReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(caller_context);
                pg_sys::CurrentResourceOwner = caller_owner;
                Outcome::Granted(holds)
            }
            Err(error) => {
                let ours = deadline_passed && !cancelled_by_someone_else && is_query_cancel(&error);
                // The lock may have been granted at the very instant the sleep was cut short
                // (LockErrorCleanup then records the grant). A transaction hold belongs to the
                // subtransaction's resource owner; hand it to the parent before rolling back.
                let granted = lock.is_held();
                if ours && granted && scope == Scope::Transaction {
                    pg_sys::LockReassignCurrentOwner(ptr::null_mut(), 0);
                }
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(caller_context);
                pg_sys::CurrentResourceOwner = caller_owner;
                if ours {
                    return if granted {
                        Outcome::Granted(lock.holds())
                    } else {
                        Outcome::TimedOut
                    };
                }
                // An ERROR means "not acquired": a session hold granted at that instant
                // survives the subtransaction, so give it back before re-raising.
                if granted && scope == Scope::Session {
                    lock.release(Scope::Session);
                }
                error.rethrow()
            }
        }
    }
}

/// Waits for `lock` with no deadline of pglock's: exactly pg_advisory_lock's wait, so the
/// session's lock_timeout and statement_timeout apply and raise their own errors.
pub fn acquire_without_deadline(lock: AdvisoryLock, scope: Scope) -> Holds {
    PgTryBuilder::new(AssertUnwindSafe(|| lock.acquire_waiting(scope)))
        .catch_others(|error| {
            // As above: an ERROR must not leave a session hold granted at the last instant.
            if scope == Scope::Session && lock.holds().session > 0 {
                lock.release(Scope::Session);
            }
            error.rethrow()
        })
        .execute()
}

fn is_query_cancel(error: &CaughtError) -> bool {
    match error {
        CaughtError::PostgresError(report) => {
            report.sql_error_code() == PgSqlErrorCode::ERRCODE_QUERY_CANCELED
        }
        _ => false,
    }
}

fn deadline_timeout_id() -> i32 {
    // SAFETY: backend-local state, one thread.
    unsafe {
        if DEADLINE_TIMEOUT_ID < 0 {
            DEADLINE_TIMEOUT_ID = RegisterTimeout(ANY_USER_TIMEOUT, deadline_passed);
        }
        DEADLINE_TIMEOUT_ID
    }
}

/// Runs in signal context (from handle_sig_alarm, interrupts held): ask for a query cancel the
/// way StatementCancelHandler does. handle_sig_alarm has already set the latch.
unsafe extern "C-unwind" fn deadline_passed() {
    DEADLINE_PASSED.store(true, Ordering::SeqCst);
    // SAFETY: sig_atomic_t flags that signal handlers are meant to set.
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::InterruptPending), 1);
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::QueryCancelPending), 1);
    }
}

/// Records that SIGINT arrived while installed, then hands the signal on unchanged.
struct SigintWatcher {
    previous: libc::sigaction,
}

impl SigintWatcher {
    fn install() -> Self {
        SIGINT_SEEN.store(false, Ordering::SeqCst);
        // SAFETY: plain sigaction calls; the watcher forwards to whatever was installed.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGINT, ptr::null(), &mut previous);
            PREVIOUS_SIGINT.store(previous.sa_sigaction, Ordering::SeqCst);
            let mut watcher: libc::sigaction = previous;
            watcher.sa_flags = previous.sa_flags & !libc::SA_SIGINFO;
            watcher.sa_sigaction = if previous.sa_flags & libc::SA_SIGINFO != 0 {
                watch_sigint_siginfo as *const () as usize
            } else {
                watch_sigint as *const () as usize
            };
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                watcher.sa_flags |= libc::SA_SIGINFO;
            }
            libc::sigaction(libc::SIGINT, &watcher, ptr::null_mut());
            SigintWatcher { previous }
        }
    }

    /// Puts the previous handler back; says whether SIGINT arrived meanwhile.
    fn remove(self) -> bool {
        // SAFETY: restores exactly what install() found.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.previous, ptr::null_mut());
        }
        SIGINT_SEEN.load(Ordering::SeqCst)
    }
}

extern "C" fn watch_sigint(signo: libc::c_int) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
    let previous = PREVIOUS_SIGINT.load(Ordering::SeqCst);
    if previous != libc::SIG_DFL && previous != libc::SIG_IGN {
        // SAFETY: the address came from sa_sigaction of a handler without SA_SIGINFO.
        let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
        handler(signo);
    }
}

extern "C" fn watch_sigint_siginfo(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
    let previous = PREVIOUS_SIGINT.load(Ordering::SeqCst);
    if previous != libc::SIG_DFL && previous != libc::SIG_IGN {
        // SAFETY: the address came from sa_sigaction of a handler with SA_SIGINFO.
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(previous) };
        handler(signo, info, context);
    }
}
