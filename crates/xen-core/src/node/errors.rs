//! Errors for JavaScript with their code set: a failure thrown by the native
//! layer is an `Error` whose `code` is Xen's name for it (`ENOENT`,
//! `GNTST_bad_gntref`, ...), so the TypeScript layer reads `err.code` and
//! never parses messages.
//!
//! Synchronous calls throw a [`Coded`] error (napi's `Error` with the code as
//! its status). An asynchronous call cannot reject with a custom status, so
//! it resolves to an [`Outcome`]: the value, or the failure, which becomes a
//! coded `Error` on the JavaScript thread and rejects the promise.

use std::fmt::Display;

use napi::bindgen_prelude::{ToNapiValue, TypeName, Unknown, ValueType};
use napi::sys;

/// A failure for JavaScript: napi's error with Xen's code as its status.
pub type Coded = napi::Error<String>;

/// The result of a synchronous call. Named `Result` because napi's macro
/// recognises a fallible call by that name.
pub type Result<T, E = Coded> = std::result::Result<T, E>;

/// The same, where `Result` would read ambiguously.
pub type CodedResult<T> = Result<T>;

/// A failure with its code.
pub fn coded_error(code: &str, message: impl Display) -> Coded {
    napi::Error::new(code.to_owned(), message.to_string())
}

/// The result of an asynchronous call: the value, or a coded failure that
/// rejects the promise with an `Error` whose `code` is set.
pub enum Outcome<T> {
    /// Done.
    Done(T),
    /// Failed.
    Failed(Coded),
}

impl<T> From<CodedResult<T>> for Outcome<T> {
    fn from(r: CodedResult<T>) -> Outcome<T> {
        match r {
            Ok(v) => Outcome::Done(v),
            Err(e) => Outcome::Failed(e),
        }
    }
}

impl<T: TypeName> TypeName for Outcome<T> {
    fn type_name() -> &'static str {
        T::type_name()
    }

    fn value_type() -> ValueType {
        T::value_type()
    }
}

impl<T: ToNapiValue> ToNapiValue for Outcome<T> {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            // SAFETY: called by napi on the JavaScript thread with its env,
            // as ToNapiValue requires; passed on unchanged.
            Outcome::Done(v) => unsafe { T::to_napi_value(env, v) },
            Outcome::Failed(e) => {
                // SAFETY: as above; the error is built with this env.
                let error = unsafe { ToNapiValue::to_napi_value(env, e)? };
                // Rejecting with an error that refers to this JS object makes
                // napi reject the promise with the object itself, code and all.
                // SAFETY: `error` is a live value of this env, on its thread.
                let js = unsafe { Unknown::from_raw_unchecked(env, error) };
                Err(napi::Error::from(js))
            }
        }
    }
}
