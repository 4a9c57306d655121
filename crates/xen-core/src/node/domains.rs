//! Domain states for JavaScript: the XEN_DOMINF view of a domain, and
//! libxenctrl on real Xen.

#[cfg(feature = "xen")]
use std::sync::Mutex;

use napi_derive::napi;

#[cfg(feature = "xen")]
use super::io_error;
use super::{coded_error, Result};

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

/// Why a domain shut down (`SHUTDOWN_*` of Xen's sched.h, in code order).
/// The one definition: JavaScript gets the names as the type
/// `ShutdownReason`.
#[napi(string_enum)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// SHUTDOWN_poweroff (0).
    #[napi(value = "poweroff")]
    Poweroff,
    /// SHUTDOWN_reboot (1).
    #[napi(value = "reboot")]
    Reboot,
    /// SHUTDOWN_suspend (2).
    #[napi(value = "suspend")]
    Suspend,
    /// SHUTDOWN_crash (3).
    #[napi(value = "crash")]
    Crash,
    /// SHUTDOWN_watchdog (4).
    #[napi(value = "watchdog")]
    Watchdog,
    /// SHUTDOWN_soft_reset (5).
    #[napi(value = "soft-reset")]
    SoftReset,
}

impl ShutdownReason {
    /// Every reason, by code.
    pub const ALL: [ShutdownReason; 6] = [
        ShutdownReason::Poweroff,
        ShutdownReason::Reboot,
        ShutdownReason::Suspend,
        ShutdownReason::Crash,
        ShutdownReason::Watchdog,
        ShutdownReason::SoftReset,
    ];

    /// The name JavaScript sees.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft-reset",
        }
    }
}

pub(crate) fn shutdown_code(name: &str) -> Option<u32> {
    ShutdownReason::ALL
        .iter()
        .position(|r| r.name() == name)
        .map(|i| i as u32)
}

pub(crate) fn shutdown_name(code: u32) -> String {
    ShutdownReason::ALL
        .get(code as usize)
        .map_or_else(|| format!("code-{code}"), |r| r.name().to_owned())
}

/// The shutdown reasons, in code order (SHUTDOWN_poweroff first).
#[napi]
pub fn shutdown_reasons() -> Vec<ShutdownReason> {
    ShutdownReason::ALL.to_vec()
}

/// The names of the errors a XenStore daemon answers, in xs_wire.h's order.
#[napi(ts_return_type = "Array<XenStoreErrno>")]
pub fn xenstore_errnos() -> Vec<crate::wire::Errno> {
    crate::wire::Errno::ALL.to_vec()
}

/// The name of a GNTST status (`GNTST_bad_gntref`), `GNTST_<n>` if unknown.
#[napi]
pub fn gntst_name(status: i32) -> String {
    crate::platform::GntSt::ALL
        .iter()
        .find(|s| **s as i32 == status)
        .map_or_else(|| format!("GNTST_{status}"), |s| s.name().to_owned())
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
    pub fn open() -> Result<NativeXenCtrl> {
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
    pub fn domain_info(&self) -> Result<Vec<DomainInfoJs>> {
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
