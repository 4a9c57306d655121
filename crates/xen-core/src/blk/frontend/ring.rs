//! The frontend's ring in the layout it chose, and where its pages come
//! from.

use super::*;

/// The ring, in the layout the frontend chose.
pub(super) enum Ring {
    X86_64(FrontRing<'static, BlkifX86_64>),
    X86_32(FrontRing<'static, BlkifX86_32>),
}

/// Runs `$body` on the ring with `$abi` naming its protocol type.
macro_rules! on_ring {
    ($ring:expr, |$r:ident, $abi:ident| $body:expr) => {
        match $ring {
            Ring::X86_64($r) => {
                #[allow(dead_code)]
                type $abi = BlkifX86_64;
                $body
            }
            Ring::X86_32($r) => {
                #[allow(dead_code)]
                type $abi = BlkifX86_32;
                $body
            }
        }
    };
}

impl Ring {
    pub(super) fn size(&self) -> u32 {
        on_ring!(self, |r, A| r.size())
    }

    /// Writes `bytes` (zero-padded or cut to the request size) into the
    /// next slot; returns its ring index and the request a backend decodes.
    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(u32, Request), SharedRingError> {
        on_ring!(self, |r, A| {
            let mut slot = <A as RingProtocol>::Request::zeroed();
            let n = bytes.len().min(slot.as_ref().len());
            slot.as_mut()[..n].copy_from_slice(&bytes[..n]);
            let at = r.req_prod_pvt();
            r.write_request(&slot)?;
            Ok((at, Request::decode::<A>(&slot)))
        })
    }

    pub(super) fn encode(&self, req: &Request) -> Vec<u8> {
        on_ring!(self, |_r, A| req.encode::<A>().as_ref().to_vec())
    }

    pub(super) fn push(&mut self) -> Result<bool, SharedRingError> {
        on_ring!(self, |r, A| r.push_requests_and_check_notify())
    }

    /// Copies out every published response (`rsp_prod` read once).
    pub(super) fn responses(&mut self, out: &mut Vec<Response>) -> Result<(), SharedRingError> {
        on_ring!(self, |r, A| {
            r.unconsumed_responses()?;
            while let Some(raw) = r.copy_response()? {
                out.push(Response::decode::<A>(&raw));
            }
            Ok(())
        })
    }

    pub(super) fn final_check(&mut self) -> Result<bool, SharedRingError> {
        on_ring!(self, |r, A| r.final_check_for_responses())
    }

    /// Offset and size of the request in the slot of ring index `index`.
    pub(super) fn slot(&self, index: u32) -> (usize, usize) {
        on_ring!(self, |r, A| (
            HEADER_SIZE + (index & (r.size() - 1)) as usize * A::SLOT_SIZE,
            <A as RingProtocol>::Request::LEN
        ))
    }
}

/// The operation a request's response must echo.
pub(super) fn echoed(req: &Request) -> u8 {
    match req {
        Request::Indirect(r) => r.indirect_op,
        other => other.operation(),
    }
}

/// A view of `view` that does not borrow the grant table it came from, so
/// the ring built on it can live beside the `Arc` that keeps it mapped.
/// (`FrontRing` has no `state`/`resume` pair as `BackRing` does, which
/// would let each call borrow the memory afresh instead.)
pub(super) fn detached(view: SharedMem<'_>, _owner: &Arc<SimGntTable>) -> SharedMem<'static> {
    // SAFETY: `view` lies in the guest-memory mapping of the DomainMem
    // behind `_owner`, which is unmapped only when that DomainMem drops.
    // SimBlkFront keeps the Arc (`gnttab`) as long as the ring built on
    // this view, and never lends the view out beyond a borrow of itself.
    unsafe { SharedMem::new(view.as_ptr(), view.len()) }
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
