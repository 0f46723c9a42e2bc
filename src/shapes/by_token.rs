//! The SQL surface of locks owned by a token: acquire (exclusive or shared, by name or key),
//! renew, release, and the listing behind pglock.locks. The table and the workers are in
//! shared/token_locks/; fence_ok (shapes/fencing.rs) accepts these tokens too.

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::errors;
use crate::lock::manager::Mode;
use crate::lock::wait::Wait;
use crate::names::name::{LockName, ServerText};
use crate::session::request::LockRequest;
use crate::settings;
use crate::shared::token_locks::{self, Request};

/// A TTL in microseconds, checked: not NULL, at least 1 s, at most pglock.token_max_hold.
fn checked_ttl(ttl: Option<Interval>) -> i64 {
    let Some(ttl) = ttl else { errors::null_ttl() };
    let micros = ttl.as_micros();
    let max = settings::token_max_hold_us();
    if micros < 1_000_000 || micros > max as i128 {
        errors::ttl_out_of_range(micros as f64 / 1e6, max / 1_000_000);
    }
    micros as i64
}

fn token_of(token: Option<i64>) -> i64 {
    token.unwrap_or_else(|| errors::null_token())
}

/// The microseconds to wait: Some(0) tries once, None waits without a deadline of pglock's.
fn wait_of(timeout: Option<Interval>) -> Option<i64> {
    match Wait::from_timeout(timeout) {
        Wait::No => Some(0),
        Wait::Within(micros) => Some(micros),
        Wait::WithoutDeadline => None,
    }
}

fn acquire(request: LockRequest, ttl: Option<Interval>, timeout: Option<Interval>) -> Option<i64> {
    let ttl_us = checked_ttl(ttl);
    let wait_us = wait_of(timeout);
    token_locks::acquire(
        &Request {
            key: request.lock.key,
            shared: request.lock.mode == Mode::Shared,
            ttl_us,
            name: request.name.as_deref(),
        },
        wait_us,
    )
}

#[pg_extern(volatile, parallel_unsafe, name = "acquire")]
fn acquire_name(
    name: Option<LockName>,
    ttl: Option<Interval>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i64> {
    acquire(LockRequest::named(name, Mode::Exclusive), ttl, timeout)
}

#[pg_extern(volatile, parallel_unsafe, name = "acquire")]
fn acquire_key(
    key: Option<i64>,
    ttl: Option<Interval>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i64> {
    acquire(LockRequest::keyed(key, Mode::Exclusive), ttl, timeout)
}

#[pg_extern(volatile, parallel_unsafe, name = "acquire_shared")]
fn acquire_shared_name(
    name: Option<LockName>,
    ttl: Option<Interval>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i64> {
    acquire(LockRequest::named(name, Mode::Shared), ttl, timeout)
}

#[pg_extern(volatile, parallel_unsafe, name = "acquire_shared")]
fn acquire_shared_key(
    key: Option<i64>,
    ttl: Option<Interval>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i64> {
    acquire(LockRequest::keyed(key, Mode::Shared), ttl, timeout)
}

fn renew(request: LockRequest, token: Option<i64>, ttl: Option<Interval>) -> bool {
    let token = token_of(token);
    let ttl_us = ttl.map(|ttl| checked_ttl(Some(ttl)));
    token_locks::renew(request.lock.key, token, ttl_us)
}

#[pg_extern(volatile, parallel_unsafe, name = "renew")]
fn renew_token_name(
    name: Option<LockName>,
    token: Option<i64>,
    ttl: default!(Option<Interval>, "NULL"),
) -> bool {
    renew(LockRequest::named(name, Mode::Exclusive), token, ttl)
}

#[pg_extern(volatile, parallel_unsafe, name = "renew")]
fn renew_token_key(
    key: Option<i64>,
    token: Option<i64>,
    ttl: default!(Option<Interval>, "NULL"),
) -> bool {
    renew(LockRequest::keyed(key, Mode::Exclusive), token, ttl)
}

#[pg_extern(volatile, parallel_unsafe, name = "release")]
fn release_name(name: Option<LockName>, token: Option<i64>) -> bool {
    let key = LockRequest::named(name, Mode::Exclusive).lock.key;
    token_locks::release(key, token_of(token))
}

#[pg_extern(volatile, parallel_unsafe, name = "release")]
fn release_key(key: Option<i64>, token: Option<i64>) -> bool {
    let key = LockRequest::keyed(key, Mode::Exclusive).lock.key;
    token_locks::release(key, token_of(token))
}

/// The token-owned locks held in this database: names as pglock.locks shows them, tokens only
/// to the role that took them. Backs pglock.locks.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn token_locks() -> TableIterator<
    'static,
    (
        name!(key, i64),
        name!(name, Option<ServerText>),
        name!(token, Option<i64>),
        name!(mode, &'static str),
        name!(role, pg_sys::Oid),
        name!(application_name, String),
        name!(client_addr, Option<String>),
        name!(since, TimestampWithTimeZone),
        name!(expires_at, TimestampWithTimeZone),
        name!(xid, i64),
    ),
> {
    let time = |at| TimestampWithTimeZone::try_from(at).expect("a time within a century of now");
    TableIterator::new(token_locks::visible().into_iter().map(move |row| {
        (
            row.key,
            row.name.map(ServerText),
            row.token,
            if row.shared { "shared" } else { "exclusive" },
            row.role,
            row.application_name,
            row.client_addr,
            time(row.since),
            time(row.expires_at),
            row.xid,
        )
    }))
}

/// The acquires of token-owned locks waiting in this database: the waiter process whose request
/// is in the lock's queue (pg_locks shows its pid), the key, the name (to those who may read the
/// role's statistics), the session that called acquire and its role. Backs pglock.locks.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn token_waiters() -> TableIterator<
    'static,
    (
        name!(waiter_pid, i32),
        name!(key, i64),
        name!(name, Option<ServerText>),
        name!(pid, i32),
        name!(role, pg_sys::Oid),
    ),
> {
    TableIterator::new(token_locks::waiting().into_iter().map(|row| {
        (
            row.waiter,
            row.key,
            row.name.map(ServerText),
            row.requester,
            row.role,
        )
    }))
}
