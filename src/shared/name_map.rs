//! Names across sessions. With pglock in shared_preload_libraries, every backend publishes the
//! names of the locks it takes through pglock in a slot of shared memory that only it writes
//! and anyone reads, like pg_stat_activity's backend status array: no shared lock is taken on
//! the lock path. Without preloading nothing here is active.
//!
//! Memory is bounded: `pglock.names_per_backend` entries per backend slot. A full slot only
//! means missing names; locks never depend on this map. Readers (the pglock.locks view) show
//! a name only for a key that pg_locks says is held or awaited by that backend, and only if
//! the name still hashes to that key, so nothing stale or torn is ever shown.
//!
//! Names are user content, like query text: another session's names are shown only to roles
//! that pg_stat_activity would show that session's query to (the same role, superusers,
//! members of pg_read_all_stats). Every slot records the role its session connected as.

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::backend;
use crate::compat;
use crate::lock::manager::key_held_in_any_mode;
use crate::names::key::derive_key;
use crate::names::name::MAX_NAME_BYTES;

const NAME_WORDS: usize = MAX_NAME_BYTES / 8;

/// One published name. `seq` is odd while the owner rewrites the entry (a seqlock).
#[repr(C)]
struct Entry {
    seq: AtomicU32,
    /// Length of the name in bytes; 0 when the entry is free.
    len: AtomicU32,
    key: AtomicI64,
    words: [AtomicU64; NAME_WORDS],
}

/// One backend's slot: who owns it, then `entries_per_slot` entries.
#[repr(C)]
struct SlotHeader {
    /// The owner's pid, 0 while unused.
    pid: AtomicI32,
    database: AtomicU32,
    /// The role the owner connected as.
    role: AtomicU32,
}

#[repr(C)]
struct Header {
    slots: u32,
    entries_per_slot: u32,
}

/// The map in shared memory, set once by the shmem startup hook (in the postmaster, inherited
/// by every backend); null when pglock is not preloaded.
static SHARED: AtomicPtr<Header> = AtomicPtr::new(ptr::null_mut());
/// This backend's side of its slot: which entry holds which key.
#[derive(Default)]
struct OwnSlot {
    claimed: bool,
    by_key: HashMap<i64, usize>,
    free: Vec<usize>,
    /// A sweep found every entry still held: no sweep again until an entry is freed or the
    /// transaction ends (holds released by the built-ins meanwhile wait until then), so that
    /// publishing into a full slot costs one check instead of a sweep each time.
    full: bool,
}

thread_local! {
    static OWN_SLOT: RefCell<OwnSlot> = RefCell::new(OwnSlot::default());
}

fn slot_size(entries: usize) -> usize {
    size_of::<SlotHeader>().next_multiple_of(8) + entries * size_of::<Entry>()
}

fn total_size(slots: usize, entries: usize) -> usize {
    size_of::<Header>().next_multiple_of(8) + slots * slot_size(entries)
}

fn configured_entries() -> usize {
    crate::settings::names_per_backend()
}

/// The shared memory the map needs (0 when pglock.names_per_backend is 0), asked for at
/// shmem request time, when MaxBackends is final.
pub fn shmem_size() -> usize {
    match configured_entries() {
        0 => 0,
        // SAFETY: MaxBackends is final by shmem request time.
        entries => total_size(unsafe { pg_sys::MaxBackends } as usize, entries),
    }
}

/// Finds or creates the map in shared memory (see memory.rs).
///
/// # Safety
/// Only from the shmem startup hook, with AddinShmemInitLock held.
pub unsafe fn attach() {
    let entries = configured_entries();
    if entries == 0 {
        return;
    }
    // SAFETY: the documented pattern for add-in shared memory (ShmemInitStruct under
    // AddinShmemInitLock, which the caller holds); zeroed by whoever creates it, also after a
    // crash restart.
    unsafe {
        let slots = pg_sys::MaxBackends as usize;
        let size = total_size(slots, entries);
        let mut found = false;
        let header =
            pg_sys::ShmemInitStruct(c"pglock lock names".as_ptr(), size, &mut found) as *mut Header;
        if !found {
            ptr::write_bytes(header.cast::<u8>(), 0, size);
            (*header).slots = slots as u32;
            (*header).entries_per_slot = entries as u32;
        }
        SHARED.store(header, Ordering::Release);
    }
}

/// Whether the shared map exists in this server.
pub fn map_enabled() -> bool {
    !SHARED.load(Ordering::Relaxed).is_null()
}

/// How full the map is: (backend slots, names per slot, names published now); None when
/// there is no map. A racy count (owners write without a lock), good for a status report.
pub fn occupancy() -> Option<(usize, usize, usize)> {
    if !map_enabled() {
        return None;
    }
    let mut slots = 0;
    let mut per_slot = 0;
    let mut published = 0;
    while let Some(slot) = slot(slots) {
        per_slot = slot.entries.len();
        published += slot
            .entries
            .iter()
            .filter(|entry| entry.len.load(Ordering::Relaxed) != 0)
            .count();
        slots += 1;
    }
    Some((slots, per_slot, published))
}

struct Slot {
    header: &'static SlotHeader,
    entries: &'static [Entry],
}

fn slot(index: usize) -> Option<Slot> {
    // SAFETY: SHARED points at a zero-initialised region laid out by total_size(); slot
    // `index` lies within it when index < slots. All fields are atomics.
    unsafe {
        let start = SHARED.load(Ordering::Relaxed);
        let shared = start.as_ref()?;
        if index >= shared.slots as usize {
            return None;
        }
        let entries = shared.entries_per_slot as usize;
        let base = start
            .cast::<u8>()
            .add(size_of::<Header>().next_multiple_of(8))
            .add(index * slot_size(entries));
        let header = &*base.cast::<SlotHeader>();
        let first = base
            .add(size_of::<SlotHeader>().next_multiple_of(8))
            .cast::<Entry>();
        Some(Slot {
            header,
            entries: std::slice::from_raw_parts(first, entries),
        })
    }
}

fn my_slot() -> Option<Slot> {
    if !map_enabled() {
        return None;
    }
    slot(compat::my_proc_number()?)
}

/// Makes sure this backend's name for `key` is published, if there is room.
pub fn publish(key: i64, name: &str) {
    let Some(slot) = my_slot() else { return };
    OWN_SLOT.with_borrow_mut(|local| {
        if local.by_key.contains_key(&key) {
            return;
        }
        if !local.claimed {
            claim(&slot, local);
        }
        if local.free.is_empty() && !local.full {
            sweep(local);
            local.full = local.free.is_empty();
        }
        let Some(index) = local.free.pop() else {
            return;
        };
        write_entry(&slot.entries[index], key, name.as_bytes());
        local.by_key.insert(key, index);
    });
}

/// The name map as a listener of the session's events: names are published while held or
/// awaited by name.
pub struct NameMap;

pub static LISTENER: NameMap = NameMap;

impl crate::session::events::Listener for NameMap {
    fn shows_names(&self) -> bool {
        map_enabled()
    }

    fn name_shown(&self, key: i64, name: &str) {
        publish(key, name);
    }

    fn name_withdrawn(&self, key: i64) {
        withdraw(key);
    }

    fn maybe_released(&self, key: i64) {
        withdraw_if_unheld(key);
    }

    fn transaction_ended(&self) {
        // The transaction's holds end: a full slot may have room again.
        OWN_SLOT.with(|local| {
            if let Ok(mut local) = local.try_borrow_mut() {
                local.full = false;
            }
        });
    }
}

/// The names of advisory locks the current user may see: (pid, key, name). This session's
/// own named holds always; other sessions' (when pglock is preloaded) by the rule of
/// pg_stat_activity's query text.
pub fn visible_names() -> Vec<(i32, i64, String)> {
    let me = backend::pid();
    let mut rows: Vec<(i32, i64, String)> = crate::session::registry::own_names()
        .into_iter()
        .map(|(key, name)| (me, key, name))
        .collect();
    rows.extend(others());
    rows
}

/// Withdraws this backend's name for `key`, held or not (a hold of it began by key).
pub fn withdraw(key: i64) {
    if !map_enabled() {
        return;
    }
    OWN_SLOT.with_borrow_mut(|local| local.free_entry_of(key));
}

/// Withdraws this backend's name for `key` once it holds the key in no mode.
pub fn withdraw_if_unheld(key: i64) {
    if !map_enabled() {
        return;
    }
    // try_borrow_mut: this also runs while an ERROR unwinds (registry::Waiting), where a
    // second panic would abort the backend.
    OWN_SLOT.with(|local| {
        if let Ok(mut local) = local.try_borrow_mut() {
            if local.by_key.contains_key(&key) && !key_held_in_any_mode(key) {
                local.free_entry_of(key);
            }
        }
    });
}

impl OwnSlot {
    /// Clears the entry that publishes `key`, if any, and makes it free for another name.
    fn free_entry_of(&mut self, key: i64) {
        let Some(index) = self.by_key.remove(&key) else {
            return;
        };
        if let Some(slot) = my_slot() {
            clear_entry(&slot.entries[index]);
        }
        self.free.push(index);
        self.full = false;
    }
}

/// Takes this backend's slot on first use and arranges for it to be emptied at exit.
fn claim(slot: &Slot, local: &mut OwnSlot) {
    for entry in slot.entries {
        clear_entry(entry);
    }
    slot.header
        .database
        .store(backend::database_id(), Ordering::Relaxed);
    slot.header
        .role
        .store(backend::login_role().to_u32(), Ordering::Relaxed);
    slot.header.pid.store(backend::pid(), Ordering::Release);
    // SAFETY: registers a callback that empties this backend's slot when it exits.
    unsafe { pg_sys::before_shmem_exit(Some(release_slot_at_exit), pg_sys::Datum::from(0usize)) };
    local.free = (0..slot.entries.len()).rev().collect();
    local.claimed = true;
}

/// Frees the entries of keys this backend no longer holds (released outside pglock, or by
/// the end of a transaction).
fn sweep(local: &mut OwnSlot) {
    let stale: Vec<i64> = local
        .by_key
        .keys()
        .copied()
        .filter(|&key| !key_held_in_any_mode(key))
        .collect();
    for key in stale {
        local.free_entry_of(key);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn release_slot_at_exit(_code: i32, _arg: pg_sys::Datum) {
    if let Some(slot) = my_slot() {
        for entry in slot.entries {
            clear_entry(entry);
        }
        slot.header.pid.store(0, Ordering::Release);
    }
}

fn write_entry(entry: &Entry, key: i64, name: &[u8]) {
    let seq = entry.seq.load(Ordering::Relaxed);
    entry.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    entry.key.store(key, Ordering::Relaxed);
    entry.len.store(name.len() as u32, Ordering::Relaxed);
    for (word, chunk) in entry.words.iter().zip(name.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
    }
    entry.seq.store(seq.wrapping_add(2), Ordering::Release);
}

fn clear_entry(entry: &Entry) {
    let seq = entry.seq.load(Ordering::Relaxed);
    entry.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    entry.len.store(0, Ordering::Relaxed);
    entry.seq.store(seq.wrapping_add(2), Ordering::Release);
}

/// A consistent copy of an entry, or None if it is free or kept changing under us.
fn read_entry(entry: &Entry) -> Option<(i64, Vec<u8>)> {
    for _ in 0..100 {
        let before = entry.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let len = (entry.len.load(Ordering::Relaxed) as usize).min(MAX_NAME_BYTES);
        let key = entry.key.load(Ordering::Relaxed);
        let mut name = Vec::with_capacity(len);
        for word in entry.words.iter().take(len.div_ceil(8)) {
            name.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        name.truncate(len);
        fence(Ordering::Acquire);
        if entry.seq.load(Ordering::Relaxed) == before {
            return (len > 0).then_some((key, name));
        }
    }
    None
}

/// Every published name of every other backend in this database that the current user may
/// see: (pid, key, name). Names that do not hash to their key (which a torn read would
/// produce) are left out.
pub fn others() -> Vec<(i32, i64, String)> {
    let mut names = Vec::new();
    let database = backend::database_id();
    let me = backend::pid();
    for index in 0.. {
        let Some(slot) = slot(index) else { break };
        let pid = slot.header.pid.load(Ordering::Acquire);
        if pid == 0 || pid == me || slot.header.database.load(Ordering::Relaxed) != database {
            continue;
        }
        let role = pg_sys::Oid::from(slot.header.role.load(Ordering::Relaxed));
        if !backend::may_read_stats_of(role) {
            continue;
        }
        for entry in slot.entries {
            let Some((key, bytes)) = read_entry(entry) else {
                continue;
            };
            if derive_key(&bytes) != key {
                continue;
            }
            if let Ok(name) = String::from_utf8(bytes) {
                names.push((pid, key, name));
            }
        }
        if slot.header.pid.load(Ordering::Acquire) != pid {
            names.retain(|(p, _, _)| *p != pid);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::{clear_entry, read_entry, write_entry, Entry};
    use std::sync::atomic::Ordering;

    fn free_entry() -> Box<Entry> {
        // SAFETY: every field is an atomic integer, for which all-zero bytes are valid; a
        // zeroed entry is a free one, as in freshly initialised shared memory.
        Box::new(unsafe { std::mem::zeroed() })
    }

    #[test]
    fn a_written_name_reads_back_whole() {
        let entry = free_entry();
        assert_eq!(read_entry(&entry), None);
        let long = "n".repeat(1024);
        for name in ["jobs:42", "exactly8", "café", long.as_str()] {
            write_entry(&entry, 42, name.as_bytes());
            assert_eq!(read_entry(&entry), Some((42, name.as_bytes().to_vec())));
        }
    }

    #[test]
    fn a_shorter_name_leaves_no_tail_of_the_longer_one() {
        let entry = free_entry();
        write_entry(&entry, 1, b"abcdefghijklmnop");
        write_entry(&entry, 2, b"ab");
        assert_eq!(read_entry(&entry), Some((2, b"ab".to_vec())));
    }

    #[test]
    fn a_cleared_entry_reads_as_free() {
        let entry = free_entry();
        write_entry(&entry, 7, b"gone");
        clear_entry(&entry);
        assert_eq!(read_entry(&entry), None);
    }

    #[test]
    fn an_entry_in_the_middle_of_a_rewrite_is_never_read() {
        let entry = free_entry();
        write_entry(&entry, 7, b"half");
        // An odd sequence number: the owner is rewriting it (and stays so for this test).
        entry.seq.fetch_add(1, Ordering::SeqCst);
        assert_eq!(read_entry(&entry), None);
        entry.seq.fetch_add(1, Ordering::SeqCst);
        assert_eq!(read_entry(&entry), Some((7, b"half".to_vec())));
    }
}
