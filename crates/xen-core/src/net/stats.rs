//! Counters of a vif queue, kept by the data path (relaxed atomics, one
//! writer: the loop's thread) and read by anyone, with netback's names in
//! mind (`tx_packets`, `rx_packets`, `tx_dropped`, `rx_dropped`).

use std::sync::atomic::{AtomicU64, Ordering};

/// What a vif queue has done. "tx" is the guest transmitting (packets off
/// its transmit ring), "rx" the guest receiving, as in the guest's own
/// counters (the opposite of the backend's network device's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets taken off the transmit ring and handed on.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Transmitted packets answered with an error (refused, or a grant
    /// copy failed).
    pub tx_errors: u64,
    /// Packets put into the guest's receive buffers.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets for the guest dropped: no buffers posted for too long (the
    /// queue full), too large for the frontend, or a buffer that could not
    /// be written.
    pub rx_dropped: u64,
    /// Blank checksums filled on the way to a receiver that needs them.
    pub csum_filled: u64,
    /// GSO packets cut into segments for a guest that takes none.
    pub gso_segmented: u64,
    /// Times the frontend was notified.
    pub notifications: u64,
    /// Times a pass stopped at its budget with packets left, so that
    /// other devices on the loop had their turn.
    pub budget_yields: u64,
}

macro_rules! counters {
    ($($name:ident),*) => {
        /// The live counters.
        #[derive(Default, Debug)]
        pub(super) struct Counters {
            $(pub(super) $name: AtomicU64,)*
        }

        impl Counters {
            pub(super) fn snapshot(&self) -> NetStats {
                NetStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters!(
    tx_packets,
    tx_bytes,
    tx_errors,
    rx_packets,
    rx_bytes,
    rx_dropped,
    csum_filled,
    gso_segmented,
    notifications,
    budget_yields
);

/// Adds to a counter (one writer: a relaxed add is enough).
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
