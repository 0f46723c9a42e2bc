//! Hostile names, generated: any Unicode, control characters, around the length limit. For each,
//! pglock.key() equals an independent computation of the sqlx derivation (HKDF-SHA256 built
//! from pgcrypto's HMAC, which is OpenSSL's), nothing crashes, and every refusal carries its
//! documented SQLSTATE and leaves nothing taken.

mod common;

use std::sync::Mutex;

use common::{session, sqlstate};
use postgres::error::SqlState;
use postgres::Client;
use proptest::prelude::*;

/// HKDF-SHA256 (RFC 5869) with no salt and sqlx's info string, from HMAC primitives, as SQL:
/// PRK = HMAC(32 zero bytes, name); OKM = HMAC(PRK, info || 0x01). Returns the first 8 bytes.
const REFERENCE_OKM: &str = "
    SELECT substring(
        hmac(convert_to('SQLx (Rust) Postgres advisory lock', 'UTF8') || '\\x01'::bytea,
             hmac(convert_to($1, 'UTF8'), decode(repeat('00', 32), 'hex'), 'sha256'),
             'sha256')
        FROM 1 FOR 8)";

fn client() -> &'static Mutex<Client> {
    static CLIENT: std::sync::OnceLock<Mutex<Client>> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut client = session();
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            .unwrap();
        Mutex::new(client)
    })
}

fn check(name: &str) {
    let mut client = client().lock().unwrap();
    let key = client.query_one("SELECT pglock.key($1)", &[&name]);
    let bytes = name.len();
    if name.contains('\0') {
        // PostgreSQL's text cannot hold NUL: refused before pglock sees it.
        let error = key.expect_err("NUL in text");
        assert_eq!(
            sqlstate(&error),
            Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE),
            "{error:?}"
        );
    } else if bytes == 0 || bytes > 1024 {
        let error = key.expect_err("empty or too long");
        assert_eq!(
            sqlstate(&error),
            Some(&SqlState::INVALID_PARAMETER_VALUE),
            "{error:?}"
        );
        let taken = client.query_one("SELECT pglock.try_lock($1)", &[&name]);
        assert_eq!(
            sqlstate(&taken.expect_err("refused")),
            Some(&SqlState::INVALID_PARAMETER_VALUE)
        );
    } else {
        let key: i64 = key.unwrap().get(0);
        let okm: Vec<u8> = client.query_one(REFERENCE_OKM, &[&name]).unwrap().get(0);
        let reference = i64::from_le_bytes(okm.try_into().unwrap());
        assert_eq!(key, reference, "name {name:?}");
        // The lock can be taken by that name, shows it back unchanged, and is released.
        let row = client
            .query_one(
                "SELECT pglock.try_lock($1), (SELECT name FROM pglock.held()), pglock.unlock($1)",
                &[&name],
            )
            .unwrap();
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(name));
        assert!(row.get::<_, bool>(2));
    }
    let left: i64 = client
        .query_one("SELECT count(*) FROM pglock.held()", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "nothing is left taken after {name:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_unicode_name(name in "\\PC{0,300}") {
        check(&name);
    }

    #[test]
    fn control_characters_and_nul(name in "[\\x00-\\x1f\\x7f a-z]{0,40}") {
        check(&name);
    }

    #[test]
    fn around_the_length_limit(prefix in "[a-z€😀]{0,4}", fill in 1000usize..1030) {
        check(&(prefix + &"x".repeat(fill)));
    }
}

#[test]
fn the_sqlx_test_vector_through_the_reference() {
    check("my first Postgres advisory lock!");
    let mut client = client().lock().unwrap();
    let okm: Vec<u8> = client
        .query_one(REFERENCE_OKM, &[&"my first Postgres advisory lock!"])
        .unwrap()
        .get(0);
    assert_eq!(
        i64::from_le_bytes(okm.try_into().unwrap()),
        -5560419505042474287
    );
}
