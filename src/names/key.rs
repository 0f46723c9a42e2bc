//! Lock names to advisory-lock keys: the HKDF-SHA256 derivation Rust sqlx uses.

use std::sync::OnceLock;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HKDF `info` string of sqlx's `PgAdvisoryLock::new`; pglock uses it so the two agree on keys.
pub const KEY_INFO: &[u8] = b"SQLx (Rust) Postgres advisory lock";

/// Derives the bigint advisory-lock key of a name given as UTF-8 bytes.
///
/// HKDF-SHA256 with no salt, the name as input keying material and [`KEY_INFO`] as info;
/// the first 8 bytes of output are read as a little-endian `i64`.
pub fn derive_key(name_utf8: &[u8]) -> i64 {
    // HKDF-Extract: the pseudorandom key is HMAC(salt, name), and with no salt the salt is 32
    // zero bytes, the same for every name. So the HMAC keyed with it (its inner and outer pad
    // blocks already hashed) is made once and copied: two SHA-256 compressions fewer per name.
    static EXTRACT: OnceLock<Hmac<Sha256>> = OnceLock::new();
    let mut extract = EXTRACT
        .get_or_init(|| {
            Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("HMAC takes a key of any length")
        })
        .clone();
    extract.update(name_utf8);
    let prk = extract.finalize().into_bytes();
    let hkdf = Hkdf::<Sha256>::from_prk(&prk).expect("a SHA-256 output is a valid PRK");
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
    fn matches_the_hkdf_crate_for_names_of_every_length() {
        use hkdf::Hkdf;
        use sha2::Sha256;
        for len in [0, 1, 31, 32, 55, 56, 63, 64, 65, 200, 1024] {
            let name: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut okm = [0u8; 8];
            Hkdf::<Sha256>::new(None, &name)
                .expand(super::KEY_INFO, &mut okm)
                .unwrap();
            assert_eq!(derive_key(&name), i64::from_le_bytes(okm), "length {len}");
        }
    }

    #[test]
    fn different_names_give_different_keys() {
        assert_ne!(derive_key(b"a"), derive_key(b"b"));
        assert_ne!(derive_key("é".as_bytes()), derive_key(b"e"));
    }
}
