//! The real hypervisor, through the stable Linux device ABI that Xen's own
//! libxenevtchn and libxengnttab wrap: ioctls on `/dev/xen/evtchn`,
//! `/dev/xen/gntdev` and `/dev/xen/gntalloc`. The hot path needs no C
//! library; domain information comes from libxenctrl, loaded at run time.

pub mod abi;
mod evtchn;
mod gntalloc;
mod gntdev;
pub mod ops;
#[cfg(feature = "xen")]
pub mod xenctrl;

use std::path::Path;
use std::sync::Arc;

pub use self::evtchn::{XenEvtchn, EVTCHN_DEVICE};
pub use self::gntalloc::{GrantedPages, XenGntalloc, GNTALLOC_DEVICE};
pub use self::gntdev::{XenGntdev, COPY_BATCH, GNTDEV_DEVICE};
pub use self::ops::{DeviceOps, LinuxOps};
#[cfg(feature = "xen")]
pub use self::xenctrl::{DomainInfo, ShutdownReason, XenCtrl};

/// Why the real platform cannot be used here.
#[derive(Debug)]
pub struct PlatformUnavailable(pub String);

impl std::fmt::Display for PlatformUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlatformUnavailable {}

/// Checks that the Xen devices exist, naming the first one missing.
pub fn check_devices(root: &Path) -> Result<(), PlatformUnavailable> {
    for (dev, module) in [(EVTCHN_DEVICE, "xen-evtchn"), (GNTDEV_DEVICE, "xen-gntdev")] {
        let path = root.join(dev.trim_start_matches('/'));
        if !path.exists() {
            return Err(PlatformUnavailable(format!(
                "{dev} not found: not running in a Xen domain, or the {module} module is not loaded"
            )));
        }
    }
    Ok(())
}

/// The real platform's handles for one backend.
pub struct XenPlatform {
    /// Event channels.
    pub evtchn: XenEvtchn<LinuxOps>,
    /// Grant mapping and copying.
    pub gntdev: XenGntdev<LinuxOps>,
}

impl XenPlatform {
    /// Opens the Xen devices, or says which is missing.
    pub fn open() -> Result<XenPlatform, PlatformUnavailable> {
        check_devices(Path::new("/"))?;
        let ops = Arc::new(LinuxOps);
        let evtchn = XenEvtchn::open(ops.clone(), Path::new(EVTCHN_DEVICE))
            .map_err(|e| PlatformUnavailable(e.to_string()))?;
        let gntdev = XenGntdev::open(ops, Path::new(GNTDEV_DEVICE))
            .map_err(|e| PlatformUnavailable(e.to_string()))?;
        Ok(XenPlatform { evtchn, gntdev })
    }
}

#[cfg(test)]
mod tests;
