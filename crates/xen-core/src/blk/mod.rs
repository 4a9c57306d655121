//! The block backend (vbd): blkif requests from a frontend's shared ring,
//! validated and served from a [`storage::Storage`].

mod backend;
pub mod bench;
pub mod frontend;
pub mod journal;
mod queue;
pub mod request;
mod stats;
pub mod storage;
mod transfer;

pub use backend::{BlkError, BlkQueue, Restart, RingConfig, MAX_RING_PAGE_ORDER};
pub use transfer::MAX_PERSISTENT_GRANTS;

/// An empty vector with `v`'s buffer, for elements that borrow something
/// else (grant-copy descriptors, iovecs): `v` is emptied first, so nothing
/// of the old borrows survives, and collecting in place keeps the
/// allocation when the element types have one layout (otherwise it merely
/// allocates). A data path hands one such buffer from request to request.
pub(crate) fn reuse_vec<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}
pub use queue::QueueEvent;
pub use stats::{latency_bound_us, BlkStats, Latency, LATENCY_BUCKETS};

#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod reuse_tests {
    use super::reuse_vec;
    use crate::platform::{CopySegment, CopySide};

    #[test]
    fn a_reused_vector_keeps_its_buffer_and_nothing_else() {
        let a = [1u8; 8];
        let mut b = [0u8; 8];
        let mut v: Vec<CopySegment<'_>> = Vec::with_capacity(16);
        v.push(CopySegment::new(
            CopySide::From(&a),
            CopySide::Into(&mut b),
            8,
        ));
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let v: Vec<CopySegment<'static>> = reuse_vec(v);
        assert!(v.is_empty());
        assert_eq!((v.as_ptr() as usize, v.capacity()), (ptr, cap));
    }
}
