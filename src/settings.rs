//! pglock's settings (GUCs), all under the reserved `pglock.` prefix: one private static each,
//! read through the accessor functions below, which also derive what depends on them.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;

use crate::backend;

/// pglock.max_locks_per_session: -1 derives it from the shared lock table's size, 0 means no
/// limit.
static MAX_LOCKS_PER_SESSION: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// pglock.allow_on_standby.
static ALLOW_ON_STANDBY: GucSetting<bool> = GucSetting::<bool>::new(false);

/// pglock.client_check_interval, in milliseconds (0: off).
static CLIENT_CHECK_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// pglock.names_per_backend (defined only when preloaded).
static NAMES_PER_BACKEND: GucSetting<i32> = GucSetting::<i32>::new(16);

/// pglock.max_leases (defined only when preloaded).
static MAX_LEASES: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// pglock.stats_max (defined only when preloaded).
static STATS_MAX: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// pglock.track (defined only when preloaded).
static TRACK: GucSetting<bool> = GucSetting::<bool>::new(true);

/// pglock.max_token_locks (defined only when preloaded).
static MAX_TOKEN_LOCKS: GucSetting<i32> = GucSetting::<i32>::new(64);

/// pglock.max_token_locks_per_role (defined only when preloaded; 0: only the overall cap).
static MAX_TOKEN_LOCKS_PER_ROLE: GucSetting<i32> = GucSetting::<i32>::new(0);

/// pglock.token_max_hold, in seconds (defined only when preloaded).
static TOKEN_MAX_HOLD: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// pglock.token_max_xid_age (defined only when preloaded; 0: no bound).
static TOKEN_MAX_XID_AGE: GucSetting<i32> = GucSetting::<i32>::new(20_000_000);

/// pglock.max_token_waiters_per_role (defined only when preloaded).
static MAX_TOKEN_WAITERS_PER_ROLE: GucSetting<i32> = GucSetting::<i32>::new(4);

/// pglock.token_fence_timeout, in milliseconds (defined only when preloaded).
static TOKEN_FENCE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// pglock.token_database (defined only when preloaded).
static TOKEN_DATABASE: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"postgres"));

/// What the lease worker does when a lease runs out.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaseAction {
    /// End the holder's session (as pg_terminate_backend does), which releases its locks.
    #[name = c"terminate"]
    Terminate,
    /// Only log the expiry; the holder keeps its locks.
    #[name = c"log"]
    Log,
}

/// pglock.lease_action (defined only when preloaded).
static LEASE_ACTION: GucSetting<LeaseAction> =
    GucSetting::<LeaseAction>::new(LeaseAction::Terminate);

/// Defines the settings that exist whether or not pglock is preloaded.
pub fn init() {
    GucRegistry::define_int_guc(
        c"pglock.max_locks_per_session",
        c"Sets how many distinct locks one session may hold through pglock.",
        c"-1 (the default) derives the cap from the shared lock table: half of max_locks_per_transaction times the number of possible backends, so that no one session can fill the table that every session needs. 0 means no cap.",
        &MAX_LOCKS_PER_SESSION,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pglock.allow_on_standby",
        c"Lets pglock take locks on a hot standby.",
        c"Advisory locks on a standby coordinate only with sessions of that standby, never with the primary, so pglock refuses them unless this is on.",
        &ALLOW_ON_STANDBY,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.client_check_interval",
        c"Sets how often a session waiting for a lock checks that its client is still connected.",
        c"A waiting session whose client has gone ends (FATAL \"connection to client lost\") and leaves the queue, instead of waiting on and being granted a lock nobody will release; a grant that reaches it is given up too. Stands in for client_connection_check_interval during pglock's waits when that is 0. 0 turns the check off.",
        &CLIENT_CHECK_INTERVAL,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
}

/// Defines the settings that exist only when pglock is in shared_preload_libraries.
pub fn init_preloaded() {
    GucRegistry::define_int_guc(
        c"pglock.names_per_backend",
        c"How many lock names each backend can publish for other sessions to see.",
        c"Each entry takes about 1 kB of shared memory per backend. 0 turns the shared name map off. Needs pglock in shared_preload_libraries and a restart.",
        &NAMES_PER_BACKEND,
        0,
        4096,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.max_leases",
        c"Sets how many lock leases the server can hold at once.",
        c"Each lease takes about 240 bytes of shared memory. 0 turns leases off, and with them the lease worker. Needs pglock in shared_preload_libraries and a restart.",
        &MAX_LEASES,
        0,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.stats_max",
        c"Sets how many locks pglock.stats keeps statistics for.",
        c"Each entry takes about 1.2 kB of shared memory. When the table is full, the least used 5% of its entries are evicted. Needs pglock in shared_preload_libraries and a restart.",
        &STATS_MAX,
        10,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pglock.track",
        c"Collects statistics per lock for pglock.stats.",
        c"Counts acquisitions, waits, timeouts, deadlocks, cancels and hold times per lock, in each backend, and adds them to the shared table at the end of every transaction.",
        &TRACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pglock.lease_action",
        c"Sets what happens to a holder whose lease expires: terminate its session, or only log it.",
        c"terminate (the default) ends the holder's session, which releases every lock it holds; log writes the same message to the server log and leaves the session alone.",
        &LEASE_ACTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.max_token_locks",
        c"Sets how many locks owned by a token (pglock.acquire) the server can hold at once.",
        c"Each token-owned lock is a prepared transaction, so max_prepared_transactions must allow as many. Each entry takes about 1.3 kB of shared memory. 0 turns token-owned locks off, and with them the token worker. Needs pglock in shared_preload_libraries and a restart.",
        &MAX_TOKEN_LOCKS,
        0,
        10_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.max_token_locks_per_role",
        c"Sets how many locks owned by a token one role may hold at once.",
        c"Counts the locks taken by the role that called pglock.acquire. 0 (the default) leaves only the overall cap, pglock.max_token_locks.",
        &MAX_TOKEN_LOCKS_PER_ROLE,
        0,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.token_max_hold",
        c"Sets the longest time a lock owned by a token is held, renewals included.",
        c"A token-owned lock is a prepared transaction, whose transaction ID holds back vacuum's horizon for as long as the lock is held; this bounds that time. A TTL may not exceed it, and no renewal extends a hold past it.",
        &TOKEN_MAX_HOLD,
        1,
        7 * 24 * 3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pglock.token_max_xid_age",
        c"Sets the most transaction IDs that may be assigned while a lock owned by a token is held.",
        c"A token-owned lock's transaction ID holds back vacuum's horizon; on a busy server this bounds what a hold costs whatever its time, so that pglock.token_max_hold can allow long holds on a quiet one. The token worker ends a lock whose transaction ID is older. 0 turns the bound off.",
        &TOKEN_MAX_XID_AGE,
        0,
        1_000_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.max_token_waiters_per_role",
        c"Sets how many acquires of token-owned locks one role may have waiting at once.",
        c"Each waiting acquire takes a background worker process (max_worker_processes), which parallel query, logical replication and other extensions draw on too; this keeps one role from taking them all.",
        &MAX_TOKEN_WAITERS_PER_ROLE,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pglock.token_fence_timeout",
        c"Sets how long a transaction that checked a token with fence_ok may keep its lock from ending.",
        c"A token-owned lock that is released or expires passes on only once every transaction that saw its token valid has ended; the token worker ends the session of one still open this long after the lock's end.",
        &TOKEN_FENCE_TIMEOUT,
        100,
        24 * 3600 * 1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_string_guc(
        c"pglock.token_database",
        c"Sets the database in which the token worker prepares the transactions that hold token-owned locks.",
        c"The locks themselves are in each caller's database; a prepared transaction can only be finished from the database it was prepared in, so the worker uses this one for all of them. Needs a restart.",
        &TOKEN_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

/// How many leases the server's lease table holds (0: no table, no worker).
pub fn max_leases() -> usize {
    MAX_LEASES.get().max(0) as usize
}

/// How many token-owned locks the server's table holds (0: no table, no worker).
pub fn max_token_locks() -> usize {
    MAX_TOKEN_LOCKS.get().max(0) as usize
}

/// The cap on token-owned locks per role (None: only the overall cap).
pub fn max_token_locks_per_role() -> Option<usize> {
    match MAX_TOKEN_LOCKS_PER_ROLE.get() {
        0 => None,
        cap => Some(cap as usize),
    }
}

/// The longest a token-owned lock is held, in microseconds.
pub fn token_max_hold_us() -> i64 {
    TOKEN_MAX_HOLD.get() as i64 * 1_000_000
}

/// The most transaction IDs assigned while a token-owned lock is held (0: no bound).
pub fn token_max_xid_age() -> u64 {
    TOKEN_MAX_XID_AGE.get().max(0) as u64
}

/// How many waiting token-lock acquires (waiter processes) one role may have.
pub fn max_token_waiters_per_role() -> usize {
    MAX_TOKEN_WAITERS_PER_ROLE.get().max(1) as usize
}

/// How long a fence_ok transaction may hold back a token-owned lock's end, in microseconds.
pub fn token_fence_timeout_us() -> i64 {
    TOKEN_FENCE_TIMEOUT.get() as i64 * 1000
}

/// The database the token worker connects to.
pub fn token_database() -> String {
    TOKEN_DATABASE
        .get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_owned())
}

/// How many locks the statistics table holds.
pub fn stats_max() -> usize {
    STATS_MAX.get().max(1) as usize
}

/// Whether statistics are collected (pglock.track; they need preloading too).
pub fn track() -> bool {
    TRACK.get()
}

/// What the lease worker does with an expired lease.
pub fn lease_action() -> LeaseAction {
    LEASE_ACTION.get()
}

/// How often a waiting session checks for its client, in milliseconds (0: never).
pub fn client_check_interval_ms() -> i32 {
    CLIENT_CHECK_INTERVAL.get()
}

/// Whether pglock takes locks on a hot standby.
pub fn allow_on_standby() -> bool {
    ALLOW_ON_STANDBY.get()
}

/// How many names each backend's slot of the shared name map holds (0: no map).
pub fn names_per_backend() -> usize {
    NAMES_PER_BACKEND.get().max(0) as usize
}

/// The cap on distinct locks per session in force now, or None for no cap.
pub fn max_locks_per_session() -> Option<usize> {
    match MAX_LOCKS_PER_SESSION.get() {
        0 => None,
        -1 => Some(derived_max_locks_per_session()),
        cap => Some(cap as usize),
    }
}

/// pglock.max_locks_per_session as set (-1: derived, 0: no cap).
pub fn max_locks_per_session_setting() -> i32 {
    MAX_LOCKS_PER_SESSION.get()
}

/// Whether the cap in force is derived from the lock table (the setting is -1).
pub fn max_locks_per_session_is_derived() -> bool {
    MAX_LOCKS_PER_SESSION.get() == -1
}

/// Half the shared lock table's nominal size: max_locks_per_transaction x MaxBackends / 2.
pub fn derived_max_locks_per_session() -> usize {
    let (per_transaction, backends) = backend::lock_table_dimensions();
    (per_transaction * backends / 2).max(1)
}
