//! The record of a hold in PostgreSQL: the prepared transaction that holds a token-owned lock,
//! its GID (what a restart reads back, and what ends it), taking and preparing it, rolling it
//! back, and adopting after a start only what the token worker itself prepared.

use std::ffi::CString;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use super::table::{changed, wake_worker, with_entry, End, Entry, State, Table};
use super::worker::{end_fence_holder, report_expiry};
use crate::backend;
use crate::lock::manager::fence_tag;
use crate::settings;
use crate::shared::tokens;

/// The prefix of every prepared transaction pglock makes (pg_prepared_xacts.gid).
pub const GID_PREFIX: &str = "pglock:";

impl Entry {
    /// The prepared transaction's GID. It names the lock, not a capability: pg_prepared_xacts
    /// shows it to every role, and a token renews or releases a lock only for a role that may
    /// act for its owner (find_mine).
    fn gid(&self) -> CString {
        let mut gid = format!(
            "{GID_PREFIX}{}:{}:{}:{}:{}:{}",
            self.token,
            self.database,
            self.key,
            if self.shared { 's' } else { 'x' },
            self.prepared_ttl_us,
            self.role,
        );
        if self.gid_since != 0 {
            gid.push_str(&format!(":{}", self.gid_since));
        }
        CString::new(gid).expect("digits and colons")
    }
}

unsafe extern "C-unwind" {
    /// twophase.h: COMMIT PREPARED / ROLLBACK PREPARED without the statement (not in pgrx's
    /// bindings). Called through pgrx's FFI guard, as it may raise an ERROR.
    fn FinishPreparedTransaction(gid: *const std::ffi::c_char, is_commit: bool);
}

/// Whether the prepared transaction `xid` that holds a lock still exists: an administrator's
/// ROLLBACK PREPARED (or COMMIT PREPARED) ends it behind pglock's back, and the key is free.
/// A prepared transaction stays in the proc array, as in progress, until it is finished.
pub(super) fn still_prepared(xid: u32) -> bool {
    // SAFETY: a proc-array lookup, inside a transaction.
    unsafe { pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(xid)) }
}

/// What a worker's attempt to take a lock came to.
pub(super) enum Taken {
    Held,
    NotAvailable,
    /// The request was given up or freed meanwhile.
    Gone,
}

/// Starts the transaction block a lock is taken and prepared in (as `BEGIN` does).
///
/// # Safety
/// A background worker connected to a database, outside any transaction.
unsafe fn begin() {
    // SAFETY: what postgres.c does for BEGIN and the next statement.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::BeginTransactionBlock();
        pg_sys::CommitTransactionCommand();
        pg_sys::StartTransactionCommand();
    }
}

/// Takes entry `index`'s lock in a new transaction and prepares it, waiting in the lock's queue
/// unless `dont_wait`.
///
/// # Safety
/// A background worker connected to pglock.token_database, outside any transaction.
pub(super) unsafe fn take(table: &Table, index: usize, generation: u32, dont_wait: bool) -> Taken {
    let Some(entry) = with_entry(table, index, generation, |entry| *entry) else {
        return Taken::Gone;
    };
    let tag = entry.tag();
    let lockmode = if entry.shared {
        pg_sys::ShareLock
    } else {
        pg_sys::ExclusiveLock
    } as pg_sys::LOCKMODE;
    // SAFETY: the caller's promise; LockAcquire with a valid tag and mode (an ERROR, such as
    // the cancel that ends a waiter, propagates to the caller's catch).
    let result = unsafe {
        begin();
        pg_sys::LockAcquire(&tag, lockmode, false, dont_wait)
    };
    if result == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
        // SAFETY: ends the transaction block begun above.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        return Taken::NotAvailable;
    }
    let claimed = with_entry(table, index, generation, |entry| {
        if matches!(entry.state, State::Asked | State::Waiting) && !entry.abandoned {
            entry.state = State::Granting;
            true
        } else {
            false
        }
    });
    if claimed != Some(true) {
        // SAFETY: as above; the lock goes with the transaction.
        unsafe { pg_sys::AbortOutOfAnyTransaction() };
        if claimed == Some(false) {
            with_entry(table, index, generation, Entry::free);
        }
        changed(table);
        return Taken::Gone;
    }
    changed(table);
    // The token is the grant's: greater than every token handed out before it.
    let token = tokens::next();
    // SAFETY: inside the transaction begun above.
    let xid = unsafe { pg_sys::GetTopTransactionId() };
    let mut prepared = entry;
    prepared.token = token;
    prepared.prepared_ttl_us = entry.ttl_us;
    prepared.since = backend::now();
    prepared.gid_since = prepared.since;
    let gid = prepared.gid();
    // Recorded before the PREPARE: should this process die during it, whoever ends the entry
    // knows the GID to roll back.
    with_entry(table, index, generation, |entry| {
        entry.token = token;
        entry.prepared_ttl_us = prepared.prepared_ttl_us;
        entry.since = prepared.since;
        entry.gid_since = prepared.gid_since;
        entry.xid = xid.into_inner();
    });
    // SAFETY: PREPARE TRANSACTION as postgres.c runs it: the lock moves to the prepared
    // transaction and stays held after this transaction command ends.
    unsafe {
        pg_sys::PrepareTransactionBlock(gid.as_ptr());
        pg_sys::CommitTransactionCommand();
    }
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    with_entry(table, index, generation, |entry| {
        entry.expires_at = now
            .saturating_add(entry.ttl_us)
            .min(entry.since.saturating_add(max_hold));
        entry.waiter = 0;
        if entry.abandoned {
            entry.state = State::Ending;
            entry.end = End::Abandoned;
        } else {
            entry.state = State::Held;
        }
    });
    wake_worker(table);
    changed(table);
    Taken::Held
}

/// Ends entry `index`'s lock: rolls its prepared transaction back once no transaction that
/// checked its token with fence_ok is still open. While such a transaction is in the way the
/// entry stays Ending, for the next round (and its session is ended past
/// pglock.token_fence_timeout).
///
/// # Safety
/// The token worker, outside any transaction.
pub(super) unsafe fn finish(table: &Table, index: usize, generation: u32) {
    let Some(entry) = with_entry(table, index, generation, |entry| *entry) else {
        return;
    };
    let fence = fence_tag(entry.database, entry.key);
    let gid = entry.gid();
    // SAFETY: a transaction of the worker's; the fence tag exclusively without waiting, then
    // ROLLBACK PREPARED's work (an ERROR propagates to the caller's catch).
    unsafe {
        pg_sys::StartTransactionCommand();
        let fenced = pg_sys::LockAcquire(&fence, pg_sys::AccessExclusiveLock as _, false, true);
        if fenced == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            let now = backend::now();
            let blocked_since = with_entry(table, index, generation, |entry| {
                if entry.fence_blocked_since == 0 {
                    entry.fence_blocked_since = now;
                }
                entry.fence_blocked_since
            })
            .unwrap_or(now);
            let blocked_for = now - blocked_since;
            let in_the_way = if blocked_for >= settings::token_fence_timeout_us() {
                crate::compat::pids_in_conflict(&fence, pg_sys::AccessExclusiveLock as _)
            } else {
                Vec::new()
            };
            pg_sys::AbortCurrentTransaction();
            for pid in in_the_way {
                end_fence_holder(pid, &entry, blocked_for);
            }
            return;
        }
        pg_sys::ffi::pg_guard_ffi_boundary(|| FinishPreparedTransaction(gid.as_ptr(), false));
        // Inside the transaction: the report looks the role's name up in the catalog.
        if matches!(
            entry.end,
            End::Expired | End::ReachedMaxHold | End::ReachedMaxXidAge
        ) {
            report_expiry(&entry);
        }
        pg_sys::CommitTransactionCommand();
    }
    with_entry(table, index, generation, Entry::free);
    changed(table);
}

/// A prepared transaction of pg_prepared_xacts whose GID starts with pglock's prefix.
struct Prepared {
    gid: String,
    xid: u32,
    database: u32,
    /// Made by the bootstrap superuser, as the token worker's are (any other role can PREPARE
    /// a transaction with a GID of its choosing).
    by_worker: bool,
}

/// Parses a GID of pglock's: token:database:key:mode:ttl:role, and since 0.5.0 :since (the
/// time the lock was granted, µs since 2000). None when it is not one.
fn parse_gid(gid: &str, xid: u32, now: pg_sys::TimestampTz) -> Option<Entry> {
    let fields: Vec<&str> = gid.strip_prefix(GID_PREFIX)?.split(':').collect();
    let (token, database, key, mode, ttl, role, since) = match fields[..] {
        [token, database, key, mode, ttl, role] => (token, database, key, mode, ttl, role, None),
        [token, database, key, mode, ttl, role, since] => (
            token,
            database,
            key,
            mode,
            ttl,
            role,
            Some(since.parse().ok()?),
        ),
        _ => return None,
    };
    // SAFETY: an all-zero Entry is a valid Free one.
    let mut entry: Entry = unsafe { std::mem::zeroed() };
    entry.token = token.parse().ok()?;
    entry.database = database.parse().ok()?;
    entry.key = key.parse().ok()?;
    entry.shared = match mode {
        "s" => true,
        "x" => false,
        _ => return None,
    };
    entry.ttl_us = ttl.parse().ok()?;
    entry.prepared_ttl_us = entry.ttl_us;
    entry.role = role.parse().ok()?;
    entry.xid = xid;
    entry.state = State::Held;
    entry.gid_since = since.unwrap_or(0);
    if entry.gid().to_str().ok()? != gid {
        return None;
    }
    // The hold counts from the grant (a clock that went back counts it from now); a lock of
    // 0.4.0 did not record its grant, so its hold counts from now.
    entry.since = match since {
        Some(since) if since > 0 => since.min(now),
        _ => now,
    };
    Some(entry)
}

/// Reads back, after a start, the token-owned locks whose prepared transactions survived (a
/// restart, a crash, a promotion): each gets a full TTL from now, within pglock.token_max_hold
/// of when it was granted, so that its holder can renew it. Names are not kept across a
/// restart.
///
/// Adopts only what the token worker prepared: a transaction prepared by the bootstrap
/// superuser, in this database, that holds its GID's key in its GID's mode, with a token below
/// the current WAL position (tokens are WAL positions). Any other transaction with pglock's
/// prefix (another role's PREPARE TRANSACTION 'pglock:...', or a lock left in another database
/// by a change of pglock.token_database, or one that no longer fits the table) is left alone
/// and logged with the command that ends it.
pub(super) fn read_back(table: &Table) {
    let (prepared, wal_now): (Vec<Prepared>, i64) = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT gid, transaction::text::bigint, \
                        (SELECT oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) p.database)::bigint, \
                        owner OPERATOR(pg_catalog.=) pg_catalog.pg_get_userbyid(10) \
                 FROM pg_catalog.pg_prepared_xacts p WHERE gid LIKE 'pglock:%' ORDER BY prepared",
                None,
                &[],
            )?;
            let mut found = Vec::new();
            for row in rows {
                if let (Some(gid), Some(xid), Some(database), Some(by_worker)) = (
                    row.get::<String>(1)?,
                    row.get::<i64>(2)?,
                    row.get::<i64>(3)?,
                    row.get::<bool>(4)?,
                ) {
                    found.push(Prepared {
                        gid,
                        xid: xid as u32,
                        database: database as u32,
                        by_worker,
                    });
                }
            }
            let wal_now = client
                .select(
                    "SELECT (pg_catalog.pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::bigint",
                    None,
                    &[],
                )?
                .first()
                .get::<i64>(1)?
                .unwrap_or(i64::MAX);
            Ok::<_, pgrx::spi::Error>((found, wal_now))
        })
        .unwrap_or_default()
    });
    let now = backend::now();
    let max_hold = settings::token_max_hold_us();
    let here = backend::database_id();
    for found in prepared {
        let gid = &found.gid;
        let refuse = |why: &str| {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_WARNING,
                format!("pglock token worker: prepared transaction \"{gid}\" is not adopted as a token-owned lock"),
                "",
            )
            .set_detail(why.to_owned())
            .set_hint(format!("If nothing needs it, end it with ROLLBACK PREPARED '{gid}' in its database."))
            .report(PgLogLevel::WARNING);
        };
        let Some(mut restored) = parse_gid(gid, found.xid, now) else {
            refuse("Its GID is not one that pglock makes.");
            continue;
        };
        // Still known: the worker restarted, not the server.
        let known = table.read(|entries, _| {
            entries
                .iter()
                .any(|e| e.state != State::Free && e.token == restored.token && e.xid == found.xid)
        });
        if known {
            continue;
        }
        if !found.by_worker {
            refuse("It was prepared by a role other than the one the token worker runs as.");
            continue;
        }
        // The lock may be in any database; its prepared transaction is in the worker's.
        if found.database != here {
            refuse(&format!(
                "It was prepared in another database than pglock.token_database (\"{}\"), where the token worker cannot finish it.",
                settings::token_database()
            ));
            continue;
        }
        if restored.token <= 0 || restored.token > wal_now {
            refuse("Its token is beyond the current WAL position, so pglock did not hand it out.");
            continue;
        }
        if !holds_its_key(&restored) {
            refuse("It does not hold the advisory lock its GID names.");
            continue;
        }
        restored.expires_at = now
            .saturating_add(restored.ttl_us)
            .min(restored.since.saturating_add(max_hold));
        let adopted = table.update(|entries, _| {
            if entries
                .iter()
                .any(|e| e.state != State::Free && e.token == restored.token)
            {
                return true; // still known (the worker restarted, not the server)
            }
            match entries.iter_mut().find(|e| e.state == State::Free) {
                Some(free) => {
                    let generation = free.generation;
                    *free = restored;
                    free.generation = generation;
                    true
                }
                None => false,
            }
        });
        if !adopted {
            refuse("The table of token-owned locks is full (pglock.max_token_locks was lowered).");
        }
    }
}

/// Whether the prepared transaction `entry.xid` holds `entry`'s key in `entry`'s mode. In
/// pg_locks a prepared transaction's locks have no pid and share the virtual transaction of the
/// lock on its own transaction ID: -1/xid after a restart, but the preparing backend's until
/// then (a worker that restarts finds them so).
fn holds_its_key(entry: &Entry) -> bool {
    let tag = entry.tag();
    let mode = if entry.shared {
        "ShareLock"
    } else {
        "ExclusiveLock"
    };
    let sql = format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks a JOIN pg_catalog.pg_locks x \
           ON x.locktype OPERATOR(pg_catalog.=) 'transactionid' AND x.pid IS NULL \
           AND x.transactionid::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.=) {} \
           AND x.virtualtransaction OPERATOR(pg_catalog.=) a.virtualtransaction \
           WHERE a.locktype OPERATOR(pg_catalog.=) 'advisory' AND a.granted AND a.pid IS NULL \
           AND a.database OPERATOR(pg_catalog.=) {}::pg_catalog.oid AND a.classid OPERATOR(pg_catalog.=) {}::pg_catalog.oid \
           AND a.objid OPERATOR(pg_catalog.=) {}::pg_catalog.oid AND a.objsubid OPERATOR(pg_catalog.=) {} \
           AND a.mode OPERATOR(pg_catalog.=) '{mode}')",
        entry.xid,
        tag.locktag_field1,
        tag.locktag_field2,
        tag.locktag_field3,
        tag.locktag_field4
    );
    BackgroundWorker::transaction(|| backend::read_one::<bool>(&sql)).unwrap_or(false)
}
