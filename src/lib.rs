//! pglock: named locks for every SQL client, kept in PostgreSQL's own lock manager.

// The layers, each using only those listed before it (and the root files):
// names -> lock -> session -> shared -> shapes -> api.
mod backend;
mod compat;
mod errors;
mod settings;

mod names;

mod lock;

mod session;

mod shared;

mod shapes;

mod api;

::pgrx::pg_module_magic!();

/// Loads pglock into a backend, or into the postmaster when it is in shared_preload_libraries
/// (then, and only then, the shared name map, the lease table and the lease worker are set up).
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // PostgreSQL's own errors (deadlock, cancel, encoding) pass through Rust frames on their
    // way to the client, and pgrx appends a Rust backtrace to their DETAIL whenever the
    // server's environment has RUST_BACKTRACE set. Clients must get errors exactly as
    // PostgreSQL raised them, so backtrace capture is off unless RUST_LIB_BACKTRACE asks for
    // it. Set before any backtrace is captured: std reads it once per process, and backends
    // inherit it from the postmaster when pglock is preloaded.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    settings::init();
    session::events::listen(&shared::LISTENERS);
    // SAFETY: a flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        settings::init_preloaded();
        shared::init_preloaded();
    }
    // SAFETY: reserves the prefix, warning about and removing any placeholder pglock.* setting.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pglock".as_ptr()) };
}

// The schema grant and a comment on every function, after everything else.
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Started by tests/sessions.rs to bring the test instance up; asserts nothing itself.
    #[pg_test]
    fn sessions_can_start() {}

    #[pg_test]
    fn the_clock_reads_what_get_current_timestamp_reads() {
        // SAFETY: reads the clock.
        let before = unsafe { pgrx::pg_sys::GetCurrentTimestamp() };
        let ours = crate::backend::now();
        let after = unsafe { pgrx::pg_sys::GetCurrentTimestamp() };
        assert!(
            before <= ours && ours <= after,
            "{before} <= {ours} <= {after}"
        );
    }

    /// The built-ins' advisory tag of `key` (pg_advisory_lock's).
    fn key_tag(key: i64) -> pgrx::pg_sys::LOCKTAG {
        crate::lock::manager::AdvisoryLock {
            key,
            mode: crate::lock::manager::Mode::Exclusive,
        }
        .tag()
    }

    /// The lock mode a test names.
    fn lockmode(mode: &str) -> pgrx::pg_sys::LOCKMODE {
        (match mode {
            "RowExclusiveLock" => pgrx::pg_sys::RowExclusiveLock,
            "RowShareLock" => pgrx::pg_sys::RowShareLock,
            _ => pgrx::error!("no test takes {mode}"),
        }) as pgrx::pg_sys::LOCKMODE
    }

    /// For tests/token_design.rs: takes `mode` on the built-ins' advisory tag of `key`, in
    /// session or transaction scope, without waiting; true if granted. (Only in test builds.)
    #[pg_extern]
    fn take_advisory_in_mode(key: i64, mode: &str, session_level: bool) -> bool {
        let tag = key_tag(key);
        // SAFETY: a valid tag and mode; an ERROR propagates through pgrx's guard.
        unsafe {
            pgrx::pg_sys::LockAcquire(&tag, lockmode(mode), session_level, true)
                != pgrx::pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
        }
    }

    /// For tests/token_design.rs: gives back one session-scope hold taken by
    /// take_advisory_in_mode. (Only in test builds.)
    #[pg_extern]
    fn release_advisory_in_mode(key: i64, mode: &str) -> bool {
        let tag = key_tag(key);
        // SAFETY: as above; LockRelease warns and returns false when nothing is held.
        unsafe { pgrx::pg_sys::LockRelease(&tag, lockmode(mode), true) }
    }

    unsafe extern "C-unwind" {
        /// twophase.h: COMMIT PREPARED / ROLLBACK PREPARED without the statement (not in pgrx's
        /// bindings). Called through pgrx's FFI guard, as it may raise an ERROR.
        fn FinishPreparedTransaction(gid: *const std::ffi::c_char, is_commit: bool);
    }

    /// For tests/token_design.rs: a background worker connected to this database prepares a
    /// transaction `gid` that holds `mode` on `key`'s advisory tag ("prepare"), or rolls the
    /// prepared transaction `gid` back ("finish"); waits for it to exit. The way a pglock worker
    /// would hold and end token-owned locks, proved here first. (Only in test builds.)
    #[pg_extern]
    fn two_phase_in_worker(action: &str, key: i64, mode: &str, gid: &str) {
        use pgrx::bgworkers::BackgroundWorkerBuilder;
        let extra = format!(
            "{} {action} {key} {mode} {gid}",
            crate::backend::database_id()
        );
        let worker = BackgroundWorkerBuilder::new("pglock test: two-phase worker")
            .set_library("pglock")
            .set_function("pglock_test_two_phase_worker")
            .enable_spi_access()
            .set_extra(&extra)
            .set_notify_pid(crate::backend::pid())
            .load_dynamic()
            .expect("a dynamic background worker slot");
        worker.wait_for_shutdown().expect("the worker exits");
    }

    /// The worker behind two_phase_in_worker: transaction control as postgres.c drives it for
    /// `BEGIN; ...; PREPARE TRANSACTION`, and as `ROLLBACK PREPARED` does its work.
    #[pg_guard]
    #[no_mangle]
    pub extern "C-unwind" fn pglock_test_two_phase_worker(_argument: pgrx::pg_sys::Datum) {
        use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
        use pgrx::pg_sys;
        BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
        let extra = BackgroundWorker::get_extra().to_owned();
        let parts: Vec<&str> = extra.split(' ').collect();
        let [database, action, key, mode, gid] = parts[..] else {
            panic!("bad extra: {extra}")
        };
        let database = pg_sys::Oid::from(database.parse::<u32>().expect("an oid"));
        BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
        let key: i64 = key.parse().expect("a key");
        let gid = std::ffi::CString::new(gid).expect("a gid without NUL");
        let tag = key_tag(key);
        // SAFETY: the calls postgres.c makes for these statements, in the same order, in a
        // worker connected to a database; an ERROR ends the worker (the test sees the result).
        unsafe {
            match action {
                "prepare" => {
                    pg_sys::StartTransactionCommand();
                    pg_sys::BeginTransactionBlock();
                    pg_sys::CommitTransactionCommand();
                    pg_sys::StartTransactionCommand();
                    let granted = pg_sys::LockAcquire(&tag, lockmode(mode), false, true);
                    assert_ne!(
                        granted,
                        pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL,
                        "{mode} on {key} is taken"
                    );
                    assert!(pg_sys::PrepareTransactionBlock(gid.as_ptr()));
                    pg_sys::CommitTransactionCommand();
                }
                "finish" => {
                    pg_sys::StartTransactionCommand();
                    pg_sys::ffi::pg_guard_ffi_boundary(|| {
                        FinishPreparedTransaction(gid.as_ptr(), false)
                    });
                    pg_sys::CommitTransactionCommand();
                }
                _ => panic!("no action {action}"),
            }
        }
    }

    #[pg_test]
    fn key_matches_sqlx_vector() {
        let key = Spi::get_one::<i64>("SELECT pglock.key('my first Postgres advisory lock!')");
        assert_eq!(key, Ok(Some(-5560419505042474287)));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pglock'",
            // Room for tests/leases.rs: 10,000 held locks with a lease each, and one more
            // lease fills the table.
            "max_locks_per_transaction = 256",
            "pglock.max_leases = 10001",
            // tests/token_design.rs prepares transactions, and tests/token_locks.rs holds
            // token-owned locks (each a prepared transaction; each wait a worker process).
            "max_prepared_transactions = 40",
            "pglock.max_token_locks = 30",
            "max_worker_processes = 40",
        ]
    }
}
