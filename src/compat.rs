//! Every difference between the PostgreSQL versions pglock supports (see pg-versions), and the
//! parts of PostgreSQL's C API that pgrx does not bind.

use pgrx::pg_sys;

/// PostgreSQL's timeout.h, which pgrx does not bind. RegisterTimeout allocates the first free
/// user slot for any id at or above USER_TIMEOUT; 20 is above USER_TIMEOUT in 15 to 18 (12, 12,
/// 13, 13) and below MAX_TIMEOUTS, so it asks for "any user slot" on every supported version.
pub const ANY_USER_TIMEOUT: i32 = 20;
/// STATEMENT_TIMEOUT in timeout.h's TimeoutId: the fourth entry in 15 to 18.
pub const STATEMENT_TIMEOUT: i32 = 3;
pub type TimeoutHandler = unsafe extern "C-unwind" fn();
unsafe extern "C-unwind" {
    pub fn RegisterTimeout(id: i32, handler: TimeoutHandler) -> i32;
    pub fn enable_timeout_at(id: i32, fin_time: pg_sys::TimestampTz);
    pub fn disable_timeout(id: i32, keep_indicator: bool);
    pub fn get_timeout_indicator(id: i32, reset_indicator: bool) -> bool;
    pub fn enable_timeout_after(id: i32, delay_ms: i32);
}

unsafe extern "C-unwind" {
    /// libpq/libpq.h (PostgreSQL 14 and later), which pgrx does not bind: false when the
    /// client's end of the connection is known to be closed.
    pub fn pq_check_connection() -> bool;
}

/// LockAcquireExtended across versions: PostgreSQL 18 added `logLockFailure`.
pub unsafe fn acquire_extended(
    tag: &pg_sys::LOCKTAG,
    lockmode: pg_sys::LOCKMODE,
    session: bool,
    dont_wait: bool,
    locallock: &mut *mut pg_sys::LOCALLOCK,
) -> pg_sys::LockAcquireResult::Type {
    // SAFETY: forwarded from the caller.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        {
            pg_sys::LockAcquireExtended(tag, lockmode, session, dont_wait, true, locallock)
        }
        #[cfg(feature = "pg18")]
        {
            pg_sys::LockAcquireExtended(tag, lockmode, session, dont_wait, true, locallock, false)
        }
    }
}

/// LockHeldByMe across versions: PostgreSQL 17 added `orstronger`.
pub unsafe fn held_by_me(tag: &pg_sys::LOCKTAG, lockmode: pg_sys::LOCKMODE) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        {
            pg_sys::LockHeldByMe(tag, lockmode)
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        {
            pg_sys::LockHeldByMe(tag, lockmode, false)
        }
    }
}

/// Index of AddinShmemInitLock in MainLWLockArray (lwlocknames.txt; 21 in 15 to 18).
pub const ADDIN_SHMEM_INIT_LOCK: usize = 21;

/// This backend's index among the MaxBackends regular backends (0-based), if it has one:
/// MyBackendId - 1 until PostgreSQL 16, MyProcNumber from 17.
pub fn my_proc_number() -> Option<usize> {
    // SAFETY: set once when the backend starts.
    let index = unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        {
            pg_sys::MyBackendId - 1
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        {
            pg_sys::MyProcNumber
        }
    };
    // SAFETY: MaxBackends is final before any backend runs.
    let max = unsafe { pg_sys::MaxBackends };
    (0..max).contains(&index).then_some(index as usize)
}

#[cfg(any(feature = "pg15", feature = "pg16"))]
unsafe extern "C-unwind" {
    /// sinvaladt.h, which pgrx does not bind: the PGPROC of a backend id, or NULL.
    fn BackendIdGetProc(backend_id: i32) -> *mut pg_sys::PGPROC;
}

/// The pids of the other backends that hold `tag` in a mode conflicting with `lockmode`, as
/// far as they are inside a transaction (GetLockConflicts reports virtual transaction ids).
///
/// # Safety
/// A valid tag of the current database; called inside a transaction.
pub unsafe fn pids_in_conflict(tag: &pg_sys::LOCKTAG, lockmode: pg_sys::LOCKMODE) -> Vec<i32> {
    let mut count: i32 = 0;
    let mut pids = Vec::new();
    // SAFETY: GetLockConflicts takes the tag's partition lock, and returns an array of `count`
    // valid ids (palloc'd in the current context, or static on a hot standby: never freed
    // here). A PGPROC looked up by id is shared memory that outlives the call; its pid may
    // already belong to a newer backend, which a ring does not harm.
    unsafe {
        let vxids = pg_sys::GetLockConflicts(tag, lockmode, &mut count);
        for index in 0..count.max(0) as usize {
            let vxid = *vxids.add(index);
            #[cfg(any(feature = "pg15", feature = "pg16"))]
            let proc = BackendIdGetProc(vxid.backendId);
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            let proc = pg_sys::ProcNumberGetProc(vxid.procNumber);
            if !proc.is_null() && (*proc).pid != 0 {
                pids.push((*proc).pid);
            }
        }
    }
    pids
}

unsafe extern "C-unwind" {
    /// replication/message.h, which pgrx does not bind; PostgreSQL 17 added `flush`.
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    fn LogLogicalMessage(
        prefix: *const std::ffi::c_char,
        message: *const std::ffi::c_char,
        size: usize,
        transactional: bool,
    ) -> pg_sys::XLogRecPtr;
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    fn LogLogicalMessage(
        prefix: *const std::ffi::c_char,
        message: *const std::ffi::c_char,
        size: usize,
        transactional: bool,
        flush: bool,
    ) -> pg_sys::XLogRecPtr;
}

/// Writes a non-transactional logical message (prefix "pglock") to the WAL and returns the
/// position just past it.
///
/// # Safety
/// Not during recovery (XLogInsert refuses); inside a transaction.
pub unsafe fn log_message(message: &[u8]) -> pg_sys::XLogRecPtr {
    let prefix = c"pglock";
    // SAFETY: a NUL-terminated prefix and `message.len()` readable bytes.
    unsafe {
        #[cfg(any(feature = "pg15", feature = "pg16"))]
        {
            LogLogicalMessage(
                prefix.as_ptr(),
                message.as_ptr().cast(),
                message.len(),
                false,
            )
        }
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        {
            LogLogicalMessage(
                prefix.as_ptr(),
                message.as_ptr().cast(),
                message.len(),
                false,
                true,
            )
        }
    }
}
