//! Each rule of `check`, with the status blkback gives.

use super::*;
use crate::blk::storage::DiscardInfo;
use crate::ring::blkif::{
    DirectRequest, DiscardRequest, IndirectRequest, BLKIF_DISCARD_SECURE, BLKIF_OP_RESERVED_1,
};

fn offer() -> Offer {
    Offer {
        geometry: Geometry {
            sectors: 1000,
            sector_size: 512,
            physical_sector_size: 4096,
            read_only: false,
            volatile_cache: true,
            discard: Some(DiscardInfo {
                granularity: 4096,
                alignment: 0,
                secure: false,
            }),
        },
        barrier: false,
        max_indirect_segments: 256,
    }
}

fn seg(first: u8, last: u8) -> Segment {
    Segment {
        gref: 9,
        first_sect: first,
        last_sect: last,
    }
}

fn direct(operation: u8, sector: u64, segs: &[Segment]) -> Request {
    let mut seg = [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
    seg[..segs.len()].copy_from_slice(segs);
    Request::Direct(DirectRequest {
        operation,
        nr_segments: segs.len() as u8,
        handle: 0,
        id: 0xdead_beef_0000_0001,
        sector_number: sector,
        seg,
    })
}

fn status(r: Result<Checked, Refusal>) -> i16 {
    r.err().map_or(0, |e| e.status)
}

#[test]
fn a_read_within_the_disk_is_a_transfer_echoing_id_and_operation() {
    let c = check(&direct(BLKIF_OP_READ, 992, &[seg(0, 7)]), &offer()).unwrap();
    assert_eq!((c.id, c.operation), (0xdead_beef_0000_0001, BLKIF_OP_READ));
    assert!(matches!(
        c.plan,
        Plan::Transfer {
            write: false,
            sector: 992,
            segments: Segments::Direct { n: 1, .. },
            flush_before: false
        }
    ));
}

#[test]
fn bad_numbers_are_errors() {
    let o = offer();
    // Past the end, by one sector, and by wrapping around.
    assert_eq!(
        status(check(&direct(BLKIF_OP_READ, 993, &[seg(0, 7)]), &o)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(
            &direct(BLKIF_OP_WRITE, u64::MAX - 2, &[seg(0, 7)]),
            &o
        )),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(&direct(BLKIF_OP_READ, 0, &[seg(3, 2)]), &o)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(&direct(BLKIF_OP_READ, 0, &[seg(0, 8)]), &o)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(&direct(BLKIF_OP_READ, 0, &[]), &o)),
        BLKIF_RSP_ERROR
    );
    let mut too_many = direct(BLKIF_OP_READ, 0, &[seg(0, 0)]);
    if let Request::Direct(r) = &mut too_many {
        r.nr_segments = 12;
    }
    assert_eq!(status(check(&too_many, &o)), BLKIF_RSP_ERROR);
}

#[test]
fn operations_not_offered_are_eopnotsupp() {
    let mut o = offer();
    assert_eq!(
        status(check(&direct(BLKIF_OP_RESERVED_1, 0, &[seg(0, 0)]), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
    assert_eq!(
        status(check(&direct(200, 0, &[seg(0, 0)]), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
    assert_eq!(
        status(check(&direct(BLKIF_OP_WRITE_BARRIER, 0, &[seg(0, 0)]), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
    o.barrier = true;
    assert_eq!(
        status(check(&direct(BLKIF_OP_WRITE_BARRIER, 0, &[seg(0, 0)]), &o)),
        0
    );
    o.geometry.volatile_cache = false;
    assert_eq!(
        status(check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
    o.geometry.discard = None;
    let discard = Request::Discard(DiscardRequest {
        flag: 0,
        handle: 0,
        id: 1,
        sector_number: 0,
        nr_sectors: 8,
    });
    assert_eq!(status(check(&discard, &o)), BLKIF_RSP_EOPNOTSUPP);
}

#[test]
fn a_flush_without_data_is_a_flush_and_with_data_a_write_after_one() {
    let o = offer();
    let c = check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &o).unwrap();
    assert_eq!(c.plan, Plan::Flush);
    let c = check(&direct(BLKIF_OP_FLUSH_DISKCACHE, 8, &[seg(0, 7)]), &o).unwrap();
    assert!(matches!(
        c.plan,
        Plan::Transfer {
            write: true,
            flush_before: true,
            ..
        }
    ));
}

#[test]
fn a_read_only_disk_refuses_writes_and_discards_but_reads() {
    let mut o = offer();
    o.geometry.read_only = true;
    assert_eq!(
        status(check(&direct(BLKIF_OP_READ, 0, &[seg(0, 7)]), &o)),
        0
    );
    assert_eq!(
        status(check(&direct(BLKIF_OP_WRITE, 0, &[seg(0, 7)]), &o)),
        BLKIF_RSP_ERROR
    );
    let discard = Request::Discard(DiscardRequest {
        flag: 0,
        handle: 0,
        id: 1,
        sector_number: 0,
        nr_sectors: 8,
    });
    assert_eq!(status(check(&discard, &o)), BLKIF_RSP_ERROR);
}

#[test]
fn discards_are_checked_for_range_and_secure_support() {
    let mut o = offer();
    let discard = |flag, sector, n| {
        Request::Discard(DiscardRequest {
            flag,
            handle: 0,
            id: 1,
            sector_number: sector,
            nr_sectors: n,
        })
    };
    assert_eq!(
        check(&discard(0, 8, 16), &o).unwrap().plan,
        Plan::Discard {
            sector: 8,
            nr_sectors: 16,
            secure: false
        }
    );
    assert_eq!(status(check(&discard(0, 990, 11), &o)), BLKIF_RSP_ERROR);
    assert_eq!(status(check(&discard(0, 1, u64::MAX), &o)), BLKIF_RSP_ERROR);
    assert_eq!(
        status(check(&discard(BLKIF_DISCARD_SECURE, 0, 8), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
    o.geometry.discard.as_mut().unwrap().secure = true;
    assert_eq!(status(check(&discard(BLKIF_DISCARD_SECURE, 0, 8), &o)), 0);
}

#[test]
fn indirect_requests_are_bounded_by_what_was_advertised() {
    let mut o = offer();
    let indirect = |op, n| {
        Request::Indirect(IndirectRequest {
            indirect_op: op,
            nr_segments: n,
            id: 3,
            sector_number: 0,
            handle: 0,
            indirect_grefs: [7; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
        })
    };
    let c = check(&indirect(BLKIF_OP_WRITE, 256), &o).unwrap();
    // Answered with the operation it carries.
    assert_eq!(c.operation, BLKIF_OP_WRITE);
    assert!(matches!(
        c.plan,
        Plan::Transfer {
            write: true,
            segments: Segments::Indirect {
                pages: 1,
                n: 256,
                ..
            },
            ..
        }
    ));
    assert_eq!(
        status(check(&indirect(BLKIF_OP_WRITE, 257), &o)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(&indirect(BLKIF_OP_READ, 0), &o)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        status(check(&indirect(BLKIF_OP_FLUSH_DISKCACHE, 8), &o)),
        BLKIF_RSP_ERROR
    );
    o.max_indirect_segments = 4096;
    // 4096 segments would take 8 pages: the most a slot names.
    assert_eq!(status(check(&indirect(BLKIF_OP_READ, 4096), &o)), 0);
    assert_eq!(
        status(check(&indirect(BLKIF_OP_READ, 4097), &o)),
        BLKIF_RSP_ERROR
    );
    o.max_indirect_segments = 0;
    assert_eq!(
        status(check(&indirect(BLKIF_OP_READ, 8), &o)),
        BLKIF_RSP_EOPNOTSUPP
    );
}

#[test]
fn indirect_segments_are_judged_like_direct_ones() {
    let o = offer();
    assert!(check_indirect_segments(&[seg(0, 7); 100], false, 0, &o).is_ok());
    // 125 pages of 8 sectors end exactly at 1000.
    assert!(check_indirect_segments(&[seg(0, 7); 125], true, 0, &o).is_ok());
    assert_eq!(
        check_indirect_segments(&[seg(0, 7); 126], true, 0, &o)
            .unwrap_err()
            .status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        check_indirect_segments(&[seg(0, 7), seg(5, 4)], false, 0, &o)
            .unwrap_err()
            .status,
        BLKIF_RSP_ERROR
    );
}
