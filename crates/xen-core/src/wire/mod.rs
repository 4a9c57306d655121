//! The XenStore wire protocol (`xen/include/public/io/xs_wire.h`,
//! `docs/misc/xenstore.txt`): message types, error names, the 16-byte header
//! and payload framing. One codec serves the daemon and the client.

mod errno;
mod frame;
mod msg_type;
pub mod payload;
pub mod perms;

pub use errno::Errno;
pub use frame::{FrameDecoder, FrameError, Message, HEADER_LEN, PAYLOAD_MAX};
pub use msg_type::MsgType;

/// Longest absolute path a client may name (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path, and the path-length quota (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// Server feature bits advertised in the ring page's `server_features`.
pub mod features {
    /// The ring can be reconnected.
    pub const RECONNECTION: u32 = 1;
    /// The ring page has an `error` field.
    pub const ERROR: u32 = 2;
    /// WATCH takes an optional depth.
    pub const WATCH_DEPTH: u32 = 4;
    /// Permission entries may name DOMID_ANY.
    pub const DOMID_ANY: u32 = 8;
}
