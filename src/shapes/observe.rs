//! Looking at a lock without holding it: waiting until it is released, whether it is free, and
//! who holds it, for every session of the database.

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::backend;
use crate::lock::manager::{AdvisoryLock, Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockName;
use crate::session::request::LockRequest;

/// Waits in the lock manager's queue until `mode` can be granted, then gives it back at once.
fn wait_until_grantable(name: Option<LockName>, timeout: Option<Interval>, mode: Mode) -> bool {
    let wait = Wait::from_timeout(timeout);
    LockRequest::named(name, mode).wait_until_grantable(wait)
}

/// Waits until nobody holds `name` exclusively; takes nothing. True if that happened in time.
///
/// Waits in RowShareLock mode, which conflicts only with exclusive holds: shared and
/// upgradeable holders do not delay it, and it queues behind exclusive waiters that were there
/// first. The session's own holds never count.
#[pg_extern(volatile, parallel_restricted)]
fn wait_released(name: Option<LockName>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    wait_until_grantable(name, timeout, Mode::Upgradeable)
}

/// Waits until nobody holds `name` in any mode; takes nothing. True if that happened in time.
#[pg_extern(volatile, parallel_restricted)]
fn wait_released_shared(
    name: Option<LockName>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    wait_until_grantable(name, timeout, Mode::Exclusive)
}

/// One granted hold of a key, as pg_locks shows it: the pid (NULL for a prepared transaction)
/// and the mode.
pub struct Holder {
    pub pid: Option<i32>,
    pub mode: Mode,
}

/// Every granted hold of `key` in this database, by any session, sorted by pid and mode.
pub fn holders_of(key: i64) -> Vec<Holder> {
    let query = "SELECT l.pid, l.mode::pg_catalog.text FROM pg_catalog.pg_locks l \
                 WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' \
                   AND l.database OPERATOR(pg_catalog.=) $1 \
                   AND l.objsubid OPERATOR(pg_catalog.=) 1 \
                   AND l.granted \
                   AND ((l.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) \
                        OPERATOR(pg_catalog.|) l.objid::pg_catalog.int8) OPERATOR(pg_catalog.=) $2";
    let database = pgrx::pg_sys::Oid::from(backend::database_id());
    let mut holders: Vec<Holder> = Spi::connect(|client| {
        client
            .select(query, None, &[database.into(), key.into()])
            .expect("pg_locks can be read")
            .filter_map(|row| {
                let pid = row.get::<i32>(1).expect("pid is int4");
                let mode = match row.get::<String>(2).expect("mode is text")?.as_str() {
                    "ExclusiveLock" => Mode::Exclusive,
                    "ShareLock" => Mode::Shared,
                    "RowShareLock" => Mode::Upgradeable,
                    // Other modes on an advisory tag come from no SQL function.
                    _ => return None,
                };
                Some(Holder { pid, mode })
            })
            .collect()
    });
    holders.sort_by_key(|holder| (holder.pid, holder.mode));
    holders
}

/// Whether nobody (this session included) holds `name` in any mode: MySQL's IS_FREE_LOCK.
#[pg_extern(volatile, parallel_restricted)]
fn is_free(name: Option<LockName>) -> bool {
    let key = LockRequest::named(name, Mode::Exclusive).lock.key;
    holders_of(key).is_empty()
}

/// Who holds `name` right now: one row per session and mode (and, for this session, per
/// scope; another session's scope is not in the shared lock table, so it is NULL, except for a
/// prepared transaction, whose pid is NULL).
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn holders(
    name: Option<LockName>,
) -> TableIterator<
    'static,
    (
        name!(pid, Option<i32>),
        name!(mode, String),
        name!(scope, Option<&'static str>),
    ),
> {
    let key = LockRequest::named(name, Mode::Exclusive).lock.key;
    let me = backend::pid();
    let mut rows = Vec::new();
    for holder in holders_of(key) {
        let mode = holder.mode.describe().into_owned();
        match holder.pid {
            Some(pid) if pid == me => {
                let holds = AdvisoryLock {
                    key,
                    mode: holder.mode,
                }
                .holds();
                for scope in [Scope::Session, Scope::Transaction] {
                    if holds.in_scope(scope) > 0 {
                        rows.push((Some(pid), mode.clone(), Some(scope.as_str())));
                    }
                }
            }
            Some(pid) => rows.push((Some(pid), mode, None)),
            None => rows.push((None, mode, Some(Scope::Transaction.as_str()))),
        }
    }
    TableIterator::new(rows)
}
