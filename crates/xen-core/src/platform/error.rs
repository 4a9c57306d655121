//! Platform errors with Xen's names: GNTST codes for grants, errno for
//! event channels.

use std::fmt;
use std::io;

/// A grant operation's status (`GNTST_*`). The one definition: JavaScript
/// gets it as the enum `GntSt`.
#[cfg_attr(feature = "node", napi_derive::napi)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GntSt {
    /// Success.
    Okay = 0,
    /// Bad flags, wrong domain, write access to a read-only grant...
    GeneralError = -1,
    /// The domain does not exist.
    BadDomain = -2,
    /// The grant reference is out of range.
    BadGntref = -3,
    /// Bad mapping handle.
    BadHandle = -4,
    /// Bad virtual address.
    BadVirtAddr = -5,
    /// Bad device address.
    BadDevAddr = -6,
    /// No space for a device mapping.
    NoDeviceSpace = -7,
    /// Not permitted.
    PermissionDenied = -8,
    /// Bad page (frame).
    BadPage = -9,
    /// A copy argument is out of range.
    BadCopyArg = -10,
    /// Address too big.
    AddressTooBig = -11,
    /// Try again.
    Eagain = -12,
    /// Out of space.
    NoSpace = -13,
}

impl GntSt {
    /// Every status, from 0 down to -13.
    pub const ALL: [GntSt; 14] = [
        GntSt::Okay,
        GntSt::GeneralError,
        GntSt::BadDomain,
        GntSt::BadGntref,
        GntSt::BadHandle,
        GntSt::BadVirtAddr,
        GntSt::BadDevAddr,
        GntSt::NoDeviceSpace,
        GntSt::PermissionDenied,
        GntSt::BadPage,
        GntSt::BadCopyArg,
        GntSt::AddressTooBig,
        GntSt::Eagain,
        GntSt::NoSpace,
    ];

    /// The status with this code; unknown codes are a general error.
    pub fn from_code(code: i16) -> GntSt {
        GntSt::ALL
            .into_iter()
            .find(|s| *s as i16 == code)
            .unwrap_or(GntSt::GeneralError)
    }

    /// Xen's name, e.g. `GNTST_bad_gntref`.
    pub fn name(self) -> &'static str {
        match self {
            GntSt::Okay => "GNTST_okay",
            GntSt::GeneralError => "GNTST_general_error",
            GntSt::BadDomain => "GNTST_bad_domain",
            GntSt::BadGntref => "GNTST_bad_gntref",
            GntSt::BadHandle => "GNTST_bad_handle",
            GntSt::BadVirtAddr => "GNTST_bad_virt_addr",
            GntSt::BadDevAddr => "GNTST_bad_dev_addr",
            GntSt::NoDeviceSpace => "GNTST_no_device_space",
            GntSt::PermissionDenied => "GNTST_permission_denied",
            GntSt::BadPage => "GNTST_bad_page",
            GntSt::BadCopyArg => "GNTST_bad_copy_arg",
            GntSt::AddressTooBig => "GNTST_address_too_big",
            GntSt::Eagain => "GNTST_eagain",
            GntSt::NoSpace => "GNTST_no_space",
        }
    }
}

impl fmt::Display for GntSt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a grant operation failed.
#[derive(Debug)]
pub enum GrantError {
    /// Xen refused one operation of a batch; nothing of the batch remains.
    Status {
        /// Index of the first failed operation in the batch.
        index: usize,
        /// Its status.
        status: GntSt,
    },
    /// The frontend tried to end access to a grant still mapped or copied.
    InUse(u32),
    /// The frontend has no free grant entry left.
    TableFull,
    /// The reference was not granted by this frontend.
    NotGranted(u32),
    /// An OS call failed.
    Os(io::Error),
    /// The platform is not available here (device or library missing).
    Unavailable(String),
}

impl GrantError {
    /// A batch failure.
    pub fn status(index: usize, status: GntSt) -> GrantError {
        GrantError::Status { index, status }
    }

    /// The GNTST status, if Xen gave one.
    pub fn gntst(&self) -> Option<GntSt> {
        match self {
            GrantError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short code for scripts: the GNTST name, `EBUSY`, `ENOSPC`, `ENOENT`,
    /// the OS errno name, or `ENODEV`.
    pub fn code(&self) -> String {
        match self {
            GrantError::Status { status, .. } => status.name().to_owned(),
            GrantError::InUse(_) => "EBUSY".into(),
            GrantError::TableFull => "ENOSPC".into(),
            GrantError::NotGranted(_) => "ENOENT".into(),
            GrantError::Os(e) => io_error_name(e).into(),
            GrantError::Unavailable(_) => "ENODEV".into(),
        }
    }
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Status { index, status } => {
                write!(f, "grant operation {index} of the batch failed: {status}")
            }
            GrantError::InUse(r) => write!(f, "grant {r} is still mapped or being copied"),
            GrantError::TableFull => f.write_str("no free grant entry"),
            GrantError::NotGranted(r) => write!(f, "grant {r} was not granted here"),
            GrantError::Os(e) => write!(f, "{e}"),
            GrantError::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for GrantError {}

impl From<io::Error> for GrantError {
    fn from(e: io::Error) -> GrantError {
        GrantError::Os(e)
    }
}

/// An event-channel failure: an errno, as Linux's evtchn device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvtchnError {
    /// The errno (e.g. `libc::ESRCH` for a domain that does not exist).
    pub errno: i32,
    /// What was being done.
    pub context: String,
}

impl EvtchnError {
    /// An error with context.
    pub fn new(errno: i32, context: impl Into<String>) -> EvtchnError {
        EvtchnError {
            errno,
            context: context.into(),
        }
    }

    /// The errno's name, e.g. `ENOTCONN`.
    pub fn code(&self) -> &'static str {
        errno_name(self.errno)
    }
}

impl fmt::Display for EvtchnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.code())
    }
}

impl std::error::Error for EvtchnError {}

impl From<io::Error> for EvtchnError {
    fn from(e: io::Error) -> EvtchnError {
        EvtchnError::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
}

/// Name of an errno value the platform can report.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTCONN => "ENOTCONN",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EADDRINUSE => "EADDRINUSE",
        _ => "EIO",
    }
}

/// Errno name of an I/O error: its OS errno when it carries one, otherwise
/// the errno its kind stands for (errors built from a kind, such as a
/// daemon refusing a live socket or a damaged state file, carry none).
pub fn io_error_name(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(errno) => errno_name(errno),
        None => match e.kind() {
            io::ErrorKind::NotFound => "ENOENT",
            io::ErrorKind::PermissionDenied => "EACCES",
            io::ErrorKind::AddrInUse => "EADDRINUSE",
            io::ErrorKind::ResourceBusy => "EBUSY",
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => "EINVAL",
            _ => "EIO",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gntst_codes_match_grant_table_h() {
        assert_eq!(GntSt::BadGntref as i16, -3);
        assert_eq!(GntSt::PermissionDenied as i16, -8);
        assert_eq!(GntSt::NoSpace as i16, -13);
        for s in GntSt::ALL {
            assert_eq!(GntSt::from_code(s as i16), s);
        }
        assert_eq!(GntSt::from_code(-99), GntSt::GeneralError);
        assert_eq!(GntSt::BadDomain.to_string(), "GNTST_bad_domain");
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            GrantError::status(2, GntSt::BadGntref).code(),
            "GNTST_bad_gntref"
        );
        assert_eq!(GrantError::InUse(9).code(), "EBUSY");
        assert_eq!(
            EvtchnError::new(libc::ENOTCONN, "notify").code(),
            "ENOTCONN"
        );
        assert_eq!(
            EvtchnError::new(libc::ESRCH, "bind").to_string(),
            "bind: ESRCH"
        );
    }
}
