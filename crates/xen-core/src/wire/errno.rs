//! XenStore errors travel as errno names (`"ENOENT\0"`), never numbers.

use std::fmt;

/// An error a XenStore daemon can answer, in xs_wire.h's table order. The
/// one definition: JavaScript gets its names as the type `XenStoreErrno`.
#[cfg_attr(
    feature = "node",
    napi_derive::napi(string_enum, js_name = "XenStoreErrno")
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument: bad path, malformed payload, wrong argument count.
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists (e.g. a duplicate watch).
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node, transaction or watch.
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// A quota was exceeded.
    ENOSPC,
    /// I/O error.
    EIO,
    /// Directory not empty.
    ENOTEMPTY,
    /// Unknown or unsupported request type.
    ENOSYS,
    /// Read-only.
    EROFS,
    /// Busy (e.g. TRANSACTION_START inside a transaction).
    EBUSY,
    /// Transaction conflict: retry.
    EAGAIN,
    /// Already connected.
    EISCONN,
    /// The reply would exceed the payload limit.
    E2BIG,
    /// Operation not permitted (e.g. an unprivileged owner change).
    EPERM,
}

impl Errno {
    /// Every error, in table order.
    pub const ALL: [Errno; 16] = [
        Errno::EINVAL,
        Errno::EACCES,
        Errno::EEXIST,
        Errno::EISDIR,
        Errno::ENOENT,
        Errno::ENOMEM,
        Errno::ENOSPC,
        Errno::EIO,
        Errno::ENOTEMPTY,
        Errno::ENOSYS,
        Errno::EROFS,
        Errno::EBUSY,
        Errno::EAGAIN,
        Errno::EISCONN,
        Errno::E2BIG,
        Errno::EPERM,
    ];

    /// The name sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Errno::EINVAL => "EINVAL",
            Errno::EACCES => "EACCES",
            Errno::EEXIST => "EEXIST",
            Errno::EISDIR => "EISDIR",
            Errno::ENOENT => "ENOENT",
            Errno::ENOMEM => "ENOMEM",
            Errno::ENOSPC => "ENOSPC",
            Errno::EIO => "EIO",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ENOSYS => "ENOSYS",
            Errno::EROFS => "EROFS",
            Errno::EBUSY => "EBUSY",
            Errno::EAGAIN => "EAGAIN",
            Errno::EISCONN => "EISCONN",
            Errno::E2BIG => "E2BIG",
            Errno::EPERM => "EPERM",
        }
    }

    /// Parses an error name as found in an ERROR payload (NUL stripped).
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The Linux errno number, for callers that speak numbers.
    pub fn code(self) -> i32 {
        match self {
            Errno::EINVAL => libc::EINVAL,
            Errno::EACCES => libc::EACCES,
            Errno::EEXIST => libc::EEXIST,
            Errno::EISDIR => libc::EISDIR,
            Errno::ENOENT => libc::ENOENT,
            Errno::ENOMEM => libc::ENOMEM,
            Errno::ENOSPC => libc::ENOSPC,
            Errno::EIO => libc::EIO,
            Errno::ENOTEMPTY => libc::ENOTEMPTY,
            Errno::ENOSYS => libc::ENOSYS,
            Errno::EROFS => libc::EROFS,
            Errno::EBUSY => libc::EBUSY,
            Errno::EAGAIN => libc::EAGAIN,
            Errno::EISCONN => libc::EISCONN,
            Errno::E2BIG => libc::E2BIG,
            Errno::EPERM => libc::EPERM,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Errno::ALL {
            assert_eq!(Errno::from_name(e.as_str()), Some(e));
        }
        assert_eq!(Errno::from_name("EWHATEVER"), None);
    }

    #[test]
    fn table_order_matches_xs_wire_h() {
        let names: Vec<&str> = Errno::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names[0], "EINVAL");
        assert_eq!(names[4], "ENOENT");
        assert_eq!(names[12], "EAGAIN");
        assert_eq!(names[14], "E2BIG");
    }
}
