//! The calls into PostgreSQL's lock manager (acquire, release, this backend's counts) and the
//! timed wait in its queue. Knows nothing of names, sessions' bookkeeping or shared services.

pub mod manager;
pub mod wait;
