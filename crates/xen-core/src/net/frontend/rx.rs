//! Receiving: buffers posted on the receive ring, responses taken off it
//! (each found by the slot it sits in and checked against that slot's
//! request), a packet assembled once its whole chain is in, and the
//! buffers posted again.

use super::*;

impl SimNetFront {
    /// Posts every spare buffer, one request each in the next slot (its id
    /// the slot's position, as netfront's), and pushes them.
    pub(super) fn post_rx(&mut self) -> Result<(), NetFrontError> {
        if self.rx_spare.is_empty() {
            return Ok(());
        }
        let pages = std::mem::take(&mut self.rx_spare);
        let posted = self.on_rx(|r| {
            let mut at = Vec::with_capacity(pages.len());
            for page in &pages {
                let id = (r.req_prod_pvt() & (r.size() - 1)) as u16;
                let gref = page.gref;
                r.write_request(&RxRequest { id, gref }.encode())?;
                at.push(id);
            }
            Ok(at)
        });
        let posted = match posted {
            Ok(at) => at,
            Err(e) => {
                // Close still ends their grants.
                self.rx_spare = pages;
                return Err(e);
            }
        };
        for (page, id) in pages.into_iter().zip(posted) {
            // Buffers never outnumber slots, so a slot being posted has
            // given its buffer back already.
            if let Some(old) = self.rx_posted[usize::from(id)].replace(page) {
                self.held.push(old);
            }
        }
        if self.on_rx(|r| r.push_requests_and_check_notify())? {
            self.notify_port(self.rx_port)?;
        }
        Ok(())
    }

    /// Takes every published receive response, assembles the packets whose
    /// chain is complete, and posts their buffers again.
    pub(super) fn poll_rx(&mut self) -> Result<(), NetFrontError> {
        let got = self.on_rx(|r| {
            let (mut out, mask) = (Vec::new(), r.size() - 1);
            r.unconsumed_responses()?;
            loop {
                let index = r.rsp_cons() & mask;
                match r.copy_response()? {
                    Some(raw) => out.push((index as u16, raw)),
                    None => return Ok(out),
                }
            }
        })?;
        for (id, raw) in got {
            let Some(page) = self.rx_posted[usize::from(id)].take() else {
                let fault = format!("rx response in slot {id}, which holds no request");
                return Err(self.fail(fault));
            };
            self.rx_partial.push(RxSlot { raw, id, page });
        }
        while self.take_rx_packet()? {}
        self.post_rx()
    }

    /// Assembles the packet whose responses start the ones taken; false if
    /// its chain is not complete yet.
    fn take_rx_packet(&mut self) -> Result<bool, NetFrontError> {
        let Some(end) = self.chain_end()? else {
            // The rest comes later, unless the chain holds every buffer.
            if !self.rx_partial.is_empty() && self.rx_partial.len() >= self.rx_count {
                let n = self.rx_partial.len();
                let fault = format!("an rx packet goes on past all {n} buffers posted");
                return Err(self.fail(fault));
            }
            return Ok(false);
        };
        let slots: Vec<RxSlot> = self.rx_partial.drain(..end).collect();
        let packet = self.assemble(&slots);
        self.rx_spare.extend(slots.iter().map(|s| s.page));
        match packet? {
            Some(p) => {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += p.data.len() as u64;
                self.rx_queue.push_back(p);
            }
            None => self.stats.rx_errors += 1,
        }
        Ok(true)
    }

    /// How many responses the first packet taken spans: its first
    /// response, its extra-info slots, the rest of its data; `None` while
    /// some are still to come.
    fn chain_end(&mut self) -> Result<Option<usize>, NetFrontError> {
        let slots = &self.rx_partial;
        let Some(first) = slots.first() else {
            return Ok(None);
        };
        let first = RxResponse::decode(&first.raw);
        let mut at = 1;
        if first.flags & NETRXF_EXTRA_INFO != 0 {
            loop {
                let Some(s) = slots.get(at) else {
                    return Ok(None);
                };
                at += 1;
                if !ExtraInfo::decode(&s.raw).more() {
                    break;
                }
            }
        }
        let (mut more, mut data) = (first.flags & NETRXF_MORE_DATA != 0, 1);
        while more {
            if data >= XEN_NETIF_NR_SLOTS_MIN {
                let fault = format!("an rx packet over {data} data slots");
                return Err(self.fail(fault));
            }
            let Some(s) = slots.get(at) else {
                return Ok(None);
            };
            (at, data) = (at + 1, data + 1);
            more = RxResponse::decode(&s.raw).flags & NETRXF_MORE_DATA != 0;
        }
        Ok(Some(at))
    }

    /// The packet of a complete chain; `None` if a response of it carried
    /// an error status (the packet is dropped, as netfront does).
    fn assemble(&mut self, slots: &[RxSlot]) -> Result<Option<Packet>, NetFrontError> {
        let first = RxResponse::decode(&slots[0].raw);
        let mut offload = Offload {
            csum_blank: first.flags & NETRXF_CSUM_BLANK != 0,
            data_validated: first.flags & NETRXF_DATA_VALIDATED != 0,
            gso: None,
        };
        let mut data_slots = vec![&slots[0]];
        let mut rest = slots[1..].iter();
        if first.flags & NETRXF_EXTRA_INFO != 0 {
            for s in rest.by_ref() {
                let extra = ExtraInfo::decode(&s.raw);
                self.rx_extra(extra, &mut offload)?;
                if !extra.more() {
                    break;
                }
            }
        }
        data_slots.extend(rest);
        if data_slots.len() > 1 && !self.options.sg {
            let fault = "an rx packet over several slots without feature-sg";
            return Err(self.fail(fault.into()));
        }
        let (mut data, mut dropped) = (Vec::new(), false);
        for s in data_slots {
            let rsp = RxResponse::decode(&s.raw);
            if rsp.id != s.id {
                let fault = format!("rx response id {} in the slot of request {}", rsp.id, s.id);
                return Err(self.fail(fault));
            }
            if rsp.status <= 0 {
                dropped = true;
                continue;
            }
            let (offset, len) = (usize::from(rsp.offset), rsp.status as usize);
            if offset + len > PAGE_SIZE {
                let fault = format!("rx data at {offset}, {len} bytes: past its page");
                return Err(self.fail(fault));
            }
            if data.len() + len > MAX_PACKET {
                let fault = format!("an rx packet over {MAX_PACKET} bytes");
                return Err(self.fail(fault));
            }
            let at = data.len();
            data.resize(at + len, 0);
            if let Some(page) = self.gnttab.page(s.page.frame) {
                let _ = page.read(offset, &mut data[at..]);
            }
        }
        Ok((!dropped).then_some(Packet { data, offload }))
    }

    /// What an extra-info slot says about the packet: GSO is kept;
    /// multicast and hash extras carry nothing a packet keeps.
    fn rx_extra(&mut self, extra: ExtraInfo, offload: &mut Offload) -> Result<(), NetFrontError> {
        let fault = match extra.extra {
            Extra::Gso { .. } if !self.options.gso => "a GSO rx packet without feature-gso".into(),
            Extra::Gso { size: 0, .. } => "an rx GSO size of 0".into(),
            Extra::Gso { size, gso_type, .. } => {
                let kind = match gso_type {
                    XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
                    XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                    other => return Err(self.fail(format!("rx GSO type {other}"))),
                };
                offload.gso = Some(Gso { size, kind });
                return Ok(());
            }
            Extra::Other { extra_type, .. } => format!("rx extra-info type {extra_type}"),
            Extra::McastAdd(_) | Extra::McastDel(_) | Extra::Hash { .. } => return Ok(()),
        };
        Err(self.fail(fault))
    }
}
