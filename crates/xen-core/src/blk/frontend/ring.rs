//! The frontend's ring in the layout it chose, and where its pages come
//! from.

use super::*;

/// The ring, in the layout the frontend chose: its private indexes, kept
/// between calls; each call resumes it over the ring's pages, borrowed
/// afresh from the guest's memory.
pub(super) struct Ring {
    protocol: BlkifProtocol,
    size: u32,
    state: FrontRingState,
}

/// Runs `$body` on the ring `$ring` resumed over `$mem`, with `$abi` naming
/// its protocol type, and keeps the ring's state afterwards (an error
/// included: a broken ring stays broken).
macro_rules! on_ring {
    ($ring:expr, $mem:expr, |$r:ident, $abi:ident| $body:expr) => {
        match $ring.protocol {
            BlkifProtocol::X86_64 => {
                type $abi = BlkifX86_64;
                on_ring!(@run $ring, $mem, $r, $abi, $body)
            }
            BlkifProtocol::X86_32 => {
                type $abi = BlkifX86_32;
                on_ring!(@run $ring, $mem, $r, $abi, $body)
            }
        }
    };
    (@run $ring:expr, $mem:expr, $r:ident, $abi:ident, $body:expr) => {{
        let mut $r = FrontRing::<$abi>::resume($mem, $ring.state)?;
        #[allow(clippy::redundant_closure_call)]
        let out = (|| $body)();
        $ring.state = $r.state();
        out
    }};
}

impl Ring {
    /// Initialises the shared ring in `mem` (`FRONT_RING_INIT`).
    pub(super) fn init(
        protocol: BlkifProtocol,
        mem: SharedMem<'_>,
    ) -> Result<Ring, SharedRingError> {
        let (size, state) = match protocol {
            BlkifProtocol::X86_64 => {
                let r = FrontRing::<BlkifX86_64>::init(mem)?;
                (r.size(), r.state())
            }
            BlkifProtocol::X86_32 => {
                let r = FrontRing::<BlkifX86_32>::init(mem)?;
                (r.size(), r.state())
            }
        };
        Ok(Ring {
            protocol,
            size,
            state,
        })
    }

    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// Writes `bytes` (zero-padded or cut to the request size) into the
    /// next slot; returns its ring index and the request a backend decodes.
    pub(super) fn write(
        &mut self,
        mem: SharedMem<'_>,
        bytes: &[u8],
    ) -> Result<(u32, Request), SharedRingError> {
        on_ring!(self, mem, |r, A| {
            let mut slot = <A as RingProtocol>::Request::zeroed();
            let n = bytes.len().min(slot.as_ref().len());
            slot.as_mut()[..n].copy_from_slice(&bytes[..n]);
            let at = r.req_prod_pvt();
            r.write_request(&slot)?;
            Ok((at, Request::decode::<A>(&slot)))
        })
    }

    pub(super) fn encode(&self, req: &Request) -> Vec<u8> {
        match self.protocol {
            BlkifProtocol::X86_64 => req.encode::<BlkifX86_64>().as_ref().to_vec(),
            BlkifProtocol::X86_32 => req.encode::<BlkifX86_32>().as_ref().to_vec(),
        }
    }

    pub(super) fn push(&mut self, mem: SharedMem<'_>) -> Result<bool, SharedRingError> {
        on_ring!(self, mem, |r, A| r.push_requests_and_check_notify())
    }

    /// Copies out every published response (`rsp_prod` read once).
    pub(super) fn responses(
        &mut self,
        mem: SharedMem<'_>,
        out: &mut Vec<Response>,
    ) -> Result<(), SharedRingError> {
        on_ring!(self, mem, |r, A| {
            r.unconsumed_responses()?;
            while let Some(raw) = r.copy_response()? {
                out.push(Response::decode::<A>(&raw));
            }
            Ok(())
        })
    }

    pub(super) fn final_check(&mut self, mem: SharedMem<'_>) -> Result<bool, SharedRingError> {
        on_ring!(self, mem, |r, A| r.final_check_for_responses())
    }

    /// Offset and size of the request in the slot of ring index `index`.
    pub(super) fn slot(&self, index: u32) -> (usize, usize) {
        let (slot, len) = match self.protocol {
            BlkifProtocol::X86_64 => (
                BlkifX86_64::SLOT_SIZE,
                <BlkifX86_64 as RingProtocol>::Request::LEN,
            ),
            BlkifProtocol::X86_32 => (
                BlkifX86_32::SLOT_SIZE,
                <BlkifX86_32 as RingProtocol>::Request::LEN,
            ),
        };
        (HEADER_SIZE + (index & (self.size - 1)) as usize * slot, len)
    }
}

/// The operation a request's response must echo.
pub(super) fn echoed(req: &Request) -> u8 {
    match req {
        Request::Indirect(r) => r.indirect_op,
        other => other.operation(),
    }
}

/// The ring's pages: `pages` frames from `first` in the guest's memory.
pub(super) fn ring_view(gnttab: &SimGntTable, first: u32, pages: usize) -> Option<SharedMem<'_>> {
    let base = first as usize * PAGE_SIZE;
    gnttab.memory().sub(base, pages * PAGE_SIZE).ok()
}

/// Takes `n` contiguous free frames (a multi-page ring is one area, as
/// blkfront's `__get_free_pages` gives), putting the others back.
pub(super) fn alloc_contiguous(gt: &SimGntTable, n: u32) -> Option<u32> {
    let mut taken = BTreeSet::new();
    let start = loop {
        let Some(f) = gt.alloc_page() else {
            taken.iter().for_each(|f| gt.free_page(*f));
            return None;
        };
        taken.insert(f);
        let lo = (0..f).rev().take_while(|x| taken.contains(x)).last();
        let lo = lo.unwrap_or(f);
        if (lo..lo + n).all(|x| taken.contains(&x)) {
            break lo;
        }
    };
    let others = taken
        .into_iter()
        .filter(|f| !(start..start + n).contains(f));
    others.for_each(|f| gt.free_page(f));
    Some(start)
}
