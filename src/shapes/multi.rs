//! Many locks in one call, all or nothing: lock_all and its variants, and unlock_all(array).
//!
//! Locks are taken in ascending key order, so sessions that lock overlapping sets through
//! these functions, in any order, never deadlock with each other; one deadline covers the
//! whole call; on a timeout or an ERROR nothing this call took stays held.

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::errors;
use crate::lock::manager::{Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockNames;
use crate::session::request::{acquire_all, LockRequest, MAX_LOCKS_PER_CALL};

/// One request per distinct key, in ascending key order. Every element is checked before
/// anything is taken, so bad input changes nothing.
fn by_name(names: Option<LockNames<'_>>, mode: Mode) -> Vec<LockRequest<'_>> {
    let Some(LockNames(names)) = names else {
        errors::null_name_array()
    };
    if names.len() > MAX_LOCKS_PER_CALL {
        errors::too_many_locks_in_one_call(names.len(), MAX_LOCKS_PER_CALL);
    }
    let requests = names
        .into_iter()
        .map(|name| LockRequest::named(name, mode))
        .collect();
    in_key_order(requests)
}

fn by_key(keys: Option<Vec<Option<i64>>>, mode: Mode) -> Vec<LockRequest<'static>> {
    let Some(keys) = keys else {
        errors::null_key_array()
    };
    if keys.len() > MAX_LOCKS_PER_CALL {
        errors::too_many_locks_in_one_call(keys.len(), MAX_LOCKS_PER_CALL);
    }
    let requests = keys
        .into_iter()
        .map(|key| LockRequest::keyed(key, mode))
        .collect();
    in_key_order(requests)
}

fn in_key_order(mut requests: Vec<LockRequest<'_>>) -> Vec<LockRequest<'_>> {
    // Stable: of two names with one key, the first given names the lock.
    requests.sort_by_key(|request| request.lock.key);
    requests.dedup_by_key(|request| request.lock.key);
    requests
}

/// Releases one session hold of each distinct lock; returns how many were held.
fn release_each(requests: Vec<LockRequest<'_>>) -> i32 {
    requests.iter().filter(|request| request.release()).count() as i32
}

// Session scope, exclusive.

#[pg_extern(volatile, parallel_restricted, name = "try_lock_all")]
fn try_lock_all_names(names: Option<LockNames>) -> bool {
    acquire_all(&by_name(names, Mode::Exclusive), Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "try_lock_all")]
fn try_lock_all_keys(keys: Option<Vec<Option<i64>>>) -> bool {
    acquire_all(&by_key(keys, Mode::Exclusive), Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_all")]
fn lock_all_names(names: Option<LockNames>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_name(names, Mode::Exclusive), Scope::Session, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_all")]
fn lock_all_keys(
    keys: Option<Vec<Option<i64>>>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_key(keys, Mode::Exclusive), Scope::Session, wait)
}

// Session scope, shared.

#[pg_extern(volatile, parallel_restricted, name = "try_lock_all_shared")]
fn try_lock_all_shared_names(names: Option<LockNames>) -> bool {
    acquire_all(&by_name(names, Mode::Shared), Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "try_lock_all_shared")]
fn try_lock_all_shared_keys(keys: Option<Vec<Option<i64>>>) -> bool {
    acquire_all(&by_key(keys, Mode::Shared), Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_all_shared")]
fn lock_all_shared_names(
    names: Option<LockNames>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_name(names, Mode::Shared), Scope::Session, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_all_shared")]
fn lock_all_shared_keys(
    keys: Option<Vec<Option<i64>>>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_key(keys, Mode::Shared), Scope::Session, wait)
}

// Transaction scope, exclusive.

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_all")]
fn try_xact_lock_all_names(names: Option<LockNames>) -> bool {
    acquire_all(
        &by_name(names, Mode::Exclusive),
        Scope::Transaction,
        Wait::No,
    )
}

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_all")]
fn try_xact_lock_all_keys(keys: Option<Vec<Option<i64>>>) -> bool {
    acquire_all(&by_key(keys, Mode::Exclusive), Scope::Transaction, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_all")]
fn xact_lock_all_names(
    names: Option<LockNames>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_name(names, Mode::Exclusive), Scope::Transaction, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_all")]
fn xact_lock_all_keys(
    keys: Option<Vec<Option<i64>>>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_key(keys, Mode::Exclusive), Scope::Transaction, wait)
}

// Transaction scope, shared.

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_all_shared")]
fn try_xact_lock_all_shared_names(names: Option<LockNames>) -> bool {
    acquire_all(&by_name(names, Mode::Shared), Scope::Transaction, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_all_shared")]
fn try_xact_lock_all_shared_keys(keys: Option<Vec<Option<i64>>>) -> bool {
    acquire_all(&by_key(keys, Mode::Shared), Scope::Transaction, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_all_shared")]
fn xact_lock_all_shared_names(
    names: Option<LockNames>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_name(names, Mode::Shared), Scope::Transaction, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_all_shared")]
fn xact_lock_all_shared_keys(
    keys: Option<Vec<Option<i64>>>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    acquire_all(&by_key(keys, Mode::Shared), Scope::Transaction, wait)
}

// Release: one session hold of each distinct lock.

#[pg_extern(volatile, parallel_restricted, name = "unlock_all")]
fn unlock_all_names(names: Option<LockNames>) -> i32 {
    release_each(by_name(names, Mode::Exclusive))
}

#[pg_extern(volatile, parallel_restricted, name = "unlock_all")]
fn unlock_all_keys(keys: Option<Vec<Option<i64>>>) -> i32 {
    release_each(by_key(keys, Mode::Exclusive))
}

#[pg_extern(volatile, parallel_restricted, name = "unlock_all_shared")]
fn unlock_all_shared_names(names: Option<LockNames>) -> i32 {
    release_each(by_name(names, Mode::Shared))
}

#[pg_extern(volatile, parallel_restricted, name = "unlock_all_shared")]
fn unlock_all_shared_keys(keys: Option<Vec<Option<i64>>>) -> i32 {
    release_each(by_key(keys, Mode::Shared))
}
