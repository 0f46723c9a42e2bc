//! Lock shapes built on the session layer: many locks at once, semaphores, upgradeable locks,
//! fencing tokens, looking without taking, and MySQL's GET_LOCK family.

pub mod by_token;
pub mod fencing;
pub mod multi;
pub mod mysql;
pub mod observe;
pub mod semaphore;
pub mod upgradeable;
