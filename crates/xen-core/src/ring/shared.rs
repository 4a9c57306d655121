//! The request/response ring of Xen's `xen/include/public/io/ring.h`, for
//! both ends: [`BackRing`] takes requests and puts responses, [`FrontRing`]
//! puts requests and takes responses. What a slot holds is described per
//! protocol by a [`RingProtocol`] (see [`super::blkif`] and
//! [`super::netif`]).
//!
//! The shared area (one or more granted pages) starts with a 64-byte header
//! and then holds a power-of-two number of slots, each a union of one
//! request and one response:
//!
//! ```text
//!  0 req_prod   (front publishes requests up to here)
//!  4 req_event  (back wants a notification when req_prod passes this)
//!  8 rsp_prod   (back publishes responses up to here)
//! 12 rsp_event  (front wants a notification when rsp_prod passes this)
//! 16 4 bytes of per-protocol private data, then 44 bytes of padding
//! 64 slot 0, slot 1, ... slot RING_SIZE-1
//! ```
//!
//! The indexes are free-running `u32`s, masked with `RING_SIZE − 1` to find
//! a slot; differences between them are taken with wrapping arithmetic.
//!
//! The peer can change any byte of the area at any time. So, as in
//! [`super::ByteRing`]: each producer index is read once per pass and
//! bounded before use; each slot is copied out of shared memory once into a
//! private array, and only the copy is decoded and validated; our own
//! indexes (`req_cons`, `rsp_prod_pvt` on the back, `req_prod_pvt`,
//! `rsp_cons` on the front) live in private memory and are never read back
//! from the page. A producer index no correct peer could have written marks
//! the ring broken for good (a sticky [`SharedRingError`]); request rings are
//! never clamped, as Linux blkback halts ring processing in that case.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use crate::platform::{OutOfRange, SharedMem};

/// Offset of `req_prod` in the header.
pub const REQ_PROD: usize = 0;
/// Offset of `req_event` in the header.
pub const REQ_EVENT: usize = 4;
/// Offset of `rsp_prod` in the header.
pub const RSP_PROD: usize = 8;
/// Offset of `rsp_event` in the header.
pub const RSP_EVENT: usize = 12;
/// Offset of the 4-byte per-protocol private union (`pvt`).
pub const PVT: usize = 16;
/// Offset of the 44 bytes of padding (`__pad`).
pub const PAD: usize = 20;
/// Size of the header: the offset of slot 0 (`offsetof(sring, ring)`).
pub const HEADER_SIZE: usize = 64;

/// The largest ring this code builds: indexes are compared with wrapping
/// `u32` differences, which needs the ring to be at most half the index
/// space.
pub const MAX_RING_SIZE: u32 = 1 << 31;

/// A private copy of a request or a response: a byte array of exactly the
/// structure's size.
pub trait SlotBytes:
    Copy + fmt::Debug + PartialEq + Eq + AsRef<[u8]> + AsMut<[u8]> + Send + Sync + 'static
{
    /// Size in bytes.
    const LEN: usize;
    /// All zeros.
    fn zeroed() -> Self;
}

impl<const N: usize> SlotBytes for [u8; N] {
    const LEN: usize = N;

    fn zeroed() -> Self {
        [0; N]
    }
}

/// What one protocol's ring slots hold (`DEFINE_RING_TYPES(name, req, rsp)`).
pub trait RingProtocol {
    /// A request as bytes (`sizeof(req)`).
    type Request: SlotBytes;
    /// A response as bytes (`sizeof(rsp)`).
    type Response: SlotBytes;
    /// Size of one slot, the union of a request and a response. The default
    /// is the larger of the two, which is the union's size whenever the
    /// larger structure is also the more strictly aligned one (true of every
    /// Xen protocol); a protocol where it is not must say so here.
    const SLOT_SIZE: usize = max(
        <Self::Request as SlotBytes>::LEN,
        <Self::Response as SlotBytes>::LEN,
    );
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Number of slots in a shared area of `area` bytes with slots of
/// `slot_size` bytes, as `__RING_SIZE` computes it: as many as fit after the
/// header, rounded down to a power of two (0 if not even one fits). Capped
/// at [`MAX_RING_SIZE`].
pub const fn ring_size(area: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || area < HEADER_SIZE {
        return 0;
    }
    let fit = (area - HEADER_SIZE) / slot_size;
    if fit == 0 {
        return 0;
    }
    let pow2 = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    if pow2 >= MAX_RING_SIZE as usize {
        MAX_RING_SIZE
    } else {
        pow2 as u32
    }
}

/// Why a ring operation failed. The first variants say what the peer got
/// wrong and break the ring for good; the others are refusals that leave
/// the ring as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedRingError {
    /// The shared area cannot hold the header and one slot.
    TooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// An index word is misaligned or outside the memory.
    Memory(OutOfRange),
    /// The frontend published a request producer index that no correct
    /// frontend can write: more than a ring ahead of the last response we
    /// published (it would reuse a slot whose response it cannot have
    /// seen; ring.h's `RING_REQUEST_PROD_OVERFLOW`, measured from published
    /// rather than written responses), or behind requests we already
    /// consumed. The ring is broken from then on.
    BogusRequestProducer {
        /// `req_prod` as read from the page.
        req_prod: u32,
        /// Our consumer index.
        req_cons: u32,
        /// The response producer index we last published.
        rsp_prod: u32,
        /// Slots in the ring.
        size: u32,
    },
    /// The backend published a response producer index that no correct
    /// backend can write: more responses than we have pushed requests
    /// (which includes ring.h's `RING_RESPONSE_PROD_OVERFLOW`), or behind
    /// responses we already consumed. The ring is broken from then on.
    BogusResponseProducer {
        /// `rsp_prod` as read from the page.
        rsp_prod: u32,
        /// Our response consumer index.
        rsp_cons: u32,
        /// The request producer index we last pushed.
        req_prod: u32,
        /// Slots in the ring.
        size: u32,
    },
    /// Asked to consume more slots than are published and have room for a
    /// response (`RING_REQUEST_CONS_OVERFLOW` guards the same).
    ConsumeBeyondAvailable {
        /// Slots asked for.
        asked: u32,
        /// Slots available.
        available: u32,
    },
    /// A response was written with no consumed request whose slot it could
    /// take: it would overwrite a request not yet consumed.
    NoRequestToAnswer {
        /// Our response producer index.
        rsp_prod_pvt: u32,
        /// Our consumer index.
        req_cons: u32,
    },
    /// The request ring is full (`RING_FULL`): the backend has not answered
    /// enough requests yet.
    Full {
        /// Slots in the ring.
        size: u32,
    },
}

impl fmt::Display for SharedRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SharedRingError::TooSmall { need, have } => {
                write!(f, "shared ring needs {need} bytes, got {have}")
            }
            SharedRingError::Memory(e) => write!(f, "shared ring access failed: {e}"),
            SharedRingError::BogusRequestProducer {
                req_prod,
                req_cons,
                rsp_prod,
                size,
            } => write!(
                f,
                "frontend provided bogus request producer {req_prod}: {} requests past our last \
                 published response {rsp_prod} and {} past our consumer {req_cons} in a ring of \
                 {size}; ring halted",
                req_prod.wrapping_sub(rsp_prod) as i32,
                req_prod.wrapping_sub(req_cons) as i32,
            ),
            SharedRingError::BogusResponseProducer {
                rsp_prod,
                rsp_cons,
                req_prod,
                size,
            } => write!(
                f,
                "backend provided bogus response producer {rsp_prod}: {} responses past our \
                 consumer {rsp_cons} with {} requests outstanding in a ring of {size}; ring halted",
                rsp_prod.wrapping_sub(rsp_cons) as i32,
                req_prod.wrapping_sub(rsp_cons),
            ),
            SharedRingError::ConsumeBeyondAvailable { asked, available } => {
                write!(
                    f,
                    "asked to consume {asked} slots, only {available} available"
                )
            }
            SharedRingError::NoRequestToAnswer {
                rsp_prod_pvt,
                req_cons,
            } => write!(
                f,
                "response {rsp_prod_pvt} would answer no consumed request (consumer at {req_cons})"
            ),
            SharedRingError::Full { size } => write!(f, "all {size} request slots are in use"),
        }
    }
}

impl std::error::Error for SharedRingError {}

impl From<OutOfRange> for SharedRingError {
    fn from(e: OutOfRange) -> SharedRingError {
        SharedRingError::Memory(e)
    }
}

/// The part both ends share: the memory, the ring size and the slot maths.
#[derive(Clone, Copy)]
struct Area<'a, P> {
    mem: SharedMem<'a>,
    size: u32,
    _protocol: PhantomData<fn() -> P>,
}

impl<'a, P: RingProtocol> Area<'a, P> {
    fn new(mem: SharedMem<'a>) -> Result<Area<'a, P>, SharedRingError> {
        // A layout that cannot hold what it claims is a bug in a protocol
        // description, never something a guest causes.
        assert!(
            P::SLOT_SIZE >= <P::Request as SlotBytes>::LEN
                && P::SLOT_SIZE >= <P::Response as SlotBytes>::LEN,
            "slot smaller than its request or response"
        );
        let size = ring_size(mem.len(), P::SLOT_SIZE);
        if size == 0 {
            return Err(SharedRingError::TooSmall {
                need: HEADER_SIZE + P::SLOT_SIZE,
                have: mem.len(),
            });
        }
        // Every index word must work as an atomic; checked once here so
        // that later passes fail only if the memory itself does.
        for offset in [REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT] {
            mem.atomic_u32(offset)?;
        }
        Ok(Area {
            mem,
            size,
            _protocol: PhantomData,
        })
    }

    fn slot(&self, index: u32) -> usize {
        HEADER_SIZE + (index & (self.size - 1)) as usize * P::SLOT_SIZE
    }

    fn read<T: SlotBytes>(&self, index: u32) -> Result<T, SharedRingError> {
        let mut copy = T::zeroed();
        self.mem.read(self.slot(index), copy.as_mut())?;
        Ok(copy)
    }

    fn write<T: SlotBytes>(&self, index: u32, value: &T) -> Result<(), SharedRingError> {
        self.mem.write(self.slot(index), value.as_ref())?;
        Ok(())
    }

    fn load(&self, offset: usize, order: Ordering) -> Result<u32, SharedRingError> {
        Ok(self.mem.atomic_u32(offset)?.load(order))
    }

    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), SharedRingError> {
        self.mem.atomic_u32(offset)?.store(value, order);
        Ok(())
    }

    /// Publishes our producer index at `prod` and decides, from the peer's
    /// event index at `event`, whether the peer asked to be notified
    /// (`RING_PUSH_*_AND_CHECK_NOTIFY`).
    fn push_and_check_notify(
        &self,
        prod: usize,
        event: usize,
        old: u32,
        new: u32,
    ) -> Result<bool, SharedRingError> {
        // Release: every slot written before this store is visible to a
        // peer that acquires the new index (ring.h's wmb before publishing).
        self.store(prod, new, Ordering::Release)?;
        // Full barrier between storing our producer index and loading the
        // peer's event index (ring.h's mb). The peer, before sleeping,
        // stores its event index and then loads our producer index, with
        // the same barrier. Release/Acquire alone lets each side's load be
        // satisfied before its own store is visible to the other: we read
        // the old event index (no notification), the peer reads the old
        // producer index (nothing to do), and both sleep with work on the
        // ring — the lost wake-up. With a SeqCst fence on each side, one of
        // the two loads must see the other side's store.
        fence(Ordering::SeqCst);
        // Relaxed: the fence above orders this load; no data is read on the
        // strength of its value.
        let event = self.load(event, Ordering::Relaxed)?;
        // Notify iff the peer's event index lies in (old, new]: the peer
        // asked to be woken by one of the entries just published.
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }
}

/// A back ring's private state between passes: what a data path that owns
/// the mapping keeps, to resume the ring over a fresh borrow of the mapping
/// on its next pass ([`BackRing::state`], [`BackRing::resume`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackRingState {
    req_cons: u32,
    rsp_prod_pvt: u32,
    rsp_prod_pushed: u32,
    req_prod_seen: u32,
    broken: Option<SharedRingError>,
}

impl BackRingState {
    /// The next request to consume.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The next response slot to fill.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }
}

/// The backend's end of a ring: takes requests, puts responses.
pub struct BackRing<'a, P: RingProtocol> {
    area: Area<'a, P>,
    /// Next request to consume (private, as in ring.h).
    req_cons: u32,
    /// Next response slot to fill (private, as in ring.h).
    rsp_prod_pvt: u32,
    /// The response producer index we last published.
    rsp_prod_pushed: u32,
    /// The last request producer index read and found sound.
    req_prod_seen: u32,
    /// Set, for good, when the frontend broke the protocol.
    broken: Option<SharedRingError>,
}

impl<'a, P: RingProtocol> BackRing<'a, P> {
    /// Attaches to a ring the frontend initialised, starting at its current
    /// response producer index (`BACK_RING_ATTACH` with `rsp_prod`, as
    /// Linux blkback does, so a ring that was in use before works too).
    /// Fails if the shared area is too small or the request producer is
    /// already bogus.
    pub fn attach(mem: SharedMem<'a>) -> Result<BackRing<'a, P>, SharedRingError> {
        let area = Area::<P>::new(mem)?;
        // Relaxed: only the value matters; no data is read on its strength.
        let rsp_prod = area.load(RSP_PROD, Ordering::Relaxed)?;
        let mut ring = BackRing {
            area,
            req_cons: rsp_prod,
            rsp_prod_pvt: rsp_prod,
            rsp_prod_pushed: rsp_prod,
            req_prod_seen: rsp_prod,
            broken: None,
        };
        ring.unconsumed_requests()?;
        Ok(ring)
    }

    /// The private state, to [`BackRing::resume`] on a later pass.
    pub fn state(&self) -> BackRingState {
        BackRingState {
            req_cons: self.req_cons,
            rsp_prod_pvt: self.rsp_prod_pvt,
            rsp_prod_pushed: self.rsp_prod_pushed,
            req_prod_seen: self.req_prod_seen,
            broken: self.broken,
        }
    }

    /// The ring as [`BackRing::state`] left it, over `mem` (the same shared
    /// area, borrowed again). Reads nothing from the area: the private
    /// indexes are the saved ones, never the page's.
    pub fn resume(
        mem: SharedMem<'a>,
        state: BackRingState,
    ) -> Result<BackRing<'a, P>, SharedRingError> {
        Ok(BackRing {
            area: Area::<P>::new(mem)?,
            req_cons: state.req_cons,
            rsp_prod_pvt: state.rsp_prod_pvt,
            rsp_prod_pushed: state.rsp_prod_pushed,
            req_prod_seen: state.req_prod_seen,
            broken: state.broken,
        })
    }

    /// Slots in the ring (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.area.size
    }

    /// The next request to consume.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The next response to fill.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Why the ring is broken, if it is.
    pub fn broken(&self) -> Option<SharedRingError> {
        self.broken
    }

    fn check(&self) -> Result<(), SharedRingError> {
        self.broken.map_or(Ok(()), Err)
    }

    /// Consumed requests not yet answered.
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Whether every slot holds a consumed request awaiting its response
    /// (`RING_REQUEST_CONS_OVERFLOW` at `req_cons`): nothing more can be
    /// consumed until responses are written.
    pub fn request_cons_overflow(&self) -> bool {
        self.unanswered() >= self.area.size
    }

    /// Requests known published and with room for their responses.
    fn available(&self) -> u32 {
        let published = self.req_prod_seen.wrapping_sub(self.req_cons);
        let room = self.area.size.saturating_sub(self.unanswered());
        published.min(room)
    }

    /// Reads the request producer index once and returns how many requests
    /// can be taken now (`RING_HAS_UNCONSUMED_REQUESTS`): published, not
    /// consumed, and with a free slot for their responses. A producer index
    /// no correct frontend writes breaks the ring.
    pub fn unconsumed_requests(&mut self) -> Result<u32, SharedRingError> {
        self.check()?;
        // Acquire on the frontend's producer index: the request slots it
        // wrote before publishing this value are visible to the copies that
        // follow (ring.h's rmb after reading req_prod).
        let req_prod = self.area.load(REQ_PROD, Ordering::Acquire)?;
        // A correct frontend reuses a slot only after consuming its
        // response, so req_prod stays within a ring of the last response we
        // published; and it never takes back requests we consumed. Both are
        // checked on distances from the published response index, which
        // wrap correctly. (ring.h measures from rsp_prod_pvt, responses
        // written but maybe not yet published: a frontend that guessed
        // ahead would then get requests consumed from slots holding
        // responses it has not seen, and those responses overwritten.)
        let ahead = req_prod.wrapping_sub(self.rsp_prod_pushed);
        let consumed = self.req_cons.wrapping_sub(self.rsp_prod_pushed);
        if ahead > self.area.size || ahead < consumed {
            let e = SharedRingError::BogusRequestProducer {
                req_prod,
                req_cons: self.req_cons,
                rsp_prod: self.rsp_prod_pushed,
                size: self.area.size,
            };
            self.broken = Some(e);
            return Err(e);
        }
        self.req_prod_seen = req_prod;
        Ok(self.available())
    }

    /// Copies the request `offset` slots past `req_cons` out of shared
    /// memory, once, without consuming it; `None` if that slot is not among
    /// those [`BackRing::unconsumed_requests`] last found. For units of
    /// several slots (a netif packet and its extra-info slots): peek each,
    /// then [`BackRing::consume_requests`] them together.
    pub fn peek_request(&self, offset: u32) -> Result<Option<P::Request>, SharedRingError> {
        self.check()?;
        if offset >= self.available() {
            return Ok(None);
        }
        // Ordered after the acquire load of req_prod in
        // unconsumed_requests (program order), so the slot's contents are
        // the frontend's. The copy is the only read of this slot: callers
        // decode and validate the copy, never the page.
        self.area.read(self.req_cons.wrapping_add(offset)).map(Some)
    }

    /// Marks `n` requests consumed (their slots now await responses).
    pub fn consume_requests(&mut self, n: u32) -> Result<(), SharedRingError> {
        self.check()?;
        let available = self.available();
        if n > available {
            return Err(SharedRingError::ConsumeBeyondAvailable {
                asked: n,
                available,
            });
        }
        self.req_cons = self.req_cons.wrapping_add(n);
        Ok(())
    }

    /// Copies the next request out and consumes it (`RING_COPY_REQUEST`
    /// then `req_cons++`); `None` if none is available.
    pub fn copy_request(&mut self) -> Result<Option<P::Request>, SharedRingError> {
        let req = self.peek_request(0)?;
        if req.is_some() {
            self.consume_requests(1)?;
        }
        Ok(req)
    }

    /// Writes a response into the next response slot (not yet visible to
    /// the frontend: see [`BackRing::push_responses_and_check_notify`]).
    /// Responses fill slots in order and need not follow requests one for
    /// one, but never outnumber the requests consumed.
    pub fn write_response(&mut self, rsp: &P::Response) -> Result<(), SharedRingError> {
        self.check()?;
        if self.unanswered() == 0 {
            return Err(SharedRingError::NoRequestToAnswer {
                rsp_prod_pvt: self.rsp_prod_pvt,
                req_cons: self.req_cons,
            });
        }
        // A plain copy: the release store that publishes rsp_prod orders it.
        self.area.write(self.rsp_prod_pvt, rsp)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the responses written so far and returns whether the
    /// frontend asked to be notified of them
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses_and_check_notify(&mut self) -> Result<bool, SharedRingError> {
        self.check()?;
        let (old, new) = (self.rsp_prod_pushed, self.rsp_prod_pvt);
        let notify = self
            .area
            .push_and_check_notify(RSP_PROD, RSP_EVENT, old, new)?;
        self.rsp_prod_pushed = new;
        Ok(notify)
    }

    /// Whether there are requests to take before going to sleep; if not,
    /// asks the frontend for a notification on its next request
    /// (`RING_FINAL_CHECK_FOR_REQUESTS`). Call it when
    /// [`BackRing::unconsumed_requests`] found nothing, and sleep only on
    /// `false`.
    pub fn final_check_for_requests(&mut self) -> Result<bool, SharedRingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        // Relaxed: the fence below orders this store before the load that
        // follows it; nothing else is published with it.
        self.area
            .store(REQ_EVENT, self.req_cons.wrapping_add(1), Ordering::Relaxed)?;
        // Full barrier between storing req_event and loading req_prod
        // (ring.h's mb): the frontend stores req_prod, fences, then loads
        // req_event. Without a full barrier on both sides each load can miss
        // the other's store — the frontend sees the old req_event and does
        // not notify, we see the old req_prod and sleep — and the ring hangs
        // with a request on it.
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests()? > 0)
    }

    /// Whether `needed` requests can be taken now; if not, asks the
    /// frontend for a notification on the next request it publishes
    /// (`req_event` one past the producer index seen, as netback waits for
    /// receive buffers). [`BackRing::final_check_for_requests`] asks only
    /// when the ring is empty, which is no use to a backend that needs
    /// several requests at once and found some: the frontend would publish
    /// the rest without a word.
    pub fn wait_for_requests(&mut self, needed: u32) -> Result<bool, SharedRingError> {
        loop {
            if self.unconsumed_requests()? >= needed {
                return Ok(true);
            }
            let seen = self.req_prod_seen;
            // Relaxed: the fence below orders it (see final_check_for_requests).
            self.area
                .store(REQ_EVENT, seen.wrapping_add(1), Ordering::Relaxed)?;
            fence(Ordering::SeqCst);
            if self.unconsumed_requests()? >= needed {
                return Ok(true);
            }
            // Nothing published since: the frontend will see the event
            // index and notify. Otherwise ask again past what it published.
            if self.req_prod_seen == seen {
                return Ok(false);
            }
        }
    }
}

impl<P: RingProtocol> fmt::Debug for BackRing<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &self.area.size)
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("rsp_prod_pushed", &self.rsp_prod_pushed)
            .field("req_prod_seen", &self.req_prod_seen)
            .field("broken", &self.broken)
            .finish()
    }
}

/// A front ring's private state between calls, to resume the ring over a
/// fresh borrow of its memory ([`FrontRing::state`], [`FrontRing::resume`]),
/// as [`BackRingState`] for the back end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontRingState {
    req_prod_pvt: u32,
    req_prod_pushed: u32,
    rsp_cons: u32,
    rsp_prod_seen: u32,
    broken: Option<SharedRingError>,
}

/// The frontend's end of a ring: puts requests, takes responses. Used by
/// simulated frontends; the same code, mirrored, as [`BackRing`].
pub struct FrontRing<'a, P: RingProtocol> {
    area: Area<'a, P>,
    /// Next request slot to fill (private, as in ring.h).
    req_prod_pvt: u32,
    /// The request producer index we last published.
    req_prod_pushed: u32,
    /// Next response to consume (private, as in ring.h).
    rsp_cons: u32,
    /// The last response producer index read and found sound.
    rsp_prod_seen: u32,
    /// Set, for good, when the backend broke the protocol.
    broken: Option<SharedRingError>,
}

impl<'a, P: RingProtocol> FrontRing<'a, P> {
    /// Initialises the shared header and attaches (`XEN_FRONT_RING_INIT`).
    pub fn init(mem: SharedMem<'a>) -> Result<FrontRing<'a, P>, SharedRingError> {
        FrontRing::init_at(mem, 0)
    }

    /// Initialises the shared header with all indexes at `start` (both
    /// event indexes at `start + 1`) and attaches there; `init_at(mem, 0)`
    /// is `SHARED_RING_INIT` plus `FRONT_RING_INIT`.
    pub fn init_at(mem: SharedMem<'a>, start: u32) -> Result<FrontRing<'a, P>, SharedRingError> {
        let area = Area::<P>::new(mem)?;
        // The private and padding bytes start zeroed, as ring.h does.
        mem.fill(PVT, HEADER_SIZE - PVT, 0)?;
        // Release: the backend attaches only after learning the ring's
        // grant through XenStore, which orders these anyway; release keeps
        // the header consistent for a peer that looks earlier.
        area.store(REQ_EVENT, start.wrapping_add(1), Ordering::Release)?;
        area.store(RSP_EVENT, start.wrapping_add(1), Ordering::Release)?;
        area.store(RSP_PROD, start, Ordering::Release)?;
        area.store(REQ_PROD, start, Ordering::Release)?;
        Ok(FrontRing {
            area,
            req_prod_pvt: start,
            req_prod_pushed: start,
            rsp_cons: start,
            rsp_prod_seen: start,
            broken: None,
        })
    }

    /// The private state, to [`FrontRing::resume`] later.
    pub fn state(&self) -> FrontRingState {
        FrontRingState {
            req_prod_pvt: self.req_prod_pvt,
            req_prod_pushed: self.req_prod_pushed,
            rsp_cons: self.rsp_cons,
            rsp_prod_seen: self.rsp_prod_seen,
            broken: self.broken,
        }
    }

    /// The ring as [`FrontRing::state`] left it, over `mem` (the same
    /// shared area, borrowed again). Reads nothing from the area.
    pub fn resume(
        mem: SharedMem<'a>,
        state: FrontRingState,
    ) -> Result<FrontRing<'a, P>, SharedRingError> {
        Ok(FrontRing {
            area: Area::<P>::new(mem)?,
            req_prod_pvt: state.req_prod_pvt,
            req_prod_pushed: state.req_prod_pushed,
            rsp_cons: state.rsp_cons,
            rsp_prod_seen: state.rsp_prod_seen,
            broken: state.broken,
        })
    }

    /// Slots in the ring (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.area.size
    }

    /// The next request slot to fill.
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The next response to consume.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Why the ring is broken, if it is.
    pub fn broken(&self) -> Option<SharedRingError> {
        self.broken
    }

    fn check(&self) -> Result<(), SharedRingError> {
        self.broken.map_or(Ok(()), Err)
    }

    /// Request slots free (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.area.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Whether no request slot is free (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Writes a request into the next free slot (not yet visible to the
    /// backend: see [`FrontRing::push_requests_and_check_notify`]).
    pub fn write_request(&mut self, req: &P::Request) -> Result<(), SharedRingError> {
        self.check()?;
        if self.is_full() {
            return Err(SharedRingError::Full {
                size: self.area.size,
            });
        }
        // A plain copy: the release store that publishes req_prod orders it.
        self.area.write(self.req_prod_pvt, req)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the requests written so far and returns whether the
    /// backend asked to be notified of them
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push_requests_and_check_notify(&mut self) -> Result<bool, SharedRingError> {
        self.check()?;
        let (old, new) = (self.req_prod_pushed, self.req_prod_pvt);
        let notify = self
            .area
            .push_and_check_notify(REQ_PROD, REQ_EVENT, old, new)?;
        self.req_prod_pushed = new;
        Ok(notify)
    }

    fn available(&self) -> u32 {
        self.rsp_prod_seen.wrapping_sub(self.rsp_cons)
    }

    /// Reads the response producer index once and returns how many
    /// responses are published and not consumed
    /// (`RING_HAS_UNCONSUMED_RESPONSES`). A producer index no correct
    /// backend writes breaks the ring.
    pub fn unconsumed_responses(&mut self) -> Result<u32, SharedRingError> {
        self.check()?;
        // Acquire on the backend's producer index: the response slots it
        // wrote before publishing this value are visible to the copies that
        // follow (ring.h's rmb after reading rsp_prod).
        let rsp_prod = self.area.load(RSP_PROD, Ordering::Acquire)?;
        // A backend answers only requests we pushed, and never takes back
        // a response we consumed.
        let outstanding = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if rsp_prod.wrapping_sub(self.rsp_cons) > outstanding {
            let e = SharedRingError::BogusResponseProducer {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pushed,
                size: self.area.size,
            };
            self.broken = Some(e);
            return Err(e);
        }
        self.rsp_prod_seen = rsp_prod;
        Ok(self.available())
    }

    /// Copies the response `offset` slots past `rsp_cons` out of shared
    /// memory, once, without consuming it; `None` if that slot is not among
    /// those [`FrontRing::unconsumed_responses`] last found.
    pub fn peek_response(&self, offset: u32) -> Result<Option<P::Response>, SharedRingError> {
        self.check()?;
        if offset >= self.available() {
            return Ok(None);
        }
        // Ordered after the acquire load of rsp_prod (program order).
        self.area.read(self.rsp_cons.wrapping_add(offset)).map(Some)
    }

    /// Marks `n` responses consumed, freeing their slots for requests.
    pub fn consume_responses(&mut self, n: u32) -> Result<(), SharedRingError> {
        self.check()?;
        let available = self.available();
        if n > available {
            return Err(SharedRingError::ConsumeBeyondAvailable {
                asked: n,
                available,
            });
        }
        self.rsp_cons = self.rsp_cons.wrapping_add(n);
        Ok(())
    }

    /// Copies the next response out and consumes it; `None` if none is
    /// available.
    pub fn copy_response(&mut self) -> Result<Option<P::Response>, SharedRingError> {
        let rsp = self.peek_response(0)?;
        if rsp.is_some() {
            self.consume_responses(1)?;
        }
        Ok(rsp)
    }

    /// Whether there are responses to take before going to sleep; if not,
    /// asks the backend for a notification on its next response
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`).
    pub fn final_check_for_responses(&mut self) -> Result<bool, SharedRingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        // Relaxed: the fence below orders this store before the load that
        // follows it; nothing else is published with it.
        self.area
            .store(RSP_EVENT, self.rsp_cons.wrapping_add(1), Ordering::Relaxed)?;
        // Full barrier between storing rsp_event and loading rsp_prod, the
        // mirror of the backend's push: without it both sides can miss each
        // other's store and sleep with a response on the ring.
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }
}

impl<P: RingProtocol> fmt::Debug for FrontRing<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &self.area.size)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("req_prod_pushed", &self.req_prod_pushed)
            .field("rsp_cons", &self.rsp_cons)
            .field("rsp_prod_seen", &self.rsp_prod_seen)
            .field("broken", &self.broken)
            .finish()
    }
}

#[cfg(test)]
#[path = "tests/shared.rs"]
mod tests;

#[cfg(all(test, feature = "xen", target_arch = "x86_64"))]
#[path = "tests/xen_headers.rs"]
mod xen_headers;
