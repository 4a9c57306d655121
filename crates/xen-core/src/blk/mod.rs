//! The block backend (vbd): blkif requests from a frontend's shared ring,
//! validated and served from a [`storage::Storage`].

mod backend;
pub mod bench;
pub mod frontend;
mod queue;
pub mod request;
mod stats;
pub mod storage;

pub use backend::{BlkError, BlkQueue, RingConfig, MAX_RING_PAGE_ORDER};
pub use queue::QueueEvent;
pub use stats::BlkStats;

#[cfg(test)]
mod tests;
