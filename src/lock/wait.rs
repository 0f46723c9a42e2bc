//! Waiting for a lock in PostgreSQL's own queue: the timeout policy, the deadline pglock
//! enforces itself, and the decision whether an ERROR that ended a wait was that deadline.
//!
//! # Design (read before changing anything here)
//!
//! PostgreSQL's only way out of a lock sleep, short of the grant, is an ERROR raised by
//! CHECK_FOR_INTERRUPTS: a deadlock, a cancel, statement_timeout, lock_timeout. So a wait with
//! a timeout
//! 1. runs inside an internal subtransaction ([`SubTransaction`]), as PL/pgSQL's EXCEPTION
//!    block does, so that the ERROR can be caught and the caller's transaction stays usable;
//! 2. arms a [`Deadline`]: a timeout of pglock's own (a USER_TIMEOUT slot) whose handler asks
//!    for a query cancel the way StatementCancelHandler does, while the session's lock_timeout
//!    is set aside (the explicit timeout is pglock's alone; `SHOW lock_timeout` never changes);
//! 3. reads a [`Verdict`]: was the ERROR pglock's deadline, or anybody else's cancel?
//!
//! Every cancel that is not pglock's arrives as SIGINT: pg_cancel_backend and a client's cancel
//! request directly, statement_timeout and lock_timeout through handlers that send SIGINT to the
//! backend itself. pglock's deadline never sends a signal. So while the deadline is armed, a
//! watcher stands in front of PostgreSQL's SIGINT handler and records every SIGINT before
//! passing it on, and a cancel already pending when the watcher goes in (QueryCancelPending
//! set but not yet serviced) counts as seen. When the wait is over and the deadline passed,
//! SIGINT is blocked while the watcher is read and removed and pglock's own pending cancel is
//! withdrawn: a SIGINT that comes during that moment reaches PostgreSQL's handler when the mask
//! is restored and is raised at the next CHECK_FOR_INTERRUPTS. There is no window in which a
//! SIGINT can be taken for the deadline. (When the deadline did not pass nothing is withdrawn,
//! so nothing needs blocking.)
//!
//! The ERROR is pglock's, and is swallowed (the call returns false), only when the deadline
//! passed, no SIGINT was seen, and the ERROR is a query cancel (57014). ProcessInterrupts
//! clears InterruptPending before it raises the cancel and never reaches the flags it would
//! have looked at afterwards (ProcSignalBarrierPending, which DROP DATABASE waits for;
//! LogMemoryContextPending; TransactionTimeoutPending; recovery conflicts from PostgreSQL 17;
//! ...), so InterruptPending is set again and the next CHECK_FOR_INTERRUPTS services them.
//!
//! Any other ERROR is raised again unchanged, with one refinement: when a SIGINT was seen and
//! statement_timeout's indicator is still set, the statement timeout fired after
//! ProcessInterrupts had already raised the cancel we hold (which therefore says "user
//! request"), so ProcessInterrupts is asked again and raises it as a statement timeout.
//!
//! Why not PostgreSQL's LOCK_TIMEOUT and its indicator? Its handler sends a real SIGINT, which
//! nothing can tell from a user's; when ProcessInterrupts reports a lock timeout it resets,
//! and so loses, a statement timeout that fired at the same time; and it counts whole
//! milliseconds from the start of each sleep.
//!
//! After a grant, a cancel that is already pending is serviced before pglock returns, and if it
//! raises, the session hold the call took is given back first: an ERROR from a pglock call never
//! leaves the lock that call waited for held by it.
//!
//! One limit is PostgreSQL's: inside a subtransaction, a recovery conflict on a hot standby is
//! raised as FATAL (RecoveryConflictInterrupt cannot cancel only a subtransaction), so with
//! pglock.allow_on_standby a conflict during a timed wait ends the session.

use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use pgrx::datum::Interval;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::backend;
use crate::compat::{
    disable_timeout, enable_timeout_after, enable_timeout_at, get_timeout_indicator,
    RegisterTimeout, ANY_USER_TIMEOUT, STATEMENT_TIMEOUT,
};
use crate::errors;
use crate::lock::manager::{AdvisoryLock, Holds, Scope};

/// What a caller does when the lock is taken by someone else.
#[derive(Clone, Copy)]
pub enum Wait {
    /// Return false at once.
    No,
    /// Wait in the queue for at most this many microseconds, then return false.
    Within(i64),
    /// Wait as pg_advisory_lock does (lock_timeout and statement_timeout still apply).
    WithoutDeadline,
}

impl Wait {
    /// The policy for a SQL timeout argument: NULL waits without a deadline of pglock's, 0
    /// tries once, a negative one is refused (22023), and one beyond a century is a century.
    pub fn from_timeout(timeout: Option<Interval>) -> Self {
        let Some(timeout) = timeout else {
            return Wait::WithoutDeadline;
        };
        let micros = timeout.as_micros();
        if micros < 0 {
            errors::negative_timeout();
        }
        Wait::for_micros(micros)
    }

    /// The wait for a timeout of `micros` ≥ 0 microseconds: 0 tries once, and one beyond a
    /// century is a century (as good as none, and it keeps the deadline in range).
    pub fn for_micros(micros: i128) -> Self {
        if micros == 0 {
            Wait::No
        } else {
            Wait::Within(at_most_a_century(micros))
        }
    }
}

/// A length of time in microseconds (≥ 0), a century at most: as good as no limit, and every
/// deadline computed from it stays in range.
pub fn at_most_a_century(micros: i128) -> i64 {
    const CENTURY_MICROS: i128 = 100 * 366 * 86_400 * 1_000_000;
    micros.min(CENTURY_MICROS) as i64
}

/// What a wait came to.
pub enum Outcome {
    Granted(Holds),
    TimedOut,
}

/// Waits for `lock` for at most `micros` microseconds from now, in the lock manager's queue.
pub fn acquire_within(lock: AdvisoryLock, scope: Scope, micros: i64) -> Outcome {
    acquire_until(lock, scope, micros, false)
}

/// [`acquire_within`], also ended (as a timeout) when the [`Bell`] rings: while a semaphore's
/// first waiter sleeps on one slot, a release of any other slot wakes it.
pub fn acquire_within_or_bell(lock: AdvisoryLock, scope: Scope, micros: i64) -> Outcome {
    acquire_until(lock, scope, micros, true)
}

fn acquire_until(lock: AdvisoryLock, scope: Scope, micros: i64, bell: bool) -> Outcome {
    // The clock is read only here, when a wait really starts.
    let deadline = backend::now().saturating_add(micros);
    let subtransaction = SubTransaction::begin();
    let armed = Deadline::arm(deadline, bell);
    let client_check = ClientCheck::arm();
    let result: Result<Holds, Box<CaughtError>> =
        PgTryBuilder::new(AssertUnwindSafe(|| Ok(lock.acquire_waiting(scope))))
            .catch_others(|error| Err(Box::new(error)))
            .execute();
    drop(client_check);
    let verdict = armed.disarm();

    let error = match result {
        Ok(holds) => {
            subtransaction.release();
            return Outcome::Granted(service_interrupts_after_grant(lock, scope, holds));
        }
        Err(error) => error,
    };
    // The lock may have been granted at the very instant the sleep was cut short. It was not
    // held before: a held lock is never waited for.
    let granted = leave_wait_queue(lock);
    if verdict.is_ours(&error) {
        if granted && scope == Scope::Transaction {
            subtransaction.hand_locks_to_parent();
        }
        subtransaction.roll_back();
        rearm_interrupts();
        return if granted {
            Outcome::Granted(service_interrupts_after_grant(lock, scope, lock.holds()))
        } else {
            Outcome::TimedOut
        };
    }
    subtransaction.roll_back();
    // An ERROR means "not acquired": a session hold granted at that instant survives the
    // subtransaction, so give it back before raising.
    if granted && scope == Scope::Session {
        lock.release(Scope::Session);
    }
    verdict.raise_again(*error)
}

/// Waits for `lock` with no deadline of pglock's: exactly pg_advisory_lock's wait, so the
/// session's lock_timeout and statement_timeout apply and raise their own errors.
pub fn acquire_without_deadline(lock: AdvisoryLock, scope: Scope) -> Holds {
    let client_check = ClientCheck::arm();
    let holds = PgTryBuilder::new(AssertUnwindSafe(|| lock.acquire_waiting(scope)))
        .catch_others(|error| {
            // As above: an ERROR must not leave a session hold granted at the last instant.
            if leave_wait_queue(lock) && scope == Scope::Session {
                lock.release(Scope::Session);
            }
            error.rethrow()
        })
        .execute();
    drop(client_check);
    service_interrupts_after_grant(lock, scope, holds)
}

/// After an ERROR cut a lock sleep short: leaves the lock's wait queue and says whether the
/// lock was granted after all.
///
/// Until LockErrorCleanup runs, this backend is still in the queue, and another backend's
/// release can grant it the lock in shared memory at any moment; only LockErrorCleanup records
/// such a grant in the backend-local table (and takes the backend out of the queue otherwise).
/// The abort of the (sub)transaction calls it too, but by then a session hold granted that way
/// would be out of reach, so it is called here, before the local table is read. Calling it
/// again later does nothing.
fn leave_wait_queue(lock: AdvisoryLock) -> bool {
    // SAFETY: the same cleanup AbortTransaction and AbortSubTransaction run after an ERROR.
    unsafe { pg_sys::LockErrorCleanup() };
    lock.is_held()
}

/// Services an interrupt that is already pending when a wait ends in a grant (a cancel that
/// came just after it). If that raises, the session hold this call took is released first, so
/// the caller never sees an ERROR while holding what it asked for.
///
/// A grant to a session whose client has gone is given up the same way: the session ends
/// (FATAL "connection to client lost", as client_connection_check_interval would end it), and
/// the lock goes to the next in line instead of staying with a session nobody can reach.
fn service_interrupts_after_grant(lock: AdvisoryLock, scope: Scope, holds: Holds) -> Holds {
    if ClientCheck::enabled() && !client_is_connected() {
        // SAFETY: what ProcessInterrupts does when its own check finds the client gone; the
        // CHECK_FOR_INTERRUPTS below then ends the session.
        unsafe {
            ptr::write_volatile(ptr::addr_of_mut!(pg_sys::ClientConnectionLost), 1);
            ptr::write_volatile(ptr::addr_of_mut!(pg_sys::InterruptPending), 1);
        }
    }
    if !interrupt_pending() {
        return holds;
    }
    PgTryBuilder::new(AssertUnwindSafe(|| {
        pgrx::check_for_interrupts!();
        holds
    }))
    .catch_others(|error| {
        if scope == Scope::Session {
            lock.release(Scope::Session);
        }
        error.rethrow()
    })
    .execute()
}

/// How an armed deadline ended.
struct Verdict {
    /// pglock's timer fired.
    deadline_passed: bool,
    /// A SIGINT reached the backend while armed, or a cancel was pending when it was armed.
    sigint_seen: bool,
}

impl Verdict {
    /// Whether `error` is pglock's own deadline and nothing else.
    fn is_ours(&self, error: &CaughtError) -> bool {
        self.deadline_passed && !self.sigint_seen && is_query_cancel(error)
    }

    /// Raises `error` again as PostgreSQL raised it, or, when it is a cancel raised before a
    /// statement timeout that has fired since, lets ProcessInterrupts raise that timeout.
    fn raise_again(&self, error: CaughtError) -> ! {
        // SAFETY: reads timeout.c's indicator without resetting it.
        let statement_timeout_fired = unsafe { get_timeout_indicator(STATEMENT_TIMEOUT, false) };
        if self.sigint_seen && statement_timeout_fired && is_query_cancel(&error) {
            request_query_cancel();
            pgrx::check_for_interrupts!();
        }
        error.rethrow()
    }
}

fn is_query_cancel(error: &CaughtError) -> bool {
    match error {
        CaughtError::PostgresError(report) => {
            report.sql_error_code() == PgSqlErrorCode::ERRCODE_QUERY_CANCELED
        }
        _ => false,
    }
}

/// An internal subtransaction, begun and ended the way PL/pgSQL runs an EXCEPTION block: the
/// caller's memory context and resource owner are remembered at the start and put back once,
/// whichever way it ends. If a Rust panic unwinds past one that is still open, the ERROR the
/// panic becomes aborts the whole transaction, and with it the subtransaction.
struct SubTransaction {
    context: pg_sys::MemoryContext,
    owner: pg_sys::ResourceOwner,
}

impl SubTransaction {
    fn begin() -> Self {
        // SAFETY: inside a transaction (every SQL function is); the subtransaction switches
        // memory context, so the caller's is restored at once.
        unsafe {
            let context = pg_sys::CurrentMemoryContext;
            let owner = pg_sys::CurrentResourceOwner;
            pg_sys::BeginInternalSubTransaction(ptr::null());
            pg_sys::MemoryContextSwitchTo(context);
            SubTransaction { context, owner }
        }
    }

    /// Commits it into the parent: what it acquired now belongs to the parent.
    fn release(self) {
        // SAFETY: the subtransaction begun in begin() is the current one.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        self.restore();
    }

    /// Rolls it back, releasing what it acquired in transaction scope.
    fn roll_back(self) {
        // SAFETY: as above; also valid after an ERROR inside it.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        self.restore();
    }

    /// Hands every lock the subtransaction's resource owner holds to the parent's, so that
    /// rolling back does not release a transaction hold granted at the last instant.
    fn hand_locks_to_parent(&self) {
        // SAFETY: the subtransaction's owner is current; NULL/0 means "all of its locks".
        unsafe { pg_sys::LockReassignCurrentOwner(ptr::null_mut(), 0) };
    }

    fn restore(&self) {
        // SAFETY: both were current when the subtransaction began and outlive it.
        unsafe {
            pg_sys::MemoryContextSwitchTo(self.context);
            pg_sys::CurrentResourceOwner = self.owner;
        }
    }
}

/// Whether the client of this session is still connected: PostgreSQL's own socket check (as
/// client_connection_check_interval uses it). Only for a session with a client.
fn client_is_connected() -> bool {
    // SAFETY: the FE/BE socket's wait set exists in every backend with a client (MyProcPort);
    // the check polls it for a closed peer without reading anything.
    unsafe { crate::compat::pq_check_connection() }
}

/// While a session waits for a lock: a periodic check that its client is still there, so that
/// a client that vanished (killed, its network cut) does not leave the session queued, and
/// granted, in its name. PostgreSQL has the check (client_connection_check_interval) but runs
/// it only when that setting is on; while this guard lives, pglock.client_check_interval stands
/// in for it when it is off. A timer of pglock's asks for the first check; ProcessInterrupts
/// runs it inside the lock sleep, ends the session with FATAL when the client is gone, and
/// otherwise re-arms PostgreSQL's own timer for the next one. Dropping the guard puts the
/// setting back; a check still armed then finds it off again and does nothing.
pub struct ClientCheck {
    /// Whether pglock stood in for client_connection_check_interval (which was 0).
    stood_in: bool,
}

impl ClientCheck {
    /// Whether this backend serves a client (not a background worker).
    fn has_client() -> bool {
        // SAFETY: backend globals, fixed while the backend runs.
        unsafe { pg_sys::IsUnderPostmaster && !pg_sys::MyProcPort.is_null() }
    }

    /// Whether waits check for the client: the session has one and either interval is on.
    fn enabled() -> bool {
        // SAFETY: the C variable behind client_connection_check_interval.
        let theirs = unsafe { pg_sys::client_connection_check_interval };
        Self::has_client() && (theirs > 0 || crate::settings::client_check_interval_ms() > 0)
    }

    pub fn arm() -> Self {
        let ours = crate::settings::client_check_interval_ms();
        // SAFETY: as in enabled().
        let theirs = unsafe { pg_sys::client_connection_check_interval };
        // Off, or PostgreSQL's own check already runs during the wait.
        let stood_in = Self::has_client() && theirs == 0 && ours > 0;
        if stood_in {
            // SAFETY: the C variable behind client_connection_check_interval, put back on drop
            // (the GUC itself never changes); our slot's timer only sets interrupt flags.
            unsafe {
                pg_sys::client_connection_check_interval = ours;
                enable_timeout_after(client_check_timeout_id(), ours);
            }
        }
        ClientCheck { stood_in }
    }
}

impl Drop for ClientCheck {
    fn drop(&mut self) {
        if self.stood_in {
            // SAFETY: our own slot, and the 0 that arm() found.
            unsafe {
                disable_timeout(client_check_timeout_id(), false);
                pg_sys::client_connection_check_interval = 0;
            }
        }
    }
}

/// Our client-check timeout slot in this backend, registered on first use; -1 until then.
static CLIENT_CHECK_TIMEOUT_ID: AtomicI32 = AtomicI32::new(-1);

fn client_check_timeout_id() -> i32 {
    registered_timeout(&CLIENT_CHECK_TIMEOUT_ID, client_check_due)
}

/// The timeout slot kept in `slot`, registered with `handler` on first use in this backend
/// (never in the postmaster, whose registrations InitializeTimeouts discards in every backend).
/// `handler` must only set flags: it runs in signal context.
fn registered_timeout(slot: &AtomicI32, handler: crate::compat::TimeoutHandler) -> i32 {
    let id = slot.load(Ordering::Relaxed);
    if id >= 0 {
        return id;
    }
    // SAFETY: registers a handler that only sets flags (the caller's promise), in a backend.
    let id = unsafe { RegisterTimeout(ANY_USER_TIMEOUT, handler) };
    slot.store(id, Ordering::Relaxed);
    id
}

/// Runs in signal context (from handle_sig_alarm, which also sets the latch): asks
/// ProcessInterrupts for a client check, as PostgreSQL's own check timer does.
unsafe extern "C-unwind" fn client_check_due() {
    // SAFETY: sig_atomic_t flags that signal handlers are meant to set.
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::CheckClientConnectionPending), 1);
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::InterruptPending), 1);
    }
}

/// Set by the deadline timer's handler (in signal context).
static DEADLINE_PASSED: AtomicBool = AtomicBool::new(false);
/// Set by the SIGINT watcher (in signal context), or when a cancel was already pending.
static SIGINT_SEEN: AtomicBool = AtomicBool::new(false);
/// The SIGINT handler that was installed before the watcher, as an address.
static PREVIOUS_SIGINT: AtomicUsize = AtomicUsize::new(0);
/// Our timeout slot in this backend, registered on first use (never in the postmaster, whose
/// registrations InitializeTimeouts discards in every backend); -1 until then.
static DEADLINE_TIMEOUT_ID: AtomicI32 = AtomicI32::new(-1);

/// pglock's deadline while a wait is armed: its timer, the session's lock_timeout set aside,
/// and the SIGINT watcher. [`Deadline::disarm`] undoes all three and says what happened; if a
/// panic unwinds past an armed one, dropping it undoes them too.
struct Deadline {
    saved_lock_timeout: i32,
    previous_sigint: libc::sigaction,
    armed: bool,
    /// Whether the bell may cut this wait short too.
    bell: bool,
}

impl Deadline {
    fn arm(at: pg_sys::TimestampTz, bell: bool) -> Self {
        DEADLINE_PASSED.store(false, Ordering::SeqCst);
        SIGINT_SEEN.store(false, Ordering::SeqCst);
        let previous_sigint = install_sigint_watcher();
        // A cancel that arrived before the watcher and is not serviced yet is somebody else's:
        // our timer is not running yet.
        if query_cancel_pending() {
            SIGINT_SEEN.store(true, Ordering::SeqCst);
        }
        // SAFETY: LockTimeout is the C variable behind lock_timeout, read by ProcSleep; it is put
        // back in disarm() or drop(), and the GUC itself never changes.
        let saved_lock_timeout = unsafe {
            let saved = pg_sys::LockTimeout;
            pg_sys::LockTimeout = 0;
            saved
        };
        // SAFETY: a registered slot and an absolute time; the timer only sets flags.
        unsafe { enable_timeout_at(deadline_timeout_id(), at) };
        if bell {
            BELL_ARMED.store(true, Ordering::SeqCst);
            // A ring that came after the caller last looked cuts this wait short at once.
            if BELL_RUNG.load(Ordering::SeqCst) {
                request_query_cancel();
            }
        }
        Deadline {
            saved_lock_timeout,
            previous_sigint,
            armed: true,
            bell,
        }
    }

    fn disarm(mut self) -> Verdict {
        self.armed = false;
        // SAFETY: our own slot; after this the timer cannot fire.
        unsafe { disable_timeout(deadline_timeout_id(), false) };
        BELL_ARMED.store(false, Ordering::SeqCst);
        // A ring while armed asked for a cancel just as the timer does: both are pglock's own.
        let deadline_passed = DEADLINE_PASSED.load(Ordering::SeqCst)
            || (self.bell && BELL_RUNG.load(Ordering::SeqCst));
        // Only a passed deadline can lead to withdrawing a cancel below; then no SIGINT may
        // arrive between reading the watcher and withdrawing, so SIGINT is blocked for that
        // moment. Otherwise nothing is withdrawn, and a SIGINT at any point reaches
        // PostgreSQL's handler, through the watcher or directly (no system call spent).
        let blocked = deadline_passed.then(SigintBlocked::block);
        let verdict = Verdict {
            deadline_passed,
            sigint_seen: SIGINT_SEEN.load(Ordering::SeqCst),
        };
        restore_sigint(&self.previous_sigint);
        // SAFETY: puts back the value arm() saved.
        unsafe { pg_sys::LockTimeout = self.saved_lock_timeout };
        if verdict.deadline_passed && !verdict.sigint_seen {
            // Our timer's cancel may still be pending (it fired as the lock was granted, or
            // another ERROR came first); nobody else asked for one, so withdraw it.
            // SAFETY: SIGINT is blocked, and no other signal handler sets this flag.
            unsafe { ptr::write_volatile(ptr::addr_of_mut!(pg_sys::QueryCancelPending), 0) };
        }
        drop(blocked);
        verdict
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if self.armed {
            BELL_ARMED.store(false, Ordering::SeqCst);
            // SAFETY: as in disarm().
            unsafe {
                disable_timeout(deadline_timeout_id(), false);
                pg_sys::LockTimeout = self.saved_lock_timeout;
            }
            restore_sigint(&self.previous_sigint);
        }
    }
}

fn deadline_timeout_id() -> i32 {
    registered_timeout(&DEADLINE_TIMEOUT_ID, deadline_passed)
}

/// Runs in signal context (from handle_sig_alarm, interrupts held): ask for a query cancel the
/// way StatementCancelHandler does. handle_sig_alarm has already set the latch.
unsafe extern "C-unwind" fn deadline_passed() {
    DEADLINE_PASSED.store(true, Ordering::SeqCst);
    request_query_cancel();
}

fn request_query_cancel() {
    // SAFETY: sig_atomic_t flags that signal handlers and backend code are meant to set.
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::QueryCancelPending), 1);
        ptr::write_volatile(ptr::addr_of_mut!(pg_sys::InterruptPending), 1);
    }
}

/// Makes the next CHECK_FOR_INTERRUPTS look at every pending flag again: after an ERROR that
/// ProcessInterrupts raised has been caught, the flags it had not reached yet are still set
/// while InterruptPending is not.
pub fn rearm_interrupts() {
    // SAFETY: as above; ProcessInterrupts does nothing for flags that are not set.
    unsafe { ptr::write_volatile(ptr::addr_of_mut!(pg_sys::InterruptPending), 1) };
}

fn query_cancel_pending() -> bool {
    // SAFETY: a sig_atomic_t read.
    unsafe { ptr::read_volatile(ptr::addr_of!(pg_sys::QueryCancelPending)) != 0 }
}

fn interrupt_pending() -> bool {
    // SAFETY: a sig_atomic_t read.
    unsafe { ptr::read_volatile(ptr::addr_of!(pg_sys::InterruptPending)) != 0 }
}

/// Set by the bell's SIGUSR1 watcher (in signal context) when another session rang.
static BELL_RUNG: AtomicBool = AtomicBool::new(false);
/// Whether a wait that the bell may cut short is armed.
static BELL_ARMED: AtomicBool = AtomicBool::new(false);
/// The SIGUSR1 handler that was installed before the bell's watcher, as an address.
static PREVIOUS_SIGUSR1: AtomicUsize = AtomicUsize::new(0);

/// A doorbell another session can ring: while it is installed, a SIGUSR1 records a ring (and,
/// during a wait armed with the bell, cuts the wait short as pglock's own cancel), then goes
/// on to PostgreSQL's handler, which treats a SIGUSR1 without a procsignal reason as a mere
/// latch wake-up. So a ring never harms the process it reaches, whichever that is.
pub struct Bell {
    previous: libc::sigaction,
}

impl Bell {
    pub fn install() -> Self {
        BELL_RUNG.store(false, Ordering::SeqCst);
        // SAFETY: plain sigaction calls; the watcher forwards to whatever was installed.
        let previous = unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGUSR1, ptr::null(), &mut previous);
            PREVIOUS_SIGUSR1.store(previous.sa_sigaction, Ordering::SeqCst);
            let mut watcher: libc::sigaction = previous;
            watcher.sa_sigaction = if previous.sa_flags & libc::SA_SIGINFO != 0 {
                watch_sigusr1_siginfo as *const () as usize
            } else {
                watch_sigusr1 as *const () as usize
            };
            libc::sigaction(libc::SIGUSR1, &watcher, ptr::null_mut());
            previous
        };
        Bell { previous }
    }

    /// Whether the bell rang since the last call (or since it was installed).
    pub fn take_ring(&self) -> bool {
        BELL_RUNG.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        // SAFETY: restores exactly what install() found.
        unsafe { libc::sigaction(libc::SIGUSR1, &self.previous, ptr::null_mut()) };
    }
}

/// Rings the bell of the backend with this pid (SIGUSR1; harmless to any PostgreSQL process).
pub fn ring(pid: i32) {
    // SAFETY: sends a signal; an error (the process is gone) is of no interest.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
}

fn bell_rang() {
    BELL_RUNG.store(true, Ordering::SeqCst);
    if BELL_ARMED.load(Ordering::SeqCst) {
        request_query_cancel();
    }
}

extern "C" fn watch_sigusr1(signo: libc::c_int) {
    bell_rang();
    forward(&PREVIOUS_SIGUSR1, signo, None);
}

extern "C" fn watch_sigusr1_siginfo(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    bell_rang();
    forward(&PREVIOUS_SIGUSR1, signo, Some((info, context)));
}

/// SIGINT blocked for as long as this lives; the previous mask comes back on drop.
struct SigintBlocked {
    previous: libc::sigset_t,
}

impl SigintBlocked {
    fn block() -> Self {
        // SAFETY: plain signal-mask calls on stack-allocated sets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut previous);
            SigintBlocked { previous }
        }
    }
}

impl Drop for SigintBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask block() found; a SIGINT that came meanwhile is delivered now.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.previous, ptr::null_mut()) };
    }
}

/// Puts the watcher in front of the current SIGINT handler; returns that handler.
fn install_sigint_watcher() -> libc::sigaction {
    // SAFETY: plain sigaction calls; the watcher forwards to whatever was installed.
    unsafe {
        let mut previous: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, ptr::null(), &mut previous);
        PREVIOUS_SIGINT.store(previous.sa_sigaction, Ordering::SeqCst);
        let mut watcher: libc::sigaction = previous;
        watcher.sa_sigaction = if previous.sa_flags & libc::SA_SIGINFO != 0 {
            watch_sigint_siginfo as *const () as usize
        } else {
            watch_sigint as *const () as usize
        };
        libc::sigaction(libc::SIGINT, &watcher, ptr::null_mut());
        previous
    }
}

fn restore_sigint(previous: &libc::sigaction) {
    // SAFETY: restores exactly what install_sigint_watcher() found.
    unsafe { libc::sigaction(libc::SIGINT, previous, ptr::null_mut()) };
}

extern "C" fn watch_sigint(signo: libc::c_int) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
    forward(&PREVIOUS_SIGINT, signo, None);
}

extern "C" fn watch_sigint_siginfo(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
    forward(&PREVIOUS_SIGINT, signo, Some((info, context)));
}

/// Passes a signal on to the handler a watcher stands in front of (`previous`, an address from
/// sa_sigaction): with the siginfo arguments when that handler was installed with SA_SIGINFO
/// (then the watcher was too, and `siginfo` is Some), without them otherwise.
fn forward(
    previous: &AtomicUsize,
    signo: libc::c_int,
    siginfo: Option<(*mut libc::siginfo_t, *mut libc::c_void)>,
) {
    let previous = previous.load(Ordering::SeqCst);
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        return;
    }
    match siginfo {
        Some((info, context)) => {
            // SAFETY: the address came from sa_sigaction of a handler with SA_SIGINFO.
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(previous) };
            handler(signo, info, context);
        }
        None => {
            // SAFETY: the address came from sa_sigaction of a handler without SA_SIGINFO.
            let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
            handler(signo);
        }
    }
}
