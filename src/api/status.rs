//! pglock.status(): one report, as jsonb, of whether pglock is healthy here: versions, whether
//! it is preloaded, its settings, how full the shared lock table, the name map and the lease
//! table are, the statistics table's entries and evictions, and where fencing tokens come
//! from.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde::Serialize;

use crate::backend;
use crate::settings::{self, LeaseAction};
use crate::shared::leases;
use crate::shared::memory;
use crate::shared::name_map;
use crate::shared::stats;
use crate::shared::token_locks;

#[derive(Serialize)]
struct Status {
    /// The version of the loaded library (pglock.so).
    version: &'static str,
    /// The extension's SQL version in this database; behind `version` until ALTER EXTENSION
    /// pglock UPDATE runs.
    sql_version: Option<String>,
    /// Whether pglock is in shared_preload_libraries (leases, names across sessions, token
    /// ranges).
    preloaded: bool,
    /// Whether this server is a hot standby (pglock takes no locks there by default).
    in_recovery: bool,
    settings: Settings,
    lock_table: LockTable,
    /// The shared name map behind pglock.locks; null without preloading.
    name_map: Option<NameMap>,
    /// The lease table; null without preloading or with pglock.max_leases = 0.
    leases: Option<Leases>,
    /// The statistics table behind pglock.stats; null without preloading.
    stats: Option<Stats>,
    fencing: Fencing,
    /// Locks owned by a token; null without preloading or with pglock.max_token_locks = 0.
    token_locks: Option<TokenLocks>,
}

#[derive(Serialize)]
struct TokenLocks {
    /// Held now, each by a prepared transaction (one xid each).
    held: usize,
    /// Acquires waiting now, each in a waiter process (one background worker each).
    waiting: usize,
    /// pglock.max_token_locks.
    capacity: usize,
    max_prepared_transactions: i32,
    /// pglock.max_token_locks_per_role (null: only the overall cap).
    max_per_role: Option<usize>,
    /// pglock.token_max_hold in seconds: the longest any of them holds back vacuum's horizon.
    max_hold_seconds: i64,
    /// The age of the oldest one, in seconds: how far back it holds vacuum's horizon now.
    oldest_hold_seconds: Option<f64>,
    database: String,
    worker_running: bool,
}

#[derive(Serialize)]
struct Settings {
    max_locks_per_session: i32,
    /// The per-session cap in force (derived when the setting is -1); null: no cap.
    max_locks_per_session_in_force: Option<usize>,
    allow_on_standby: bool,
    /// pglock.client_check_interval in milliseconds (0: off).
    client_check_interval_ms: i32,
    /// The settings that exist only with preloading; null without it.
    names_per_backend: Option<usize>,
    max_leases: Option<usize>,
    lease_action: Option<&'static str>,
    stats_max: Option<usize>,
    track: Option<bool>,
    max_token_locks: Option<usize>,
    /// 0: only the overall cap.
    max_token_locks_per_role: Option<usize>,
    max_token_waiters_per_role: Option<usize>,
    token_max_hold_seconds: Option<i64>,
    /// 0: no bound.
    token_max_xid_age: Option<u64>,
    token_fence_timeout_ms: Option<i64>,
    token_database: Option<String>,
}

#[derive(Serialize)]
struct LockTable {
    /// Advisory locks held or awaited right now, in every database.
    advisory_locks: i64,
    /// Every lock in pg_locks right now (relations, transaction ids, advisory, ...).
    all_locks: i64,
    /// The table's nominal size: max_locks_per_transaction x backends.
    capacity: usize,
    max_locks_per_transaction: usize,
    backends: usize,
}

#[derive(Serialize)]
struct NameMap {
    backend_slots: usize,
    names_per_backend: usize,
    names_published: usize,
}

#[derive(Serialize)]
struct Leases {
    active: usize,
    capacity: usize,
    worker_running: bool,
}

#[derive(Serialize)]
struct Stats {
    /// Locks with statistics now.
    entries: i64,
    capacity: usize,
    /// Entries evicted (the least used, when the table was full) since the last reset.
    evictions: i64,
    /// When pglock.stats_reset() last reset everything, or the table was created.
    reset_at: String,
}

#[derive(Serialize)]
struct Fencing {
    /// "ranges": one WAL record serves about 8,200 tokens (preloaded); "one record per token".
    token_source: &'static str,
}

/// A timestamp as PostgreSQL prints timestamptz in JSON (ISO 8601, in the session's zone).
fn timestamp_text(at: pgrx::pg_sys::TimestampTz) -> String {
    pgrx::datum::TimestampWithTimeZone::try_from(at)
        .map(|at| at.to_iso_string())
        .unwrap_or_default()
}

/// pglock's health at a glance; every field is documented in docs/observability.md.
#[pg_extern(volatile, parallel_restricted)]
fn status() -> JsonB {
    let preloaded = memory::preloaded();
    let (max_locks_per_transaction, backends) = backend::lock_table_dimensions();
    let (advisory_locks, all_locks) = backend::read_two::<i64, i64>(
        "SELECT count(*) FILTER (WHERE locktype OPERATOR(pg_catalog.=) 'advisory'), count(*)
         FROM pg_catalog.pg_locks",
    )
    .map(|(advisory, all)| (advisory.unwrap_or(0), all.unwrap_or(0)))
    .unwrap_or_default();
    let status = Status {
        version: env!("CARGO_PKG_VERSION"),
        sql_version: backend::read_one::<String>(
            "SELECT extversion FROM pg_catalog.pg_extension
             WHERE extname OPERATOR(pg_catalog.=) 'pglock'",
        ),
        preloaded,
        in_recovery: backend::recovery_in_progress(),
        settings: Settings {
            max_locks_per_session: settings::max_locks_per_session_setting(),
            max_locks_per_session_in_force: settings::max_locks_per_session(),
            allow_on_standby: settings::allow_on_standby(),
            client_check_interval_ms: settings::client_check_interval_ms(),
            names_per_backend: preloaded.then(settings::names_per_backend),
            max_leases: preloaded.then(settings::max_leases),
            lease_action: preloaded.then(|| match settings::lease_action() {
                LeaseAction::Terminate => "terminate",
                LeaseAction::Log => "log",
            }),
            stats_max: preloaded.then(settings::stats_max),
            track: preloaded.then(settings::track),
            max_token_locks: preloaded.then(settings::max_token_locks),
            max_token_locks_per_role: preloaded
                .then(|| settings::max_token_locks_per_role().unwrap_or(0)),
            max_token_waiters_per_role: preloaded.then(settings::max_token_waiters_per_role),
            token_max_hold_seconds: preloaded.then(|| settings::token_max_hold_us() / 1_000_000),
            token_max_xid_age: preloaded.then(settings::token_max_xid_age),
            token_fence_timeout_ms: preloaded.then(|| settings::token_fence_timeout_us() / 1000),
            token_database: preloaded.then(settings::token_database),
        },
        lock_table: LockTable {
            advisory_locks,
            all_locks,
            capacity: max_locks_per_transaction * backends,
            max_locks_per_transaction,
            backends,
        },
        name_map: name_map::occupancy().map(
            |(backend_slots, names_per_backend, names_published)| NameMap {
                backend_slots,
                names_per_backend,
                names_published,
            },
        ),
        leases: leases::occupancy().map(|(active, capacity, worker_running)| Leases {
            active,
            capacity,
            worker_running,
        }),
        stats: stats::occupancy().map(|(entries, capacity, evictions, reset_at)| Stats {
            entries,
            capacity,
            evictions,
            reset_at: timestamp_text(reset_at),
        }),
        fencing: Fencing {
            // The range exists exactly when pglock is preloaded (see shared/tokens.rs).
            token_source: if preloaded {
                "ranges"
            } else {
                "one record per token"
            },
        },
        token_locks: None,
    };
    let status = Status {
        token_locks: token_locks::occupancy().map(|occupancy| TokenLocks {
            held: occupancy.held,
            waiting: occupancy.waiting,
            capacity: occupancy.capacity,
            max_prepared_transactions: token_locks::max_prepared_transactions(),
            max_per_role: settings::max_token_locks_per_role(),
            max_hold_seconds: settings::token_max_hold_us() / 1_000_000,
            oldest_hold_seconds: occupancy.oldest_hold_s,
            database: settings::token_database(),
            worker_running: occupancy.worker_running,
        }),
        ..status
    };
    JsonB(serde_json::to_value(status).expect("the status report is plain data"))
}
