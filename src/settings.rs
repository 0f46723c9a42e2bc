//! pglock's settings (GUCs), all under the reserved `pglock.` prefix.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

/// How many distinct locks one session may hold through pglock; -1 derives it from the shared
/// lock table's size, 0 means no limit.
pub static MAX_LOCKS_PER_SESSION: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// Whether pglock takes locks on a hot standby.
pub static ALLOW_ON_STANDBY: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Defines the settings that exist whether or not pglock is preloaded.
pub fn init() {
    GucRegistry::define_int_guc(
        c"pglock.max_locks_per_session",
        c"Sets how many distinct locks one session may hold through pglock.",
        c"-1 (the default) derives the cap from the shared lock table: half of max_locks_per_transaction times the number of possible backends, so that no one session can fill the table that every session needs. 0 means no cap.",
        &MAX_LOCKS_PER_SESSION,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pglock.allow_on_standby",
        c"Lets pglock take locks on a hot standby.",
        c"Advisory locks on a standby coordinate only with sessions of that standby, never with the primary, so pglock refuses them unless this is on.",
        &ALLOW_ON_STANDBY,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// The cap on distinct locks per session in force now, or None for no cap.
pub fn max_locks_per_session() -> Option<usize> {
    match MAX_LOCKS_PER_SESSION.get() {
        0 => None,
        -1 => Some(derived_max_locks_per_session()),
        cap => Some(cap as usize),
    }
}

/// Whether the cap in force is derived from the lock table (the setting is -1).
pub fn max_locks_per_session_is_derived() -> bool {
    MAX_LOCKS_PER_SESSION.get() == -1
}

/// Half the shared lock table's nominal size: max_locks_per_transaction x MaxBackends / 2.
pub fn derived_max_locks_per_session() -> usize {
    // SAFETY: both are fixed at server start.
    let (per_transaction, backends) = unsafe { (pg_sys::max_locks_per_xact, pg_sys::MaxBackends) };
    (per_transaction.max(1) as usize * backends.max(1) as usize / 2).max(1)
}
