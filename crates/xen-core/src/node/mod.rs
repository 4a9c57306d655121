//! The napi surface: everything JavaScript can call. Kept thin; the logic it
//! exposes lives in the other modules and is tested there.

use napi_derive::napi;

use crate::build_info;

/// Facts about the loaded native core.
#[napi(object)]
pub struct NativeInfo {
    /// Crate version; equals the npm package version.
    pub version: String,
    /// Whether the real-hypervisor platform (cargo feature `xen`) is compiled in.
    pub xen_platform: bool,
    /// Target triple the addon was built for.
    pub target: String,
}

/// Describes the loaded native core.
#[napi]
pub fn native_info() -> NativeInfo {
    NativeInfo {
        version: build_info::VERSION.to_owned(),
        xen_platform: build_info::XEN_PLATFORM,
        target: build_info::target(),
    }
}

pub mod bench;
pub mod bench_blk_js;
pub mod blk;
pub mod blk_frontend;
pub mod blk_js_storage;
pub mod console;
pub mod domains;
mod errors;
pub mod grants;
pub mod net;
pub mod net_frontend;
pub mod net_tap;
pub mod platform;
pub mod platform_handle;
pub mod xenstore;

pub(crate) use errors::{coded_error, Coded, CodedResult, Outcome, Result};

pub(crate) fn grant_error(e: crate::platform::GrantError) -> Coded {
    coded_error(&e.code(), e)
}

pub(crate) fn evtchn_error(e: crate::platform::EvtchnError) -> Coded {
    coded_error(e.code(), e)
}

pub(crate) fn io_error(e: std::io::Error) -> Coded {
    coded_error(crate::platform::io_error_name(&e), e)
}

pub(crate) fn domid(v: u32) -> CodedResult<crate::platform::DomId> {
    crate::platform::DomId::try_from(v)
        .map_err(|_| coded_error("EINVAL", format!("domain id {v} out of range")))
}
