//! What is counted per lock for pglock.stats, in the session's registry entries as holds end
//! and in the shared table: plain counters that add up.

use pgrx::pg_sys;

/// What is counted for one lock. Times are in microseconds; the view shows milliseconds.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub struct Counters {
    /// Locks granted (a stacked re-acquisition counts again).
    pub acquisitions: i64,
    /// Acquisitions granted after a wait.
    pub waited: i64,
    /// Tries without a wait that found the lock taken.
    pub busy: i64,
    /// Waits that ran out of their timeout.
    pub timeouts: i64,
    /// Waits ended by a deadlock (40P01).
    pub deadlocks: i64,
    /// Waits ended by any other ERROR: a cancel, statement_timeout, lock_timeout.
    pub cancels: i64,
    pub wait_us: i64,
    pub max_wait_us: i64,
    /// Session-scope holds that ended (from the first acquisition to the last release).
    pub session_holds: i64,
    pub session_hold_us: i64,
    pub max_session_hold_us: i64,
    /// Transaction-scope holds that ended.
    pub xact_holds: i64,
    pub xact_hold_us: i64,
    pub max_xact_hold_us: i64,
    /// The first and last acquisition times; NEVER before the first. (Plain integers rather
    /// than options, so that adding counts is straight-line arithmetic on the fast path.)
    pub first_acquired: pg_sys::TimestampTz,
    pub last_acquired: pg_sys::TimestampTz,
}

/// No acquisition yet (2000-01-01 00:00 UTC, PostgreSQL's epoch: never a time pglock reads).
pub const NEVER: pg_sys::TimestampTz = 0;

impl Counters {
    /// Adds `other` (counted later) to these.
    pub fn add(&mut self, other: &Counters) {
        self.acquisitions += other.acquisitions;
        self.waited += other.waited;
        self.busy += other.busy;
        self.timeouts += other.timeouts;
        self.deadlocks += other.deadlocks;
        self.cancels += other.cancels;
        self.wait_us += other.wait_us;
        self.max_wait_us = self.max_wait_us.max(other.max_wait_us);
        self.session_holds += other.session_holds;
        self.session_hold_us += other.session_hold_us;
        self.max_session_hold_us = self.max_session_hold_us.max(other.max_session_hold_us);
        self.xact_holds += other.xact_holds;
        self.xact_hold_us += other.xact_hold_us;
        self.max_xact_hold_us = self.max_xact_hold_us.max(other.max_xact_hold_us);
        // NEVER is 0, so the earlier of two times is the smaller one unless either is NEVER.
        self.first_acquired = match (self.first_acquired, other.first_acquired) {
            (NEVER, b) => b,
            (a, NEVER) => a,
            (a, b) => a.min(b),
        };
        self.last_acquired = self.last_acquired.max(other.last_acquired);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }

    /// Counts an acquisition at `at`.
    pub fn acquired(&mut self, at: pg_sys::TimestampTz) {
        self.acquisitions += 1;
        if self.first_acquired == NEVER {
            self.first_acquired = at;
        }
        self.last_acquired = at;
    }

    /// Counts a hold that ended after `us` microseconds, in session scope or not.
    pub fn hold_ended(&mut self, session: bool, us: i64) {
        let us = us.max(0);
        let (holds, total, max) = if session {
            (
                &mut self.session_holds,
                &mut self.session_hold_us,
                &mut self.max_session_hold_us,
            )
        } else {
            (
                &mut self.xact_holds,
                &mut self.xact_hold_us,
                &mut self.max_xact_hold_us,
            )
        };
        *holds += 1;
        *total += us;
        *max = (*max).max(us);
    }

    /// Counts `us` microseconds of waiting.
    pub fn waited_for(&mut self, us: i64) {
        let us = us.max(0);
        self.wait_us += us;
        self.max_wait_us = self.max_wait_us.max(us);
    }
}
