//! What this session holds: the registry of holds taken through pglock and the requests that
//! take and give them back. It announces what happens (events) and knows no listener by name.

pub mod counts;
pub mod events;
pub mod registry;
pub mod request;
