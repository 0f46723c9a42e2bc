//! Upgradeable locks: a hold that readers may share, that only one session at a time may
//! have, and that can become exclusive and back without ever being released in between.
//!
//! An upgradeable hold is two locks: RowShareLock on the key (it conflicts with exclusive holds
//! and with nothing else an advisory lock uses, so shared holders come and go) and
//! ExclusiveLock on the key's upgrade-intent tag (so a second upgradeable hold waits). An upgrade
//! asks for ExclusiveLock on the key: the lock manager lets a request conflict only with other
//! sessions' holds, so it waits for the shared holders to leave, and it queues ahead of
//! exclusive waiters (which wait for its RowShareLock anyway) while later readers queue behind
//! it. Only one session can be upgrading at a time, so two upgrades never deadlock each other.

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::errors;
use crate::lock::manager::{AdvisoryLock, Mode, Scope};
use crate::lock::wait::Wait;
use crate::names::name::LockName;
use crate::session::registry;
use crate::session::request::{acquire_all, LockRequest};

/// Takes an upgradeable hold of `name` (session scope): intent first, then the key.
#[pg_extern(volatile, parallel_restricted)]
fn lock_upgradeable(name: Option<LockName>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    let hold = LockRequest::named(name, Mode::Upgradeable);
    acquire_all(
        &[hold.in_mode(Mode::UpgradeIntent), hold],
        Scope::Session,
        wait,
    )
}

/// Makes this session's upgradeable hold exclusive, waiting for shared holders to leave.
#[pg_extern(volatile, parallel_restricted)]
fn upgrade(name: Option<LockName>, timeout: default!(Option<Interval>, "NULL")) -> bool {
    let wait = Wait::from_timeout(timeout);
    let hold = upgradeable_hold(name);
    hold.in_mode(Mode::Exclusive).acquire(Scope::Session, wait)
}

/// Gives back the exclusive hold an upgrade took; the upgradeable hold stays throughout.
/// False when the session holds no exclusive hold of the name.
#[pg_extern(volatile, parallel_restricted)]
fn downgrade(name: Option<LockName>) -> bool {
    let hold = upgradeable_hold(name);
    hold.in_mode(Mode::Exclusive).release()
}

/// Gives back one upgradeable hold of `name`; false when the session has none. An exclusive
/// hold left from an upgrade stays until downgrade() or unlock().
#[pg_extern(volatile, parallel_restricted)]
fn unlock_upgradeable(name: Option<LockName>) -> bool {
    let hold = LockRequest::named(name, Mode::Upgradeable);
    if !intent(&hold).is_held() {
        return false;
    }
    hold.release();
    registry::release_hold(intent(&hold), Scope::Session);
    true
}

fn intent(hold: &LockRequest) -> AdvisoryLock {
    AdvisoryLock {
        key: hold.lock.key,
        mode: Mode::UpgradeIntent,
    }
}

/// The session's upgradeable hold of `name`; raises 55000 when there is none.
fn upgradeable_hold(name: Option<LockName>) -> LockRequest {
    let hold = LockRequest::named(name, Mode::Upgradeable);
    if intent(&hold).holds().session == 0 {
        errors::not_upgradeable();
    }
    hold
}
