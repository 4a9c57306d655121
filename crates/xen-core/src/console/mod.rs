//! The PV console: a backend serving one guest's console page (what
//! xenconsoled does for each domain), and a simulated guest side for tests,
//! demos and benchmarks.
//!
//! - [`ConsoleBackend`]: maps the guest's page, binds its event channel and
//!   serves it on its own thread: output to a sink (and optionally a
//!   pseudo-terminal), input from the caller or the pseudo-terminal, with
//!   xenconsoled's per-console rate limit.
//! - [`SimConsoleFrontend`]: the guest's end on the simulated hypervisor,
//!   either a console device (its page granted like any other) or the
//!   primary console (its page in the reserved entry
//!   [`GNTTAB_RESERVED_CONSOLE`], as the domain builder places it).
//!
//! Each console has its own thread, event-channel handle and mapping, so a
//! guest that misbehaves (bogus indexes, event storms) is contained to its
//! own console: bogus indexes are clamped and counted, storms are held back
//! by the rate limit.

mod backend;
mod frontend;
mod pty;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use self::backend::ConsoleBackend;
pub use self::frontend::SimConsoleFrontend;
use crate::platform::{DomId, EvtchnError, GrantError, GrantRef, Port};
use crate::ring::{BogusIndexes, RingError};

/// The grant entry through which a guest's primary console page is reached
/// (Xen's `GNTTAB_RESERVED_CONSOLE`): the domain builder fills it for the
/// console backend, so the backend maps reference 0 of the guest instead of
/// the frame number the toolstack writes to `console/ring-ref`.
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = 0;

/// How a console backend behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Events served per window; past that, the guest's event is held
    /// (left masked) until the window ends. xenconsoled allows 30.
    pub rate_limit_events: u32,
    /// Length of a rate-limit window. xenconsoled uses 200 ms.
    pub rate_limit_window: Duration,
    /// Also serve the console on a pseudo-terminal.
    pub pty: bool,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            rate_limit_events: 30,
            rate_limit_window: Duration::from_millis(200),
            pty: false,
        }
    }
}

/// What a backend reports to its sink, on its own thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Bytes the guest wrote, in order.
    Output(Vec<u8>),
    /// The guest left bogus indexes on a ring; the pass was clamped to the
    /// buffer (output) or refused (input).
    BogusIndexes(BogusIndexes),
    /// The event channel failed; the backend no longer serves the guest.
    Failed(EvtchnError),
}

/// Counters of a console backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes of guest output consumed.
    pub bytes_out: u64,
    /// Bytes of input written into the guest's ring.
    pub bytes_in: u64,
    /// Events received from the guest.
    pub events: u64,
    /// Passes that found bogus indexes.
    pub clamped: u64,
    /// Events held back by the rate limit.
    pub rate_limited: u64,
    /// Notifications sent to the guest.
    pub notifications: u64,
    /// Bytes of output the pseudo-terminal could not take (nobody reading).
    pub pty_dropped: u64,
}

/// The live counters behind [`ConsoleStats`], shared with the backend's
/// thread. Relaxed: each counter is independent and only read for reports.
#[derive(Default)]
struct Counters {
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    events: AtomicU64,
    clamped: AtomicU64,
    rate_limited: AtomicU64,
    notifications: AtomicU64,
    pty_dropped: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ConsoleStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsoleStats {
            bytes_out: get(&self.bytes_out),
            bytes_in: get(&self.bytes_in),
            events: get(&self.events),
            clamped: get(&self.clamped),
            rate_limited: get(&self.rate_limited),
            notifications: get(&self.notifications),
            pty_dropped: get(&self.pty_dropped),
        }
    }
}

/// Why a console could not be set up or torn down.
#[derive(Debug)]
pub enum ConsoleError {
    /// Mapping the guest's console page failed.
    MapRing {
        /// The guest.
        frontend: DomId,
        /// The page's grant reference.
        ring_ref: GrantRef,
        /// What the grant mapper said (a GNTST status on Xen).
        error: GrantError,
    },
    /// The mapped page cannot hold a console ring.
    Ring(RingError),
    /// Binding to the guest's event channel failed.
    BindEventChannel {
        /// The guest.
        frontend: DomId,
        /// The guest's port.
        remote_port: Port,
        /// What the event-channel device said (an errno).
        error: EvtchnError,
    },
    /// Another event-channel operation failed.
    EventChannel(EvtchnError),
    /// A grant-table operation of the guest side failed (for example ending
    /// access while the backend still maps the page).
    Grant(GrantError),
    /// The guest has no free page for its console.
    NoGuestMemory,
    /// The pseudo-terminal could not be set up.
    Pty(io::Error),
    /// The event loop would not take the console (it has ended).
    EventLoop(io::Error),
}

impl ConsoleError {
    /// A short code for scripts: the GNTST name for grant failures, the
    /// errno name otherwise.
    pub fn code(&self) -> String {
        match self {
            ConsoleError::MapRing { error, .. } | ConsoleError::Grant(error) => error.code(),
            ConsoleError::Ring(RingError::BogusIndexes(_)) => "EPROTO".into(),
            ConsoleError::Ring(_) => "EINVAL".into(),
            ConsoleError::BindEventChannel { error, .. } | ConsoleError::EventChannel(error) => {
                error.code().to_owned()
            }
            ConsoleError::NoGuestMemory => "ENOMEM".into(),
            ConsoleError::Pty(e) | ConsoleError::EventLoop(e) => {
                crate::platform::io_error_name(e).into()
            }
        }
    }
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::MapRing {
                frontend,
                ring_ref,
                error,
            } => write!(
                f,
                "mapping console page {ring_ref} of domain {frontend} failed: {error}"
            ),
            ConsoleError::Ring(e) => write!(f, "console page: {e}"),
            ConsoleError::BindEventChannel {
                frontend,
                remote_port,
                error,
            } => write!(
                f,
                "binding console event channel {remote_port} of domain {frontend} failed: {error}"
            ),
            ConsoleError::EventChannel(e) => write!(f, "console event channel: {e}"),
            ConsoleError::Grant(e) => write!(f, "console grant: {e}"),
            ConsoleError::NoGuestMemory => f.write_str("no free guest page for the console"),
            ConsoleError::Pty(e) => write!(f, "console pseudo-terminal: {e}"),
            ConsoleError::EventLoop(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for ConsoleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConsoleError::MapRing { error, .. } | ConsoleError::Grant(error) => Some(error),
            ConsoleError::BindEventChannel { error, .. } | ConsoleError::EventChannel(error) => {
                Some(error)
            }
            ConsoleError::Ring(e) => Some(e),
            ConsoleError::Pty(e) | ConsoleError::EventLoop(e) => Some(e),
            ConsoleError::NoGuestMemory => None,
        }
    }
}
