//! Domain states for JavaScript: the XEN_DOMINF view of a domain, and
//! libxenctrl on real Xen.

#[cfg(feature = "xen")]
use std::sync::Mutex;

use napi_derive::napi;

use super::coded_error;
#[cfg(feature = "xen")]
use super::io_error;

/// A domain's state (XEN_DOMINF_* flags and the shutdown reason).
#[napi(object)]
pub struct DomainInfoJs {
    /// Domain id.
    pub domid: u32,
    /// Running (or runnable).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// Blocked on an event.
    pub blocked: bool,
    /// Being destroyed.
    pub dying: bool,
    /// Shut down: poweroff, reboot, suspend, crash, watchdog, soft-reset or
    /// `code-<n>`.
    pub shutdown: Option<String>,
}

const SHUTDOWN_NAMES: [&str; 6] = [
    "poweroff",
    "reboot",
    "suspend",
    "crash",
    "watchdog",
    "soft-reset",
];

pub(crate) fn shutdown_code(name: &str) -> Option<u32> {
    SHUTDOWN_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

pub(crate) fn shutdown_name(code: u32) -> String {
    SHUTDOWN_NAMES
        .get(code as usize)
        .map_or_else(|| format!("code-{code}"), |n| (*n).to_owned())
}

/// Domain information from the real hypervisor (libxenctrl, loaded at run
/// time). Opening fails with ENODEV in a build without the `xen` feature or
/// on a host without Xen.
#[napi]
pub struct NativeXenCtrl {
    #[cfg(feature = "xen")]
    ctrl: Mutex<crate::platform::xen::XenCtrl>,
}

#[napi]
impl NativeXenCtrl {
    /// Opens libxenctrl.
    #[napi(factory)]
    pub fn open() -> napi::Result<NativeXenCtrl> {
        #[cfg(feature = "xen")]
        {
            let ctrl =
                crate::platform::xen::XenCtrl::open().map_err(|e| coded_error("ENODEV", e))?;
            Ok(NativeXenCtrl {
                ctrl: Mutex::new(ctrl),
            })
        }
        #[cfg(not(feature = "xen"))]
        {
            Err(coded_error(
                "ENODEV",
                "this build of xenrx has no real-hypervisor support (cargo feature xen)",
            ))
        }
    }

    /// Every domain's state.
    #[napi]
    pub fn domain_info(&self) -> napi::Result<Vec<DomainInfoJs>> {
        #[cfg(feature = "xen")]
        {
            use crate::platform::xen::ShutdownReason as R;
            let list = self
                .ctrl
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .domains()
                .map_err(io_error)?;
            Ok(list
                .into_iter()
                .map(|i| DomainInfoJs {
                    domid: u32::from(i.domid),
                    running: i.running,
                    paused: i.paused,
                    blocked: i.blocked,
                    dying: i.dying,
                    shutdown: i.shutdown.map(|r| match r {
                        R::Poweroff => shutdown_name(0),
                        R::Reboot => shutdown_name(1),
                        R::Suspend => shutdown_name(2),
                        R::Crash => shutdown_name(3),
                        R::Watchdog => shutdown_name(4),
                        R::SoftReset => shutdown_name(5),
                        R::Other(c) => shutdown_name(c),
                    }),
                })
                .collect())
        }
        #[cfg(not(feature = "xen"))]
        {
            Err(coded_error(
                "ENODEV",
                "no real-hypervisor support in this build",
            ))
        }
    }
}
