//! Taking and giving back locks for the SQL surface: one lock (`LockRequest::acquire`), or
//! several in a fixed order under one deadline, all or nothing (`acquire_all`).

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{Acquired, AdvisoryLock, Mode, Scope};
use crate::lock::wait::{self, Outcome, Wait};
use crate::names::memo;
use crate::names::name::LockName;
use crate::session::events;
use crate::session::registry;
use crate::settings;

/// The lock a name or key refers to, in a mode.
pub struct LockRequest<'a> {
    pub lock: AdvisoryLock,
    pub name: Option<Cow<'a, str>>,
}

impl<'a> LockRequest<'a> {
    pub fn named(name: Option<LockName<'a>>, mode: Mode) -> Self {
        Self::for_name(LockName::checked(name), mode)
    }

    /// A request for a name that is already checked.
    pub fn for_name(name: Cow<'a, str>, mode: Mode) -> Self {
        let key = memo::key_of(&name);
        LockRequest {
            lock: AdvisoryLock { key, mode },
            name: Some(name),
        }
    }

    pub fn keyed(key: Option<i64>, mode: Mode) -> Self {
        let Some(key) = key else { errors::null_key() };
        LockRequest {
            lock: AdvisoryLock { key, mode },
            name: None,
        }
    }

    /// The same lock in another mode (an upgradeable hold's intent, an upgrade's exclusive).
    pub fn in_mode(&self, mode: Mode) -> LockRequest<'a> {
        LockRequest {
            lock: AdvisoryLock {
                key: self.lock.key,
                mode,
            },
            name: self.name.clone(),
        }
    }

    /// Takes the lock in `scope`, waiting as `wait` says; false when not granted in time.
    pub fn acquire(&self, scope: Scope, wait: Wait) -> bool {
        match self.take(scope, wait) {
            Some(acquired) => {
                registry::acquired(self.lock, scope, self.name.as_deref(), acquired);
                true
            }
            None => false,
        }
    }

    /// Waits as `wait` says until the lock could be granted, and gives it back at once: a wait
    /// for others to let go, not a hold. Statistics count the wait (waited, timed out, ended by
    /// an ERROR, and for how long) or the busy try, and no acquisition or hold; the name shows
    /// to other sessions only while the wait lasts.
    pub fn wait_until_grantable(&self, wait: Wait) -> bool {
        if self.take(Scope::Session, wait).is_none() {
            return false;
        }
        registry::release_hold(self.lock, Scope::Session);
        true
    }

    /// [`acquire`](Self::acquire) up to the grant, without recording it in the registry.
    fn take(&self, scope: Scope, wait: Wait) -> Option<Acquired> {
        refuse_parallel_worker();
        refuse_on_standby();
        registry::ensure_room_for(self.lock);
        if matches!(wait, Wait::Within(_)) && backend::in_parallel_mode() {
            // Refused up front, so the outcome does not depend on other sessions.
            errors::timed_wait_in_parallel_mode();
        }
        let acquired = match self.lock.try_acquire(scope) {
            Some(acquired) => acquired,
            None if matches!(wait, Wait::No) => {
                events::busy(self.lock.key, self.name.as_deref());
                return None;
            }
            None => {
                // Waiters show their lock's name to other sessions too, until the wait ends
                // (the guard withdraws it on every way out but a grant, an ERROR included).
                let waiting = registry::waiting(self.lock, self.name.as_deref());
                let outcome =
                    events::timed_wait(self.lock.key, self.name.as_deref(), || match wait {
                        Wait::WithoutDeadline => {
                            Outcome::Granted(wait::acquire_without_deadline(self.lock, scope))
                        }
                        Wait::Within(micros) => wait::acquire_within(self.lock, scope, micros),
                        Wait::No => unreachable!("handled above"),
                    });
                match outcome {
                    // A lock this backend holds is never waited for (the try above takes it
                    // at once), so a grant after a wait always begins a new hold.
                    Outcome::Granted(holds) => {
                        waiting.granted();
                        Acquired {
                            holds,
                            new_hold: true,
                            local: None,
                        }
                    }
                    Outcome::TimedOut => return None,
                }
            }
        };
        Some(acquired)
    }

    /// Gives back one session hold; false when the session has none.
    pub fn release(&self) -> bool {
        refuse_parallel_worker();
        registry::release_session_hold(self.lock).is_some()
    }
}

/// The most locks one call takes (lock_all and friends): far below the shared lock table's
/// size, so that one call cannot fill it for every session.
pub const MAX_LOCKS_PER_CALL: usize = 1000;

/// Takes every lock of `requests`, in the order given, under one deadline: all of them, or
/// none. On a timeout, and on any ERROR (a deadlock, a cancel), every hold this call took is
/// given back before the call returns false or the ERROR goes on; holds the session had before
/// are untouched.
pub fn acquire_all(requests: &[LockRequest], scope: Scope, wait: Wait) -> bool {
    let deadline = match wait {
        Wait::Within(micros) => Some(backend::now().saturating_add(micros)),
        _ => None,
    };
    let taken = std::cell::Cell::new(0);
    // Read after an ERROR: the count is exact, as it changes only after a grant is recorded.
    let taken_so_far = AssertUnwindSafe(&taken);
    let all = PgTryBuilder::new(AssertUnwindSafe(|| {
        for request in requests {
            let wait_for_this = match deadline {
                Some(deadline) => remaining(deadline),
                None => wait,
            };
            if !request.acquire(scope, wait_for_this) {
                return false;
            }
            taken.set(taken.get() + 1);
        }
        true
    }))
    .catch_others(|error| {
        // Transaction holds go with the (sub)transaction the ERROR aborts; session holds
        // survive it, so they are given back here.
        if scope == Scope::Session {
            give_back(&requests[..taken_so_far.get()], scope);
        }
        error.rethrow()
    })
    .execute();
    if !all {
        give_back(&requests[..taken.get()], scope);
    }
    all
}

/// What is left of a deadline, as a wait: at least one more try when it has passed.
fn remaining(deadline: pg_sys::TimestampTz) -> Wait {
    let left = deadline.saturating_sub(backend::now());
    if left > 0 {
        Wait::Within(left)
    } else {
        Wait::No
    }
}

/// Gives back one hold in `scope` of each request, last taken first.
fn give_back(requests: &[LockRequest], scope: Scope) {
    for request in requests.iter().rev() {
        registry::release_hold(request.lock, scope);
    }
}

/// Locks belong to the session, so a parallel worker (which exits with the query) must not
/// take or release them. The leader may, as it may call the built-ins in parallel mode.
pub fn refuse_parallel_worker() {
    if backend::is_parallel_worker() {
        errors::parallel_worker();
    }
}

/// On a hot standby advisory locks coordinate with nobody on the primary: almost always a
/// misrouted connection, so refused unless pglock.allow_on_standby says otherwise.
pub fn refuse_on_standby() {
    if backend::recovery_in_progress() && !settings::allow_on_standby() {
        errors::on_standby();
    }
}
