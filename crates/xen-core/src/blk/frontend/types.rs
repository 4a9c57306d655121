//! The simulated blkfront's options, requests, counters and errors.

use super::*;

/// How a frontend is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontOptions {
    /// The ring spans 2^order pages (0..=4).
    pub ring_page_order: u32,
    /// The slot layout (`protocol` in XenStore).
    pub protocol: BlkifProtocol,
    /// The backend's `feature-max-indirect-segments`: requests of more
    /// than 11 segments go indirect, up to this many (and 4096). `None`:
    /// no indirect support, so at most 11 segments per request.
    pub max_indirect_segments: Option<u32>,
    /// Requests in flight at most; `None`: as many as the ring has slots.
    pub queue_depth: Option<u32>,
    /// The `handle` of requests.
    pub handle: u16,
    /// How long a blocking call waits for the backend before
    /// [`BlkFrontError::Timeout`]: a guard against hangs, not a delay.
    pub timeout: Duration,
    /// Persistent grants (`feature-persistent` negotiated): data and
    /// indirect pages are granted once, writable, and reused from a pool;
    /// data is copied in and out of them, as blkfront does.
    pub persistent: bool,
}

impl Default for FrontOptions {
    fn default() -> FrontOptions {
        FrontOptions {
            ring_page_order: 0,
            protocol: BlkifProtocol::native(),
            max_indirect_segments: None,
            queue_depth: None,
            handle: 0,
            timeout: Duration::from_secs(30),
            persistent: false,
        }
    }
}

/// A request's tag: the `id` it carries on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One request to issue. Transfers are whole sectors, and `offset`
/// (whole sectors, below 4096) places the data that far into its first
/// page: the first segment starts at `first_sect = offset / 512`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkOp {
    /// `Read(sector, len, offset)`: `BLKIF_OP_READ` of `len` bytes.
    Read(u64, usize, usize),
    /// `Write(sector, data, offset)`: `BLKIF_OP_WRITE`.
    Write(u64, Vec<u8>, usize),
    /// `BLKIF_OP_FLUSH_DISKCACHE`, without segments.
    Flush,
    /// `Discard(sector, nr_sectors, secure)`: `BLKIF_OP_DISCARD`.
    Discard(u64, u64, bool),
    /// `Raw(operation, sector, segments)`: any operation but discard and
    /// indirect, which the response must echo, with the segments verbatim
    /// (any grant reference, any sectors): in the slot up to 11, else in
    /// indirect pages whatever the backend advertised.
    Raw(u8, u64, Vec<Segment>),
}

/// A request's outcome: the bytes read (empty for other operations).
pub type IoResult = Result<Vec<u8>, BlkFrontError>;

/// Counters of a frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// Requests written to the ring.
    pub requests: u64,
    /// Responses taken from the ring.
    pub responses: u64,
    /// Events sent to the backend.
    pub notifications: u64,
    /// Times the frontend slept on its port.
    pub waits: u64,
}

/// A protocol violation by the backend, after which the frontend refuses
/// all work (as Linux blkfront puts the device in its error state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendFault {
    /// A bogus response producer index.
    Ring(SharedRingError),
    /// A response whose id names no request in flight.
    UnknownId(u64),
    /// A response that does not echo its request's operation (for an
    /// indirect request, its `indirect_op`): (id, sent, answered).
    WrongOperation(u64, u8, u8),
}

/// Why a frontend call or a request failed.
#[derive(Debug)]
pub enum BlkFrontError {
    /// The backend answered `BLKIF_RSP_ERROR`.
    IoError(RequestId),
    /// The backend answered `BLKIF_RSP_EOPNOTSUPP`.
    NotSupported(RequestId),
    /// The backend answered a status blkif does not define.
    BadStatus(RequestId, i16),
    /// The backend answered while still mapping this page of the request,
    /// whose grant therefore could not end; the page is kept until close.
    GrantStillMapped(RequestId, GrantRef),
    /// The backend broke the protocol; the frontend is unusable.
    Backend(BackendFault),
    /// A misaligned or empty transfer, or bad options.
    BadArgument(&'static str),
    /// More segments than one request can carry: (needed, limit).
    TooManySegments(usize, usize),
    /// No request of that id is in flight or completed.
    UnknownRequest(RequestId),
    /// Nothing is in flight to wait for.
    Idle,
    /// The backend did not answer within the timeout.
    Timeout,
    /// The frontend was closed or abandoned.
    Closed,
    /// The guest has no free page left.
    NoGuestMemory,
    /// A grant-table operation failed.
    Grant(GrantError),
    /// An event-channel operation failed.
    EventChannel(EvtchnError),
}

impl fmt::Display for BlkFrontError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BlkFrontError as E;
        match self {
            E::IoError(id) => write!(f, "request {:#x}: BLKIF_RSP_ERROR", id.0),
            E::NotSupported(id) => write!(f, "request {:#x}: BLKIF_RSP_EOPNOTSUPP", id.0),
            E::BadStatus(id, s) => write!(f, "request {:#x}: unknown status {s}", id.0),
            E::GrantStillMapped(id, g) => write!(f, "request {:#x}: grant {g} in use", id.0),
            E::Backend(fault) => write!(f, "the backend broke the protocol: {fault:?}"),
            E::TooManySegments(n, max) => write!(f, "{n} segments, at most {max}"),
            E::Grant(e) => write!(f, "grant: {e}"),
            E::EventChannel(e) => write!(f, "event channel: {e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for BlkFrontError {}
