//! Lock names as SQL sees them: the `text` argument, its checks, and its way back out.

use std::borrow::Cow;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};

use crate::backend;
use crate::errors;

/// The longest name pglock accepts, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 1024;

/// A lock name passed in from SQL, converted to UTF-8 (the key never depends on the database
/// encoding). Not yet checked: see [`LockName::checked`].
pub struct LockName<'a>(Cow<'a, str>);

impl<'a> LockName<'a> {
    /// Returns the name as UTF-8 after the checks every pglock function applies, raising
    /// 22004 for NULL and 22023 for an empty or too long name.
    pub fn checked(name: Option<LockName<'a>>) -> Cow<'a, str> {
        let Some(LockName(name)) = name else {
            errors::null_name()
        };
        if name.is_empty() {
            errors::empty_name();
        }
        if name.len() > MAX_NAME_BYTES {
            errors::name_too_long(name.len(), MAX_NAME_BYTES);
        }
        name
    }
}

impl FromDatum for LockName<'_> {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the caller promises a non-null text datum, valid for the function call. The
        // slice covers exactly the value's bytes (varlena_to_byte_slice reads its header), never
        // what follows it in memory.
        let bytes = unsafe {
            let varlena = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            pgrx::varlena::varlena_to_byte_slice(varlena)
        };
        let utf8 = if bytes.is_ascii() || backend::database_is_utf8() {
            // Text in a UTF-8 database is valid UTF-8; ASCII is valid in any encoding.
            // SAFETY: as just said.
            Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            // pg_server_to_any raises 22P05 or 22021 for what UTF-8 cannot hold.
            let converted = server_to_utf8(bytes);
            Cow::Owned(String::from_utf8_lossy(&converted).into_owned())
        };
        Some(LockName(utf8))
    }
}

/// Function arguments of a type read by its FromDatum (the SQL type impl_sql_translatable!
/// declares): NULL raises `$null` where the function takes the type itself.
macro_rules! arg_through_from_datum {
    ($type:ident, $null:path) => {
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $type<'fcx> {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                // SAFETY: pglock declares these arguments with the SQL type FromDatum reads.
                unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| $null())
            }

            unsafe fn unbox_nullable_arg(
                arg: pgrx::callconv::Arg<'_, 'fcx>,
            ) -> pgrx::nullable::Nullable<Self> {
                // SAFETY: as above.
                unsafe { arg.unbox_arg_using_from_datum() }.into()
            }
        }
    };
}

/// A `text[]` argument of lock names, each element read as [`LockName`] reads one (NULL
/// elements stay None, for the caller to refuse).
pub struct LockNames<'a>(pub Vec<Option<LockName<'a>>>);

impl FromDatum for LockNames<'_> {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null text[] datum, valid for the function call; its elements are text
        // datums inside the (detoasted) array, valid as long.
        unsafe {
            let array = pgrx::Array::<pg_sys::Datum>::from_polymorphic_datum(
                datum,
                false,
                pg_sys::TEXTARRAYOID,
            )?;
            let names = array
                .iter()
                .map(|element| {
                    element.and_then(|element| {
                        LockName::from_polymorphic_datum(element, false, pg_sys::TEXTOID)
                    })
                })
                .collect();
            Some(LockNames(names))
        }
    }
}

arg_through_from_datum!(LockNames, errors::null_name_array);

impl_sql_translatable!(LockNames<'_>, "text[]");

/// Converts `bytes` from the database encoding to UTF-8 with PostgreSQL's own conversion
/// functions, which raise 22021 or 22P05 for what UTF-8 cannot hold.
///
/// They may return their input unchanged, as a pointer to the same (not NUL-terminated) bytes:
/// always in a SQL_ASCII database, where they only validate. Only a new pointer is a palloc'd,
/// NUL-terminated result, so only then is its length read up to the NUL.
fn server_to_utf8(bytes: &[u8]) -> Cow<'_, [u8]> {
    let input: *const std::ffi::c_char = bytes.as_ptr().cast();
    let len = i32::try_from(bytes.len()).expect("a text value is under 1 GB");
    // SAFETY: pg_server_to_any reads `len` bytes from `input` and returns either `input` itself
    // or a NUL-terminated copy in the current memory context.
    unsafe {
        let output = pg_sys::pg_server_to_any(input, len, pg_sys::pg_enc::PG_UTF8 as i32);
        if std::ptr::eq(output, input) {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(CStr::from_ptr(output).to_bytes().to_vec())
        }
    }
}

arg_through_from_datum!(LockName, errors::null_name);

impl_sql_translatable!(LockName<'_>, "text");

/// A name on its way back to SQL as `text` in the database encoding, or NULL when that encoding
/// cannot hold one of its characters: a name taken in a UTF-8 database and read from a LATIN1
/// one costs that one name, never the row or the query it is in.
pub struct ServerText(pub String);

impl IntoDatum for ServerText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let server = in_database_encoding(&self.0)?;
        let len = i32::try_from(server.len()).expect("a name is at most MAX_NAME_BYTES long");
        // SAFETY: copies `len` bytes into a new palloc'd text in the current memory context,
        // as a function result must be.
        let text = unsafe { pg_sys::cstring_to_text_with_len(server.as_ptr().cast(), len) };
        Some(pg_sys::Datum::from(text))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTOID
    }
}

/// `utf8` in the database encoding, or None when the database encoding has no character for
/// some character of it. Never raises (PostgreSQL's conversion functions are asked not to).
fn in_database_encoding(utf8: &str) -> Option<Cow<'_, [u8]>> {
    let bytes = utf8.as_bytes();
    if bytes.is_ascii() || backend::database_is_utf8() {
        return Some(Cow::Borrowed(bytes));
    }
    // SAFETY: the database encoding is fixed once the backend has connected.
    let database = unsafe { pg_sys::GetDatabaseEncoding() };
    // SQL_ASCII: PostgreSQL stores any bytes as they come.
    if database == pg_sys::pg_enc::PG_SQL_ASCII as i32 {
        return Some(Cow::Borrowed(bytes));
    }
    let utf8_encoding = pg_sys::pg_enc::PG_UTF8 as i32;
    let procedure = conversion_from_utf8(utf8_encoding, database)?;
    let len = i32::try_from(bytes.len()).expect("a name is at most MAX_NAME_BYTES long");
    // Room for the worst case (MAX_CONVERSION_GROWTH bytes per input byte) and the NUL, so
    // that the whole input is converted in one call.
    let mut output = vec![0u8; bytes.len() * pg_sys::MAX_CONVERSION_GROWTH as usize + 1];
    // SAFETY: the conversion reads `len` bytes of `bytes` (never writing them) and writes at
    // most `output.len()` bytes, NUL-terminated. With noError it stops at the first character
    // it cannot convert instead of raising, and says how many input bytes it converted.
    let converted = unsafe {
        pg_sys::pg_do_encoding_conversion_buf(
            procedure,
            utf8_encoding,
            database,
            bytes.as_ptr().cast_mut(),
            len,
            output.as_mut_ptr(),
            i32::try_from(output.len()).expect("a name is at most MAX_NAME_BYTES long"),
            true,
        )
    };
    if converted != len {
        return None;
    }
    // Our own buffer, NUL-terminated by the conversion (text never holds a NUL).
    let end = output.iter().position(|&byte| byte == 0)?;
    output.truncate(end);
    Some(Cow::Owned(output))
}

/// The default conversion procedure from UTF-8 to the database encoding (looked up once per
/// backend), or None when there is none.
fn conversion_from_utf8(utf8: i32, database: i32) -> Option<pg_sys::Oid> {
    thread_local! {
        static PROCEDURE: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
    }
    let procedure = PROCEDURE.get().unwrap_or_else(|| {
        // SAFETY: a catalog lookup; every SQL function runs inside a transaction.
        let procedure = unsafe { pg_sys::FindDefaultConversionProc(utf8, database) };
        PROCEDURE.set(Some(procedure));
        procedure
    });
    (procedure != pg_sys::InvalidOid).then_some(procedure)
}

unsafe impl pgrx::callconv::BoxRet for ServerText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a freshly palloc'd text datum in the function's memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

impl_sql_translatable!(ServerText, "text");
