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
            let converted = convert(bytes, Direction::ServerToUtf8);
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

/// Which way [`convert`] goes between the database encoding and UTF-8.
#[derive(Clone, Copy)]
enum Direction {
    ServerToUtf8,
    Utf8ToServer,
}

/// Converts `bytes` with PostgreSQL's own conversion functions, which raise 22021 or 22P05
/// for what the target encoding cannot hold.
///
/// They may return their input unchanged, as a pointer to the same (not NUL-terminated) bytes:
/// always in a SQL_ASCII database, where they only validate. Only a new pointer is a palloc'd,
/// NUL-terminated result, so only then is its length read up to the NUL.
fn convert(bytes: &[u8], direction: Direction) -> Cow<'_, [u8]> {
    let input: *const std::ffi::c_char = bytes.as_ptr().cast();
    let len = i32::try_from(bytes.len()).expect("a text value is under 1 GB");
    let utf8 = pg_sys::pg_enc::PG_UTF8 as i32;
    // SAFETY: both functions read `len` bytes from `input` and return either `input` itself or
    // a NUL-terminated copy in the current memory context.
    unsafe {
        let output = match direction {
            Direction::ServerToUtf8 => pg_sys::pg_server_to_any(input, len, utf8),
            Direction::Utf8ToServer => pg_sys::pg_any_to_server(input, len, utf8),
        };
        if std::ptr::eq(output, input) {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(CStr::from_ptr(output).to_bytes().to_vec())
        }
    }
}

arg_through_from_datum!(LockName, errors::null_name);

impl_sql_translatable!(LockName<'_>, "text");

/// A name on its way back to SQL as `text` in the database encoding.
pub struct ServerText(pub String);

impl IntoDatum for ServerText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let utf8 = self.0.as_bytes();
        let server = if utf8.is_ascii() || backend::database_is_utf8() {
            Cow::Borrowed(utf8)
        } else {
            convert(utf8, Direction::Utf8ToServer)
        };
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
