//! Where fencing tokens come from. A token is a WAL position inside a record that pglock wrote,
//! flushed and (when synchronous replication is in use) had confirmed by the synchronous
//! standbys before handing the token out, exactly as a commit waits for its own record. WAL
//! positions only grow, for the whole cluster, and a restart, a crash recovery or the promotion
//! of a standby that had the record goes on after it; so every later token is greater.
//!
//! With pglock preloaded, one record serves many tokens: a record of RANGE_BYTES owns every WAL
//! position from just after its start to its end (no other record ends in between), so those
//! positions are tokens greater than every token before the record and smaller than every
//! token after it. The range in use lives in shared memory under one LWLock; after a crash
//! restart shared memory starts empty and the next token reserves a new range, further on in
//! the WAL. Without preloading every token writes a small record of its own and is its end.

use std::ffi::CStr;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pgrx::pg_sys;

/// The size of a range record's payload: about this many tokens per WAL record.
const RANGE_BYTES: usize = 8192;

#[repr(C)]
struct Range {
    lock: *mut pg_sys::LWLock,
    /// The last token handed out.
    last: u64,
    /// The last position of the range in use (0: none yet).
    end: u64,
}

const TRANCHE: &CStr = c"pglock fencing tokens";

/// The range in shared memory, set by the shmem startup hook; null when not preloaded.
static RANGE: AtomicPtr<Range> = AtomicPtr::new(ptr::null_mut());

/// The shared memory the range needs (see memory.rs).
pub fn shmem_size() -> usize {
    size_of::<Range>()
}

/// Asks for the range's LWLock.
///
/// # Safety
/// Only from the shmem request hook.
pub unsafe fn request_lwlock() {
    // SAFETY: the request hook is the time to ask for named LWLocks.
    unsafe { pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1) };
}

/// Finds or creates the range in shared memory (empty after every start and crash restart).
///
/// # Safety
/// Only from the shmem startup hook, with AddinShmemInitLock held.
pub unsafe fn attach() {
    // SAFETY: ShmemInitStruct under AddinShmemInitLock (held by the caller); the LWLock is the
    // tranche requested at shmem request time.
    unsafe {
        let mut found = false;
        let range =
            pg_sys::ShmemInitStruct(TRANCHE.as_ptr(), shmem_size(), &mut found) as *mut Range;
        if !found {
            range.write(Range {
                lock: &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock,
                last: 0,
                end: 0,
            });
        }
        RANGE.store(range, Ordering::Release);
    }
}

/// Runs `f` on the shared range under its LWLock; `f` must not raise an ERROR.
fn with_range<R>(range: *mut Range, f: impl FnOnce(&mut Range) -> R) -> R {
    // SAFETY: `range` is the attached shared range; its LWLock serialises every access.
    unsafe {
        pg_sys::LWLockAcquire((*range).lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let result = f(&mut *range);
        pg_sys::LWLockRelease((*range).lock);
        result
    }
}

/// A new fencing token, greater than every token this cluster has returned before.
///
/// The caller checked that this is not a standby (WAL cannot be written there).
pub fn next() -> i64 {
    let range = RANGE.load(Ordering::Acquire);
    if range.is_null() {
        return durable_record(b"fencing token").1 as i64;
    }
    loop {
        let taken = with_range(range, |range| {
            (range.last < range.end).then(|| {
                range.last += 1;
                range.last
            })
        });
        if let Some(token) = taken {
            return token as i64;
        }
        static PAYLOAD: [u8; RANGE_BYTES] = [0; RANGE_BYTES];
        let (start, end) = durable_record(&PAYLOAD);
        // A range reserved meanwhile by another backend and already in use lies further on:
        // then this one is dropped, and the loop takes from that one.
        with_range(range, |range| {
            if end > range.end {
                range.last = range.last.max(start);
                range.end = end;
            }
        });
    }
}

/// Writes a pglock record with `payload`, flushes it and waits for the synchronous standbys;
/// returns where the record starts and ends.
fn durable_record(payload: &[u8]) -> (u64, u64) {
    // SAFETY: a primary, inside a transaction (every SQL function runs in one). XLogFlush and
    // SyncRepWaitForLSN are what a commit calls for its own record; ProcLastRecPtr is where
    // this backend's last record began.
    unsafe {
        let end = crate::compat::log_message(payload);
        let start = pg_sys::ProcLastRecPtr;
        pg_sys::XLogFlush(end);
        pg_sys::SyncRepWaitForLSN(end, false);
        (start, end)
    }
}
