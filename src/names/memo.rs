//! A backend-local memo of name -> key, so a name used again skips the HKDF derivation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::names::fast_hash::FastHasher;
use crate::names::key::derive_key;

/// Names remembered at most; the memo starts over when full. Services lock the same few
/// names again and again, so a small memo catches nearly every call.
const CAPACITY: usize = 1024;

thread_local! {
    static KEYS: RefCell<HashMap<Box<str>, i64, BuildHasherDefault<FastHasher>>> =
        RefCell::new(HashMap::default());
}

/// The key of a (checked, UTF-8) name.
pub fn key_of(name: &str) -> i64 {
    KEYS.with_borrow_mut(|keys| {
        if let Some(&key) = keys.get(name) {
            return key;
        }
        let key = derive_key(name.as_bytes());
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(Box::from(name), key);
        key
    })
}
