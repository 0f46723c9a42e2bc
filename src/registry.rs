//! The session's registry of locks taken through pglock: names, and when each scope's hold
//! began. Depths are never stored: they are read from the lock manager every time, so the
//! registry stays true however a lock went away (pg_advisory_unlock, DISCARD ALL, COMMIT,
//! ROLLBACK TO SAVEPOINT, ...). No shared memory is touched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pgrx::pg_sys;

use crate::lockmgr::{self, AdvisoryLock, Holds, Scope};

#[derive(Default)]
struct Entry {
    /// The name it was taken by; None when only taken by key.
    name: Option<Box<str>>,
    /// When the current session-scope hold began.
    session_since: Option<pg_sys::TimestampTz>,
    /// When the current transaction-scope hold began.
    transaction_since: Option<pg_sys::TimestampTz>,
}

impl Entry {
    fn since_mut(&mut self, scope: Scope) -> &mut Option<pg_sys::TimestampTz> {
        match scope {
            Scope::Session => &mut self.session_since,
            Scope::Transaction => &mut self.transaction_since,
        }
    }

    /// Forgets the start time of any scope no longer held; says whether anything is left.
    fn keep(&mut self, holds: Holds) -> bool {
        if holds.session == 0 {
            self.session_since = None;
        }
        if holds.transaction == 0 {
            self.transaction_since = None;
        }
        holds != Holds::default()
    }
}

struct Registry {
    entries: HashMap<AdvisoryLock, Entry, BuildHasherDefault<LockHasher>>,
    /// Size at which stale entries are swept out (amortised: doubles with the live set).
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 64;

/// Keys of named locks are uniformly distributed already; one multiply spreads small integer
/// keys too. (The std hasher, SipHash, is built to resist hostile keys, which a session's own
/// locks are not, and costs measurably more on the lock fast path.)
#[derive(Default)]
struct LockHasher(u64);

impl Hasher for LockHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_i64(&mut self, value: i64) {
        self.write_u64(value as u64);
    }

    fn write_isize(&mut self, value: isize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry {
        entries: HashMap::default(),
        sweep_at: FIRST_SWEEP,
    });
}

/// One row of pglock.held().
pub struct HeldLock {
    pub name: Option<String>,
    pub lock: AdvisoryLock,
    pub scope: Scope,
    pub depth: i64,
    pub since: pg_sys::TimestampTz,
}

/// Records that pglock just acquired `lock` in `scope`, leaving `holds` in place.
pub fn acquired(lock: AdvisoryLock, scope: Scope, name: Option<&str>, holds: Holds) {
    REGISTRY.with_borrow_mut(|registry| {
        if registry.entries.len() >= registry.sweep_at {
            registry.sweep();
        }
        let entry = registry.entries.entry(lock).or_default();
        if entry.name.is_none() {
            entry.name = name.map(Box::from);
        }
        let since = entry.since_mut(scope);
        // A depth of one in this scope means this acquisition began the hold.
        if holds.in_scope(scope) == 1 || since.is_none() {
            // SAFETY: reads the clock; no other effect.
            *since = Some(unsafe { pg_sys::GetCurrentTimestamp() });
        }
    });
}

/// Raises 53400 when taking `lock` would give this session more distinct locks than
/// pglock.max_locks_per_session allows. Costs one comparison below the cap.
pub fn ensure_room_for(lock: AdvisoryLock) {
    let Some(cap) = crate::settings::max_locks_per_session() else {
        return;
    };
    let full = REGISTRY.with_borrow_mut(|registry| {
        if registry.entries.len() < cap || lock.is_held() {
            return false;
        }
        // Entries of locks released elsewhere may remain: count only what is held.
        registry.sweep();
        registry.entries.len() >= cap
    });
    if full {
        crate::errors::too_many_locks(cap);
    }
}

/// Records that pglock just released one hold of `lock`, leaving `holds`. The entry stays
/// (so the next acquisition allocates nothing) until a sweep finds the lock no longer held.
pub fn released(lock: AdvisoryLock, holds: Holds) {
    REGISTRY.with_borrow_mut(|registry| {
        if let Some(entry) = registry.entries.get_mut(&lock) {
            entry.keep(holds);
        }
    });
}

/// Releases every session-scope advisory lock and returns how many rows of held() went.
pub fn release_all_session_locks() -> i32 {
    REGISTRY.with_borrow_mut(|registry| {
        let released = registry
            .entries
            .keys()
            .filter(|lock| lock.holds().session > 0)
            .count();
        lockmgr::release_all_session_locks();
        for lock in registry.entries.keys() {
            crate::shared_names::withdraw_if_unheld(lock.key);
        }
        registry.sweep();
        released as i32
    })
}

/// Every lock this session holds through pglock, one row per (key, mode, scope), sorted.
pub fn held() -> Vec<HeldLock> {
    REGISTRY.with_borrow_mut(|registry| {
        let mut rows = Vec::new();
        registry.entries.retain(|lock, entry| {
            let holds = lock.holds();
            if !entry.keep(holds) {
                return false;
            }
            for scope in [Scope::Session, Scope::Transaction] {
                if let Some(since) = *entry.since_mut(scope) {
                    rows.push(HeldLock {
                        name: entry.name.as_deref().map(str::to_owned),
                        lock: *lock,
                        scope,
                        depth: holds.in_scope(scope),
                        since,
                    });
                }
            }
            true
        });
        rows.sort_by(|a, b| {
            (&a.name, a.lock.key, a.lock.mode, a.scope).cmp(&(
                &b.name,
                b.lock.key,
                b.lock.mode,
                b.scope,
            ))
        });
        registry.sweep_at = (2 * registry.entries.len()).max(FIRST_SWEEP);
        rows
    })
}

impl Registry {
    /// Drops entries for locks no longer held; keeps the sweep amortised.
    fn sweep(&mut self) {
        self.entries.retain(|lock, entry| entry.keep(lock.holds()));
        self.sweep_at = (2 * self.entries.len()).max(FIRST_SWEEP);
    }
}

/// The names this session has taken locks by: (key, name), one per key.
pub fn names() -> Vec<(i64, String)> {
    REGISTRY.with_borrow(|registry| {
        let mut names: Vec<(i64, String)> = registry
            .entries
            .iter()
            .filter_map(|(lock, entry)| Some((lock.key, entry.name.as_deref()?.to_owned())))
            .collect();
        names.sort();
        names.dedup_by_key(|(key, _)| *key);
        names
    })
}
