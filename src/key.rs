//! Lock names to advisory-lock keys: the HKDF-SHA256 derivation Rust sqlx uses.

use hkdf::Hkdf;
use sha2::Sha256;

/// The HKDF `info` string of sqlx's `PgAdvisoryLock::new`; pglock uses it so the two agree on keys.
pub const KEY_INFO: &[u8] = b"SQLx (Rust) Postgres advisory lock";

/// Derives the bigint advisory-lock key of a name given as UTF-8 bytes.
///
/// HKDF-SHA256 with no salt, the name as input keying material and [`KEY_INFO`] as info;
/// the first 8 bytes of output are read as a little-endian `i64`.
pub fn derive_key(name_utf8: &[u8]) -> i64 {
    let hkdf = Hkdf::<Sha256>::new(None, name_utf8);
    let mut okm = [0u8; 8];
    hkdf.expand(KEY_INFO, &mut okm)
        .expect("8 bytes is far below HKDF-SHA256's output limit");
    i64::from_le_bytes(okm)
}

#[cfg(test)]
mod tests {
    use super::derive_key;

    #[test]
    fn matches_the_sqlx_test_vector() {
        assert_eq!(
            derive_key(b"my first Postgres advisory lock!"),
            -5560419505042474287
        );
    }

    #[test]
    fn different_names_give_different_keys() {
        assert_ne!(derive_key(b"a"), derive_key(b"b"));
        assert_ne!(derive_key("é".as_bytes()), derive_key(b"e"));
    }
}
