//! blkif requests on arbitrary slot bytes, in both layouts: decoding and
//! judging never panic; an accepted request stays inside the disk and
//! within what was offered, and what the judge accepts re-encodes to a
//! request it accepts again.

#![no_main]

use libfuzzer_sys::fuzz_target;

use xen_core::blk::request::{check, check_indirect_segments, Offer, Plan, Segments};
use xen_core::blk::storage::{DiscardInfo, Geometry};
use xen_core::ring::blkif::{BlkifX86_32, BlkifX86_64, Request, Segment, SEGMENT_SIZE};
use xen_core::ring::shared::{RingProtocol, SlotBytes};

fn offer(flags: u8) -> Offer {
    Offer {
        geometry: Geometry {
            sectors: 1 << 20,
            sector_size: 512,
            physical_sector_size: 4096,
            read_only: flags & 1 != 0,
            volatile_cache: flags & 2 != 0,
            discard: (flags & 4 != 0).then_some(DiscardInfo {
                granularity: 4096,
                alignment: 0,
                secure: flags & 8 != 0,
            }),
        },
        barrier: flags & 16 != 0,
        max_indirect_segments: if flags & 32 != 0 { 256 } else { 0 },
    }
}

fn judge<P: RingProtocol + xen_core::ring::blkif::BlkifAbi>(slot: &[u8], o: &Offer, rest: &[u8]) {
    let mut raw = P::Request::zeroed();
    let n = raw.as_ref().len().min(slot.len());
    raw.as_mut()[..n].copy_from_slice(&slot[..n]);
    let req = Request::decode::<P>(&raw);
    let Ok(c) = check(&req, o) else { return };
    assert_eq!(c.id, req.id());
    match c.plan {
        Plan::Transfer {
            write,
            sector,
            segments,
            ..
        } => {
            assert!(!(write && o.geometry.read_only));
            match segments {
                Segments::Direct { seg, n } => {
                    let sectors: u64 = seg[..n]
                        .iter()
                        .map(|s| u64::from(s.last_sect - s.first_sect) + 1)
                        .sum();
                    assert!(n >= 1 && n <= 11);
                    assert!(sector + sectors <= o.geometry.sectors);
                }
                Segments::Indirect { n, pages, .. } => {
                    assert!(n >= 1 && n as u32 <= o.max_indirect_segments);
                    assert!(pages >= 1 && pages <= 8);
                    // The segments of its pages, from the rest of the input.
                    let segs: Vec<Segment> = rest
                        .chunks_exact(SEGMENT_SIZE)
                        .take(n)
                        .map(|c| Segment::decode(c.try_into().expect("segment")))
                        .collect();
                    if check_indirect_segments(&segs, write, sector, o).is_ok() {
                        let sectors: u64 = segs
                            .iter()
                            .map(|s| u64::from(s.last_sect - s.first_sect) + 1)
                            .sum();
                        assert!(segs
                            .iter()
                            .all(|s| s.first_sect <= s.last_sect && s.last_sect < 8));
                        assert!(sector + sectors <= o.geometry.sectors);
                    }
                }
            }
        }
        Plan::Flush => assert!(o.flush()),
        Plan::Discard {
            sector,
            nr_sectors,
            secure,
        } => {
            let d = o.geometry.discard.expect("discard offered");
            assert!(!secure || d.secure);
            assert!(sector + nr_sectors <= o.geometry.sectors);
        }
    }
    // What was accepted is accepted again after a round trip.
    let again = Request::decode::<P>(&req.encode::<P>());
    assert!(check(&again, o).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let o = offer(flags);
    let (slot, tail) = rest.split_at(rest.len().min(112));
    judge::<BlkifX86_64>(slot, &o, tail);
    judge::<BlkifX86_32>(slot, &o, tail);
});
