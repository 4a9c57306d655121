//! A tiny loopback vif for the simulated netfront's tests: dom0 maps both
//! rings through its platform's gntdev, takes each packet's slots with
//! `BackRing`, grant-copies its fragments out and answers them as netback
//! does (`NETIF_RSP_NULL` for an extra-info slot), then copies the packet
//! back into the guest's receive buffers, as a [`Policy`] says.

use std::sync::atomic::{fence, AtomicBool};
use std::thread::JoinHandle;

use super::*;
use crate::platform::sim::{SimEvtchn, SimHost, SimHypervisor};
use crate::platform::{CopySegment, CopySide, GntSt, GrantMapper, Platform, SharedMem};
use crate::ring::shared::{BackRing, REQ_EVENT};

pub(super) const BACK: DomId = 0;
pub(super) const GUEST: DomId = 5;
pub(super) const OTHER: DomId = 6;
/// A guard against a hang, far beyond what any step takes.
pub(super) const WAIT: Duration = Duration::from_secs(30);

pub(super) fn host() -> (SimHypervisor, SimHost) {
    crate::testutil::sim_host(&[BACK, GUEST, OTHER])
}

pub(super) fn front(host: &SimHost, options: NetFrontOptions) -> SimNetFront {
    let evtchn = Arc::new(host.evtchn(GUEST).unwrap());
    SimNetFront::new(host.gnttab(GUEST).unwrap(), evtchn, BACK, options).unwrap()
}

/// An Ethernet frame of `len` bytes: broadcast, from a fixed source, then
/// a pattern that `seed` makes unique.
pub(super) fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ seed).collect();
    let head = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0, 0, 5,
    ];
    let n = len.min(head.len());
    f[..n].copy_from_slice(&head[..n]);
    f
}

/// Free pages of the guest: takes them all, then puts them back in order.
pub(super) fn free_pages(gt: &SimGntTable) -> usize {
    let taken: Vec<u32> = std::iter::from_fn(|| gt.alloc_page()).collect();
    taken.iter().rev().for_each(|f| gt.free_page(*f));
    taken.len()
}

/// Takes the pending events of a handle and re-enables them; their ports.
pub(super) fn drain(evtchn: &SimEvtchn) -> Vec<Port> {
    let mut ports = Vec::new();
    evtchn.pending(&mut ports).unwrap();
    ports.iter().for_each(|p| evtchn.unmask(*p).unwrap());
    ports
}

pub(super) fn grant(gref: GrantRef, offset: u16) -> CopySide<'static> {
    let domid = GUEST;
    CopySide::Grant {
        domid,
        gref,
        offset,
    }
}

/// How the test backend answers.
#[derive(Clone, Copy)]
pub(super) struct Policy {
    /// A status to answer a packet's data slots with instead of OKAY (a
    /// packet not answered OKAY does not come back).
    pub(super) tx_status: fn(&Packet) -> Option<i16>,
    /// A status to give a packet's first receive response instead of its
    /// size.
    pub(super) rx_status: fn(&Packet) -> Option<i16>,
    /// A change to make to each receive data response (a buggy backend).
    pub(super) corrupt_rx: fn(&mut RxResponse),
}

pub(super) const SERVE: Policy = Policy {
    tx_status: |_| None,
    rx_status: |_| None,
    corrupt_rx: |_| {},
};

/// What the test backend saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Every transmit slot, in ring order.
    pub(super) slots: Vec<[u8; TX_REQUEST_SIZE]>,
    /// The packets, as their slots described them.
    pub(super) packets: Vec<Packet>,
    /// The most transmit requests found on the ring at once.
    pub(super) most: u32,
    /// Its own ends of the transmit and receive ports.
    pub(super) ports: (Port, Port),
}

pub(super) struct Backend {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<Seen>,
}

/// What the backend learns from XenStore.
struct Link {
    rings: [GrantRef; 2],
    ports: [Port; 2],
}

impl Backend {
    /// Serves `front`'s rings on a thread until stopped.
    pub(super) fn start(host: &SimHost, front: &SimNetFront, policy: Policy) -> Backend {
        let (host, stop) = (host.clone(), Arc::new(AtomicBool::new(false)));
        let link = Link {
            rings: [front.tx_ring_ref(), front.rx_ring_ref()],
            ports: [front.tx_port(), front.rx_port()],
        };
        let flag = stop.clone();
        let thread = std::thread::spawn(move || serve(&host, link, policy, &flag));
        Backend { stop, thread }
    }

    /// Stops the thread (which unmaps the rings); what it saw.
    pub(super) fn stop(self, front: &mut SimNetFront) -> Seen {
        self.stop.store(true, Ordering::Release);
        front.notify().unwrap();
        self.thread.join().unwrap()
    }
}

/// A frontend with `options`, served by a backend thread with `policy`.
pub(super) fn pair(
    host: &SimHost,
    options: NetFrontOptions,
    policy: Policy,
) -> (SimNetFront, Backend) {
    let front = front(host, options);
    let backend = Backend::start(host, &front, policy);
    (front, backend)
}

fn serve(host: &SimHost, link: Link, policy: Policy, stop: &AtomicBool) -> Seen {
    let platform = Platform::simulated(host, BACK).unwrap();
    let gntdev = platform.gntdev().as_ref();
    let evtchn = host.evtchn(BACK).unwrap();
    let ltx = evtchn.bind_interdomain(GUEST, link.ports[0]).unwrap();
    let lrx = match link.ports[1] == link.ports[0] {
        true => ltx,
        false => evtchn.bind_interdomain(GUEST, link.ports[1]).unwrap(),
    };
    let tx_map = gntdev.map(GUEST, &link.rings[..1], true).unwrap();
    let rx_map = gntdev.map(GUEST, &link.rings[1..], true).unwrap();
    let mut tx = BackRing::<NetifTx>::attach(tx_map.mem()).unwrap();
    let mut rx = BackRing::<NetifRx>::attach(rx_map.mem()).unwrap();
    let mut seen = Seen {
        ports: (ltx, lrx),
        ..Seen::default()
    };
    let mut pending = VecDeque::new();
    loop {
        seen.most = seen.most.max(tx.unconsumed_requests().unwrap());
        let mut answered = false;
        while let Some(slots) = take_slots(&mut tx) {
            let (packet, status) = transmit(gntdev, &mut tx, &slots, &policy);
            if status == NETIF_RSP_OKAY {
                pending.push_back(packet.clone());
            }
            seen.slots.extend(slots);
            seen.packets.push(packet);
            answered = true;
        }
        if answered && tx.push_responses_and_check_notify().unwrap() {
            evtchn.notify(ltx).unwrap();
        }
        if deliver(gntdev, &mut rx, &mut pending, &policy)
            && rx.push_responses_and_check_notify().unwrap()
        {
            evtchn.notify(lrx).unwrap();
        }
        // Sleep only when the frontend will wake us: on its next transmit
        // request, or on the next buffer while a packet waits for some.
        if tx.final_check_for_requests().unwrap() && chain(&tx).is_some() {
            continue;
        }
        let waiting = pending.front().map(slots_for);
        if waiting.is_some_and(|need| rx_ready(&mut rx, rx_map.mem(), need)) {
            continue;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        assert!(wait_readable(evtchn.fd(), Some(WAIT)).unwrap(), "idle");
        drain(&evtchn);
    }
    seen
}

/// The next packet's slots (first, extra-info, other fragments), if all
/// of them are on the ring: each peeked once.
fn chain(tx: &BackRing<'_, NetifTx>) -> Option<Vec<[u8; TX_REQUEST_SIZE]>> {
    let peek = |i: usize| tx.peek_request(i as u32).unwrap();
    let mut slots = vec![peek(0)?];
    let first = TxRequest::decode(&slots[0]);
    if first.extra_info() {
        loop {
            slots.push(peek(slots.len())?);
            if !ExtraInfo::from_tx_slot(&slots[slots.len() - 1]).more() {
                break;
            }
        }
    }
    let mut more = first.more_data();
    while more {
        slots.push(peek(slots.len())?);
        more = TxRequest::decode(&slots[slots.len() - 1]).more_data();
    }
    Some(slots)
}

fn take_slots(tx: &mut BackRing<'_, NetifTx>) -> Option<Vec<[u8; TX_REQUEST_SIZE]>> {
    let slots = chain(tx)?;
    tx.consume_requests(slots.len() as u32).unwrap();
    Some(slots)
}

/// Copies a packet out of the guest and answers its slots; the packet and
/// the status its data slots got.
fn transmit(
    gntdev: &dyn GrantMapper,
    tx: &mut BackRing<'_, NetifTx>,
    slots: &[[u8; TX_REQUEST_SIZE]],
    policy: &Policy,
) -> (Packet, i16) {
    let first = TxRequest::decode(&slots[0]);
    let mut offload = Offload {
        csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
        data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
        gso: None,
    };
    let mut extras = 0;
    while first.extra_info() && extras < slots.len() - 1 {
        let e = ExtraInfo::from_tx_slot(&slots[1 + extras]);
        extras += 1;
        if let Extra::Gso { size, gso_type, .. } = e.extra {
            let kind = match gso_type {
                XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                _ => GsoKind::TcpV4,
            };
            offload.gso = Some(Gso { size, kind });
        }
        if !e.more() {
            break;
        }
    }
    let mut frags = vec![first];
    frags.extend(slots[1 + extras..].iter().map(TxRequest::decode));
    let rest: usize = frags[1..].iter().map(|f| usize::from(f.size)).sum();
    let (mut data, mut ok) = (Vec::new(), true);
    for (i, f) in frags.iter().enumerate() {
        let len = match i {
            0 => usize::from(first.size).saturating_sub(rest),
            _ => usize::from(f.size),
        };
        let at = data.len();
        data.resize(at + len, 0);
        let into = CopySide::Into(&mut data[at..]);
        let mut c = [CopySegment::new(grant(f.gref, f.offset), into, len as u16)];
        ok &= gntdev.copy(&mut c).is_ok() && c[0].status == GntSt::Okay;
    }
    let packet = Packet { data, offload };
    let status = match ok {
        true => (policy.tx_status)(&packet).unwrap_or(NETIF_RSP_OKAY),
        false => NETIF_RSP_ERROR,
    };
    let mut answer = |id, status| {
        let rsp = TxResponse { id, status }.encode();
        tx.write_response(&rsp).unwrap();
    };
    answer(first.id, status);
    // Netback leaves the id of an extra-info slot's response as it was.
    (0..extras).for_each(|_| answer(0xffff, NETIF_RSP_NULL));
    frags[1..].iter().for_each(|f| answer(f.id, status));
    (packet, status)
}

/// Receive slots a packet takes: one per page, and its GSO extra.
fn slots_for(p: &Packet) -> u32 {
    (p.data.len().div_ceil(PAGE_SIZE) + usize::from(p.offload.gso.is_some())) as u32
}

/// Whether `need` buffers are posted; if not, asks for an event on the
/// next one first (netback's `xenvif_rx_ring_slots_available`).
fn rx_ready(rx: &mut BackRing<'_, NetifRx>, mem: SharedMem<'_>, need: u32) -> bool {
    loop {
        let prod = mem.load_u32(REQ_PROD).unwrap();
        let event = mem.atomic_u32(REQ_EVENT).unwrap();
        event.store(prod.wrapping_add(1), Ordering::Relaxed);
        // The mirror of the frontend's push (store req_prod, fence, load
        // req_event): if req_prod is still `prod`, any later push sees the
        // event and notifies.
        fence(Ordering::SeqCst);
        if mem.load_u32(REQ_PROD).unwrap() == prod {
            return rx.unconsumed_requests().unwrap() >= need;
        }
    }
}

/// Copies waiting packets into the guest's buffers while enough are
/// posted; whether it wrote any response.
fn deliver(
    gntdev: &dyn GrantMapper,
    rx: &mut BackRing<'_, NetifRx>,
    pending: &mut VecDeque<Packet>,
    policy: &Policy,
) -> bool {
    let mut wrote = false;
    while let Some(p) = pending.front() {
        if rx.unconsumed_requests().unwrap() < slots_for(p) {
            break;
        }
        let p = pending.pop_front().unwrap();
        let reqs: Vec<RxRequest> = (0..slots_for(&p))
            .map(|_| RxRequest::decode(&rx.copy_request().unwrap().unwrap()))
            .collect();
        // The extra-info response takes the second slot; its buffer idles.
        let extra = usize::from(p.offload.gso.is_some());
        let mut bufs = vec![reqs[0]];
        bufs.extend(&reqs[1 + extra..]);
        let frags = p.data.len().div_ceil(PAGE_SIZE);
        for (i, (chunk, req)) in p.data.chunks(PAGE_SIZE).zip(&bufs).enumerate() {
            let from = CopySide::From(chunk);
            let mut c = [CopySegment::new(
                from,
                grant(req.gref, 0),
                chunk.len() as u16,
            )];
            gntdev.copy(&mut c).unwrap();
            assert_eq!(c[0].status, GntSt::Okay, "buffer {}", req.gref);
            let mut flags = if i + 1 < frags { NETRXF_MORE_DATA } else { 0 };
            let mut status = chunk.len() as i16;
            if i == 0 {
                flags |= match (p.offload.csum_blank, p.offload.data_validated) {
                    (true, _) => NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
                    (false, true) => NETRXF_DATA_VALIDATED,
                    _ => 0,
                };
                flags |= if extra > 0 { NETRXF_EXTRA_INFO } else { 0 };
                status = (policy.rx_status)(&p).unwrap_or(status);
            }
            let mut rsp = RxResponse {
                id: req.id,
                offset: 0,
                flags,
                status,
            };
            (policy.corrupt_rx)(&mut rsp);
            rx.write_response(&rsp.encode()).unwrap();
            if let (0, Some(g)) = (i, p.offload.gso) {
                let gso_type = match g.kind {
                    GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
                    GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
                };
                let (size, features) = (g.size, 0);
                let extra = Extra::Gso {
                    size,
                    gso_type,
                    features,
                };
                let info = ExtraInfo { flags: 0, extra };
                rx.write_response(&info.encode()).unwrap();
            }
        }
        wrote = true;
    }
    wrote
}
