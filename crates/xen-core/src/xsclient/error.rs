//! Client errors: XenStore's own, and what can go wrong on the way.

use std::fmt;
use std::sync::Arc;

use crate::wire::Errno;

/// Why a client request failed.
#[derive(Clone, Debug)]
pub enum XsError {
    /// The daemon answered with an error.
    Errno(Errno),
    /// The connection was lost with the request in flight: it may or may not
    /// have taken effect.
    ConnectionLost,
    /// The client was closed.
    Closed,
    /// The daemon broke the protocol.
    Protocol(String),
    /// Connecting failed.
    Connect(Arc<std::io::Error>),
}

impl XsError {
    /// The error's code: the errno name XenStore uses, or `ECONNRESET`,
    /// `ESHUTDOWN`, `EPROTO`, `ECONNREFUSED` for the client's own failures.
    pub fn code(&self) -> &'static str {
        match self {
            XsError::Errno(e) => e.as_str(),
            XsError::ConnectionLost => "ECONNRESET",
            XsError::Closed => "ESHUTDOWN",
            XsError::Protocol(_) => "EPROTO",
            XsError::Connect(_) => "ECONNREFUSED",
        }
    }

    /// The XenStore errno, if the daemon gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            XsError::Errno(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Errno(e) => write!(f, "{e}"),
            XsError::ConnectionLost => {
                f.write_str("connection to XenStore lost during the request")
            }
            XsError::Closed => f.write_str("XenStore client closed"),
            XsError::Protocol(m) => write!(f, "XenStore protocol error: {m}"),
            XsError::Connect(e) => write!(f, "cannot connect to XenStore: {e}"),
        }
    }
}

impl std::error::Error for XsError {}

impl From<Errno> for XsError {
    fn from(e: Errno) -> XsError {
        XsError::Errno(e)
    }
}
