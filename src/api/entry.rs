//! The hottest functions' entry points, written by hand as plain V1 functions: `try_lock`,
//! `lock`, `unlock`, `try_xact_lock` and `xact_lock`, by name and by key. `#[pg_extern]`'s
//! wrapper costs about 20–35 ns a lock-and-unlock pair over a V1 function behind `#[pg_guard]`
//! (bench/README.md, "Where a pair's time goes"), which is a tenth of the built-in pair itself.
//!
//! Each function keeps the C symbol `#[pg_extern]` gave it (`<rust name>_wrapper`), so that
//! every version's SQL, 0.1.0's included, reaches the same code, and its CREATE FUNCTION below
//! is what pgrx generated before (tests/pg_regress/sql/upgrade.sql compares them). Every one
//! runs behind `#[pg_guard]`: an ERROR raised inside (pglock's own, through pgrx's ereport, or
//! PostgreSQL's, caught at each FFI call) unwinds the Rust frames and reaches the client in
//! PostgreSQL's own voice, exactly as from a `#[pg_extern]` function.

use pgrx::datum::Interval;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::lock::manager::{Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockName;
use crate::session::request::LockRequest;

/// Argument `n` of the call, read as `T` (None for SQL NULL).
///
/// # Safety
/// `fcinfo` is fmgr's for the current call, and argument `n` has the SQL type `T` reads
/// (declared so in the CREATE FUNCTION below).
unsafe fn arg<'a, T: pgrx::FromDatum + 'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    n: usize,
) -> Option<T> {
    // SAFETY: as the caller promises.
    unsafe { pgrx::fcinfo::pg_getarg::<T>(fcinfo, n) }
}

/// The wait a `timeout interval DEFAULT NULL` argument asks for.
///
/// # Safety
/// As for [`arg`].
unsafe fn wait_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Wait {
    // SAFETY: as the caller promises.
    Wait::from_timeout(unsafe { arg::<Interval>(fcinfo, n) })
}

/// What a call's first argument is: a name (text) or a key (bigint).
#[derive(Clone, Copy)]
enum By {
    Name,
    Key,
}

/// The exclusive lock the call's first argument names.
///
/// # Safety
/// As for [`arg`], with argument 0 of the type `by` says.
unsafe fn request<'a>(fcinfo: pg_sys::FunctionCallInfo, by: By) -> LockRequest<'a> {
    // SAFETY: as the caller promises.
    unsafe {
        match by {
            By::Name => LockRequest::named(arg::<LockName>(fcinfo, 0), Mode::Exclusive),
            By::Key => LockRequest::keyed(arg::<i64>(fcinfo, 0), Mode::Exclusive),
        }
    }
}

/// try_lock / lock / try_xact_lock / xact_lock: takes the lock in `scope`, waiting as argument
/// 1 (`timeout interval DEFAULT NULL`) says when `timed`, else trying once.
///
/// # Safety
/// As for [`request`], and with argument 1 an interval when `timed`.
unsafe fn acquire(fcinfo: pg_sys::FunctionCallInfo, by: By, scope: Scope, timed: bool) -> bool {
    // SAFETY: as the caller promises.
    let (request, wait) = unsafe {
        let request = request(fcinfo, by);
        (request, if timed { wait_arg(fcinfo, 1) } else { Wait::No })
    };
    request.acquire(scope, wait)
}

/// unlock: gives back one session hold.
///
/// # Safety
/// As for [`request`].
unsafe fn release(fcinfo: pg_sys::FunctionCallInfo, by: By) -> bool {
    // SAFETY: as the caller promises.
    unsafe { request(fcinfo, by) }.release()
}

/// One entry point: the V1 info function fmgr looks for, and the function itself, returning
/// the boolean `$action(fcinfo, $args...)` computes.
macro_rules! entry_point {
    ($finfo:ident, $symbol:ident, $action:ident($($args:expr),*)) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        /// # Safety
        /// Called by fmgr, with the arguments its CREATE FUNCTION below declares.
        #[no_mangle]
        #[doc(hidden)]
        #[pg_guard]
        pub unsafe extern "C-unwind" fn $symbol(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: fmgr's call, with the arguments declared below.
            pg_sys::Datum::from(unsafe { $action(fcinfo, $($args),*) })
        }
    };
}

entry_point!(
    pg_finfo_try_lock_name_wrapper,
    try_lock_name_wrapper,
    acquire(By::Name, Scope::Session, false)
);
entry_point!(
    pg_finfo_try_lock_key_wrapper,
    try_lock_key_wrapper,
    acquire(By::Key, Scope::Session, false)
);
entry_point!(
    pg_finfo_lock_name_wrapper,
    lock_name_wrapper,
    acquire(By::Name, Scope::Session, true)
);
entry_point!(
    pg_finfo_lock_key_wrapper,
    lock_key_wrapper,
    acquire(By::Key, Scope::Session, true)
);
entry_point!(
    pg_finfo_unlock_name_wrapper,
    unlock_name_wrapper,
    release(By::Name)
);
entry_point!(
    pg_finfo_unlock_key_wrapper,
    unlock_key_wrapper,
    release(By::Key)
);
entry_point!(
    pg_finfo_try_xact_lock_name_wrapper,
    try_xact_lock_name_wrapper,
    acquire(By::Name, Scope::Transaction, false)
);
entry_point!(
    pg_finfo_try_xact_lock_key_wrapper,
    try_xact_lock_key_wrapper,
    acquire(By::Key, Scope::Transaction, false)
);
entry_point!(
    pg_finfo_xact_lock_name_wrapper,
    xact_lock_name_wrapper,
    acquire(By::Name, Scope::Transaction, true)
);
entry_point!(
    pg_finfo_xact_lock_key_wrapper,
    xact_lock_key_wrapper,
    acquire(By::Key, Scope::Transaction, true)
);

extension_sql!(
    r#"
CREATE FUNCTION "try_lock"("name" text) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'try_lock_name_wrapper';
CREATE FUNCTION "try_lock"("key" bigint) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'try_lock_key_wrapper';
CREATE FUNCTION "lock"("name" text, "timeout" interval DEFAULT NULL) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'lock_name_wrapper';
CREATE FUNCTION "lock"("key" bigint, "timeout" interval DEFAULT NULL) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'lock_key_wrapper';
CREATE FUNCTION "unlock"("name" text) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'unlock_name_wrapper';
CREATE FUNCTION "unlock"("key" bigint) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'unlock_key_wrapper';
CREATE FUNCTION "try_xact_lock"("name" text) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'try_xact_lock_name_wrapper';
CREATE FUNCTION "try_xact_lock"("key" bigint) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'try_xact_lock_key_wrapper';
CREATE FUNCTION "xact_lock"("name" text, "timeout" interval DEFAULT NULL) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'xact_lock_name_wrapper';
CREATE FUNCTION "xact_lock"("key" bigint, "timeout" interval DEFAULT NULL) RETURNS bool
VOLATILE PARALLEL RESTRICTED LANGUAGE c AS 'MODULE_PATHNAME', 'xact_lock_key_wrapper';
"#,
    name = "entry_points",
);
