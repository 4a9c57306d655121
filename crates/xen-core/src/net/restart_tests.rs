//! Vif queues handed over mid-stream (what a crash leaves) and taken over
//! from their journals by new queues: the guests' rings never wedge, every
//! packet in flight is answered, nothing fails, and traffic goes on.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use super::frontend::{NetFrontOptions, SimNetFront};
use super::switch::SwitchPort;
use super::tests::{frame, mac, world, World, A, B, BACK, WAIT};
use super::*;
use crate::platform::DomId;

struct Vif {
    front: SimNetFront,
    config: VifConfig,
    port: SwitchPort,
    restart: VifRestart,
    queue: Option<VifQueue>,
    events: Receiver<VifEvent>,
    sink: std::sync::mpsc::Sender<VifEvent>,
}

impl Vif {
    fn new(w: &World, domid: DomId, dir: &std::path::Path) -> Vif {
        let evtchn = Arc::new(w.host.evtchn(domid).unwrap());
        let front = SimNetFront::new(
            w.host.gnttab(domid).unwrap(),
            evtchn,
            BACK,
            NetFrontOptions::default(),
        )
        .unwrap();
        let config = VifConfig {
            frontend: domid,
            tx_ring_ref: front.tx_ring_ref(),
            rx_ring_ref: front.rx_ring_ref(),
            tx_port: front.tx_port(),
            rx_port: None,
            features: VifFeatures::default(),
            rx_queue: DEFAULT_RX_QUEUE,
        };
        let journals = (
            dir.join(format!("vif-{domid}-tx")),
            dir.join(format!("vif-{domid}-rx")),
        );
        let (sink, events) = channel();
        let mut v = Vif {
            front,
            config,
            port: w.switch.add_port(),
            restart: VifRestart {
                journals: Some(journals),
                resume: false,
            },
            queue: None,
            events,
            sink,
        };
        v.start(w);
        v
    }

    /// Starts a queue on the rings: afresh the first time, then taking
    /// them over from the journals.
    fn start(&mut self, w: &World) {
        let sink = self.sink.clone();
        let queue = VifQueue::start_with(
            &w.platform,
            &self.config,
            Box::new(self.port.handle()),
            Box::new(move |e| {
                let _ = sink.send(e);
            }),
            &self.restart,
        )
        .unwrap();
        self.port.connect(Arc::new(queue.receiver()));
        self.queue = Some(queue);
        self.restart.resume = true;
    }

    fn hand_over(&mut self) {
        self.queue.take().unwrap().hand_over();
    }
}

/// Packets B receives until the one numbered `seq` from A.
fn until(b: &mut Vif, seq: u32) -> usize {
    let mut seen = 0;
    loop {
        let p = b
            .front
            .recv(WAIT)
            .unwrap()
            .expect("a packet within the guard");
        seen += 1;
        if p.source() == Some(mac(A)) && p.data[14..18] == seq.to_be_bytes() {
            return seen;
        }
    }
}

#[test]
fn vifs_handed_over_mid_stream_are_taken_over_with_nothing_wedged() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Vif::new(&w, A, dir.path());
    let mut b = Vif::new(&w, B, dir.path());
    b.front.send(&frame([0xff; 6], mac(B), 0, 60)).unwrap();
    a.front.recv(WAIT).unwrap().expect("B's announcement");
    let mut seq = 1u32;
    for _round in 0..20 {
        // Packets in flight both ways, then both backends go.
        let burst: Vec<Packet> = (0..150)
            .map(|i| frame(mac(B), mac(A), seq + i, 60 + (i as usize * 97) % 9000))
            .collect();
        seq += 150;
        a.front.send_many(&burst).unwrap();
        a.hand_over();
        b.hand_over();
        assert!(dir.path().join(format!("vif-{A}-tx")).exists());
        a.start(&w);
        b.start(&w);
        // Every packet of A's is answered, none with an error.
        a.front.wait_tx_done().unwrap();
        assert_eq!(a.front.stats().tx_errors, 0);
        // And traffic goes on: a marker reaches B after whatever of the
        // burst made it.
        let marker = frame(mac(B), mac(A), seq, 100);
        a.front.send(&marker).unwrap();
        assert!(until(&mut b, seq) <= 151);
        seq += 1;
    }
    assert!(
        a.events.try_recv().is_err() && b.events.try_recv().is_err(),
        "no vif failed"
    );
    // Stopped in order, the journals go.
    a.queue.take().unwrap().stop();
    assert!(!dir.path().join(format!("vif-{A}-tx")).exists());
    assert!(!dir.path().join(format!("vif-{A}-rx")).exists());
}

#[test]
fn a_journal_of_other_rings_is_refused() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Vif::new(&w, A, dir.path());
    a.hand_over();
    // The frontend set its rings up anew meanwhile: other grant references.
    a.config.tx_ring_ref += 1000;
    let err = VifQueue::start_with(
        &w.platform,
        &a.config,
        Box::new(a.port.handle()),
        Box::new(|_| {}),
        &a.restart,
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("another ring") || err.to_string().contains("map"),
        "{err}"
    );
    // No journals at all: refused too.
    a.config.tx_ring_ref -= 1000;
    let none = VifRestart {
        journals: None,
        resume: true,
    };
    let err = VifQueue::start_with(
        &w.platform,
        &a.config,
        Box::new(a.port.handle()),
        Box::new(|_| {}),
        &none,
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("needs the journals"), "{err}");
}

/// Waits (the guard only) until the queue died where it was told to.
fn wait_died(v: &Vif) {
    let q = v.queue.as_ref().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !q.crash.died() {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never got there"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_backend_killed_mid_pass_leaves_what_it_took_to_the_next_one_from_its_journals() {
    use super::queue::crash;
    for (at, what) in [
        (crash::TX_TAKEN, "packets taken, not answered"),
        (
            crash::TX_WRITTEN,
            "packets answered in slots, not published",
        ),
        (crash::RX_TAKEN, "buffers taken, not filled"),
        (
            crash::RX_WRITTEN,
            "buffers filled and answered in slots, not published",
        ),
    ] {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let mut a = Vif::new(&w, A, dir.path());
        let mut b = Vif::new(&w, B, dir.path());
        b.front.send(&frame([0xff; 6], mac(B), 0, 60)).unwrap();
        a.front.recv(WAIT).unwrap().expect("B's announcement");
        // The backend dies at that point of its next pass with work.
        let dying = if at <= crash::TX_WRITTEN { &a } else { &b };
        dying.queue.as_ref().unwrap().crash.set(at);
        let burst: Vec<Packet> = (1..=40).map(|i| frame(mac(B), mac(A), i, 1514)).collect();
        a.front.send_many(&burst).unwrap();
        if at <= crash::TX_WRITTEN {
            wait_died(&a);
            a.hand_over();
            a.start(&w);
        } else {
            wait_died(&b);
            b.hand_over();
            b.start(&w);
        }
        // Nothing wedged: A's packets are all answered, none as failed;
        // what B gets is whole, and traffic goes on.
        a.front.wait_tx_done().unwrap();
        assert_eq!(a.front.stats().tx_errors, 0, "{what}");
        let marker = frame(mac(B), mac(A), 99, 100);
        a.front.send(&marker).unwrap();
        assert!(until(&mut b, 99) <= 41, "{what}");
        assert!(
            a.events.try_recv().is_err() && b.events.try_recv().is_err(),
            "{what}: no vif failed"
        );
        if at >= crash::RX_TAKEN {
            // The buffers the dead backend took came back empty, as errors.
            assert!(b.front.stats().rx_errors > 0, "{what}");
        }
    }
}
