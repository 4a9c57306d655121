//! The network backend (vif): packets from a frontend's transmit ring,
//! judged and copied out of the guest, handed to an uplink; packets for
//! the guest copied into the buffers it posted on its receive ring
//! (`feature-rx-copy`: the only receive mode Linux netfront still uses).
//!
//! - [`packet`]: a packet as it travels between vifs, with its offload
//!   metadata (checksum blank or validated, GSO).
//! - [`tx`]: judging the slots of one transmitted packet, as netback does,
//!   on private copies of the slots.
//! - [`checksum`]: filling a blank TCP/UDP checksum where the destination
//!   cannot take it blank; [`gso`]: cutting a GSO packet into segments
//!   for one that takes no GSO.
//! - [`vif`]: a vif queue on the platform's event loop (both rings, one
//!   or two event channels) and its handle.
//! - [`switch`]: a learning switch between vifs in the same process, the
//!   pure-Rust path packets take when nothing else is asked for.
//! - [`frontend`]: the guest's end on the simulated hypervisor, for tests,
//!   the demo and the benchmark.

pub mod checksum;
pub mod frontend;
pub mod gso;
pub mod packet;
mod pool;
mod queue;
pub mod restart;
mod stats;
pub mod switch;
pub mod tap;
pub mod tx;
mod vif;

pub use packet::{Gso, GsoKind, Offload, Packet, ETH_HLEN};
pub use restart::VifRestart;
pub use stats::NetStats;
pub use tap::{TapDevice, TapError, TapLink, TapOptions, TapStats};
pub use vif::{
    NetError, Uplink, VifConfig, VifEvent, VifFeatures, VifQueue, VifReceiver, DEFAULT_RX_QUEUE,
};

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;
