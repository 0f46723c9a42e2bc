//! The SQL surface: every pglock.* function of single locks, each a thin shell over the session
//! layer (request, registry) and the lock manager calls.

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::backend;
use crate::errors;
use crate::lock::manager::{Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::memo;
use crate::names::name::{LockName, ServerText};
use crate::session::registry;
use crate::session::request::{refuse_parallel_worker, LockRequest};

/// The advisory-lock key of a name: the same bigint sqlx's `PgAdvisoryLock::new(name)` uses.
#[pg_extern(immutable, parallel_safe)]
fn key(name: Option<LockName>) -> i64 {
    memo::key_of(&LockName::checked(name))
}

// Session and transaction scope, exclusive, and their release: hand-written entry points in
// api/entry.rs (the hottest functions).

// Session scope, shared.

#[pg_extern(volatile, parallel_restricted, name = "try_lock_shared")]
fn try_lock_shared_name(name: Option<LockName>) -> bool {
    LockRequest::named(name, Mode::Shared).acquire(Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "try_lock_shared")]
fn try_lock_shared_key(key: Option<i64>) -> bool {
    LockRequest::keyed(key, Mode::Shared).acquire(Scope::Session, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_shared")]
fn lock_shared_name(name: Option<LockName>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    LockRequest::named(name, Mode::Shared).acquire(Scope::Session, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "lock_shared")]
fn lock_shared_key(key: Option<i64>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    LockRequest::keyed(key, Mode::Shared).acquire(Scope::Session, wait)
}

// Transaction scope, shared.

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_shared")]
fn try_xact_lock_shared_name(name: Option<LockName>) -> bool {
    LockRequest::named(name, Mode::Shared).acquire(Scope::Transaction, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "try_xact_lock_shared")]
fn try_xact_lock_shared_key(key: Option<i64>) -> bool {
    LockRequest::keyed(key, Mode::Shared).acquire(Scope::Transaction, Wait::No)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_shared")]
fn xact_lock_shared_name(
    name: Option<LockName>,
    timeout: default!(Option<Interval>, "NULL"),
) -> bool {
    let wait = Wait::from_timeout(timeout);
    LockRequest::named(name, Mode::Shared).acquire(Scope::Transaction, wait)
}

#[pg_extern(volatile, parallel_restricted, name = "xact_lock_shared")]
fn xact_lock_shared_key(key: Option<i64>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    LockRequest::keyed(key, Mode::Shared).acquire(Scope::Transaction, wait)
}

// Release.

#[pg_extern(volatile, parallel_restricted, name = "unlock_shared")]
fn unlock_shared_name(name: Option<LockName>) -> bool {
    LockRequest::named(name, Mode::Shared).release()
}

#[pg_extern(volatile, parallel_restricted, name = "unlock_shared")]
fn unlock_shared_key(key: Option<i64>) -> bool {
    LockRequest::keyed(key, Mode::Shared).release()
}

#[pg_extern(volatile, parallel_restricted)]
fn unlock_all() -> i32 {
    refuse_parallel_worker();
    registry::release_all_session_locks()
}

/// What this session holds through pglock.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn held() -> TableIterator<
    'static,
    (
        name!(name, Option<ServerText>),
        name!(key, i64),
        name!(mode, String),
        name!(scope, &'static str),
        name!(depth, i32),
        name!(since, TimestampWithTimeZone),
    ),
> {
    // A parallel worker's lock table is not the session's: refuse rather than answer wrongly.
    if backend::is_parallel_worker() {
        errors::held_in_parallel_worker();
    }
    let rows = registry::held().into_iter().map(|row| {
        let since = TimestampWithTimeZone::try_from(row.since)
            .expect("a timestamp read from the clock is in range");
        (
            row.name.map(ServerText),
            row.lock.key,
            row.lock.mode.describe().into_owned(),
            row.scope.as_str(),
            row.depth.min(i32::MAX as i64) as i32,
            since,
        )
    });
    TableIterator::new(rows)
}

/// The names of the advisory locks held or awaited by name: this session's own (always), and,
/// when pglock is preloaded, other sessions' that the current user may see (the rule of
/// pg_stat_activity's query text). Backs the pglock.locks view; rows for keys no longer held
/// are possible here and are dropped by the view's join with pg_locks.
#[pg_extern(volatile, parallel_restricted)]
fn lock_names(
) -> TableIterator<'static, (name!(pid, i32), name!(key, i64), name!(name, ServerText))> {
    let rows = crate::shared::name_map::visible_names()
        .into_iter()
        .map(|(pid, key, name)| (pid, key, ServerText(name)));
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE VIEW locks AS
SELECT COALESCE(names.name, owned.name, waiting.name) AS name,
       l.key,
       l.mode,
       l.granted,
       COALESCE(waiting.pid, l.pid) AS pid,
       COALESCE(activity.application_name, owned.application_name) AS application_name,
       COALESCE(activity.client_addr, owned.client_addr::pg_catalog.inet) AS client_addr,
       activity.state,
       l.waitstart AS waiting_since,
       CASE WHEN NOT l.granted
            THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.waitstart END AS wait_duration,
       CASE WHEN NOT l.granted THEN pg_catalog.pg_blocking_pids(l.pid) END AS blocked_by,
       COALESCE(lease.expires_at, owned.expires_at) AS lease_expires_at,
       owned.token,
       pg_catalog.pg_get_userbyid(owned.role) AS token_role
FROM (SELECT (lk.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32)
               OPERATOR(pg_catalog.|) lk.objid::pg_catalog.int8 AS key,
             CASE WHEN lk.objsubid OPERATOR(pg_catalog.=) 3 THEN 'upgradeable'
                  WHEN lk.objsubid OPERATOR(pg_catalog.>=) 256
                   AND lk.objsubid OPERATOR(pg_catalog.%) 256 OPERATOR(pg_catalog.=) 255
                  THEN pg_catalog.format('queue for %s slots', lk.objsubid OPERATOR(pg_catalog./) 256)
                  WHEN lk.objsubid OPERATOR(pg_catalog.>=) 256
                  THEN pg_catalog.format('slot %s of %s', lk.objsubid OPERATOR(pg_catalog.%) 256,
                                         lk.objsubid OPERATOR(pg_catalog./) 256)
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'ExclusiveLock' THEN 'exclusive'
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'ShareLock' THEN 'shared'
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'RowShareLock' THEN 'upgradeable'
                  ELSE lk.mode END AS mode,
             lk.granted, lk.pid, lk.waitstart, lk.virtualtransaction
      FROM pg_catalog.pg_locks lk
      WHERE lk.locktype OPERATOR(pg_catalog.=) 'advisory'
        AND (lk.objsubid OPERATOR(pg_catalog.=) 1
             OR (lk.objsubid OPERATOR(pg_catalog.=) 3 AND NOT lk.granted)
             OR (lk.objsubid OPERATOR(pg_catalog.>=) 256
                 AND (lk.objsubid OPERATOR(pg_catalog.%) 256 OPERATOR(pg_catalog.<>) 255
                      OR NOT lk.granted)))
        AND lk.database OPERATOR(pg_catalog.=)
            (SELECT d.oid FROM pg_catalog.pg_database d
             WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())) l
LEFT JOIN @extschema@.token_waiters() waiting
       ON waiting.waiter_pid OPERATOR(pg_catalog.=) l.pid AND NOT l.granted
      AND waiting.key OPERATOR(pg_catalog.=) l.key
LEFT JOIN pg_catalog.pg_stat_activity activity
       ON activity.pid OPERATOR(pg_catalog.=) COALESCE(waiting.pid, l.pid)
LEFT JOIN @extschema@.lock_names() names
       ON names.pid OPERATOR(pg_catalog.=) l.pid AND names.key OPERATOR(pg_catalog.=) l.key
LEFT JOIN @extschema@.leases() lease
       ON lease.pid OPERATOR(pg_catalog.=) l.pid AND lease.key OPERATOR(pg_catalog.=) l.key
      AND l.granted
      AND l.mode OPERATOR(pg_catalog.=) ANY (ARRAY['exclusive', 'shared', 'upgradeable'])
LEFT JOIN (SELECT o.*, x.virtualtransaction
           FROM @extschema@.token_locks() o
           JOIN pg_catalog.pg_locks x
             ON x.locktype OPERATOR(pg_catalog.=) 'transactionid'
            AND x.transactionid::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.=) o.xid) owned
       ON l.pid IS NULL AND l.granted AND owned.key OPERATOR(pg_catalog.=) l.key
      AND l.virtualtransaction OPERATOR(pg_catalog.=) owned.virtualtransaction;

COMMENT ON VIEW locks IS 'Every bigint-keyspace advisory lock in this database, held or awaited, with its name where known; token-owned locks (no pid) with their token, role and expiry, and a waiting token acquire under the pid of the session that called it.';
GRANT SELECT ON locks TO PUBLIC;
"#,
    name = "locks_view",
    requires = [
        lock_names,
        leases::leases,
        by_token::token_locks,
        by_token::token_waiters
    ],
);
