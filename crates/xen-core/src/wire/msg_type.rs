//! Message types of `enum xsd_sockmsg_type`.

/// A XenStore message type. Values not listed here are carried as raw `u32`
/// in [`super::Message`] and answered with ENOSYS by the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// Daemon control commands (formerly DEBUG). Privileged.
    Control = 0,
    /// List a node's children.
    Directory = 1,
    /// Read a node's value.
    Read = 2,
    /// Read a node's permissions.
    GetPerms = 3,
    /// Register a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Start a transaction.
    TransactionStart = 6,
    /// Commit or abort a transaction.
    TransactionEnd = 7,
    /// Introduce a domain. Privileged.
    Introduce = 8,
    /// Release a domain. Privileged.
    Release = 9,
    /// Path of a domain's home directory.
    GetDomainPath = 10,
    /// Write a node's value.
    Write = 11,
    /// Create a node.
    Mkdir = 12,
    /// Remove a node and its subtree.
    Rm = 13,
    /// Set a node's permissions.
    SetPerms = 14,
    /// Watch event (daemon to client only).
    WatchEvent = 15,
    /// Error reply (daemon to client only).
    Error = 16,
    /// Whether a domain is introduced. Privileged.
    IsDomainIntroduced = 17,
    /// Re-arm @releaseDomain for a domain. Privileged.
    Resume = 18,
    /// Let a domain act for another. Privileged.
    SetTarget = 19,
    /// Removed from the protocol (was RESTRICT); always invalid.
    Restrict = 20,
    /// Drop all watches and transactions of the caller.
    ResetWatches = 21,
    /// Part of a long children list.
    DirectoryPart = 22,
    /// Ring features of a domain.
    GetFeature = 23,
    /// Set ring features of a domain. Privileged.
    SetFeature = 24,
    /// Read a quota. Privileged.
    GetQuota = 25,
    /// Set a quota. Privileged.
    SetQuota = 26,
    /// Guaranteed invalid.
    Invalid = 0xffff,
}

impl MsgType {
    /// Every defined type.
    pub const ALL: [MsgType; 28] = [
        MsgType::Control,
        MsgType::Directory,
        MsgType::Read,
        MsgType::GetPerms,
        MsgType::Watch,
        MsgType::Unwatch,
        MsgType::TransactionStart,
        MsgType::TransactionEnd,
        MsgType::Introduce,
        MsgType::Release,
        MsgType::GetDomainPath,
        MsgType::Write,
        MsgType::Mkdir,
        MsgType::Rm,
        MsgType::SetPerms,
        MsgType::WatchEvent,
        MsgType::Error,
        MsgType::IsDomainIntroduced,
        MsgType::Resume,
        MsgType::SetTarget,
        MsgType::Restrict,
        MsgType::ResetWatches,
        MsgType::DirectoryPart,
        MsgType::GetFeature,
        MsgType::SetFeature,
        MsgType::GetQuota,
        MsgType::SetQuota,
        MsgType::Invalid,
    ];

    /// The type with this wire value, if any.
    pub fn from_u32(v: u32) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| *t as u32 == v)
    }

    /// The protocol's name for the type (`XS_` prefix left out).
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Control => "CONTROL",
            MsgType::Directory => "DIRECTORY",
            MsgType::Read => "READ",
            MsgType::GetPerms => "GET_PERMS",
            MsgType::Watch => "WATCH",
            MsgType::Unwatch => "UNWATCH",
            MsgType::TransactionStart => "TRANSACTION_START",
            MsgType::TransactionEnd => "TRANSACTION_END",
            MsgType::Introduce => "INTRODUCE",
            MsgType::Release => "RELEASE",
            MsgType::GetDomainPath => "GET_DOMAIN_PATH",
            MsgType::Write => "WRITE",
            MsgType::Mkdir => "MKDIR",
            MsgType::Rm => "RM",
            MsgType::SetPerms => "SET_PERMS",
            MsgType::WatchEvent => "WATCH_EVENT",
            MsgType::Error => "ERROR",
            MsgType::IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            MsgType::Resume => "RESUME",
            MsgType::SetTarget => "SET_TARGET",
            MsgType::Restrict => "RESTRICT",
            MsgType::ResetWatches => "RESET_WATCHES",
            MsgType::DirectoryPart => "DIRECTORY_PART",
            MsgType::GetFeature => "GET_FEATURE",
            MsgType::SetFeature => "SET_FEATURE",
            MsgType::GetQuota => "GET_QUOTA",
            MsgType::SetQuota => "SET_QUOTA",
            MsgType::Invalid => "INVALID",
        }
    }

    /// Requests only the privileged domain (dom0) may send.
    pub fn is_privileged(self) -> bool {
        matches!(
            self,
            MsgType::Control
                | MsgType::Introduce
                | MsgType::Release
                | MsgType::IsDomainIntroduced
                | MsgType::Resume
                | MsgType::SetTarget
                | MsgType::SetFeature
                | MsgType::GetQuota
                | MsgType::SetQuota
        )
    }

    /// Requests that operate inside the transaction named by the header's
    /// `tx_id`; every other type ignores it.
    pub fn uses_transaction(self) -> bool {
        matches!(
            self,
            MsgType::Directory
                | MsgType::DirectoryPart
                | MsgType::Read
                | MsgType::GetPerms
                | MsgType::Write
                | MsgType::Mkdir
                | MsgType::Rm
                | MsgType::SetPerms
                | MsgType::TransactionEnd
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_xs_wire_h() {
        assert_eq!(MsgType::Control as u32, 0);
        assert_eq!(MsgType::SetPerms as u32, 14);
        assert_eq!(MsgType::WatchEvent as u32, 15);
        assert_eq!(MsgType::Error as u32, 16);
        assert_eq!(MsgType::SetTarget as u32, 19);
        assert_eq!(MsgType::ResetWatches as u32, 21);
        assert_eq!(MsgType::DirectoryPart as u32, 22);
        assert_eq!(MsgType::SetQuota as u32, 26);
        assert_eq!(MsgType::from_u32(0xffff), Some(MsgType::Invalid));
        assert_eq!(MsgType::from_u32(27), None);
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u32(t as u32), Some(t));
        }
    }
}
