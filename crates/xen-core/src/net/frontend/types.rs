//! The simulated netfront's options, counters and errors.

use super::*;

/// How a frontend is set up: what it would write to XenStore as
/// `feature-sg`, `feature-gso-tcpv4`/`-tcpv6` and `event-channel-tx`/`-rx`,
/// and how many receive buffers it keeps posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetFrontOptions {
    /// `feature-sg`: a packet may span several slots, one page per
    /// fragment of up to 4096 bytes, both ways. Without it, a packet larger
    /// than a page is refused, and a received one is a backend fault.
    pub sg: bool,
    /// `feature-gso-tcpv4`/`-tcpv6`: a GSO packet carries its MSS in an
    /// extra-info slot, both ways. Without it, a GSO packet is refused, and
    /// a received GSO extra is a backend fault.
    pub gso: bool,
    /// Two ports, one per ring (`event-channel-tx`, `event-channel-rx`),
    /// instead of one (`event-channel`).
    pub split_event_channels: bool,
    /// Receive buffers kept posted; `None`: as many as the receive ring has
    /// slots (more are cut to that).
    pub rx_buffers: Option<u32>,
    /// How long a blocking call waits for the backend before
    /// [`NetFrontError::Timeout`]: a guard against hangs, not a delay.
    pub timeout: Duration,
}

impl Default for NetFrontOptions {
    fn default() -> NetFrontOptions {
        NetFrontOptions {
            sg: true,
            gso: true,
            split_event_channels: false,
            rx_buffers: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a frontend, as a guest's interface statistics count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFrontStats {
    /// Packets written to the transmit ring (counted when sent, as Linux
    /// netfront counts them).
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets whose answer was `NETIF_RSP_ERROR` or `NETIF_RSP_DROPPED`
    /// on one of their data slots.
    pub tx_errors: u64,
    /// Packets received whole.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets dropped because a response of theirs carried a status of 0
    /// or less.
    pub rx_errors: u64,
}

/// Why a frontend call failed.
#[derive(Debug)]
pub enum NetFrontError {
    /// A packet the negotiated features do not allow (too large without
    /// `sg`, GSO without `gso`, empty, over 64 KiB), or a bad argument to a
    /// hostile call.
    BadArgument(&'static str),
    /// The guest has no free page left.
    NoGuestMemory,
    /// A grant-table operation failed.
    Grant(GrantError),
    /// An event-channel operation failed.
    EventChannel(EvtchnError),
    /// The backend broke the protocol (a bogus ring index, an unknown id,
    /// a status or a chain no backend may write); the frontend refuses all
    /// work from then on, as Linux netfront disables the device.
    Backend(String),
    /// The backend did not answer within the timeout.
    Timeout,
    /// The frontend was closed or abandoned.
    Closed,
}

impl fmt::Display for NetFrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NetFrontError as E;
        match self {
            E::BadArgument(why) => write!(f, "bad argument: {why}"),
            E::NoGuestMemory => write!(f, "no free guest page"),
            E::Grant(e) => write!(f, "grant: {e}"),
            E::EventChannel(e) => write!(f, "event channel: {e}"),
            E::Backend(fault) => write!(f, "the backend broke the protocol: {fault}"),
            E::Timeout => write!(f, "the backend did not answer in time"),
            E::Closed => write!(f, "the frontend is closed"),
        }
    }
}

impl std::error::Error for NetFrontError {}
