//! The services in shared memory (with pglock preloaded): the name map behind pglock.locks,
//! statistics, leases and their worker, fencing tokens, locks owned by a token and their worker. They listen to the session's events.

pub mod leases;
pub mod memory;
pub mod name_map;
pub mod stats;
pub mod token_locks;
pub mod tokens;

use crate::session::events::Listener;
use memory::Service;

/// What each service listens to, in the order it hears it (leases end before statistics are
/// handed to the shared table, as a transaction ends).
pub static LISTENERS: [&dyn Listener; 3] =
    [&leases::LISTENER, &stats::LISTENER, &name_map::LISTENER];

/// The services with shared memory, in the order it is laid out.
static SERVICES: [Service; 5] = [
    Service {
        size: name_map::shmem_size,
        request_lwlocks: no_lwlocks,
        attach: name_map::attach,
    },
    Service {
        size: leases::shmem_size,
        request_lwlocks: leases::request_lwlock,
        attach: leases::attach,
    },
    Service {
        size: tokens::shmem_size,
        request_lwlocks: tokens::request_lwlock,
        attach: tokens::attach,
    },
    Service {
        size: token_locks::shmem_size,
        request_lwlocks: token_locks::request_lwlock,
        attach: token_locks::attach,
    },
    Service {
        size: stats::shmem_size,
        request_lwlocks: stats::request_lwlock,
        attach: stats::attach,
    },
];

/// The name map needs no LWLock (each backend writes only its own slot).
unsafe fn no_lwlocks() {}

/// From _PG_init while shared_preload_libraries is being processed: the services' shared
/// memory, and the lease worker.
pub fn init_preloaded() {
    memory::init_preloaded(&SERVICES);
    leases::register_worker();
    token_locks::register_worker();
}
