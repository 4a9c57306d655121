//! Domain information from libxenctrl, loaded at run time: the same binary
//! starts on a host without Xen's libraries, and asking for the real
//! platform there names what is missing instead of failing to load.

use std::fmt;

use libloading::{Library, Symbol};
use xenctrl_sys as sys;

/// Library names tried in turn (the unversioned one needs the -dev package).
pub const LIBXENCTRL_NAMES: &[&str] = &[
    "libxenctrl.so",
    "libxenctrl.so.4.20",
    "libxenctrl.so.4.19",
    "libxenctrl.so.4.18",
    "libxenctrl.so.4.17",
    "libxenctrl.so.4.16",
];

/// A domain's state as the hypervisor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: u16,
    /// Running on a CPU now.
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// Blocked, waiting for an event.
    pub blocked: bool,
    /// Being destroyed.
    pub dying: bool,
    /// Shut down, with its reason.
    pub shutdown: Option<ShutdownReason>,
}

/// Why a domain shut down (`SHUTDOWN_*` in sched.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Powered off.
    Poweroff,
    /// Asked for a reboot.
    Reboot,
    /// Suspended (for save or migration).
    Suspend,
    /// Crashed.
    Crash,
    /// Its watchdog fired.
    Watchdog,
    /// Asked for a soft reset.
    SoftReset,
    /// A code this build does not know.
    Other(u32),
}

impl ShutdownReason {
    /// The reason for a `SHUTDOWN_*` code.
    pub fn from_code(code: u32) -> ShutdownReason {
        match code {
            sys::SHUTDOWN_poweroff => ShutdownReason::Poweroff,
            sys::SHUTDOWN_reboot => ShutdownReason::Reboot,
            sys::SHUTDOWN_suspend => ShutdownReason::Suspend,
            sys::SHUTDOWN_crash => ShutdownReason::Crash,
            sys::SHUTDOWN_watchdog => ShutdownReason::Watchdog,
            sys::SHUTDOWN_soft_reset => ShutdownReason::SoftReset,
            other => ShutdownReason::Other(other),
        }
    }
}

impl DomainInfo {
    /// Decodes `xc_domaininfo_t`.
    pub fn from_raw(raw: &sys::xc_domaininfo_t) -> DomainInfo {
        let f = raw.flags;
        let shutdown = (f & sys::XEN_DOMINF_shutdown != 0).then(|| {
            ShutdownReason::from_code(
                (f >> sys::XEN_DOMINF_shutdownshift) & sys::XEN_DOMINF_shutdownmask,
            )
        });
        DomainInfo {
            domid: raw.domain,
            running: f & sys::XEN_DOMINF_running != 0,
            paused: f & sys::XEN_DOMINF_paused != 0,
            blocked: f & sys::XEN_DOMINF_blocked != 0,
            dying: f & sys::XEN_DOMINF_dying != 0,
            shutdown,
        }
    }
}

/// libxenctrl is not usable here.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

type OpenFn = unsafe extern "C" fn(
    *mut sys::xentoollog_logger,
    *mut sys::xentoollog_logger,
    u32,
) -> *mut sys::xc_interface;
type CloseFn = unsafe extern "C" fn(*mut sys::xc_interface) -> i32;
type GetInfoListFn =
    unsafe extern "C" fn(*mut sys::xc_interface, u32, u32, *mut sys::xc_domaininfo_t) -> i32;

/// An open libxenctrl interface.
pub struct XenCtrl {
    handle: *mut sys::xc_interface,
    getinfolist: GetInfoListFn,
    close: CloseFn,
    _lib: Library,
}

// SAFETY: libxenctrl interfaces may be used from any thread, one call at a
// time; `domains` takes &mut self.
unsafe impl Send for XenCtrl {}

impl XenCtrl {
    /// Loads libxenctrl and opens an interface to the hypervisor.
    pub fn open() -> Result<XenCtrl, Unavailable> {
        let mut errors = Vec::new();
        let lib = LIBXENCTRL_NAMES.iter().find_map(|name| {
            // SAFETY: loading libxenctrl runs its initialisers, which only set
            // up library state.
            match unsafe { Library::new(*name) } {
                Ok(l) => Some(l),
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    None
                }
            }
        });
        let lib = lib.ok_or_else(|| {
            Unavailable(format!(
                "libxenctrl not found ({}); install Xen's libraries (Debian: libxenctrl4.17, from xen-utils)",
                errors.join("; ")
            ))
        })?;
        let missing = |e: libloading::Error| Unavailable(format!("libxenctrl lacks a symbol: {e}"));
        // SAFETY: the symbols have these C signatures in xenctrl.h, from
        // which xenctrl-sys generates the argument types.
        let (open, close, getinfolist) = unsafe {
            let open: Symbol<OpenFn> = lib.get(b"xc_interface_open\0").map_err(missing)?;
            let close: Symbol<CloseFn> = lib.get(b"xc_interface_close\0").map_err(missing)?;
            let get: Symbol<GetInfoListFn> =
                lib.get(b"xc_domain_getinfolist\0").map_err(missing)?;
            (*open, *close, *get)
        };
        // SAFETY: null loggers ask for the default; 0 is the default flags.
        let handle = unsafe { open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if handle.is_null() {
            return Err(Unavailable(format!(
                "xc_interface_open failed ({}): not running in dom0 with /dev/xen/privcmd?",
                std::io::Error::last_os_error()
            )));
        }
        Ok(XenCtrl {
            handle,
            getinfolist,
            close,
            _lib: lib,
        })
    }

    /// Every domain, in id order.
    pub fn domains(&mut self) -> std::io::Result<Vec<DomainInfo>> {
        let mut out = Vec::new();
        let mut next = 0u32;
        loop {
            let mut batch: Vec<sys::xc_domaininfo_t> = vec![Default::default(); 64];
            // SAFETY: the buffer holds 64 entries, as told.
            let n = unsafe {
                (self.getinfolist)(self.handle, next, batch.len() as u32, batch.as_mut_ptr())
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = n as usize;
            out.extend(batch[..n].iter().map(DomainInfo::from_raw));
            match batch[..n].last() {
                Some(last) if n == batch.len() => next = u32::from(last.domain) + 1,
                _ => return Ok(out),
            }
        }
    }
}

impl Drop for XenCtrl {
    fn drop(&mut self) {
        // SAFETY: the handle came from xc_interface_open and is closed once.
        unsafe { (self.close)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::abi;
    use crate::platform::GntSt;

    #[test]
    fn our_abi_constants_match_the_xen_headers() {
        assert_eq!(abi::GTF_PERMIT_ACCESS as u32, sys::GTF_permit_access);
        assert_eq!(abi::GTF_TYPE_MASK as u32, sys::GTF_type_mask);
        assert_eq!(abi::GTF_READONLY as u32, sys::GTF_readonly);
        assert_eq!(abi::GTF_READING as u32, sys::GTF_reading);
        assert_eq!(abi::GTF_WRITING as u32, sys::GTF_writing);
        assert_eq!(
            std::mem::size_of::<sys::grant_entry_v1>(),
            abi::GRANT_ENTRY_V1_SIZE
        );
        assert_eq!(
            std::mem::offset_of!(sys::grant_entry_v1, domid),
            abi::GRANT_ENTRY_DOMID
        );
        assert_eq!(
            std::mem::offset_of!(sys::grant_entry_v1, frame),
            abi::GRANT_ENTRY_FRAME
        );
        for (ours, theirs) in [
            (GntSt::GeneralError, sys::GNTST_general_error),
            (GntSt::BadDomain, sys::GNTST_bad_domain),
            (GntSt::BadGntref, sys::GNTST_bad_gntref),
            (GntSt::PermissionDenied, sys::GNTST_permission_denied),
            (GntSt::BadPage, sys::GNTST_bad_page),
            (GntSt::BadCopyArg, sys::GNTST_bad_copy_arg),
            (GntSt::Eagain, sys::GNTST_eagain),
            (GntSt::NoSpace, sys::GNTST_no_space),
        ] {
            assert_eq!(ours as i32, theirs, "{ours}");
        }
    }

    #[test]
    fn domain_info_decodes_flags_and_shutdown_reasons() {
        let mut raw = sys::xc_domaininfo_t {
            domain: 7,
            flags: sys::XEN_DOMINF_running,
            ..Default::default()
        };
        let i = DomainInfo::from_raw(&raw);
        assert!(i.running && !i.paused && !i.dying && i.shutdown.is_none());
        assert_eq!(i.domid, 7);
        raw.flags =
            sys::XEN_DOMINF_shutdown | (sys::SHUTDOWN_crash << sys::XEN_DOMINF_shutdownshift);
        assert_eq!(
            DomainInfo::from_raw(&raw).shutdown,
            Some(ShutdownReason::Crash)
        );
        raw.flags = sys::XEN_DOMINF_shutdown
            | (sys::SHUTDOWN_reboot << sys::XEN_DOMINF_shutdownshift)
            | sys::XEN_DOMINF_dying;
        let i = DomainInfo::from_raw(&raw);
        assert_eq!(i.shutdown, Some(ShutdownReason::Reboot));
        assert!(i.dying);
        assert_eq!(ShutdownReason::from_code(99), ShutdownReason::Other(99));
    }

    #[test]
    fn open_names_what_is_missing() {
        // This machine has no hypervisor: either the library is missing or
        // opening the interface fails; both say so instead of crashing.
        match XenCtrl::open() {
            Ok(_) => {}
            Err(e) => assert!(
                e.0.contains("libxenctrl") || e.0.contains("xc_interface_open"),
                "{e}"
            ),
        }
    }
}
