//! The session's registry of locks taken through pglock: their names (published for other
//! sessions while held), and when each scope's hold began. Depths are never stored: they are
//! read from the lock manager every time, so the registry stays true however a lock went away
//! (pg_advisory_unlock, DISCARD ALL, COMMIT, ROLLBACK TO SAVEPOINT, ...). A hold that ended
//! outside pglock is forgotten at the latest when its transaction ends, so a lock re-taken
//! later through the built-ins never inherits the old row.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use pgrx::pg_sys;

use crate::backend;
use crate::lock::manager::{self, Acquired, AdvisoryLock, Holds, LocalEntry, Mode, Scope};
use crate::names::fast_hash::FastHasher;
use crate::session::counts::Counters;
use crate::session::events;

#[derive(Default)]
struct Entry {
    /// The name given by the pglock call that began the current hold, or by a later one that
    /// joined it; None when taken by key only.
    name: Option<Box<str>>,
    /// When the current session-scope hold began.
    session_since: Option<pg_sys::TimestampTz>,
    /// When the current transaction-scope hold began.
    transaction_since: Option<pg_sys::TimestampTz>,
    /// The lock's LOCALLOCK entry as the last try handed it back, to read counts without the
    /// lock manager (checked before every use: see LocalEntry).
    local: Option<LocalEntry>,
    /// The fencing token of the current hold, if a fenced acquisition began or joined it.
    token: Option<i64>,
    /// What this entry counted for pglock.stats since it last handed its counts on.
    tally: Counters,
    /// Whether the hold's name waits in [`Registry::unpublished`] to be shown to others.
    queued: bool,
}

impl Entry {
    fn since_mut(&mut self, scope: Scope) -> &mut Option<pg_sys::TimestampTz> {
        match scope {
            Scope::Session => &mut self.session_since,
            Scope::Transaction => &mut self.transaction_since,
        }
    }

    /// Forgets the start time of any scope no longer held (counting the hold that ended);
    /// says whether anything is left.
    /// `clock` gives the time a hold ends at (None: statistics are off).
    fn forget_ended(
        &mut self,
        holds: Holds,
        clock: &mut impl FnMut() -> Option<Timestamp>,
    ) -> bool {
        if holds.session == 0 {
            self.end_hold(Scope::Session, clock);
        }
        if holds.transaction == 0 {
            self.end_hold(Scope::Transaction, clock);
        }
        if holds == Holds::default() {
            self.token = None;
        }
        holds != Holds::default()
    }

    /// Whether the entry records a hold that pglock has not seen end.
    fn has_hold(&self) -> bool {
        self.session_since.is_some() || self.transaction_since.is_some() || self.token.is_some()
    }

    /// Ends the hold in `scope`, if there is one, and counts it at `clock`'s time.
    fn end_hold(&mut self, scope: Scope, clock: &mut impl FnMut() -> Option<Timestamp>) {
        if let Some(since) = self.since_mut(scope).take() {
            if let Some(now) = clock() {
                self.tally.hold_ended(scope == Scope::Session, now - since);
            }
        }
    }

    /// Hands what this entry counted on to the backend's pending statistics.
    fn hand_on_tally(&mut self, key: i64) {
        if !self.tally.is_empty() {
            let name = self.name.as_deref();
            events::counted(key, &mut || name.map(Box::from), &self.tally);
            self.tally = Counters::default();
        }
    }

    /// [`Entry::hand_on_tally`] for an entry about to be dropped: its name is handed over, not
    /// copied.
    fn hand_on_last_tally(&mut self, key: i64) {
        if !self.tally.is_empty() {
            let mut name = self.name.take();
            events::counted(key, &mut || name.take(), &self.tally);
        }
    }
}

type Timestamp = pg_sys::TimestampTz;

/// The time holds end at, for pglock.stats: None when statistics are off, else the clock, read
/// once however many holds end.
fn hold_clock() -> impl FnMut() -> Option<Timestamp> {
    let tracking = events::counting();
    let mut now = None;
    move || tracking.then(|| *now.get_or_insert_with(backend::now))
}

struct Registry {
    entries: HashMap<AdvisoryLock, Entry, BuildHasherDefault<FastHasher>>,
    /// Size at which stale entries are swept out (amortised: doubles with the live set).
    sweep_at: usize,
    /// Whether the transaction callback that forgets ended holds is registered.
    callbacks_registered: bool,
    /// Whether names are shown to other sessions (pglock preloaded: the shared name map).
    publishing: bool,
    /// Holds whose names are not shown to others yet (see [`Registry::publish`]), oldest first.
    unpublished: Vec<AdvisoryLock>,
    /// When the current publication window began, and how many names it may still show at once.
    window_start: Timestamp,
    window_left: u8,
}

/// How names reach other sessions (pglock.locks): the first [`PUBLISH_PER_WINDOW`] new named
/// holds of each [`PUBLISH_WINDOW_US`] are shown at once; later ones in the same window wait
/// for the end of their statement, the end of the transaction (for session holds), or the next
/// new hold after the window, whichever comes first. A session that takes a lock, or a few,
/// and works shows them at once; a statement that takes and releases thousands per millisecond
/// shows almost none of them, and a lock released before its name was due is never written to
/// shared memory at all.
const PUBLISH_WINDOW_US: i64 = 1_000;
const PUBLISH_PER_WINDOW: u8 = 8;

/// Entries kept before the first sweep: entries stay after unlock so that locking the same
/// name again allocates nothing, and a session cycling through up to this many names never
/// sweeps (the name memo remembers as many).
const FIRST_SWEEP: usize = 1024;

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry {
        entries: HashMap::default(),
        sweep_at: FIRST_SWEEP,
        callbacks_registered: false,
        publishing: false,
        unpublished: Vec::new(),
        window_start: 0,
        window_left: 0,
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

/// Records that pglock just acquired `lock` in `scope` (`acquired` says what the lock manager
/// left), and shows its name to other sessions, at once or soon (see [`PUBLISH_WINDOW_US`]),
/// or withdraws a stale one when a hold begins by key.
///
/// The lock manager's answer decides whether this is a new hold: when it is, whatever the
/// entry kept belongs to a hold that ended since (through the built-ins, a savepoint rollback,
/// DISCARD ALL), which the registry may not have seen yet, and none of it carries over: the
/// name, the start of each scope, the fencing token and the lease all start anew.
pub fn acquired(lock: AdvisoryLock, scope: Scope, name: Option<&str>, acquired: Acquired) {
    if !lock.mode.is_shown() {
        // Part of a hold held() shows as one row (an upgradeable hold, a semaphore slot).
        return;
    }
    let Acquired {
        holds,
        new_hold,
        local,
    } = acquired;
    let withdraw = REGISTRY.with_borrow_mut(|registry| {
        registry.watch_transaction_ends();
        if registry.entries.len() >= registry.sweep_at {
            registry.sweep();
        }
        let entry = registry.entries.entry(lock).or_default();
        if new_hold {
            // Every hold the entry still records has ended: count each, drop the token.
            entry.forget_ended(Holds::default(), &mut hold_clock());
        }
        if local.is_some() {
            entry.local = local;
        }
        // A new hold's name (or none) is the name; a later call by name names a hold taken
        // by key. (Compared first, so that taking the same name again allocates nothing.)
        let renamed = (new_hold || entry.name.is_none()) && entry.name.as_deref() != name;
        if renamed {
            entry.name = name.map(Box::from);
        }
        // The name to show to others: a new hold's, or a hold's first.
        let named_now = name.is_some() && (new_hold || renamed);
        let since = entry.since_mut(scope);
        // A depth of one in this scope means this acquisition began the hold in this scope.
        let began = (holds.in_scope(scope) == 1 || since.is_none()).then(backend::now);
        if began.is_some() {
            *since = began;
        }
        if events::counting() {
            entry.tally.acquired(began.unwrap_or_else(backend::now));
        }
        if !registry.publishing {
            return false;
        }
        if named_now {
            registry.publish(lock, began);
            return false;
        }
        // A new hold by key shows no name, unless the key is held by name in another mode.
        new_hold && name.is_none() && !registry.named_in_other_mode(lock)
    });
    if new_hold {
        events::hold_began(lock);
    }
    if withdraw {
        events::name_withdrawn(lock.key);
    }
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
        crate::errors::too_many_locks(cap, crate::settings::max_locks_per_session_is_derived());
    }
}

/// Releases one session hold of `lock`, if this session has one, and returns the holds left.
/// The entry stays (so the next acquisition allocates nothing) until a sweep finds the lock no
/// longer held; the name is withdrawn from other sessions' view once the key is held in no mode.
pub fn release_session_hold(lock: AdvisoryLock) -> Option<Holds> {
    let holds = REGISTRY.with_borrow_mut(|registry| {
        let entry = registry.entries.get_mut(&lock);
        let remembered = entry.as_ref().and_then(|entry| entry.local);
        let holds = lock.release_via(Scope::Session, remembered)?;
        if let Some(entry) = entry {
            entry.forget_ended(holds, &mut hold_clock());
            if entry.queued && holds == Holds::default() {
                // Released before its name was shown: it never will be. (A take and release
                // in a row leave the lock last in line, so this is almost always a pop.)
                entry.queued = false;
                if registry.unpublished.last() == Some(&lock) {
                    registry.unpublished.pop();
                }
            }
        }
        Some(holds)
    })?;
    if holds == Holds::default() {
        events::maybe_released(lock.key);
    }
    Some(holds)
}

/// Releases one hold of `lock` in `scope` (a hold this session just took and gives back).
pub fn release_hold(lock: AdvisoryLock, scope: Scope) {
    match scope {
        Scope::Session => {
            release_session_hold(lock);
        }
        Scope::Transaction => {
            if lock.release(Scope::Transaction) == Some(Holds::default()) {
                events::maybe_released(lock.key);
            }
        }
    }
}

/// Releases every session-scope advisory lock of the session (pglock's and the built-ins')
/// and returns how many session rows of held() went.
pub fn release_all_session_locks() -> i32 {
    REGISTRY.with_borrow_mut(|registry| {
        let released = registry
            .entries
            .iter()
            .filter(|(lock, entry)| {
                entry.session_since.is_some() && lock.holds_via(entry.local).session > 0
            })
            .count();
        manager::release_all_session_locks();
        for lock in registry.entries.keys() {
            events::maybe_released(lock.key);
        }
        registry.sweep();
        released as i32
    })
}

/// Every lock this session holds through pglock, one row per (key, mode, scope), sorted.
pub fn held() -> Vec<HeldLock> {
    REGISTRY.with_borrow_mut(|registry| {
        let mut rows = Vec::new();
        let mut clock = hold_clock();
        registry.entries.retain(|lock, entry| {
            let holds = lock.holds_via(entry.local);
            if !entry.forget_ended(holds, &mut clock) {
                entry.hand_on_last_tally(lock.key);
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
    fn watch_transaction_ends(&mut self) {
        if !self.callbacks_registered {
            backend::at_every_transaction_end(transaction_ended);
            backend::at_exit(count_holds_at_exit);
            self.publishing = events::shows_names();
            if self.publishing {
                backend::at_every_statement_end(statement_ended);
            }
            self.callbacks_registered = true;
        }
    }

    /// Shows the name of `lock`'s new hold to other sessions now, if the window allows, or
    /// queues it (see [`PUBLISH_WINDOW_US`]). `began` is the time the hold began, when this
    /// acquisition read the clock.
    fn publish(&mut self, lock: AdvisoryLock, began: Option<Timestamp>) {
        let now = began.unwrap_or_else(backend::now);
        if now >= self.window_start + PUBLISH_WINDOW_US || now < self.window_start {
            self.window_start = now;
            self.window_left = PUBLISH_PER_WINDOW;
            // A new window: whatever waited in the last one is due.
            self.publish_queued(false);
        }
        let Some(entry) = self.entries.get_mut(&lock) else {
            return;
        };
        if self.window_left > 0 {
            self.window_left -= 1;
            if let Some(name) = entry.name.as_deref() {
                events::name_shown(lock.key, name);
            }
        } else if !entry.queued {
            entry.queued = true;
            self.unpublished.push(lock);
        }
    }

    /// Shows the queued names of holds that are still held (only those held in session scope
    /// when `session_only`: the transaction's own holds are about to end).
    fn publish_queued(&mut self, session_only: bool) {
        for lock in std::mem::take(&mut self.unpublished) {
            let Some(entry) = self.entries.get_mut(&lock) else {
                continue;
            };
            if !std::mem::take(&mut entry.queued) {
                continue;
            }
            let holds = lock.holds_via(entry.local);
            let held = if session_only {
                holds.session > 0
            } else {
                holds != Holds::default()
            };
            if let (true, Some(name)) = (held, entry.name.as_deref()) {
                events::name_shown(lock.key, name);
            }
        }
    }

    /// Drops entries for locks no longer held; keeps the sweep amortised. An entry whose holds
    /// pglock already saw end (released through pglock) goes without asking the lock manager.
    fn sweep(&mut self) {
        let mut clock = hold_clock();
        self.entries.retain(|lock, entry| {
            let kept =
                entry.has_hold() && entry.forget_ended(lock.holds_via(entry.local), &mut clock);
            if !kept {
                entry.hand_on_last_tally(lock.key);
            }
            kept
        });
        self.sweep_at = (2 * self.entries.len()).max(FIRST_SWEEP);
    }

    /// Whether the same key is held in another mode under a name.
    fn named_in_other_mode(&self, lock: AdvisoryLock) -> bool {
        Mode::ON_KEY
            .into_iter()
            .filter(|&mode| mode != lock.mode)
            .map(|mode| AdvisoryLock {
                key: lock.key,
                mode,
            })
            .any(|other| {
                self.entries
                    .get(&other)
                    .is_some_and(|entry| entry.name.is_some() && other.is_held())
            })
    }

    /// At the end of a transaction: every transaction hold is over, and a session hold that
    /// was released during it (by pg_advisory_unlock, DISCARD ALL, ...) is forgotten now,
    /// before anything outside pglock can take the lock again in a later transaction.
    fn transaction_ended(&mut self) {
        if !self.unpublished.is_empty() {
            self.publish_queued(true);
        }
        let mut clock = hold_clock();
        for (lock, entry) in self.entries.iter_mut() {
            entry.end_hold(Scope::Transaction, &mut clock);
            if (entry.session_since.is_some() || entry.token.is_some())
                && lock.holds_via(entry.local).session == 0
            {
                entry.end_hold(Scope::Session, &mut clock);
                entry.token = None;
            }
            entry.hand_on_tally(lock.key);
        }
    }

    /// As the session exits: every hold ends now.
    fn session_exiting(&mut self) {
        let mut clock = hold_clock();
        for (lock, entry) in self.entries.iter_mut() {
            entry.end_hold(Scope::Transaction, &mut clock);
            entry.end_hold(Scope::Session, &mut clock);
            entry.hand_on_tally(lock.key);
        }
    }
}

/// Makes sure the registry hears of every transaction end from now on (for leases on locks
/// taken outside pglock).
pub fn watch_transaction_ends() {
    REGISTRY.with_borrow_mut(Registry::watch_transaction_ends);
}

/// At the end of every transaction (see backend::at_every_transaction_end).
fn transaction_ended() {
    // Never busy here (no pglock function runs while a transaction ends), but a callback must
    // not panic over it.
    REGISTRY.with(|registry| {
        if let Ok(mut registry) = registry.try_borrow_mut() {
            registry.transaction_ended();
        }
    });
    events::transaction_ended();
}

/// At the end of every statement (when names are shown to other sessions): the names still
/// queued are due.
fn statement_ended() {
    REGISTRY.with(|registry| {
        if let Ok(mut registry) = registry.try_borrow_mut() {
            if !registry.unpublished.is_empty() {
                registry.publish_queued(false);
            }
        }
    });
}

/// As the session exits, before PostgreSQL releases its locks: every hold ends now, and what
/// was counted for pglock.stats goes to the shared table.
fn count_holds_at_exit() {
    REGISTRY.with(|registry| {
        if let Ok(mut registry) = registry.try_borrow_mut() {
            registry.session_exiting();
        }
    });
    events::session_exiting();
}

/// The fencing token of this session's current hold of `lock`, if it holds it and a fenced
/// acquisition gave the hold one.
pub fn token(lock: AdvisoryLock) -> Option<i64> {
    REGISTRY.with_borrow_mut(|registry| {
        let entry = registry.entries.get_mut(&lock)?;
        entry.forget_ended(lock.holds_via(entry.local), &mut hold_clock());
        entry.token
    })
}

/// Gives the current hold of `lock` (which pglock just acquired) its fencing token.
pub fn set_token(lock: AdvisoryLock, token: i64) {
    REGISTRY.with_borrow_mut(|registry| {
        if let Some(entry) = registry.entries.get_mut(&lock) {
            entry.token = Some(token);
        }
    });
}

/// Publishes the name of a lock this session is about to wait for, so that other sessions
/// see who waits for what. The name stays published only while the returned guard lives, or
/// for as long as the lock is held once [`Waiting::granted`] says the wait ended in a grant:
/// dropping the guard any other way (a timeout, an ERROR unwinding) withdraws it unless the
/// session holds the key in some mode.
#[must_use = "dropping the guard ends the wait's publication"]
pub fn waiting(lock: AdvisoryLock, name: Option<&str>) -> Waiting {
    if let Some(name) = name {
        events::name_shown(lock.key, name);
    }
    Waiting {
        key: name.map(|_| lock.key),
    }
}

/// A name published for a wait (see [`waiting`]).
pub struct Waiting {
    /// The key whose name was published; None once nothing is left to undo.
    key: Option<i64>,
}

impl Waiting {
    /// The wait ended in a grant: the name now belongs to the hold ([`acquired`] takes over).
    pub fn granted(mut self) {
        self.key = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Listeners may not raise (see events::Listener), so this is safe while an ERROR
            // unwinds.
            events::maybe_released(key);
        }
    }
}

/// The names of the locks this session holds by name: (key, name), one per key.
pub fn own_names() -> Vec<(i64, String)> {
    REGISTRY.with_borrow(|registry| {
        let mut names: Vec<(i64, String)> = registry
            .entries
            .iter()
            .filter(|(lock, _)| lock.is_held())
            .filter_map(|(lock, entry)| Some((lock.key, entry.name.as_deref()?.to_owned())))
            .collect();
        names.sort();
        names.dedup_by_key(|(key, _)| *key);
        names
    })
}

#[cfg(test)]
mod tests {
    use super::Entry;
    use crate::lock::manager::Holds;

    #[test]
    fn an_ended_scope_forgets_its_start_and_an_unheld_entry_is_dropped() {
        let mut entry = Entry {
            session_since: Some(1),
            transaction_since: Some(2),
            ..Entry::default()
        };
        assert!(entry.forget_ended(
            Holds {
                session: 2,
                transaction: 0
            },
            &mut || None
        ));
        assert_eq!(
            (entry.session_since, entry.transaction_since),
            (Some(1), None)
        );
        assert!(!entry.forget_ended(Holds::default(), &mut || None));
        assert_eq!((entry.session_since, entry.transaction_since), (None, None));
        assert!(
            entry.tally.is_empty(),
            "nothing counted with statistics off"
        );
    }

    #[test]
    fn an_ended_hold_is_counted_once_at_the_clock_time_in_its_scope() {
        let mut entry = Entry {
            session_since: Some(1_000),
            transaction_since: Some(4_000),
            ..Entry::default()
        };
        let mut reads = 0;
        let mut clock = || {
            reads += 1;
            Some(10_000)
        };
        assert!(!entry.forget_ended(Holds::default(), &mut clock));
        assert_eq!(
            (
                entry.tally.session_holds,
                entry.tally.session_hold_us,
                entry.tally.xact_holds,
                entry.tally.max_xact_hold_us
            ),
            (1, 9_000, 1, 6_000)
        );
        // A scope already ended is not counted again.
        assert!(!entry.forget_ended(Holds::default(), &mut clock));
        assert_eq!((entry.tally.session_holds, entry.tally.xact_holds), (1, 1));
        assert_eq!(reads, 2);
    }
}
