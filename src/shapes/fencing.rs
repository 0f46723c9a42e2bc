//! Fencing tokens: a number with each fenced hold, greater than every token the cluster has
//! returned before, so that a resource can refuse the writes of a holder that lost its lock
//! without noticing (see shared/tokens.rs for why the order survives crashes and failover).

use std::panic::AssertUnwindSafe;

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockName;
use crate::session::registry;
use crate::session::request::{refuse_on_standby, LockRequest};
use crate::shared::token_locks;
use crate::shared::tokens;

/// Takes the exclusive lock like lock() and returns the hold's token; NULL when not granted.
/// A hold this session already has keeps the token it has (stacking joins the hold).
fn fenced(name: Option<LockName>, scope: Scope, wait: Wait) -> Option<i64> {
    let request = LockRequest::named(name, Mode::Exclusive);
    if backend::recovery_in_progress() {
        refuse_on_standby();
        errors::fencing_on_standby();
    }
    if !request.acquire(scope, wait) {
        return None;
    }
    if let Some(token) = registry::token(request.lock) {
        return Some(token);
    }
    // An ERROR here (a cancel while the WAL is flushed) must not leave the hold taken.
    let token = PgTryBuilder::new(AssertUnwindSafe(tokens::next))
        .catch_others(|error| {
            registry::release_hold(request.lock, scope);
            error.rethrow()
        })
        .execute();
    registry::set_token(request.lock, token);
    Some(token)
}

#[pg_extern(volatile, parallel_restricted)]
fn lock_fenced(name: Option<LockName>, timeout: default!(Option<Interval>, "NULL")) -> Option<i64> {
    fenced(name, Scope::Session, Wait::from_timeout(timeout))
}

#[pg_extern(volatile, parallel_restricted)]
fn try_lock_fenced(name: Option<LockName>) -> Option<i64> {
    fenced(name, Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted)]
fn xact_lock_fenced(
    name: Option<LockName>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i64> {
    fenced(name, Scope::Transaction, Wait::from_timeout(timeout))
}

#[pg_extern(volatile, parallel_restricted)]
fn try_xact_lock_fenced(name: Option<LockName>) -> Option<i64> {
    fenced(name, Scope::Transaction, Wait::No)
}

/// The token of this session's current fenced hold of `name`, or NULL.
#[pg_extern(volatile, parallel_restricted)]
fn token(name: Option<LockName>) -> Option<i64> {
    registry::token(LockRequest::named(name, Mode::Exclusive).lock)
}

/// True only while this session holds `name` under exactly `token`, or a token-owned lock
/// (pglock.acquire) holds it under `token`. Use it in the statement that writes, so that the
/// check and the write are one: `UPDATE ... WHERE pglock.fence_ok('x', $1)`. For a token-owned
/// lock the check lasts until the transaction ends: the lock is not released, nor does it
/// expire, before a transaction that saw its token valid has ended.
#[pg_extern(volatile, parallel_restricted)]
fn fence_ok(name: Option<LockName>, token: Option<i64>) -> bool {
    let lock = LockRequest::named(name, Mode::Exclusive).lock;
    let Some(token) = token else {
        errors::null_token()
    };
    registry::token(lock) == Some(token) || token_locks::fence_holds(lock.key, token)
}
