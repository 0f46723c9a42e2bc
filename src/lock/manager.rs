//! The calls into PostgreSQL's lock manager: advisory lock tags, acquire, release, and how
//! many times this backend holds a lock in each scope.
//!
//! Everything here runs in the backend's one thread and relies on the lock manager's own
//! invariants, named at each call.

use std::ptr;

use pgrx::pg_sys;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgSqlErrorCode;

use crate::compat::{acquire_extended, held_by_me};
use crate::errors;

/// How a lock is held. Exclusive and shared are the built-in advisory lock functions' modes;
/// the others make up upgradeable holds (shapes/upgradeable.rs) and semaphores (shapes/semaphore.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// ExclusiveLock on the key, as pg_advisory_lock takes.
    Exclusive,
    /// ShareLock on the key, as pg_advisory_lock_shared takes.
    Shared,
    /// RowShareLock on the key: it conflicts with exclusive holds (ExclusiveLock) and with
    /// nothing else an advisory lock uses, so it coexists with shared holds.
    Upgradeable,
    /// ExclusiveLock on the key's upgrade-intent tag: held beside an upgradeable hold so that
    /// only one session at a time has one.
    UpgradeIntent,
    /// ExclusiveLock on slot `index` of the key's semaphore of `count` slots.
    Slot { count: u8, index: u8 },
    /// ExclusiveLock on the queue of the key's semaphore of `count` slots: its holder is the
    /// one waiter that may take the next free slot; the others wait for it in line.
    SlotQueue { count: u8 },
    /// Bit `bit` of a semaphore's slot count, held by every holder and waiter: ShareLock for a
    /// 1, RowExclusiveLock for a 0. The two conflict and each coexists with itself, so callers
    /// that disagree on the count conflict on some bit.
    SlotCountBit { bit: u8, set: bool },
}

/// The advisory tag's field4 (pg_locks.objsubid) of each kind of lock. The built-ins use 1
/// (bigint keys) and 2 (pairs of int4); everything else is pglock's own.
pub mod field4 {
    pub const KEY: u16 = 1;
    pub const UPGRADE_INTENT: u16 = 3;
    /// A token-owned lock's fence (shared/token_locks/): fence_ok shares it, the worker that ends
    /// the lock takes it exclusively first.
    pub const FENCE: u16 = 4;
    /// Bit b of a semaphore's count is tag COUNT_BITS + b.
    pub const COUNT_BITS: u16 = 240;
    /// A semaphore's slots and queue: count << 8 | index, and count << 8 | QUEUE.
    pub const QUEUE: u16 = 255;
}

impl Mode {
    /// The modes a key can be held in through the bigint keyspace (field4 = 1).
    pub const ON_KEY: [Mode; 3] = [Mode::Exclusive, Mode::Shared, Mode::Upgradeable];

    fn lockmode(self) -> pg_sys::LOCKMODE {
        (match self {
            Mode::Exclusive | Mode::UpgradeIntent | Mode::Slot { .. } | Mode::SlotQueue { .. } => {
                pg_sys::ExclusiveLock
            }
            Mode::Shared | Mode::SlotCountBit { set: true, .. } => pg_sys::ShareLock,
            Mode::Upgradeable => pg_sys::RowShareLock,
            Mode::SlotCountBit { set: false, .. } => pg_sys::RowExclusiveLock,
        }) as pg_sys::LOCKMODE
    }

    fn field4(self) -> u16 {
        match self {
            Mode::Exclusive | Mode::Shared | Mode::Upgradeable => field4::KEY,
            Mode::UpgradeIntent => field4::UPGRADE_INTENT,
            Mode::Slot { count, index } => (count as u16) << 8 | index as u16,
            Mode::SlotQueue { count } => (count as u16) << 8 | field4::QUEUE,
            Mode::SlotCountBit { bit, .. } => field4::COUNT_BITS + bit as u16,
        }
    }

    /// Whether held() shows holds in this mode (the others are parts of a hold it shows).
    pub fn is_shown(self) -> bool {
        matches!(
            self,
            Mode::Exclusive | Mode::Shared | Mode::Upgradeable | Mode::Slot { .. }
        )
    }

    /// The mode as held() and holders() name it.
    pub fn describe(self) -> std::borrow::Cow<'static, str> {
        match self {
            Mode::Exclusive => "exclusive".into(),
            Mode::Shared => "shared".into(),
            Mode::Upgradeable => "upgradeable".into(),
            Mode::UpgradeIntent => "upgrade intent".into(),
            Mode::Slot { count, index } => format!("slot {index} of {count}").into(),
            Mode::SlotQueue { count } => format!("queue for {count} slots").into(),
            Mode::SlotCountBit { .. } => "slot count".into(),
        }
    }
}

/// Who owns a hold: the session (until released or disconnect) or the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Session,
    Transaction,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::Transaction => "transaction",
        }
    }
}

/// One advisory lock in the bigint keyspace of the current database, in one mode: the lock
/// `pg_advisory_lock(key)` (or `pg_advisory_lock_shared(key)`) takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdvisoryLock {
    pub key: i64,
    pub mode: Mode,
}

/// The fence tag of `key` in `database` (see [`field4::FENCE`]).
pub fn fence_tag(database: u32, key: i64) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field4: field4::FENCE,
        ..AdvisoryLock {
            key,
            mode: Mode::Exclusive,
        }
        .tag_in(database)
    }
}

/// Whether this backend holds a share of `key`'s fence tag in `database` (taken by fence_ok for
/// a token-owned lock, until its transaction ends).
pub fn fence_held_by_me(database: u32, key: i64) -> bool {
    let tag = fence_tag(database, key);
    // SAFETY: LockHeldByMe only looks the tag up in the backend-local lock table.
    unsafe { held_by_me(&tag, pg_sys::AccessShareLock as pg_sys::LOCKMODE) }
}

/// This backend's LOCALLOCK entry for one lock, as the last acquisition handed it back: a way
/// to read the lock's per-scope counts without asking the lock manager again.
///
/// The backend-local lock table (a dynahash created once per backend, destroyed only when the
/// postmaster re-initialises shared memory) never frees an entry's memory: a released entry
/// goes on the table's free list with `numLockOwners` set to 0 and may later hold another
/// lock. So the remembered address always points at a LOCALLOCK, and it is this lock's live
/// entry exactly when its tag is this lock's and it has an owner ([`AdvisoryLock::holds_via`]
/// checks both); otherwise the caller asks the lock manager.
#[derive(Clone, Copy, Debug)]
pub struct LocalEntry(*const pg_sys::LOCALLOCK);

/// What one acquisition left behind.
#[derive(Clone, Copy, Debug)]
pub struct Acquired {
    /// How many times this backend now holds the lock, per scope.
    pub holds: Holds,
    /// Whether this acquisition began a new hold: the backend held the lock in this mode in
    /// neither scope before it. Everything kept about an earlier hold (its name, start, token,
    /// lease) belongs to a hold that has ended, however it ended.
    pub new_hold: bool,
    /// The lock's LOCALLOCK entry, when the acquisition handed it back.
    pub local: Option<LocalEntry>,
}

/// How many times this backend holds a lock, per scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    pub session: i64,
    pub transaction: i64,
}

impl Holds {
    pub fn in_scope(self, scope: Scope) -> i64 {
        match scope {
            Scope::Session => self.session,
            Scope::Transaction => self.transaction,
        }
    }
}

impl AdvisoryLock {
    /// The lock tag of SET_LOCKTAG_ADVISORY with the bigint form's field4 = 1, or pglock's own
    /// field4 for the other modes.
    pub fn tag(self) -> pg_sys::LOCKTAG {
        self.tag_in(crate::backend::database_id())
    }

    /// The lock's tag in database `database` (a worker takes locks for other databases).
    pub fn tag_in(self, database: u32) -> pg_sys::LOCKTAG {
        pg_sys::LOCKTAG {
            locktag_field1: database,
            locktag_field2: ((self.key as u64) >> 32) as u32,
            locktag_field3: self.key as u64 as u32,
            locktag_field4: self.mode.field4(),
            locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
            locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
        }
    }

    /// Takes the lock if it is free (or already ours), never waiting. Returns what the
    /// acquisition left, or `None` when another session's hold or an earlier conflicting waiter
    /// is in the way (a try does not jump the queue).
    pub fn try_acquire(self, scope: Scope) -> Option<Acquired> {
        let tag = self.tag();
        let mut locallock: *mut pg_sys::LOCALLOCK = ptr::null_mut();
        // With dontWait the call returns instead of sleeping.
        let result =
            acquire_reporting_full_table(&tag, self.mode.lockmode(), scope, true, &mut locallock);
        if result == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return None;
        }
        Some(Acquired {
            // SAFETY: on success LockAcquireExtended hands back the live LOCALLOCK entry.
            holds: unsafe { holds_of(locallock) },
            // The lock manager's own answer: LOCKACQUIRE_OK only for a lock this backend did
            // not hold in this mode (ALREADY_HELD, or ALREADY_CLEAR, for one it did).
            new_hold: result == pg_sys::LockAcquireResult::LOCKACQUIRE_OK,
            local: Some(LocalEntry(locallock)),
        })
    }

    /// Takes the lock, sleeping in the lock manager's queue while it conflicts. The sleep ends
    /// only with the grant or an ERROR (deadlock, cancel, a timeout), as for pg_advisory_lock.
    pub fn acquire_waiting(self, scope: Scope) -> Holds {
        let tag = self.tag();
        let mut locallock: *mut pg_sys::LOCALLOCK = ptr::null_mut();
        acquire_reporting_full_table(&tag, self.mode.lockmode(), scope, false, &mut locallock);
        // SAFETY: LockAcquireExtended returned (it raises an ERROR on failure), so the entry is live.
        unsafe { holds_of(locallock) }
    }

    /// The pids of the other sessions (inside a transaction) that hold this lock in a mode
    /// that conflicts with it.
    pub fn other_holders(self) -> Vec<i32> {
        // SAFETY: a valid tag of this database; every SQL function runs in a transaction.
        unsafe { crate::compat::pids_in_conflict(&self.tag(), self.mode.lockmode()) }
    }

    /// Whether this backend holds the lock at all, in either scope (no shared memory read).
    pub fn is_held(self) -> bool {
        let tag = self.tag();
        // SAFETY: LockHeldByMe only looks the tag up in the backend-local lock table.
        unsafe { held_by_me(&tag, self.mode.lockmode()) }
    }

    /// How many times this backend holds the lock in each scope.
    ///
    /// PostgreSQL exposes per-owner counts only through the LOCALLOCK entry, which
    /// LockAcquireExtended hands back. When the lock is already held, acquiring it again is a
    /// purely local count increment (no shared memory, no conflict check), and releasing that
    /// one session hold again is a purely local decrement; so this reads the entry without
    /// changing anything a caller could observe.
    pub fn holds(self) -> Holds {
        self.holds_via(None)
    }

    /// [`holds`](Self::holds), read straight from `remembered` when that is still this lock's
    /// live entry (no lock-manager call at all), else asked of the lock manager.
    pub fn holds_via(self, remembered: Option<LocalEntry>) -> Holds {
        if let Some(entry) = remembered {
            // SAFETY: see LocalEntry: the address is a LOCALLOCK of this backend's table, and
            // its owners are read only once it proved to be this lock's live entry.
            unsafe {
                let local = &*entry.0;
                if local.numLockOwners > 0
                    && local.tag.mode == self.mode.lockmode()
                    && same_tag(&local.tag.lock, &self.tag())
                {
                    return holds_of(entry.0);
                }
            }
        }
        if !self.is_held() {
            return Holds::default();
        }
        // SAFETY: the entry is live (the lock is held) and read before anything changes it.
        unsafe { holds_of(self.held_entry(&self.tag())) }
    }

    /// The live LOCALLOCK entry of a lock this backend holds: LockAcquireExtended hands it back
    /// when asked for the lock again, which for a held lock is a purely local count increment
    /// (no shared memory, no conflict check); the extra session hold is released at once, a
    /// purely local decrement, so nothing a caller could observe changes.
    ///
    /// The caller knows the lock is held; the entry stays valid until a hold is released.
    fn held_entry(self, tag: &pg_sys::LOCKTAG) -> *mut pg_sys::LOCALLOCK {
        let mut locallock: *mut pg_sys::LOCALLOCK = ptr::null_mut();
        // SAFETY: nLocks > 0 guarantees LOCKACQUIRE_ALREADY_HELD, and the entry outlives the
        // release of the extra hold (other holds remain).
        unsafe {
            acquire_extended(tag, self.mode.lockmode(), true, true, &mut locallock);
            pg_sys::LockRelease(tag, self.mode.lockmode(), true);
        }
        locallock
    }

    /// Releases one hold in `scope` and returns the holds left, or `None` (without
    /// PostgreSQL's WARNING) when this backend holds none there.
    pub fn release(self, scope: Scope) -> Option<Holds> {
        self.release_via(scope, None)
    }

    /// [`release`](Self::release), reading the counts through `remembered` when it is still
    /// this lock's live entry: then the release is one lock-manager call, as for the built-in.
    pub fn release_via(self, scope: Scope, remembered: Option<LocalEntry>) -> Option<Holds> {
        let mut holds = self.holds_via(remembered);
        if holds.in_scope(scope) == 0 {
            return None;
        }
        let tag = self.tag();
        match scope {
            Scope::Session => {
                // SAFETY: we hold it in session scope, so LockRelease finds the hold.
                unsafe { pg_sys::LockRelease(&tag, self.mode.lockmode(), true) };
                holds.session -= 1;
            }
            Scope::Transaction => {
                self.release_transaction_hold(&tag);
                holds.transaction -= 1;
            }
        }
        Some(holds)
    }

    /// Releases one transaction-scope hold, whichever resource owner of this transaction has
    /// it. LockRelease releases only the current resource owner's holds, and a hold need not be
    /// the current owner's: one granted inside a timed wait's subtransaction passes to the
    /// transaction's own owner when the subtransaction ends, while a statement runs under its
    /// portal's owner. The current owner's hold goes first, else the most recent one.
    ///
    /// The caller knows the backend holds the lock in transaction scope.
    fn release_transaction_hold(self, tag: &pg_sys::LOCKTAG) {
        let locallock = self.held_entry(tag);
        // SAFETY: the live entry's owners are read before anything changes them, and
        // CurrentResourceOwner is restored right after LockRelease.
        unsafe {
            let entry = &*locallock;
            let owners = std::slice::from_raw_parts(entry.lockOwners, entry.numLockOwners as usize);
            let current = pg_sys::CurrentResourceOwner;
            let owner = owners
                .iter()
                .map(|owner| owner.owner)
                .filter(|owner| !owner.is_null())
                .fold(None, |chosen, owner| match chosen {
                    Some(chosen) if chosen == current => Some(chosen),
                    _ => Some(owner),
                });
            let Some(owner) = owner else { return };
            pg_sys::CurrentResourceOwner = owner;
            pg_sys::LockRelease(tag, self.mode.lockmode(), false);
            pg_sys::CurrentResourceOwner = current;
        }
    }
}

/// LockAcquireExtended, with pglock's own DETAIL and HINT when the shared lock table is full
/// (53200). Other errors (deadlock, cancel, timeouts) pass through unchanged.
fn acquire_reporting_full_table(
    tag: &pg_sys::LOCKTAG,
    lockmode: pg_sys::LOCKMODE,
    scope: Scope,
    dont_wait: bool,
    locallock: &mut *mut pg_sys::LOCALLOCK,
) -> pg_sys::LockAcquireResult::Type {
    // SAFETY: a valid tag and mode; an ERROR comes back as a Rust panic through pgrx's guard,
    // and catching it costs nothing when there is none.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        acquire_extended(tag, lockmode, scope == Scope::Session, dont_wait, locallock)
    }));
    match result {
        Ok(result) => result,
        Err(payload) => {
            if let Some(CaughtError::PostgresError(report)) = payload.downcast_ref::<CaughtError>()
            {
                if report.sql_error_code() == PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY {
                    errors::lock_table_full(report.message());
                }
            }
            std::panic::resume_unwind(payload)
        }
    }
}

fn same_tag(a: &pg_sys::LOCKTAG, b: &pg_sys::LOCKTAG) -> bool {
    (
        a.locktag_field1,
        a.locktag_field2,
        a.locktag_field3,
        a.locktag_field4,
        a.locktag_type,
        a.locktag_lockmethodid,
    ) == (
        b.locktag_field1,
        b.locktag_field2,
        b.locktag_field3,
        b.locktag_field4,
        b.locktag_type,
        b.locktag_lockmethodid,
    )
}

/// Whether this backend holds `key` in any mode of the bigint keyspace (field4 = 1), in
/// either scope (no shared memory read).
pub fn key_held_in_any_mode(key: i64) -> bool {
    Mode::ON_KEY
        .into_iter()
        .any(|mode| AdvisoryLock { key, mode }.is_held())
}

/// Releases every session-scope advisory lock of this backend, as pg_advisory_unlock_all().
pub fn release_all_session_locks() {
    // SAFETY: the same call pg_advisory_unlock_all() makes.
    unsafe { pg_sys::LockReleaseSession(pg_sys::USER_LOCKMETHOD as pg_sys::LOCKMETHODID) }
}

/// Counts a LOCALLOCK's holds by owner: a NULL owner is the session, any resource owner a
/// (sub)transaction.
///
/// # Safety
/// `locallock` must be the live entry LockAcquireExtended just returned.
unsafe fn holds_of(locallock: *const pg_sys::LOCALLOCK) -> Holds {
    let mut holds = Holds::default();
    // SAFETY: a live entry's lockOwners has numLockOwners initialised elements.
    unsafe {
        let entry = &*locallock;
        let owners = std::slice::from_raw_parts(entry.lockOwners, entry.numLockOwners as usize);
        for owner in owners {
            if owner.owner.is_null() {
                holds.session += owner.nLocks;
            } else {
                holds.transaction += owner.nLocks;
            }
        }
    }
    holds
}
