//! The sessions' side of acquire: asking the token worker, waiting for a grant (in a waiter
//! process, or by polling when none may be had), within the caller's deadline, giving up
//! whatever is left on a timeout, a cancel or an exit.

use std::sync::atomic::Ordering;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::pg_sys;

use super::table::{
    changed, max_prepared_transactions, table, wake_worker, with_entry, End, Entry, State, Table,
    ADDR_BYTES, APP_BYTES,
};
use super::waiter::waiter_gone;
use crate::backend;
use crate::errors;
use crate::lock::manager::{AdvisoryLock, Mode};
use crate::lock::wait;
use crate::session::counts::Counters;
use crate::session::events;
use crate::settings;
use crate::shared::memory;

/// What acquire asks for.
pub struct Request<'a> {
    pub key: i64,
    pub shared: bool,
    pub ttl_us: i64,
    pub name: Option<&'a str>,
}

/// The table if token-owned locks can be taken here, else the reason as an ERROR.
pub(super) fn usable_table() -> &'static Table {
    let Some(table) = table() else {
        if memory::preloaded() {
            errors::token_locks_turned_off()
        }
        errors::token_locks_need_preload()
    };
    if backend::recovery_in_progress() {
        errors::token_locks_on_standby();
    }
    if max_prepared_transactions() == 0 {
        errors::token_locks_need_prepared_transactions();
    }
    // A worker that was just started (after pg_terminate_backend, an ERROR, a restart) is
    // waited for a moment, as it reads the prepared transactions back.
    let serving = |table: &Table| {
        table.ready.load(Ordering::SeqCst) && !table.worker_latch.load(Ordering::SeqCst).is_null()
    };
    let asked_at = backend::now();
    while !serving(table) {
        if backend::now() - asked_at >= WORKER_START_PATIENCE_US {
            // SAFETY: ends the sleep this loop prepared.
            unsafe { pg_sys::ConditionVariableCancelSleep() };
            errors::token_worker_not_running(&settings::token_database());
        }
        // SAFETY: the table's condition variable, which the worker broadcasts once ready; the
        // sleep services interrupts (a cancel raises its ERROR here).
        unsafe {
            pg_sys::ConditionVariableTimedSleep(table.changed.get(), 100, pg_sys::PG_WAIT_EXTENSION)
        };
    }
    // SAFETY: as above.
    unsafe { pg_sys::ConditionVariableCancelSleep() };
    table
}

/// How long a session waits for the token worker to serve (it restarts 1 s after it ended)
/// before 55000.
const WORKER_START_PATIENCE_US: i64 = 5_000_000;

/// A request this session made and has not seen through: dropped armed (an ERROR, a cancel)
/// it gives the request up, so that nothing it leads to stays held.
struct Pending<'t> {
    table: &'t Table,
    index: usize,
    generation: u32,
    armed: bool,
    key: i64,
    /// When the wait in the lock's queue began, once it has.
    waiting_since: Option<pg_sys::TimestampTz>,
    /// Already counted in pglock.stats (a timeout): giving it up counts nothing more.
    counted: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            give_up(self.table, self.index, self.generation);
            if self.counted {
                return;
            }
            // An ERROR (a cancel, statement_timeout) ended the request: pglock.stats counts
            // it as a cancelled wait.
            let since = self.waiting_since;
            count(self.key, None, |counts| {
                counts.cancels = 1;
                if let Some(since) = since {
                    counts.waited_for(backend::now() - since);
                }
            });
        }
    }
}

/// Hands what an acquire came to on to pglock.stats, when it counts. Token-owned locks count
/// acquisitions, waits, busy tries, timeouts and cancels as session locks do; their holds are
/// not counted (they end in another process, often the token worker).
pub(super) fn count(key: i64, name: Option<&str>, f: impl FnOnce(&mut Counters)) {
    if events::counting() {
        let mut counts = Counters::default();
        f(&mut counts);
        events::counted(key, &mut || name.map(Box::from), &counts);
    }
}

/// Gives up the request in entry `index`: whatever it has come to is undone, now or by whoever
/// moves it next.
fn give_up(table: &Table, index: usize, generation: u32) {
    let waiter = with_entry(table, index, generation, |entry| match entry.state {
        State::Asked | State::Granting => {
            entry.abandoned = true;
            0
        }
        State::Waiting => {
            let waiter = entry.waiter;
            entry.free();
            waiter
        }
        State::Refused | State::Failed => {
            entry.free();
            0
        }
        State::Held => {
            entry.state = State::Ending;
            entry.end = End::Abandoned;
            0
        }
        State::Ending | State::Free => 0,
    });
    if let Some(waiter) = waiter.filter(|&pid| pid != 0) {
        // SAFETY: a cancel, as pg_cancel_backend sends, to the waiter process this request
        // started; its lock wait ends with an ERROR that it catches, and it exits.
        unsafe { libc::kill(waiter, libc::SIGINT) };
    }
    wake_worker(table);
    changed(table);
}

/// At a session's exit: gives up every request it has not seen through (a FATAL skips the
/// Pending guards).
fn give_up_all_mine() {
    let Some(table) = table() else { return };
    let pid = backend::pid();
    let mine: Vec<(usize, u32)> = table.read(|entries, _| {
        entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| {
                entry.requester == pid && !matches!(entry.state, State::Free | State::Held)
            })
            .map(|(index, entry)| (index, entry.generation))
            .collect()
    });
    for (index, generation) in mine {
        give_up(table, index, generation);
    }
}

/// Takes the lock for a new token, waiting at most `wait_us` (None: no deadline of pglock's;
/// Some(0): not at all); returns the token, or None when not granted in time.
pub fn acquire(request: &Request, wait_us: Option<i64>) -> Option<i64> {
    let table = usable_table();
    let deadline = wait_us.map(|us| backend::now().saturating_add(us));
    let (app, addr) = who_am_i();
    let role = backend::login_role().to_u32();
    let pid = backend::pid();
    let database = backend::database_id();
    backend::at_exit(give_up_all_mine);
    let reserved = table.update(|entries, _| {
        let used = entries.iter().filter(|e| e.state != State::Free).count();
        let by_role = entries
            .iter()
            .filter(|e| e.state != State::Free && e.role == role)
            .count();
        if let Some(cap) = settings::max_token_locks_per_role() {
            if by_role >= cap {
                return Err((by_role, cap, true));
            }
        }
        let cap = entries
            .len()
            .min(max_prepared_transactions().max(0) as usize);
        let free = entries.iter().position(|e| e.state == State::Free);
        let Some(index) = free.filter(|_| used < cap) else {
            return Err((used, cap, false));
        };
        let entry = &mut entries[index];
        entry.state = State::Asked;
        entry.shared = request.shared;
        entry.database = database;
        entry.role = role;
        entry.requester = pid;
        entry.key = request.key;
        entry.ttl_us = request.ttl_us;
        let name = request.name.unwrap_or("").as_bytes();
        entry.name_len = name.len() as u16;
        entry.name[..name.len()].copy_from_slice(name);
        entry.app_len = app.len() as u8;
        entry.app[..app.len()].copy_from_slice(app.as_bytes());
        entry.addr_len = addr.len() as u8;
        entry.addr[..addr.len()].copy_from_slice(addr.as_bytes());
        Ok((index, entry.generation))
    });
    let (index, generation) = match reserved {
        Ok(reserved) => reserved,
        Err((count, cap, per_role)) => errors::too_many_token_locks(count, cap, per_role),
    };
    let mut pending = Pending {
        table,
        index,
        generation,
        armed: true,
        key: request.key,
        waiting_since: None,
        counted: false,
    };
    wake_worker(table);
    // The worker's answer to the try, granted or refused: it never waits for a lock, so it
    // answers at once, unless its WAL cannot be flushed or confirmed (a synchronous standby
    // that is gone). So the answer, like a grant on its way below, is waited for past the
    // caller's deadline, but not for ever.
    let answered = wait_for(table, index, generation, patient_until(deadline), |entry| {
        entry.state != State::Asked
    });
    let state = match answered {
        Some(State::Refused) if wait_us == Some(0) => {
            count(request.key, request.name, |counts| counts.busy = 1);
            // Counted as busy, not also as a cancel when the guard gives the request up.
            pending.counted = true;
            return None;
        }
        Some(State::Refused) => {
            // A hold of this session's own would keep the waiter out for good: the lock
            // manager cannot see that the session waits for the waiter.
            if holds_in_conflict(request) {
                errors::token_lock_waits_for_own_hold();
            }
            pending.waiting_since = Some(backend::now());
            let waiting = match start_waiter(table, index, generation) {
                Some(state) => Some(state),
                None => poll(table, index, generation, deadline),
            };
            match waiting {
                Some(state) => state,
                None => return pending.timed_out(request),
            }
        }
        Some(other) => other,
        None => return pending.timed_out(request),
    };
    if state == State::Waiting {
        let answered = wait_for(table, index, generation, deadline, |entry| {
            entry.state != State::Waiting
        });
        // Out of time: unless the grant has come or is on its way, give it up.
        let granted = answered.is_some()
            || with_entry(table, index, generation, |entry| {
                matches!(entry.state, State::Granting | State::Held)
            }) == Some(true);
        if !granted {
            return pending.timed_out(request);
        }
    }
    // A grant on its way (its transaction being prepared) is waited for past the deadline, as
    // the answer above.
    let prepared = wait_for(table, index, generation, patient_until(deadline), |entry| {
        entry.state != State::Granting
    });
    if prepared.is_none() {
        return pending.timed_out(request);
    }
    let held = with_entry(table, index, generation, |entry| {
        (entry.state == State::Held).then(|| {
            entry.requester = 0;
            entry.token
        })
    })
    .flatten();
    let Some(token) = held else {
        // Failed, or ended before it was Held (its waiter or the worker exited meanwhile): the
        // Pending guard gives up whatever is left.
        errors::token_lock_failed()
    };
    pending.armed = false;
    let since = pending.waiting_since;
    count(request.key, request.name, |counts| {
        let now = backend::now();
        counts.acquired(now);
        if let Some(since) = since {
            counts.waited = 1;
            counts.waited_for(now - since);
        }
    });
    Some(token)
}

/// How long past the caller's deadline a session waits for the token worker's answer, or for a
/// grant whose prepared transaction is being flushed, before it takes the worker for stuck.
const WORKER_PATIENCE_US: i64 = 5_000_000;

/// The caller's deadline, stretched by WORKER_PATIENCE_US from now for an answer of the
/// worker's (None stays None: no deadline).
fn patient_until(deadline: Option<pg_sys::TimestampTz>) -> Option<pg_sys::TimestampTz> {
    deadline.map(|at| at.max(backend::now() + WORKER_PATIENCE_US))
}

impl Pending<'_> {
    /// The caller's time ran out: the request is given up (by the guard, as it drops) and
    /// counted as a timeout, once.
    fn timed_out(mut self, request: &Request) -> Option<i64> {
        let since = self.waiting_since;
        count(request.key, request.name, |counts| {
            counts.timeouts = 1;
            if let Some(since) = since {
                counts.waited_for(backend::now() - since);
            }
        });
        self.counted = true;
        None
    }
}

/// Whether this session holds `request`'s key in a mode the token-owned lock would wait for.
fn holds_in_conflict(request: &Request) -> bool {
    let held = |mode| {
        AdvisoryLock {
            key: request.key,
            mode,
        }
        .is_held()
    };
    held(Mode::Exclusive) || held(Mode::Upgradeable) || (!request.shared && held(Mode::Shared))
}

/// Sleeps until `done` holds for entry `index` (its state then), or `deadline` passes (None).
/// A cancel or statement_timeout raises its ERROR from the sleep; so does a client that went
/// away (FATAL, checked every pglock.client_check_interval as a lock wait does), so that a
/// request is not granted for a client that is gone. Once a second it also checks that the
/// entry's waiter process, if it has one, still runs: one that ended without a word (killed)
/// fails the request.
pub(super) fn wait_for(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
    done: impl Fn(&Entry) -> bool,
) -> Option<State> {
    let cv = table.changed.get();
    let client_check = wait::ClientCheck::arm();
    let outcome = loop {
        let (state, waiter) = table.read(|entries, _| {
            let entry = &entries[index];
            if entry.generation != generation {
                (Some(State::Free), 0)
            } else if done(entry) {
                (Some(entry.state), 0)
            } else if matches!(entry.state, State::Waiting | State::Granting) {
                (None, entry.waiter)
            } else {
                (None, 0)
            }
        });
        if let Some(state) = state {
            break Some(state);
        }
        if waiter != 0 && !process_exists(waiter) {
            waiter_gone(table, index, generation, waiter);
            continue;
        }
        let left_ms = match deadline {
            Some(deadline) => {
                let left_us = deadline - backend::now();
                if left_us <= 0 {
                    break None;
                }
                (left_us + 999) / 1000
            }
            None => 1000,
        };
        // SAFETY: the table's condition variable; the sleep services interrupts (a cancel
        // raises its ERROR here, which the caller's Pending guard answers).
        unsafe {
            pg_sys::ConditionVariableTimedSleep(
                cv,
                left_ms.min(1000) as _,
                pg_sys::PG_WAIT_EXTENSION,
            )
        };
    };
    // SAFETY: ends the sleep this loop may have prepared.
    unsafe { pg_sys::ConditionVariableCancelSleep() };
    drop(client_check);
    outcome
}

/// Whether process `pid` runs (it may be another process that got the pid since, which only
/// delays noticing).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// How often a request that has no waiter process asks the token worker again.
const POLL_US: i64 = 25_000;

/// Starts the waiter process for a refused request: Some(Waiting) when it started, Some(Free)
/// when the request was given up meanwhile, and None when the request must poll instead: its
/// role has pglock.max_token_waiters_per_role waiter processes already, or every background
/// worker slot is taken (a slot of a waiter that just ended comes back a moment later).
fn start_waiter(table: &Table, index: usize, generation: u32) -> Option<State> {
    let cap = settings::max_token_waiters_per_role();
    let moved = table.update(|entries, _| {
        let entry = &entries[index];
        if entry.generation != generation || entry.state != State::Refused || entry.abandoned {
            return Some(false);
        }
        let role = entry.role;
        let waiting = entries
            .iter()
            .filter(|e| e.state == State::Waiting && e.role == role)
            .count();
        if waiting >= cap {
            return None;
        }
        entries[index].state = State::Waiting;
        Some(true)
    });
    match moved {
        Some(true) => {}
        Some(false) => return Some(State::Free),
        None => return None,
    }
    let started = BackgroundWorkerBuilder::new("pglock token waiter")
        .set_type("pglock token waiter")
        .set_library("pglock")
        .set_function("pglock_token_waiter")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(index)))
        .set_extra(&generation.to_string())
        .load_dynamic();
    if started.is_ok() {
        return Some(State::Waiting);
    }
    let back = with_entry(table, index, generation, |entry| {
        if entry.state == State::Waiting && entry.waiter == 0 {
            entry.state = State::Refused;
            true
        } else {
            false
        }
    });
    match back {
        Some(true) => None,
        _ => Some(State::Free),
    }
}

/// Waits for a refused request by asking the token worker again every POLL_US (the request
/// has no waiter process: see start_waiter), starting a waiter process as soon as one may be
/// had. Returns the state it came to (Waiting, Granting, ...), or None when `deadline` passed.
fn poll(
    table: &Table,
    index: usize,
    generation: u32,
    deadline: Option<pg_sys::TimestampTz>,
) -> Option<State> {
    loop {
        let pause_until = backend::now() + POLL_US;
        let until = deadline.map_or(pause_until, |deadline| deadline.min(pause_until));
        if wait_for(table, index, generation, Some(until), |entry| {
            entry.state != State::Refused
        })
        .is_none()
            && deadline.is_some_and(|deadline| backend::now() >= deadline)
        {
            return None;
        }
        let asked = with_entry(table, index, generation, |entry| {
            let ask = entry.state == State::Refused && !entry.abandoned;
            if ask {
                entry.state = State::Asked;
            }
            ask
        });
        if asked != Some(true) {
            return Some(State::Free);
        }
        wake_worker(table);
        match wait_for(table, index, generation, patient_until(deadline), |entry| {
            entry.state != State::Asked
        }) {
            Some(State::Refused) => {}
            Some(other) => return Some(other),
            None => return None,
        }
        if let Some(state) = start_waiter(table, index, generation) {
            return Some(state);
        }
    }
}

/// The session's application_name and client address, cut to what the table keeps.
fn who_am_i() -> (String, String) {
    // SAFETY: application_name is a GUC string, always set in a backend.
    let app = unsafe { pg_sys::application_name.as_ref() }
        .map(|_| {
            // SAFETY: as just said: a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(pg_sys::application_name) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let addr = backend::read_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
        .unwrap_or_default();
    (cut(app, APP_BYTES), cut(addr, ADDR_BYTES))
}

/// `text` cut to at most `bytes` bytes, at a character boundary.
pub(super) fn cut(mut text: String, bytes: usize) -> String {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}
