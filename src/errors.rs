//! Every error pglock raises itself, each with its SQLSTATE, in PostgreSQL's message style.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

fn raise(report: ErrorReport) -> ! {
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

pub fn null_name() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "lock name must not be null",
        function_name!(),
    ))
}

pub fn null_key() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "lock key must not be null",
        function_name!(),
    ))
}

pub fn null_name_array() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "array of lock names must not be null",
        function_name!(),
    ))
}

pub fn null_key_array() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "array of lock keys must not be null",
        function_name!(),
    ))
}

pub fn too_many_locks_in_one_call(len: usize, limit: usize) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "too many locks in one call",
            function_name!(),
        )
        .set_detail(format!(
            "The array has {len} elements; one call takes at most {limit} locks."
        ))
        .set_hint("Lock a coarser name that stands for the whole set, or split the set into several calls."),
    )
}

pub fn empty_name() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "lock name must not be empty",
            function_name!(),
        )
        .set_hint("Give the lock a name of at least one character."),
    )
}

pub fn name_too_long(len: usize, limit: usize) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "lock name is too long",
            function_name!(),
        )
        .set_detail(format!(
            "The name is {len} bytes in UTF-8; the limit is {limit} bytes."
        )),
    )
}

pub fn mysql_name_too_long(chars: usize, limit: usize) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "lock name is too long for the MySQL-compatible functions",
            function_name!(),
        )
        .set_detail(format!(
            "The name has {chars} characters; like MySQL, get_lock() and its companions accept at most {limit}."
        ))
        .set_hint("Use pglock.lock() and pglock.unlock(), which accept longer names."),
    )
}

pub fn null_timeout() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "lock timeout must not be null",
            function_name!(),
        )
        .set_hint("Use a negative timeout to wait without limit, or 0 to try once."),
    )
}

pub fn nan_timeout() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "lock timeout must be a number",
        function_name!(),
    ))
}

pub fn negative_timeout() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "lock timeout must not be negative",
            function_name!(),
        )
        .set_hint("Use 0 to try once without waiting, or NULL to wait without a pglock deadline."),
    )
}

pub fn parallel_worker() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "cannot use named locks in a parallel worker",
            function_name!(),
        )
        .set_detail("A lock taken by a parallel worker would be released when the worker exits.")
        .set_hint("Do not mark functions that take or release locks PARALLEL SAFE."),
    )
}

pub fn held_in_parallel_worker() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "cannot list named locks in a parallel worker",
            function_name!(),
        )
        .set_detail(
            "A parallel worker has a lock table of its own; the session's locks are the leader's.",
        )
        .set_hint("Do not mark functions that call pglock.held() PARALLEL SAFE."),
    )
}

pub fn timed_wait_in_parallel_mode() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "cannot wait for a named lock with a timeout during a parallel operation",
            function_name!(),
        )
        .set_detail("A timed wait needs a subtransaction, which parallel mode does not allow.")
        .set_hint("Take the lock in a statement of its own, or use a timeout of 0 or NULL."),
    )
}

pub fn too_many_locks(cap: usize, derived: bool) -> ! {
    let how = if derived {
        " The setting is -1, so the cap is derived: half of max_locks_per_transaction times the server's backend slots."
    } else {
        ""
    };
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "too many named locks held by this session",
            function_name!(),
        )
        .set_detail(format!(
            "This session already holds {cap} distinct locks through pglock, the most pglock.max_locks_per_session allows.{how}"
        ))
        .set_hint("Release locks you no longer need, or raise pglock.max_locks_per_session (the shared lock table is shared by every session)."),
    )
}

pub fn lock_table_full(message: &str) -> ! {
    raise(
        ErrorReport::new(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, message.to_owned(), function_name!())
            .set_detail("The shared lock table, which every session of the server needs, is full.")
            .set_hint("Release locks, lower pglock.max_locks_per_session so that no session can fill the table, or increase max_locks_per_transaction (needs a restart)."),
    )
}

pub fn on_standby() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot take a named lock on a hot standby",
            function_name!(),
        )
        .set_detail("Advisory locks taken on a standby coordinate only with sessions of the same standby, never with the primary.")
        .set_hint("Connect to the primary, or set pglock.allow_on_standby to take standby-local locks on purpose."),
    )
}

pub fn not_upgradeable() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "lock is not held in upgradeable mode",
            function_name!(),
        )
        .set_detail("Only the session that holds the lock through pglock.lock_upgradeable() can upgrade or downgrade it.")
        .set_hint("Take the lock with pglock.lock_upgradeable() first."),
    )
}

pub fn null_slot_count() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "slot count must not be null",
        function_name!(),
    ))
}

pub fn null_slot() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "slot number must not be null",
        function_name!(),
    ))
}

pub fn slot_count_out_of_range(slots: i32, limit: i32) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "slot count is out of range",
            function_name!(),
        )
        .set_detail(format!(
            "The count is {slots}; a semaphore has 1 to {limit} slots."
        )),
    )
}

pub fn slot_count_differs(slots: u8) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "semaphore is in use with a different number of slots",
            function_name!(),
        )
        .set_detail(format!(
            "This call asked for {slots} slots; a session that holds or awaits a slot of this name asked for another count."
        ))
        .set_hint("Every caller of a semaphore must give the same slot count."),
    )
}

pub fn every_slot_held(slots: u8) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "this session already holds every slot of the semaphore",
            function_name!(),
        )
        .set_detail(format!(
            "The semaphore has {slots} slots; waiting for another would wait for this session itself."
        ))
        .set_hint("Release a slot with pglock.release_slot() first."),
    )
}

pub fn fencing_on_standby() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot take a fenced lock on a hot standby",
            function_name!(),
        )
        .set_detail("A fencing token is a position in the WAL, which only the primary writes.")
        .set_hint("Connect to the primary."),
    )
}

pub fn null_token() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "fencing token must not be null",
        function_name!(),
    ))
}

pub fn leases_need_preload() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pglock leases must be loaded via \"shared_preload_libraries\"",
            function_name!(),
        )
        .set_detail("A background worker ends the sessions whose leases expire, and it starts only with the server.")
        .set_hint("Add pglock to shared_preload_libraries and restart the server."),
    )
}

pub fn stats_need_preload() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pglock statistics must be loaded via \"shared_preload_libraries\"",
            function_name!(),
        )
        .set_detail("The statistics of every session are kept in shared memory, which exists only when pglock is loaded with the server.")
        .set_hint("Add pglock to shared_preload_libraries and restart the server."),
    )
}

pub fn lease_on_standby() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot set a lease on a hot standby",
            function_name!(),
        )
        .set_detail("The lease worker ends expired holders only on a primary.")
        .set_hint("Connect to the primary."),
    )
}

pub fn lease_not_positive() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "lease must be positive",
            function_name!(),
        )
        .set_hint("Give the time within which the holder will renew, for example '30 seconds'; NULL removes the lease."),
    )
}

pub fn too_many_leases(capacity: usize) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "too many lock leases",
            function_name!(),
        )
        .set_detail(format!(
            "The server's lease table is full: it holds {capacity} leases, as pglock.max_leases says."
        ))
        .set_hint("Raise pglock.max_leases (needs a restart), or release locks whose leases are no longer needed."),
    )
}

pub fn token_locks_need_preload() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pglock token-owned locks must be loaded via \"shared_preload_libraries\"",
            function_name!(),
        )
        .set_detail("Token-owned locks are kept in shared memory and served by pglock's token worker.")
        .set_hint("Add pglock to shared_preload_libraries, set max_prepared_transactions above 0, and restart the server."),
    )
}

pub fn token_locks_turned_off() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "token-owned locks are turned off",
            function_name!(),
        )
        .set_detail("pglock.max_token_locks is 0.")
        .set_hint("Set pglock.max_token_locks above 0 and restart the server."),
    )
}

pub fn token_locks_on_standby() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot use a token-owned lock on a hot standby",
            function_name!(),
        )
        .set_detail(
            "Token-owned locks are prepared transactions, which only the primary makes and ends.",
        )
        .set_hint("Connect to the primary."),
    )
}

pub fn token_locks_need_prepared_transactions() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "token-owned locks need prepared transactions",
            function_name!(),
        )
        .set_detail("Each token-owned lock is held by a prepared transaction, and max_prepared_transactions is 0.")
        .set_hint("Set max_prepared_transactions to at least pglock.max_token_locks and restart the server."),
    )
}

pub fn token_worker_not_running(database: &str) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pglock's token worker is not running",
            function_name!(),
        )
        .set_detail(format!(
            "The worker connects to database \"{database}\" (pglock.token_database) and serves token-owned locks from there."
        ))
        .set_hint("If the server has just started, try again in a moment; otherwise see the server log for why the worker stopped."),
    )
}

pub fn too_many_token_locks(count: usize, cap: usize, per_role: bool) -> ! {
    let code = PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
    let report = if per_role {
        ErrorReport::new(code, "too many token-owned locks for this role", function_name!())
            .set_detail(format!("The role holds or awaits {count} token-owned locks; pglock.max_token_locks_per_role is {cap}."))
    } else {
        ErrorReport::new(code, "too many token-owned locks", function_name!())
            .set_detail(format!("The server holds or awaits {count} token-owned locks, the most that pglock.max_token_locks and max_prepared_transactions allow ({cap})."))
    };
    raise(
        report
            .set_hint("Release token-owned locks that are no longer needed, or raise the setting."),
    )
}

pub fn token_lock_failed() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pglock's token worker could not take the lock",
            function_name!(),
        )
        .set_detail("The worker's error is in the server log, or the process that waited for the lock ended.")
        .set_hint("A common cause is max_prepared_transactions set below pglock.max_token_locks."),
    )
}

pub fn null_ttl() -> ! {
    raise(ErrorReport::new(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "ttl must not be null",
        function_name!(),
    ))
}

pub fn ttl_out_of_range(ttl_s: f64, max_s: i64) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ttl is out of range",
            function_name!(),
        )
        .set_detail(format!(
            "The ttl is {ttl_s} s; it must be at least 1 s and at most pglock.token_max_hold ({max_s} s)."
        ))
        .set_hint("Give the time within which the holder will renew or release, for example '30 seconds'."),
    )
}

pub fn token_lock_waits_for_own_hold() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            "this session holds the lock a token-owned lock would wait for",
            function_name!(),
        )
        .set_detail("A token-owned lock belongs to no session, so it waits for this session's own hold like any other, and this session would wait for it.")
        .set_hint("Release this session's hold first, or take the token-owned lock under another name."),
    )
}
