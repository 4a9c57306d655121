//! What a vif queue keeps so that a backend started after this one died
//! (or handed over) can take its rings over without the guest
//! reconnecting, and the taking over itself.
//!
//! Each ring's responses are published a pass at a time, and a pass
//! answers every request it took, so the ring's own `rsp_prod` says which
//! requests were answered: all those before it. What it cannot say is
//! what the requests from there to the last one taken were: a response is
//! written into the slot of a request, and one written but not published
//! when the process died has overwritten it. So, as a block queue does
//! ([`crate::blk::journal`]), each request is copied into a journal file as
//! it is taken, and the count taken stored after it.
//!
//! A queue taking the rings over answers those requests first, as a NIC
//! reset would leave them: the guest's packets in flight are answered as
//! sent (`NETIF_RSP_OKAY`, extra-info slots `NETIF_RSP_NULL`) but go
//! nowhere; the receive buffers the dead process had taken come back
//! empty (`NETIF_RSP_ERROR`, which a frontend drops and posts again).
//! Nothing is sent twice, and the rings go on from where they were.

use std::io;
use std::path::PathBuf;

use super::queue::write_tx_responses;
use super::tx::{judge, Judged};
use super::vif::VifConfig;
use crate::blk::journal::QueueJournal;
use crate::ring::netif::{
    NetifRx, NetifTx, RxRequest, RxResponse, NETIF_RSP_ERROR, NETIF_RSP_OKAY, RX_REQUEST_SIZE,
    TX_REQUEST_SIZE,
};
use crate::ring::shared::BackRing;

const TX_MAGIC: &[u8; 8] = b"XRXVIFT1";
const RX_MAGIC: &[u8; 8] = b"XRXVIFR1";

/// What a vif queue keeps for a backend started after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VifRestart {
    /// The journal files of the transmit and the receive ring, created
    /// when the queue starts and removed when it stops in order.
    pub journals: Option<(PathBuf, PathBuf)>,
    /// Take over rings a backend that died was serving, from the journals
    /// it left.
    pub resume: bool,
}

/// A queue's two journals.
pub(super) struct Journals {
    pub(super) tx: QueueJournal,
    pub(super) rx: QueueJournal,
}

/// The words naming a ring: its guest, its page's grant reference, the
/// guest's port.
fn identity(config: &VifConfig, rx: bool) -> [u32; 4] {
    let (gref, port) = if rx {
        (config.rx_ring_ref, config.rx_port.unwrap_or(config.tx_port))
    } else {
        (config.tx_ring_ref, config.tx_port)
    };
    [u32::from(config.frontend), gref, port, u32::from(rx)]
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Opens what `restart` says: nothing, new journals, or the journals of a
/// backend that died, whose unanswered requests are then answered on
/// `tx` and `rx` (consumed, their responses written, not yet published).
pub(super) fn open(
    config: &VifConfig,
    restart: &VifRestart,
    tx: &mut BackRing<'_, NetifTx>,
    rx: &mut BackRing<'_, NetifRx>,
) -> io::Result<Option<Journals>> {
    let Some((tx_path, rx_path)) = &restart.journals else {
        if restart.resume {
            return Err(bad(
                "taking rings over needs the journals of the backend that served them".into(),
            ));
        }
        return Ok(None);
    };
    if !restart.resume {
        let tx_j = QueueJournal::create_for(
            tx_path,
            TX_MAGIC,
            &identity(config, false),
            tx.size(),
            TX_REQUEST_SIZE,
            tx.req_cons(),
        )?;
        let rx_j = QueueJournal::create_for(
            rx_path,
            RX_MAGIC,
            &identity(config, true),
            rx.size(),
            RX_REQUEST_SIZE,
            rx.req_cons(),
        )?;
        return Ok(Some(Journals { tx: tx_j, rx: rx_j }));
    }
    let tx_j = QueueJournal::open_for(
        tx_path,
        TX_MAGIC,
        &identity(config, false),
        tx.size(),
        TX_REQUEST_SIZE,
    )?;
    let rx_j = QueueJournal::open_for(
        rx_path,
        RX_MAGIC,
        &identity(config, true),
        rx.size(),
        RX_REQUEST_SIZE,
    )?;
    answer_tx(&tx_j, tx)?;
    answer_rx(&rx_j, rx)?;
    Ok(Some(Journals { tx: tx_j, rx: rx_j }))
}

/// How many requests the dead backend took and did not answer; checked
/// against what the ring holds.
fn unanswered(taken: u32, answered: u32, on_ring: u32) -> io::Result<u32> {
    let n = taken.wrapping_sub(answered);
    if n > on_ring {
        return Err(bad(format!(
            "the journal has {n} requests taken after the last answered, the ring only {on_ring}"
        )));
    }
    Ok(n)
}

/// The guest's packets the dead backend took: answered as sent, dropped.
fn answer_tx(j: &QueueJournal, ring: &mut BackRing<'_, NetifTx>) -> io::Result<()> {
    let answered = ring.rsp_prod_pvt();
    let on_ring = ring.unconsumed_requests().map_err(|e| bad(e.to_string()))?;
    let n = unanswered(j.taken(), answered, on_ring)?;
    let slots: Vec<[u8; TX_REQUEST_SIZE]> = (0..n)
        .map(|i| {
            let mut s = [0u8; TX_REQUEST_SIZE];
            j.request(answered.wrapping_add(i), &mut s);
            s
        })
        .collect();
    ring.consume_requests(n).map_err(|e| bad(e.to_string()))?;
    let mut at = 0usize;
    while at < slots.len() {
        // Judged as when they were taken; only their slots and ids matter.
        match judge(|i| slots.get(at + i as usize).copied(), true) {
            Judged::Packet(p) => {
                write_tx_responses(ring, &p, NETIF_RSP_OKAY).map_err(|e| bad(e.to_string()))?;
                at += p.slots as usize;
            }
            Judged::Fatal(why) => {
                return Err(bad(format!(
                    "the backend before failed this vif on its transmit ring: {why}"
                )))
            }
        }
    }
    Ok(())
}

/// The receive buffers the dead backend took: given back empty.
fn answer_rx(j: &QueueJournal, ring: &mut BackRing<'_, NetifRx>) -> io::Result<()> {
    let answered = ring.rsp_prod_pvt();
    let on_ring = ring.unconsumed_requests().map_err(|e| bad(e.to_string()))?;
    let n = unanswered(j.taken(), answered, on_ring)?;
    ring.consume_requests(n).map_err(|e| bad(e.to_string()))?;
    for i in 0..n {
        let mut s = [0u8; RX_REQUEST_SIZE];
        j.request(answered.wrapping_add(i), &mut s);
        let req = RxRequest::decode(&s);
        let rsp = RxResponse {
            id: req.id,
            offset: 0,
            flags: 0,
            status: NETIF_RSP_ERROR,
        };
        ring.write_response(&rsp.encode())
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}
