//! MySQL's user-level lock functions (GET_LOCK and friends, as MySQL 8.0 documents them), for
//! applications moving from MySQL. They are session locks on the same keys as pglock.lock(),
//! so the two surfaces exclude each other; docs/api.md lists every difference that remains.

use pgrx::prelude::*;

use crate::errors;
use crate::lock::manager::{Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockName;
use crate::session::registry;
use crate::session::request::LockRequest;
use crate::shapes::observe::holders_of;

/// MySQL's limit on a user-level lock name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// The exclusive lock on a name checked as pglock checks every name, then against MySQL's
/// 64-character limit.
fn request(name: Option<LockName>) -> LockRequest {
    let name = LockName::checked(name);
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        errors::mysql_name_too_long(chars, MAX_NAME_CHARS);
    }
    LockRequest::for_name(name, Mode::Exclusive)
}

/// A MySQL timeout in seconds: negative waits without limit, 0 tries once.
fn wait_for(timeout_seconds: Option<f64>) -> Wait {
    let Some(seconds) = timeout_seconds else {
        errors::null_timeout()
    };
    if seconds.is_nan() {
        errors::nan_timeout();
    }
    if seconds < 0.0 || seconds.is_infinite() {
        return Wait::WithoutDeadline;
    }
    // Whole microseconds, rounded up so that a tiny positive timeout still waits (the cast
    // saturates; Wait::for_micros caps it at a century, as for pglock.lock()).
    Wait::for_micros((seconds * 1e6).ceil() as i128)
}

/// GET_LOCK(str, timeout): 1 when granted, 0 when the timeout passed. Errors (a deadlock, a
/// cancel) are raised rather than returned as NULL.
#[pg_extern(volatile, parallel_restricted)]
fn get_lock(name: Option<LockName>, timeout_seconds: Option<f64>) -> i32 {
    let request = request(name);
    let wait = wait_for(timeout_seconds);
    request.acquire(Scope::Session, wait) as i32
}

/// RELEASE_LOCK(str): 1 when this session's hold was released (one level of it), 0 when
/// another session holds the name (nothing is released), NULL when nobody holds it.
#[pg_extern(volatile, parallel_restricted)]
fn release_lock(name: Option<LockName>) -> Option<i32> {
    let request = request(name);
    if request.release() {
        return Some(1);
    }
    (!holders_of(request.lock.key).is_empty()).then_some(0)
}

/// IS_FREE_LOCK(str): 1 when nobody holds the name, 0 when somebody does (this session too).
#[pg_extern(volatile, parallel_restricted)]
fn is_free_lock(name: Option<LockName>) -> i32 {
    let key = request(name).lock.key;
    holders_of(key).is_empty() as i32
}

/// IS_USED_LOCK(str): the pid of the session that holds the name (the exclusive holder, else
/// the lowest pid among shared holders), or NULL when nobody does.
#[pg_extern(volatile, parallel_restricted)]
fn is_used_lock(name: Option<LockName>) -> Option<i32> {
    let key = request(name).lock.key;
    let holders = holders_of(key);
    let exclusive = holders
        .iter()
        .find(|holder| holder.mode == Mode::Exclusive && holder.pid.is_some());
    exclusive
        .or_else(|| holders.iter().find(|holder| holder.pid.is_some()))
        .and_then(|holder| holder.pid)
}

/// RELEASE_ALL_LOCKS(): releases every session lock, as pglock.unlock_all() does, and returns
/// how many holds pglock had counted (each level of a stacked hold counts, as in MySQL).
#[pg_extern(volatile, parallel_restricted)]
fn release_all_locks() -> i32 {
    let levels: i64 = registry::held()
        .into_iter()
        .filter(|row| row.scope == Scope::Session)
        .map(|row| row.depth)
        .sum();
    crate::session::request::refuse_parallel_worker();
    registry::release_all_session_locks();
    levels.min(i32::MAX as i64) as i32
}
