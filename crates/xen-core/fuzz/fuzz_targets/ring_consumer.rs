//! A backend's end of a shared ring against a frontend that controls every
//! byte of the ring: the initial contents and indexes, and changes between
//! any two backend calls. The backend must never panic, never touch memory
//! outside the ring (the area is an exact-size heap allocation, so the
//! address sanitizer catches any stray access), write only what the
//! protocol lets it write, and keep the ring's invariants, which a model
//! built from the calls' results checks after every step.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

use xen_core::platform::SharedMem;
use xen_core::ring::blkif::{self, BlkifX86_32, BlkifX86_64};
use xen_core::ring::netif::{self, NetifRx, NetifTx};
use xen_core::ring::shared::{
    ring_size, BackRing, RingProtocol, SharedRingError, SlotBytes, HEADER_SIZE, REQ_EVENT,
    REQ_PROD, RSP_EVENT, RSP_PROD,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = pick(&mut u);
});

fn pick(u: &mut Unstructured<'_>) -> Result<()> {
    let pages = if u.arbitrary::<bool>()? { 2 } else { 1 };
    match u.int_in_range(0..=3u8)? {
        0 => run::<BlkifX86_64>(u, pages, |r| {
            std::hint::black_box(blkif::Request::decode::<BlkifX86_64>(r));
        }),
        1 => run::<BlkifX86_32>(u, pages, |r| {
            std::hint::black_box(blkif::Request::decode::<BlkifX86_32>(r));
        }),
        2 => run::<NetifTx>(u, pages, |r| {
            std::hint::black_box(netif::TxRequest::decode(r));
            std::hint::black_box(netif::ExtraInfo::from_tx_slot(r));
        }),
        _ => run::<NetifRx>(u, pages, |r| {
            std::hint::black_box(netif::RxRequest::decode(r));
        }),
    }
}

/// The shared area: an exact-size allocation, 8-byte aligned.
struct Area {
    words: Vec<u64>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Area {
        Area {
            words: vec![0; len / 8],
            len,
        }
    }

    fn mem(&mut self) -> SharedMem<'_> {
        // SAFETY: the vector holds `len` bytes (len is a multiple of 8), is
        // never resized, and is only accessed through this view while the
        // returned borrow lives.
        unsafe { SharedMem::new(self.words.as_mut_ptr().cast(), self.len) }
    }
}

fn snapshot(mem: &SharedMem<'_>) -> Vec<u8> {
    let mut b = vec![0; mem.len()];
    snapshot_into(mem, &mut b);
    b
}

/// Copies the whole page into `buf` (reused: allocations are slow under
/// the address sanitizer). A plain memcpy, not `SharedMem::read`'s volatile
/// word loop: nothing else writes the area while the harness looks (one
/// thread), and the instrumented loop would cost most of each execution.
fn snapshot_into(mem: &SharedMem<'_>, buf: &mut [u8]) {
    assert_eq!(buf.len(), mem.len());
    // SAFETY: `mem` covers `mem.len()` readable bytes of the harness's own
    // allocation, `buf` is as long and a different allocation, and no other
    // thread touches either.
    unsafe { std::ptr::copy_nonoverlapping(mem.as_ptr(), buf.as_mut_ptr(), buf.len()) };
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What the backend is entitled to change in one call.
#[derive(Clone, Copy)]
enum Allowed {
    Nothing,
    Range(usize, usize),
}

/// Asserts the backend changed no byte outside `allowed` (slice compares:
/// one memcmp each, cheap under the fuzzer's instrumentation).
fn only_changed(before: &[u8], after: &[u8], allowed: Allowed) {
    let (lo, hi) = match allowed {
        Allowed::Nothing => (0, 0),
        Allowed::Range(lo, hi) => (lo, hi),
    };
    if before[..lo] != after[..lo] || before[hi..] != after[hi..] {
        let i = (0..before.len())
            .find(|&i| before[i] != after[i] && !(lo..hi).contains(&i))
            .unwrap();
        panic!(
            "backend wrote byte {i} ({:#x} -> {:#x}) it does not own",
            before[i], after[i]
        );
    }
}

/// The model: what the ring's private state must be, from the results the
/// ring returned.
struct Model {
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
    pushed: u32,
    /// Requests available since the last successful index read.
    avail: u32,
    broken: Option<SharedRingError>,
}

impl Model {
    fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    fn check<P: RingProtocol>(&self, ring: &BackRing<'_, P>) {
        assert_eq!(ring.size(), self.size);
        assert_eq!(ring.req_cons(), self.req_cons);
        assert_eq!(ring.rsp_prod_pvt(), self.rsp_prod_pvt);
        assert_eq!(ring.broken(), self.broken);
        // Never more requests in flight than slots, never more responses
        // than requests consumed, never more available than room for their
        // responses.
        assert!(self.unanswered() <= self.size);
        assert_eq!(ring.unanswered(), self.unanswered());
        assert_eq!(ring.request_cons_overflow(), self.unanswered() == self.size);
        assert!(self.avail <= self.size - self.unanswered());
        // Responses are published only up to what was written, and no
        // request is consumed from a slot whose response is unpublished.
        assert!(self.rsp_prod_pvt.wrapping_sub(self.pushed) <= self.size);
        assert!(self.req_cons.wrapping_sub(self.pushed) <= self.size);
    }

    /// An error result: if the ring was broken it must say so, the same
    /// way, every time.
    fn expect_broken(&self, r: SharedRingError) -> bool {
        match self.broken {
            Some(e) => {
                assert_eq!(r, e, "a broken ring reports its first error");
                true
            }
            None => false,
        }
    }
}

fn run<P: RingProtocol>(
    u: &mut Unstructured<'_>,
    pages: usize,
    decode: fn(&P::Request),
) -> Result<()> {
    let len = pages * 4096;
    let mut area = Area::new(len);
    let mem = area.mem();
    // The frontend's initial page: arbitrary bytes, then indexes that are
    // either arbitrary or near each other (so attaching often succeeds).
    let n = u.int_in_range(0..=len)?;
    let init = u.bytes(n)?;
    mem.write(0, init).unwrap();
    if u.arbitrary::<bool>()? {
        let base: u32 = u.arbitrary()?;
        let ahead: u32 = u.int_in_range(0..=ring_size(len, P::SLOT_SIZE) + 2)?;
        mem.store_u32(RSP_PROD, base).unwrap();
        mem.store_u32(REQ_PROD, base.wrapping_add(ahead)).unwrap();
    }

    let before = snapshot(&mem);
    let attached = BackRing::<P>::attach(mem);
    only_changed(&before, &snapshot(&mem), Allowed::Nothing);
    let size = ring_size(len, P::SLOT_SIZE);
    let (rsp_prod, req_prod) = (word(&before, RSP_PROD), word(&before, REQ_PROD));
    let mut ring = match attached {
        Ok(ring) => ring,
        Err(e) => {
            assert_eq!(
                e,
                SharedRingError::BogusRequestProducer {
                    req_prod,
                    req_cons: rsp_prod,
                    rsp_prod,
                    size
                }
            );
            assert!(req_prod.wrapping_sub(rsp_prod) > size);
            return Ok(());
        }
    };
    let mut m = Model {
        size,
        req_cons: rsp_prod,
        rsp_prod_pvt: rsp_prod,
        pushed: rsp_prod,
        avail: req_prod.wrapping_sub(rsp_prod),
        broken: None,
    };
    m.check(&ring);

    let slot = |index: u32| HEADER_SIZE + (index & (size - 1)) as usize * P::SLOT_SIZE;

    let mut before = vec![0u8; len];
    let mut after = vec![0u8; len];
    while !u.is_empty() {
        let op = u.int_in_range(0..=10u8)?;
        // The backend's calls (op 4 on) are checked against the page as it
        // was just before the call.
        if op >= 4 {
            snapshot_into(&mem, &mut before);
        }
        let mut allowed = Allowed::Nothing;
        match op {
            // --- the frontend's moves ---
            0 => {
                let at = *u.choose(&[REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT])?;
                mem.store_u32(at, u.arbitrary()?).unwrap();
                continue;
            }
            1 => {
                let at = u.int_in_range(0..=len - 1)?;
                let n = u.int_in_range(0..=(len - at).min(64))?;
                let bytes = u.bytes(n)?;
                mem.write(at, bytes).unwrap();
                continue;
            }
            2 => {
                // Publish a few more requests, as a frontend would (or too
                // many, as a hostile one would).
                let k: u32 = u.int_in_range(0..=size + 1)?;
                let prod = mem.load_u32(REQ_PROD).unwrap();
                mem.store_u32(REQ_PROD, prod.wrapping_add(k)).unwrap();
                continue;
            }
            3 => {
                // A producer right around the limits: k slots past our last
                // response, published or only written.
                let k: u32 = u.int_in_range(0..=size + 1)?;
                let base = if u.arbitrary()? {
                    m.pushed
                } else {
                    m.rsp_prod_pvt
                };
                mem.store_u32(REQ_PROD, base.wrapping_add(k)).unwrap();
                continue;
            }
            // --- the backend's calls ---
            4 => {
                let req_prod = word(&before, REQ_PROD);
                match ring.unconsumed_requests() {
                    Ok(n) => {
                        let ahead = req_prod.wrapping_sub(m.pushed);
                        assert!(ahead <= size && ahead >= m.req_cons.wrapping_sub(m.pushed));
                        m.avail = req_prod.wrapping_sub(m.req_cons);
                        assert_eq!(n, m.avail);
                    }
                    Err(e) if m.expect_broken(e) => {}
                    Err(e) => {
                        assert_eq!(
                            e,
                            SharedRingError::BogusRequestProducer {
                                req_prod,
                                req_cons: m.req_cons,
                                rsp_prod: m.pushed,
                                size
                            }
                        );
                        let ahead = req_prod.wrapping_sub(m.pushed);
                        assert!(ahead > size || ahead < m.req_cons.wrapping_sub(m.pushed));
                        m.broken = Some(e);
                    }
                }
            }
            5 => {
                let k: u32 = u.int_in_range(0..=size + 1)?;
                match ring.peek_request(k) {
                    Ok(Some(r)) => {
                        assert!(k < m.avail);
                        let at = slot(m.req_cons.wrapping_add(k));
                        assert_eq!(r.as_ref(), &before[at..at + P::Request::LEN]);
                        decode(&r);
                    }
                    Ok(None) => assert!(m.broken.is_none() && k >= m.avail),
                    Err(e) => assert!(m.expect_broken(e)),
                }
            }
            6 => {
                let n: u32 = u.int_in_range(0..=size + 1)?;
                match ring.consume_requests(n) {
                    Ok(()) => {
                        assert!(m.broken.is_none() && n <= m.avail);
                        m.req_cons = m.req_cons.wrapping_add(n);
                        m.avail -= n;
                    }
                    Err(e) if m.expect_broken(e) => {}
                    Err(e) => {
                        assert_eq!(
                            e,
                            SharedRingError::ConsumeBeyondAvailable {
                                asked: n,
                                available: m.avail
                            }
                        );
                        assert!(n > m.avail);
                    }
                }
            }
            7 => match ring.copy_request() {
                Ok(Some(r)) => {
                    assert!(m.avail > 0);
                    let at = slot(m.req_cons);
                    assert_eq!(r.as_ref(), &before[at..at + P::Request::LEN]);
                    decode(&r);
                    m.req_cons = m.req_cons.wrapping_add(1);
                    m.avail -= 1;
                }
                Ok(None) => assert!(m.broken.is_none() && m.avail == 0),
                Err(e) => assert!(m.expect_broken(e)),
            },
            8 => {
                let mut rsp = P::Response::zeroed();
                u.fill_buffer(rsp.as_mut())?;
                let at = slot(m.rsp_prod_pvt);
                allowed = Allowed::Range(at, at + P::Response::LEN);
                match ring.write_response(&rsp) {
                    Ok(()) => {
                        assert!(m.broken.is_none() && m.unanswered() > 0);
                        let mut written = P::Response::zeroed();
                        mem.read(at, written.as_mut()).unwrap();
                        assert_eq!(written, rsp);
                        m.rsp_prod_pvt = m.rsp_prod_pvt.wrapping_add(1);
                    }
                    Err(e) if m.expect_broken(e) => {}
                    Err(e) => {
                        assert_eq!(
                            e,
                            SharedRingError::NoRequestToAnswer {
                                rsp_prod_pvt: m.rsp_prod_pvt,
                                req_cons: m.req_cons
                            }
                        );
                        assert_eq!(m.unanswered(), 0);
                    }
                }
            }
            9 => {
                allowed = Allowed::Range(RSP_PROD, RSP_PROD + 4);
                match ring.push_responses_and_check_notify() {
                    Ok(notify) => {
                        assert!(m.broken.is_none());
                        assert_eq!(mem.load_u32(RSP_PROD).unwrap(), m.rsp_prod_pvt);
                        let (old, new) = (m.pushed, m.rsp_prod_pvt);
                        let event = word(&before, RSP_EVENT);
                        assert_eq!(notify, new.wrapping_sub(event) < new.wrapping_sub(old));
                        m.pushed = new;
                    }
                    Err(e) => assert!(m.expect_broken(e)),
                }
            }
            _ => {
                allowed = Allowed::Range(REQ_EVENT, REQ_EVENT + 4);
                match ring.final_check_for_requests() {
                    Ok(work) => {
                        // Single-threaded: the producer index did not move
                        // between the two reads, so both give this value.
                        let req_prod = word(&before, REQ_PROD);
                        m.avail = req_prod.wrapping_sub(m.req_cons);
                        assert_eq!(work, m.avail > 0);
                        let event = mem.load_u32(REQ_EVENT).unwrap();
                        if work {
                            assert_eq!(event, word(&before, REQ_EVENT));
                        } else {
                            assert_eq!(event, m.req_cons.wrapping_add(1));
                        }
                    }
                    Err(e) if m.expect_broken(e) => {}
                    Err(e) => {
                        assert!(matches!(e, SharedRingError::BogusRequestProducer { .. }));
                        m.broken = Some(e);
                    }
                }
            }
        }
        snapshot_into(&mem, &mut after);
        only_changed(&before, &after, allowed);
        m.check(&ring);
    }
    Ok(())
}
