//! The SQL surface of the core: the lock functions every client calls, held(), the
//! pglock.locks view, and status(). Thin shells over the session layer.

pub mod entry;
pub mod locks;
#[cfg(feature = "bench_probes")]
pub mod probes;
pub mod status;
