//! What a token does once its lock is held: renew, release, fence_ok, for a role that may act
//! for the role that took it; and what pglock.locks and status() show of the table.

use std::sync::atomic::Ordering;

use pgrx::pg_sys;

use super::acquire::{usable_table, wait_for};
use super::record::still_prepared;
use super::table::{changed, find_held, table, wake_worker, with_entry, End, Entry, State, Table};
use crate::backend;
use crate::lock::manager::{fence_held_by_me, fence_tag};
use crate::settings;

/// Whether the current user may renew, release or fence-check a lock taken by `role`:
/// PostgreSQL's rule for signalling another role's session (pg_cancel_backend): the role itself,
/// a role that has its privileges, or a superuser. A token alone is not enough: tokens are
/// numbers that grow, not secrets (docs/token-locks.md, "Who may do what").
fn may_act_for(role: u32) -> bool {
    // A catalog lookup: never called with the table's LWLock held.
    backend::has_privileges_of(pg_sys::Oid::from(role))
}

/// The entry (index, generation) holding `key` in this database under `token`, unexpired, when
/// the current user may act on it; None otherwise, whatever the reason, so that a wrong token
/// and another role's token look the same. An entry whose prepared transaction was finished by
/// hand is freed on the way (its key is free already).
pub(super) fn find_mine(table: &Table, key: i64, token: i64) -> Option<(usize, u32)> {
    let (index, generation, role, xid) = table.read(|entries, _| {
        let index = find_held(entries, key, token)?;
        let entry = &entries[index];
        Some((index, entry.generation, entry.role, entry.xid))
    })?;
    if !may_act_for(role) {
        return None;
    }
    if !still_prepared(xid) {
        let gone = with_entry(table, index, generation, |entry| {
            (entry.state == State::Held).then(|| {
                let gone = (entry.describe(), entry.token);
                entry.free();
                gone
            })
        })
        .flatten();
        if let Some((what, token)) = gone {
            pgrx::log!("pglock: token-owned {what} (token {token}) was ended outside pglock: its prepared transaction is gone");
            changed(table);
        }
        return None;
    }
    Some((index, generation))
}

/// Extends the lock `key` held under `token` by `ttl_us` from now (None: its own TTL), never
/// past pglock.token_max_hold from when it was taken. True when it now lasts the TTL asked;
/// false when the token does not own it (or the current user may not act for its role), and
/// false too when pglock.token_max_hold cut the extension short: the lock is then kept to that
/// bound, but its holder must not count on the TTL it asked for.
pub fn renew(key: i64, token: i64, ttl_us: Option<i64>) -> bool {
    let table = usable_table();
    let Some((index, generation)) = find_mine(table, key, token) else {
        return false;
    };
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    with_entry(table, index, generation, |entry| {
        if entry.state != State::Held || entry.expires_at <= now {
            return false;
        }
        let ttl = ttl_us.unwrap_or(entry.ttl_us);
        entry.ttl_us = ttl;
        let asked = now.saturating_add(ttl);
        entry.expires_at = asked.min(entry.since.saturating_add(max_hold));
        entry.expires_at == asked
    })
    .unwrap_or(false)
}

/// Releases the lock `key` held under `token`; false when the token does not own it (or the
/// current user may not act for its role). Returns once the token worker has ended its
/// prepared transaction, so that the caller may take it again at once; but when this very
/// transaction checked the token with fence_ok, the worker can end it only after this
/// transaction ends, so release returns at once and the lock passes on at commit or rollback.
pub fn release(key: i64, token: i64) -> bool {
    let table = usable_table();
    let Some((index, generation)) = find_mine(table, key, token) else {
        return false;
    };
    let now = backend::now();
    let ending = with_entry(table, index, generation, |entry| {
        let held = entry.state == State::Held && entry.expires_at > now;
        if held {
            entry.state = State::Ending;
            entry.end = End::Released;
        }
        held
    });
    if ending != Some(true) {
        return false;
    }
    wake_worker(table);
    changed(table);
    if !fence_held_by_me(backend::database_id(), key) {
        wait_for(table, index, generation, None, |_| false);
    }
    true
}

/// Whether `key` is held in this database under `token` by a token-owned lock that the current
/// user may act for. When it is, takes a share of the key's fence tag until the transaction
/// ends: the worker ends a lock only once it has that tag exclusively, so a write checked here
/// commits before the lock can pass on (for pglock.token_fence_timeout at most, after which the
/// worker ends the session that keeps such a transaction open). A wrong token takes nothing
/// and holds nothing back.
pub fn fence_holds(key: i64, token: i64) -> bool {
    let Some(table) = table() else { return false };
    if find_mine(table, key, token).is_none() {
        return false;
    }
    let tag = fence_tag(backend::database_id(), key);
    // SAFETY: a transaction-scope lock on pglock's own fence tag of the key, waiting if the
    // worker is ending that key's lock right now (it holds the tag only for a moment).
    unsafe { pg_sys::LockAcquire(&tag, pg_sys::AccessShareLock as _, false, false) };
    let holds = table.read(|entries, _| find_held(entries, key, token).is_some());
    if !holds {
        // Ended meanwhile: this check must not hold its end back.
        // SAFETY: releases the one transaction hold taken just above.
        unsafe { pg_sys::LockRelease(&tag, pg_sys::AccessShareLock as _, false) };
    }
    holds
}

/// A token-owned lock as pglock.token_locks() shows it.
pub struct Row {
    pub key: i64,
    pub name: Option<String>,
    /// Shown only to roles that may act for the role that took it (may_act_for).
    pub token: Option<i64>,
    pub shared: bool,
    pub role: pg_sys::Oid,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub since: pg_sys::TimestampTz,
    pub expires_at: pg_sys::TimestampTz,
    pub xid: i64,
}

/// The token-owned locks of this database, held now; names and tokens as the current user may
/// see them.
pub fn visible() -> Vec<Row> {
    let Some(table) = table() else {
        return Vec::new();
    };
    let database = backend::database_id();
    let held: Vec<Entry> = table.read(|entries, _| {
        entries
            .iter()
            .filter(|entry| entry.state == State::Held && entry.database == database)
            .copied()
            .collect()
    });
    held.iter()
        .map(|entry| {
            let role = pg_sys::Oid::from(entry.role);
            let sees_name = backend::may_read_stats_of(role);
            let owns = may_act_for(entry.role);
            let addr = String::from_utf8_lossy(&entry.addr[..entry.addr_len as usize]);
            Row {
                key: entry.key,
                name: entry.name().filter(|_| sees_name),
                token: owns.then_some(entry.token),
                shared: entry.shared,
                role,
                application_name: String::from_utf8_lossy(&entry.app[..entry.app_len as usize])
                    .into_owned(),
                // As pg_stat_activity: the application name for everyone, the client's address
                // only for those who may read the role's statistics.
                client_addr: (!addr.is_empty() && sees_name).then(|| addr.into_owned()),
                since: entry.since,
                expires_at: entry.expires_at,
                xid: entry.xid as i64,
            }
        })
        .collect()
}

/// An acquire of a token-owned lock that waits in the lock's queue, as pglock.token_waiters()
/// shows it.
pub struct WaitRow {
    /// The waiter process, whose request pg_locks shows.
    pub waiter: i32,
    pub key: i64,
    pub name: Option<String>,
    /// The session that called acquire.
    pub requester: i32,
    pub role: pg_sys::Oid,
}

/// The acquires waiting in this database through a waiter process; names as the current user
/// may see them.
pub fn waiting() -> Vec<WaitRow> {
    let Some(table) = table() else {
        return Vec::new();
    };
    let database = backend::database_id();
    let waiting: Vec<Entry> = table.read(|entries, _| {
        entries
            .iter()
            .filter(|entry| {
                entry.state == State::Waiting && entry.waiter != 0 && entry.database == database
            })
            .copied()
            .collect()
    });
    waiting
        .iter()
        .map(|entry| {
            let role = pg_sys::Oid::from(entry.role);
            WaitRow {
                waiter: entry.waiter,
                key: entry.key,
                name: entry.name().filter(|_| backend::may_read_stats_of(role)),
                requester: entry.requester,
                role,
            }
        })
        .collect()
}

/// The table's use for a status report.
pub struct Occupancy {
    pub held: usize,
    pub waiting: usize,
    pub capacity: usize,
    pub worker_running: bool,
    /// The oldest lock's age in seconds (how far back it holds vacuum's horizon).
    pub oldest_hold_s: Option<f64>,
}

pub fn occupancy() -> Option<Occupancy> {
    let table = table()?;
    let now = backend::now();
    let (held, waiting, oldest) = table.read(|entries, _| {
        let held: Vec<&Entry> = entries.iter().filter(|e| e.state == State::Held).collect();
        let waiting = entries.iter().filter(|e| e.state == State::Waiting).count();
        let oldest = held.iter().map(|e| e.since).min();
        (held.len(), waiting, oldest)
    });
    Some(Occupancy {
        held,
        waiting,
        capacity: table.capacity(),
        worker_running: !table.worker_latch.load(Ordering::SeqCst).is_null(),
        oldest_hold_s: oldest.map(|since| (now - since) as f64 / 1e6),
    })
}
