//! A tiny block backend for the simulated blkfront's tests: dom0 maps the
//! ring through its platform's gntdev, takes requests with `BackRing`, and
//! moves data between a `Vec<u8>` disk and the guest's pages with grant
//! copies, answering as a [`Policy`] says (batched, reversed, with a forced
//! status or a corrupted response).

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::*;
use crate::platform::sim::{SimEvtchn, SimHost, SimHypervisor};
use crate::platform::{CopySegment, CopySide, GntSt, GrantMapper, Platform};
use crate::ring::blkif::BlkifAbi;
use crate::ring::shared::BackRing;

pub(super) const BACK: DomId = 0;
pub(super) const GUEST: DomId = 5;
pub(super) const OTHER: DomId = 6;
pub(super) const DISK_SECTORS: usize = 4096;
/// A guard against a hang, far beyond what any step takes.
pub(super) const WAIT: Duration = Duration::from_secs(30);

pub(super) fn host() -> (SimHypervisor, SimHost) {
    crate::testutil::sim_host(&[BACK, GUEST, OTHER])
}

pub(super) fn front(host: &SimHost, options: FrontOptions) -> SimBlkFront {
    let evtchn = Arc::new(host.evtchn(GUEST).unwrap());
    SimBlkFront::new(host.gnttab(GUEST).unwrap(), evtchn, BACK, options).unwrap()
}

pub(super) fn options(order: u32, indirect: Option<u32>, depth: Option<u32>) -> FrontOptions {
    let mut o = FrontOptions::default();
    (o.ring_page_order, o.max_indirect_segments, o.queue_depth) = (order, indirect, depth);
    o
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Free pages of the guest: takes them all, then puts them back in order.
pub(super) fn free_pages(gt: &SimGntTable) -> usize {
    let taken: Vec<u32> = std::iter::from_fn(|| gt.alloc_page()).collect();
    taken.iter().rev().for_each(|f| gt.free_page(*f));
    taken.len()
}

/// Takes the pending events of a handle and re-enables them.
pub(super) fn drain(evtchn: &SimEvtchn) -> usize {
    let mut ports = Vec::new();
    evtchn.pending(&mut ports).unwrap();
    ports.iter().for_each(|p| evtchn.unmask(*p).unwrap());
    ports.len()
}

pub(super) fn rsp(id: u64, operation: u8, status: i16) -> Response {
    Response {
        id,
        operation,
        status,
    }
}

pub(super) fn grant(gref: GrantRef, offset: u16) -> CopySide<'static> {
    let domid = GUEST;
    CopySide::Grant {
        domid,
        gref,
        offset,
    }
}

/// Copies a granted page of the guest; its status.
pub(super) fn copy_page(
    gntdev: &dyn GrantMapper,
    gref: GrantRef,
    page: &mut [u8; PAGE_SIZE],
) -> GntSt {
    let mut c = [CopySegment::new(grant(gref, 0), CopySide::Into(page), 4096)];
    gntdev.copy(&mut c).unwrap();
    c[0].status
}

/// How the test backend answers.
#[derive(Clone, Copy)]
pub(super) struct Policy {
    /// Requests to collect before answering them together.
    pub(super) batch: usize,
    /// Answer each batch last request first.
    pub(super) reverse: bool,
    /// A status to answer instead of the real one.
    pub(super) status: fn(&Request) -> Option<i16>,
    /// A change to make to each response (a buggy backend).
    pub(super) corrupt: fn(&mut Response),
}

pub(super) const SERVE: Policy = Policy {
    batch: 1,
    reverse: false,
    status: |_| None,
    corrupt: |_| {},
};

/// What the test backend saw: its ring size, the requests, and every data
/// segment (indirect ones included) in order.
#[derive(Debug, Default)]
pub(super) struct Seen(
    pub(super) u32,
    pub(super) Vec<Request>,
    pub(super) Vec<Segment>,
);

pub(super) struct Backend {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<(Seen, Vec<u8>)>,
}

impl Backend {
    /// Serves `front`'s ring from a fresh disk on a thread until stopped.
    pub(super) fn start(host: &SimHost, front: &SimBlkFront, policy: Policy) -> Backend {
        let (host, stop) = (host.clone(), Arc::new(AtomicBool::new(false)));
        let (refs, port, flag) = (front.ring_refs().to_vec(), front.port(), stop.clone());
        let thread = match front.protocol() {
            BlkifProtocol::X86_64 => {
                std::thread::spawn(move || serve::<BlkifX86_64>(&host, &refs, port, policy, &flag))
            }
            BlkifProtocol::X86_32 => {
                std::thread::spawn(move || serve::<BlkifX86_32>(&host, &refs, port, policy, &flag))
            }
        };
        Backend { stop, thread }
    }

    /// Stops the thread (which unmaps the ring); what it saw, and its disk.
    pub(super) fn stop(self, front: &mut SimBlkFront) -> (Seen, Vec<u8>) {
        self.stop.store(true, Ordering::Release);
        front.notify().unwrap();
        self.thread.join().unwrap()
    }
}

pub(super) fn serve<P: BlkifAbi>(
    host: &SimHost,
    refs: &[GrantRef],
    port: Port,
    policy: Policy,
    stop: &AtomicBool,
) -> (Seen, Vec<u8>) {
    let platform = Platform::simulated(host, BACK).unwrap();
    let gntdev = platform.gntdev().as_ref();
    let evtchn = host.evtchn(BACK).unwrap();
    let local = evtchn.bind_interdomain(GUEST, port).unwrap();
    let map = gntdev.map(GUEST, refs, true).unwrap();
    let mut ring = BackRing::<P>::attach(map.mem()).unwrap();
    let mut disk = vec![0xdd; DISK_SECTORS * SECTOR_SIZE];
    let (mut seen, mut batch) = (Seen(ring.size(), Vec::new(), Vec::new()), Vec::new());
    loop {
        ring.unconsumed_requests().unwrap();
        while let Some(raw) = ring.copy_request().unwrap() {
            let req = Request::decode::<P>(&raw);
            seen.1.push(req);
            batch.push(req);
        }
        if batch.len() >= policy.batch {
            if policy.reverse {
                batch.reverse();
            }
            for req in batch.drain(..) {
                let mut rsp = answer(gntdev, &req, &mut disk, &mut seen.2);
                rsp.status = (policy.status)(&req).unwrap_or(rsp.status);
                (policy.corrupt)(&mut rsp);
                ring.write_response(&rsp.encode::<P>()).unwrap();
            }
            if ring.push_responses_and_check_notify().unwrap() {
                evtchn.notify(local).unwrap();
            }
        }
        if ring.final_check_for_requests().unwrap() {
            continue;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        assert!(wait_readable(evtchn.fd(), Some(WAIT)).unwrap(), "idle");
        drain(&evtchn);
    }
    (seen, disk)
}

/// Serves one request from `disk` and answers as blkback would.
pub(super) fn answer(
    gntdev: &dyn GrantMapper,
    req: &Request,
    disk: &mut [u8],
    log: &mut Vec<Segment>,
) -> Response {
    let (op, sector, segs) = match req {
        Request::Direct(r) => {
            let n = usize::from(r.nr_segments).min(MAX_DIRECT);
            (r.operation, r.sector_number, r.seg[..n].to_vec())
        }
        Request::Indirect(r) => {
            let mut segs = Vec::new();
            let pages = usize::from(r.nr_segments).div_ceil(512);
            for (i, gref) in r.indirect_grefs.iter().take(pages).enumerate() {
                let mut page = [0u8; PAGE_SIZE];
                assert_eq!(copy_page(gntdev, *gref, &mut page), GntSt::Okay);
                let n = (usize::from(r.nr_segments) - i * 512).min(512);
                let bytes = page.chunks(8).take(n);
                segs.extend(bytes.map(|b| Segment::decode(b.try_into().unwrap())));
            }
            (r.indirect_op, r.sector_number, segs)
        }
        Request::Discard(d) => {
            let start = d.sector_number as usize * SECTOR_SIZE;
            let range = start..start + d.nr_sectors as usize * SECTOR_SIZE;
            let ok = disk.get_mut(range).map(|b| b.fill(0)).is_some();
            let status = if ok { BLKIF_RSP_OKAY } else { BLKIF_RSP_ERROR };
            return rsp(d.id, BLKIF_OP_DISCARD, status);
        }
    };
    let status = match op {
        BLKIF_OP_READ | BLKIF_OP_WRITE => {
            log.extend_from_slice(&segs);
            match transfer(gntdev, op, sector, &segs, disk) {
                true => BLKIF_RSP_OKAY,
                false => BLKIF_RSP_ERROR,
            }
        }
        BLKIF_OP_FLUSH_DISKCACHE => BLKIF_RSP_OKAY,
        _ => BLKIF_RSP_EOPNOTSUPP,
    };
    rsp(req.id(), op, status)
}

/// Copies each segment between the guest and the disk, one grant copy
/// each; false if a sector or a copy was bad.
pub(super) fn transfer(
    gntdev: &dyn GrantMapper,
    op: u8,
    sector: u64,
    segs: &[Segment],
    disk: &mut [u8],
) -> bool {
    let mut pos = sector as usize * SECTOR_SIZE;
    for s in segs {
        if s.first_sect > s.last_sect || s.last_sect > 7 {
            return false;
        }
        let len = (usize::from(s.last_sect - s.first_sect) + 1) * SECTOR_SIZE;
        let Some(bytes) = disk.get_mut(pos..pos + len) else {
            return false;
        };
        let page = grant(s.gref, u16::from(s.first_sect) * SECTOR_SIZE as u16);
        let mut c = [match op {
            BLKIF_OP_READ => CopySegment::new(CopySide::From(bytes), page, len as u16),
            _ => CopySegment::new(page, CopySide::Into(bytes), len as u16),
        }];
        if gntdev.copy(&mut c).is_err() || c[0].status != GntSt::Okay {
            return false;
        }
        pos += len;
    }
    true
}

/// A frontend with `options`, served by a backend thread with `policy`.
pub(super) fn pair(
    host: &SimHost,
    options: FrontOptions,
    policy: Policy,
) -> (SimBlkFront, Backend) {
    let front = front(host, options);
    let backend = Backend::start(host, &front, policy);
    (front, backend)
}

pub(super) fn ops_of(seen: &Seen) -> Vec<u8> {
    seen.1.iter().map(Request::operation).collect()
}

pub(super) fn first_last(seen: &Seen) -> Vec<(u8, u8)> {
    seen.2.iter().map(|s| (s.first_sect, s.last_sect)).collect()
}
