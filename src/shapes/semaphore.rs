//! Semaphores: at most N sessions hold a name at once, served in the order they came.
//!
//! # Design
//!
//! A semaphore of N slots is N advisory locks on the name's key (slot i is the tag with field4
//! N << 8 | i) and a queue lock (N << 8 | 255). PostgreSQL's lock manager can make a backend
//! wait for one lock, never for "any of N", so waiters line up in the queue lock's own FIFO
//! queue (fair, and in deadlock detection), and only the first in line, the queue's holder,
//! takes slots:
//! 1. it tries every slot without waiting, and takes the first free one;
//! 2. if none is free, it sleeps in the queue of one slot (round robin), so a release of that
//!    slot grants it directly, and a release of any other slot through pglock rings its
//!    [`Bell`] (found through the queue lock's holder), which ends the sleep so it tries again;
//! 3. a release pglock does not see (the holder's session ends, pg_advisory_unlock_all) ends
//!    the sleep at the latest after one slice, a little longer than deadlock_timeout: long
//!    enough for the lock manager's deadlock check to run in every sleep.
//!
//! A try with no wait, or a newcomer, never takes a slot while someone is in line.
//!
//! The count is agreed through the locks too: every holder and waiter holds seven "count bit"
//! locks (field4 240 + b), ShareLock where bit b of N is 1 and RowExclusiveLock where it is 0.
//! The two modes conflict and each coexists with itself, so a caller with another N finds a
//! conflicting bit at once and gets a clear error, without shared memory.

use pgrx::datum::Interval;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

use crate::backend;
use crate::errors;
use crate::lock::manager::{Acquired, AdvisoryLock, Holds, Mode, Scope};
use crate::lock::wait::{self, Bell, Outcome, Wait};
use crate::names::name::LockName;
use crate::session::registry;
use crate::session::request::{refuse_on_standby, refuse_parallel_worker, LockRequest};

/// The most slots a semaphore may have (the slot number and count share field4's 16 bits).
pub const MAX_SLOTS: i32 = 100;
/// Bits of the count, enough for MAX_SLOTS.
const COUNT_BITS: u8 = 7;

/// A semaphore of `count` slots on a name's key.
struct Semaphore<'a> {
    name: LockRequest<'a>,
    count: u8,
}

impl<'a> Semaphore<'a> {
    fn new(name: Option<LockName<'a>>, slots: Option<i32>) -> Self {
        let Some(slots) = slots else {
            errors::null_slot_count()
        };
        if !(1..=MAX_SLOTS).contains(&slots) {
            errors::slot_count_out_of_range(slots, MAX_SLOTS);
        }
        Semaphore {
            name: LockRequest::named(name, Mode::Exclusive),
            count: slots as u8,
        }
    }

    fn lock(&self, mode: Mode) -> AdvisoryLock {
        AdvisoryLock {
            key: self.name.lock.key,
            mode,
        }
    }

    fn slot(&self, index: u8) -> AdvisoryLock {
        self.lock(Mode::Slot {
            count: self.count,
            index,
        })
    }

    fn queue(&self) -> AdvisoryLock {
        self.lock(Mode::SlotQueue { count: self.count })
    }

    fn count_bits(&self) -> impl Iterator<Item = AdvisoryLock> + '_ {
        (0..COUNT_BITS).map(|bit| {
            self.lock(Mode::SlotCountBit {
                bit,
                set: self.count >> bit & 1 == 1,
            })
        })
    }

    /// Takes the count bits in `scope`, or raises 55000 when another caller (or this session)
    /// uses the name with a different count. Nothing is left taken on the error.
    fn agree_on_count(&self, scope: Scope) {
        let mut taken = Vec::new();
        for bit in self.count_bits() {
            let Mode::SlotCountBit { bit: b, set } = bit.mode else {
                unreachable!("count bits only")
            };
            let mine_differs = self
                .lock(Mode::SlotCountBit { bit: b, set: !set })
                .is_held();
            if mine_differs || bit.try_acquire(scope).is_none() {
                for bit in taken.into_iter().rev() {
                    registry::release_hold(bit, scope);
                }
                errors::slot_count_differs(self.count);
            }
            taken.push(bit);
        }
    }

    fn give_back_count_bits(&self, scope: Scope) {
        for bit in self.count_bits() {
            registry::release_hold(bit, scope);
        }
    }

    /// Wakes the first in line, if another session is: a slot was just freed.
    fn ring(&self) {
        ring_first_in_line(self.queue());
    }

    /// Waits for a turn and a slot, as module doc says; the slot's index and holds, or None
    /// when `deadline` passed first. The queue lock is given back whichever way this ends.
    fn take_slot(
        &self,
        scope: Scope,
        wait: Wait,
        deadline: Option<pg_sys::TimestampTz>,
    ) -> Option<(u8, Holds)> {
        // A slot this session already holds is granted to it again by the lock manager (its
        // own holds never conflict), so a second slot must be another one.
        let others: Vec<u8> = (0..self.count)
            .filter(|&index| !self.slot(index).is_held())
            .collect();
        if others.is_empty() {
            errors::every_slot_held(self.count);
        }
        let queue = self.queue();
        if queue.try_acquire(Scope::Session).is_none() {
            // Someone is first in line (or just taking a slot): line up behind.
            let outcome = match wait {
                Wait::No => return None,
                Wait::WithoutDeadline => {
                    Outcome::Granted(wait::acquire_without_deadline(queue, Scope::Session))
                }
                Wait::Within(_) => match left_until(deadline) {
                    Some(micros) => wait::acquire_within(queue, Scope::Session, micros),
                    None => Outcome::TimedOut,
                },
            };
            if matches!(outcome, Outcome::TimedOut) {
                return None;
            }
        }
        let taken = self.first_in_line(&others, scope, wait, deadline);
        queue.release(Scope::Session);
        taken
    }

    fn first_in_line(
        &self,
        others: &[u8],
        scope: Scope,
        wait: Wait,
        deadline: Option<pg_sys::TimestampTz>,
    ) -> Option<(u8, Holds)> {
        let bell = Bell::install();
        let mut next = 0;
        loop {
            bell.take_ring();
            for offset in 0..others.len() {
                let index = others[(next + offset) % others.len()];
                if let Some(acquired) = self.slot(index).try_acquire(scope) {
                    return Some((index, acquired.holds));
                }
            }
            if matches!(wait, Wait::No) {
                return None;
            }
            if bell.take_ring() {
                continue; // a slot was freed while they were tried
            }
            let slice = slice_micros();
            let micros = match deadline {
                Some(_) => left_until(deadline)?.min(slice),
                None => slice,
            };
            let index = others[next];
            next = (next + 1) % others.len();
            if let Outcome::Granted(holds) =
                wait::acquire_within_or_bell(self.slot(index), scope, micros)
            {
                return Some((index, holds));
            }
        }
    }
}

/// Microseconds left until `deadline`, or None when it has passed (or there is none).
fn left_until(deadline: Option<pg_sys::TimestampTz>) -> Option<i64> {
    let left = deadline?.saturating_sub(backend::now());
    (left > 0).then_some(left)
}

/// How long the first in line sleeps on one slot before it tries them all again without a
/// ring: deadlock_timeout plus a fifth, so that the deadlock check runs in every sleep.
fn slice_micros() -> i64 {
    // SAFETY: the C variable behind deadlock_timeout, in milliseconds.
    let deadlock_timeout_ms = unsafe { pg_sys::DeadlockTimeout }.max(1) as i64;
    (deadlock_timeout_ms * 1200).max(100_000)
}

fn acquire(
    name: Option<LockName>,
    slots: Option<i32>,
    timeout: Option<Interval>,
    scope: Scope,
) -> Option<i32> {
    refuse_parallel_worker();
    refuse_on_standby();
    let wait = Wait::from_timeout(timeout);
    // Even without a deadline, the first in line sleeps in slices, each a subtransaction.
    if !matches!(wait, Wait::No) && backend::in_parallel_mode() {
        errors::timed_wait_in_parallel_mode();
    }
    let semaphore = Semaphore::new(name, slots);
    registry::ensure_room_for(semaphore.slot(0));
    let deadline = match wait {
        Wait::Within(micros) => Some(backend::now().saturating_add(micros)),
        _ => None,
    };
    semaphore.agree_on_count(scope);
    let taken = PgTryBuilder::new(AssertUnwindSafe(|| {
        semaphore.take_slot(scope, wait, deadline)
    }))
    .catch_others(|error| {
        // The queue lock is a session hold; so are the count bits of a session slot. A
        // transaction's go with the (sub)transaction the ERROR aborts.
        let queue = semaphore.queue();
        if queue.holds().session > 0 {
            queue.release(Scope::Session);
        }
        if scope == Scope::Session {
            semaphore.give_back_count_bits(scope);
        }
        error.rethrow()
    })
    .execute();
    let Some((index, holds)) = taken else {
        semaphore.give_back_count_bits(scope);
        return None;
    };
    let slot = semaphore.slot(index);
    // Only slots this session did not hold are taken (see take_slot): always a new hold.
    let acquired = Acquired {
        holds,
        new_hold: true,
        local: None,
    };
    registry::acquired(slot, scope, semaphore.name.name.as_deref(), acquired);
    if scope == Scope::Transaction {
        ring_at_transaction_end(semaphore.queue());
    }
    Some(index as i32)
}

/// Takes one of `slots` slots of `name` for the session: the slot's number (0 to slots - 1),
/// or NULL when none came free within `timeout`.
#[pg_extern(volatile, parallel_restricted)]
fn acquire_slot(
    name: Option<LockName>,
    slots: Option<i32>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i32> {
    acquire(name, slots, timeout, Scope::Session)
}

/// The same, until the transaction ends.
#[pg_extern(volatile, parallel_restricted)]
fn xact_acquire_slot(
    name: Option<LockName>,
    slots: Option<i32>,
    timeout: default!(Option<Interval>, "NULL"),
) -> Option<i32> {
    acquire(name, slots, timeout, Scope::Transaction)
}

/// Gives back one session hold of slot `slot` of `name`; false when the session has none.
#[pg_extern(volatile, parallel_restricted)]
fn release_slot(name: Option<LockName>, slot: Option<i32>) -> bool {
    refuse_parallel_worker();
    let name = LockRequest::named(name, Mode::Exclusive);
    let Some(slot) = slot else {
        errors::null_slot()
    };
    let Some(count) = own_count(name.lock.key) else {
        return false;
    };
    if !(0..count as i32).contains(&slot) {
        return false;
    }
    let semaphore = Semaphore { name, count };
    if registry::release_session_hold(semaphore.slot(slot as u8)).is_none() {
        return false;
    }
    semaphore.give_back_count_bits(Scope::Session);
    semaphore.ring();
    true
}

/// The slot count this session uses for `key`, read from the count bits it holds.
fn own_count(key: i64) -> Option<u8> {
    let mut count = 0u8;
    for bit in 0..COUNT_BITS {
        let held = |set| {
            AdvisoryLock {
                key,
                mode: Mode::SlotCountBit { bit, set },
            }
            .is_held()
        };
        if held(true) {
            count |= 1 << bit;
        } else if !held(false) {
            return None;
        }
    }
    Some(count)
}

thread_local! {
    /// The queue locks of semaphores with a slot held in transaction scope, to ring once the
    /// transaction's locks are released.
    static RING_AT_END: std::cell::RefCell<Vec<AdvisoryLock>> = const { std::cell::RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wakes the holder of `queue`, the first in line, if it is another session.
fn ring_first_in_line(queue: AdvisoryLock) {
    for pid in queue.other_holders() {
        wait::ring(pid);
    }
}

fn ring_at_transaction_end(queue: AdvisoryLock) {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registers a callback that lives as long as the backend.
        unsafe {
            pg_sys::RegisterResourceReleaseCallback(Some(after_release), std::ptr::null_mut())
        };
        CALLBACK_REGISTERED.set(true);
    }
    RING_AT_END.with_borrow_mut(|queues| queues.push(queue));
}

/// After a top-level transaction's locks are released: wakes the first in line of every
/// semaphore whose slot the transaction held.
unsafe extern "C-unwind" fn after_release(
    phase: pg_sys::ResourceReleasePhase::Type,
    _is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    if phase != pg_sys::ResourceReleasePhase::RESOURCE_RELEASE_AFTER_LOCKS || !is_top_level {
        return;
    }
    for queue in RING_AT_END.with_borrow_mut(std::mem::take) {
        ring_first_in_line(queue);
    }
}
