//! Sending: each packet copied into fresh guest pages granted read-only,
//! its slots written as netfront writes them, pushed once per batch; and
//! the answers taken back, each slot's page freed as its response comes.

use super::*;

impl SimNetFront {
    /// Sends one packet (see [`SimNetFront::send_many`]).
    pub fn send(&mut self, packet: &Packet) -> Result<(), NetFrontError> {
        self.send_many(std::slice::from_ref(packet))
    }

    /// Sends packets with one push, waiting for answers while the ring has
    /// no room for the next packet (then pushing what was written first).
    /// Every packet is checked against the features before any is written;
    /// if one then fails (no memory, no grant), those before it stay sent.
    pub fn send_many(&mut self, packets: &[Packet]) -> Result<(), NetFrontError> {
        self.usable()?;
        packets.iter().try_for_each(|p| self.check_packet(p))?;
        let queued = packets.iter().try_for_each(|p| self.queue(p));
        // Push what was written even if a later packet failed.
        self.push_tx()?;
        queued
    }

    /// Sends from the front of `packets` as many as the ring has room for
    /// now, without waiting, with one push; returns how many were sent. A
    /// packet the features do not allow is an error, and stays queued.
    pub fn send_some(&mut self, packets: &mut VecDeque<Packet>) -> Result<usize, NetFrontError> {
        self.usable()?;
        let mut sent = 0;
        let mut outcome = Ok(());
        while let Some(p) = packets.front() {
            if let Err(e) = self.check_packet(p) {
                outcome = Err(e);
                break;
            }
            let frags = p.data.len().div_ceil(PAGE_SIZE);
            let slots = frags + usize::from(p.offload.gso.is_some());
            if !self.tx_room(slots, frags)? {
                break;
            }
            let p = packets.pop_front().expect("looked at");
            if let Err(e) = self.queue(&p) {
                packets.push_front(p);
                outcome = Err(e);
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            self.push_tx()?;
        }
        outcome.map(|()| sent)
    }

    /// Refuses what the negotiated features do not allow.
    pub fn check_packet(&self, packet: &Packet) -> Result<(), NetFrontError> {
        packet_allowed(&self.options, packet)
    }

    /// Writes one packet's slots into the ring without pushing them.
    fn queue(&mut self, packet: &Packet) -> Result<(), NetFrontError> {
        let len = packet.data.len();
        let frags = len.div_ceil(PAGE_SIZE);
        let extra = packet.offload.gso.map(gso_extra);
        self.make_room(frags + usize::from(extra.is_some()), frags)?;
        // make_room saw enough ids.
        let ids = self.take_ids(frags);
        let ids = ids.ok_or(NetFrontError::BadArgument("no transmit id free"))?;
        let mut pages = Vec::with_capacity(frags);
        for chunk in packet.data.chunks(PAGE_SIZE) {
            match self.grant_page(chunk, true) {
                Ok(page) => pages.push(page),
                Err(e) => {
                    pages.into_iter().for_each(|p| self.release(p));
                    self.free_ids.extend(ids);
                    return Err(e);
                }
            }
        }
        let mut slots = Vec::with_capacity(frags + 1);
        let frames = packet.data.chunks(PAGE_SIZE).zip(&pages).zip(&ids);
        for (i, ((chunk, page), id)) in frames.enumerate() {
            let mut flags = if i + 1 < frags { NETTXF_MORE_DATA } else { 0 };
            // The first slot carries the whole packet's size and its
            // metadata; later ones their own size.
            let size = match i {
                0 => {
                    flags |= csum_flags(&packet.offload);
                    flags |= extra.map_or(0, |_| NETTXF_EXTRA_INFO);
                    len
                }
                _ => chunk.len(),
            };
            let (gref, offset, id, size) = (page.gref, 0, *id, size as u16);
            slots.push(
                TxRequest {
                    gref,
                    offset,
                    flags,
                    id,
                    size,
                }
                .encode(),
            );
            if let (0, Some(e)) = (i, extra) {
                slots.push(e.to_tx_slot());
            }
        }
        if let Err(e) = self.on_tx(|r| slots.iter().try_for_each(|s| r.write_request(s))) {
            pages.into_iter().for_each(|p| self.release(p));
            self.free_ids.extend(ids);
            return Err(e);
        }
        let seq = self.next_packet;
        self.next_packet += 1;
        for (page, id) in pages.into_iter().zip(ids) {
            self.tx_slots.insert(id, TxSlot { packet: seq, page });
        }
        self.extras_pending += usize::from(extra.is_some());
        let status = NETIF_RSP_OKAY;
        let entry = TxPacket {
            remaining: frags,
            status,
        };
        self.tx_in_flight.insert(seq, entry);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        Ok(())
    }

    /// Waits for answers until `slots` ring slots and `ids` ids are free,
    /// having pushed what was written (it would never be answered
    /// otherwise).
    pub(super) fn make_room(&mut self, slots: usize, ids: usize) -> Result<(), NetFrontError> {
        if self.tx_room(slots, ids)? {
            return Ok(());
        }
        self.push_tx()?;
        let deadline = Instant::now() + self.options.timeout;
        match self.wait_until(deadline, |s| s.tx_room(slots, ids))? {
            true => Ok(()),
            false => Err(NetFrontError::Timeout),
        }
    }

    fn tx_room(&mut self, slots: usize, ids: usize) -> Result<bool, NetFrontError> {
        let free = self.on_tx(|r| Ok(r.free_requests()))? as usize;
        Ok(free >= slots && self.usable_ids().count() >= ids)
    }

    /// Indexes in `free_ids` of the ids a packet may take: not one a raw
    /// slot in flight carries, so that each answer names one slot. Last
    /// freed first, as netfront's free list.
    fn usable_ids(&self) -> impl Iterator<Item = usize> + '_ {
        let ids = self.free_ids.iter().enumerate().rev();
        ids.filter(|(_, id)| !self.raw_ids.contains(id))
            .map(|(i, _)| i)
    }

    /// Takes `n` ids, or none if there are not that many.
    fn take_ids(&mut self, n: usize) -> Option<Vec<u16>> {
        let at: Vec<usize> = self.usable_ids().take(n).collect();
        // Decreasing indexes: each removal leaves the next one in place.
        (at.len() == n).then(|| at.into_iter().map(|i| self.free_ids.remove(i)).collect())
    }

    /// Publishes the slots written and notifies the backend if it asked
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub(super) fn push_tx(&mut self) -> Result<(), NetFrontError> {
        if self.on_tx(|r| r.push_requests_and_check_notify())? {
            self.notify_port(self.tx_port)?;
        }
        Ok(())
    }

    /// Takes every published transmit response.
    pub(super) fn poll_tx(&mut self) -> Result<(), NetFrontError> {
        let rsps = self.on_tx(|r| {
            let mut out = Vec::new();
            r.unconsumed_responses()?;
            while let Some(raw) = r.copy_response()? {
                out.push(TxResponse::decode(&raw));
            }
            Ok(out)
        })?;
        rsps.into_iter().try_for_each(|rsp| self.tx_answered(rsp))
    }

    /// One transmit response: an extra-info slot's `NETIF_RSP_NULL` (whose
    /// id netback leaves as it was), a raw slot's answer (any id), or a
    /// data slot's, which ends its grant and may finish its packet.
    fn tx_answered(&mut self, rsp: TxResponse) -> Result<(), NetFrontError> {
        let raw_at = self.raw_ids.iter().position(|id| *id == rsp.id);
        if rsp.status == NETIF_RSP_NULL {
            if self.extras_pending > 0 {
                self.extras_pending -= 1;
            } else if !self.raw_ids.is_empty() {
                self.raw_ids.remove(raw_at.unwrap_or(0));
            } else {
                let id = rsp.id;
                let fault = format!("NETIF_RSP_NULL (id {id}) with no extra-info slot in flight");
                return Err(self.fail(fault));
            }
            return Ok(());
        }
        let Some(slot) = raw_at
            .is_none()
            .then(|| self.tx_slots.remove(&rsp.id))
            .flatten()
        else {
            if self.raw_ids.is_empty() {
                let fault = format!("tx response for id {}, not in flight", rsp.id);
                return Err(self.fail(fault));
            }
            // A raw slot's answer, whatever id it names.
            self.raw_ids.remove(raw_at.unwrap_or(0));
            if rsp.status != NETIF_RSP_OKAY {
                self.statuses.push(rsp.status);
            }
            return Ok(());
        };
        self.free_ids.push(rsp.id);
        self.release(slot.page);
        if !matches!(
            rsp.status,
            NETIF_RSP_OKAY | NETIF_RSP_ERROR | NETIF_RSP_DROPPED
        ) {
            let fault = format!("tx status {} for id {}", rsp.status, rsp.id);
            return Err(self.fail(fault));
        }
        if rsp.status != NETIF_RSP_OKAY {
            self.statuses.push(rsp.status);
        }
        let Some(packet) = self.tx_in_flight.get_mut(&slot.packet) else {
            return Ok(());
        };
        packet.remaining -= 1;
        packet.status = packet.status.min(rsp.status);
        if packet.remaining == 0 {
            if packet.status != NETIF_RSP_OKAY {
                self.stats.tx_errors += 1;
            }
            self.tx_in_flight.remove(&slot.packet);
        }
        Ok(())
    }
}

/// The flags of a packet's first slot for its checksum state, as netfront
/// sets them for `CHECKSUM_PARTIAL` and `CHECKSUM_UNNECESSARY`.
fn csum_flags(offload: &Offload) -> u16 {
    if offload.csum_blank {
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED
    } else if offload.data_validated {
        NETTXF_DATA_VALIDATED
    } else {
        0
    }
}

/// The extra-info slot of a GSO packet.
fn gso_extra(gso: Gso) -> ExtraInfo {
    let gso_type = match gso.kind {
        GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
        GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
    };
    let (size, features) = (gso.size, 0);
    let extra = Extra::Gso {
        size,
        gso_type,
        features,
    };
    ExtraInfo { flags: 0, extra }
}

/// Refuses what the features `options` negotiated do not allow.
pub(super) fn packet_allowed(
    options: &NetFrontOptions,
    packet: &Packet,
) -> Result<(), NetFrontError> {
    let len = packet.data.len();
    if len == 0 {
        return Err(NetFrontError::BadArgument("empty packet"));
    }
    if len > MAX_PACKET {
        return Err(NetFrontError::BadArgument("packet over 65535 bytes"));
    }
    if !options.sg && len > PAGE_SIZE {
        let why = "packet over a page without feature-sg";
        return Err(NetFrontError::BadArgument(why));
    }
    match packet.offload.gso {
        Some(_) if !options.gso => {
            Err(NetFrontError::BadArgument("GSO packet without feature-gso"))
        }
        // Netback takes a zero MSS for a fatal error of the guest.
        Some(g) if g.size == 0 => Err(NetFrontError::BadArgument("GSO size 0")),
        _ => Ok(()),
    }
}
