//! Probes for the benchmark (built only with the `bench_probes` feature, which bench/run.sh
//! turns on): the same lock-and-unlock pair at three depths, so that bench.py can say where a
//! pair's time goes. `pglock.probe_try_lock_bare` / `probe_unlock_bare` call the lock manager
//! and nothing else, behind `#[pg_extern]`; the C symbols `pglock_probe_*` are plain V1
//! functions (no pgrx wrapper) around the same bare calls and around pglock's whole path.
//! bench.py declares the V1 ones itself (`CREATE FUNCTION ... LANGUAGE c`). For measuring only:
//! the V1 functions have no pgrx guard, so an ERROR raised inside one (none is expected in the
//! benchmark) would not reach the client as an ERROR.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::lock::manager::{AdvisoryLock, Mode, Scope};
use crate::lock::wait::Wait;
use crate::session::request::LockRequest;

/// pg_try_advisory_lock(bigint)'s tag.
fn tag(key: i64) -> pg_sys::LOCKTAG {
    AdvisoryLock {
        key,
        mode: Mode::Exclusive,
    }
    .tag()
}

/// What pg_try_advisory_lock(key) does.
fn bare_try_lock(key: i64) -> bool {
    // SAFETY: a valid tag and mode; an ERROR propagates through pgrx's guard.
    unsafe {
        pg_sys::LockAcquire(&tag(key), pg_sys::ExclusiveLock as i32, true, true)
            != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
    }
}

/// What pg_advisory_unlock(key) does (with its WARNING when not held).
fn bare_unlock(key: i64) -> bool {
    // SAFETY: as above.
    unsafe { pg_sys::LockRelease(&tag(key), pg_sys::ExclusiveLock as i32, true) }
}

#[pg_extern(volatile, parallel_restricted)]
fn probe_try_lock_bare(key: i64) -> bool {
    bare_try_lock(key)
}

#[pg_extern(volatile, parallel_restricted)]
fn probe_unlock_bare(key: i64) -> bool {
    bare_unlock(key)
}

/// The first argument of a V1 call, a bigint (the functions are declared STRICT).
///
/// # Safety
/// `fcinfo` is the call's, with at least one non-null argument.
unsafe fn first_bigint(fcinfo: pg_sys::FunctionCallInfo) -> i64 {
    // SAFETY: as the caller promises.
    unsafe { (*fcinfo).args.as_slice(1)[0].value.value() as i64 }
}

/// A V1 function `pglock_probe_$name` returning `$body(key)` as a boolean. Given
/// `#[pg_guard]` first, it runs behind pgrx's guard (an ERROR or panic inside reaches the
/// client as an ERROR), which is what a hand-written entry point for real use needs.
macro_rules! v1_probe {
    ($(#[$guard:meta])? $finfo:ident, $name:ident, $body:expr) => {
        #[no_mangle]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        /// # Safety
        /// Called by PostgreSQL's fmgr with one bigint argument.
        #[no_mangle]
        $(#[$guard])?
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: fmgr's call of a STRICT function of one bigint.
            let key = unsafe { first_bigint(fcinfo) };
            let body: fn(i64) -> bool = $body;
            pg_sys::Datum::from(body(key))
        }
    };
}

v1_probe!(
    pg_finfo_pglock_probe_try_lock_bare_v1,
    pglock_probe_try_lock_bare_v1,
    bare_try_lock
);
v1_probe!(
    pg_finfo_pglock_probe_unlock_bare_v1,
    pglock_probe_unlock_bare_v1,
    bare_unlock
);
v1_probe!(
    pg_finfo_pglock_probe_try_lock_v1,
    pglock_probe_try_lock_v1,
    |key| LockRequest::keyed(Some(key), Mode::Exclusive).acquire(Scope::Session, Wait::No)
);
v1_probe!(
    pg_finfo_pglock_probe_unlock_v1,
    pglock_probe_unlock_v1,
    |key| LockRequest::keyed(Some(key), Mode::Exclusive).release()
);
v1_probe!(
    #[pg_guard]
    pg_finfo_pglock_probe_try_lock_bare_guarded_v1,
    pglock_probe_try_lock_bare_guarded_v1,
    bare_try_lock
);
v1_probe!(
    #[pg_guard]
    pg_finfo_pglock_probe_unlock_bare_guarded_v1,
    pglock_probe_unlock_bare_guarded_v1,
    bare_unlock
);
