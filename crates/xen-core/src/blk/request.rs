//! Judging a blkif request, on the backend's private copy of its slot, as
//! Linux blkback does: what the disk offers decides which operations are
//! served (the rest get `BLKIF_RSP_EOPNOTSUPP`), and every number the guest
//! sent is checked before anything is mapped or read (a bad one gets
//! `BLKIF_RSP_ERROR` and one log line).

use std::fmt;

use super::storage::{Geometry, SECTOR_SIZE};
use crate::ring::blkif::{
    Request, Segment, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
    BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, SEGMENTS_PER_INDIRECT_PAGE,
};

/// Sectors of 512 bytes in a 4 KiB page: `last_sect` is at most this − 1.
const SECTORS_PER_PAGE: u8 = 8;

/// What the backend advertised, against which requests are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The disk's size and features.
    pub geometry: Geometry,
    /// `feature-barrier` was advertised.
    pub barrier: bool,
    /// `feature-max-indirect-segments` (0: indirect requests not offered).
    pub max_indirect_segments: u32,
}

impl Offer {
    /// `feature-flush-cache`: offered when the storage has a volatile cache.
    pub fn flush(&self) -> bool {
        self.geometry.volatile_cache
    }
}

/// A request found wrong: the response status and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`.
    pub status: i16,
    /// For the log.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

fn error(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: BLKIF_RSP_ERROR,
        reason: reason.into(),
    }
}

fn unsupported(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: BLKIF_RSP_EOPNOTSUPP,
        reason: reason.into(),
    }
}

/// Where a read or write's segments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segments {
    /// In the slot: the first `n` of these.
    Direct {
        /// The slot's segment fields.
        seg: [Segment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
        /// How many are used.
        n: usize,
    },
    /// In granted pages: `n` segments in the first `pages` of `grefs`.
    Indirect {
        /// The pages' grant references.
        grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
        /// Pages used.
        pages: usize,
        /// Segments.
        n: usize,
    },
}

impl Segments {
    /// How many segments (each at most a page).
    pub fn count(&self) -> usize {
        match *self {
            Segments::Direct { n, .. } | Segments::Indirect { n, .. } => n,
        }
    }
}

/// What an accepted request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Read or write `segments` from `sector` on. A barrier or a flush with
    /// data orders the write after every earlier one and makes it durable
    /// (`flush_after`).
    Transfer {
        /// Write (else read).
        write: bool,
        /// First sector.
        sector: u64,
        /// The data's pages.
        segments: Segments,
        /// Make earlier writes durable first (barrier, flush with data).
        flush_before: bool,
    },
    /// Make every completed write durable.
    Flush,
    /// Forget `nr_sectors` from `sector`.
    Discard {
        /// First sector.
        sector: u64,
        /// Sectors.
        nr_sectors: u64,
        /// The data must become unrecoverable.
        secure: bool,
    },
}

/// An accepted request: what to do and what to echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The frontend's tag.
    pub id: u64,
    /// The operation byte to echo (an indirect request's `indirect_op`).
    pub operation: u8,
    /// The work.
    pub plan: Plan,
}

/// The operation byte a response to `req` carries: an indirect request is
/// answered with the operation it carries (`indirect_op`), as blkback does
/// and blkfront checks.
pub fn echoed_operation(req: &Request) -> u8 {
    match req {
        Request::Indirect(r) => r.indirect_op,
        _ => req.operation(),
    }
}

/// Judges a request against what was offered.
pub fn check(req: &Request, offer: &Offer) -> Result<Checked, Refusal> {
    let g = &offer.geometry;
    let (id, operation) = (req.id(), echoed_operation(req));
    let plan = match *req {
        Request::Direct(r) => {
            let (write, flush_before) = match r.operation {
                BLKIF_OP_READ => (false, false),
                BLKIF_OP_WRITE => (true, false),
                BLKIF_OP_WRITE_BARRIER if offer.barrier => (true, true),
                BLKIF_OP_FLUSH_DISKCACHE if offer.flush() => {
                    if r.nr_segments == 0 {
                        return Ok(Checked {
                            id,
                            operation,
                            plan: Plan::Flush,
                        });
                    }
                    (true, true)
                }
                op => return Err(unsupported(format!("operation {op} not offered"))),
            };
            let n = usize::from(r.nr_segments);
            if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                return Err(error(format!("{n} segments in a direct request")));
            }
            let sectors = segment_sectors(&r.seg[..n])?;
            check_transfer(g, write, r.sector_number, sectors)?;
            Plan::Transfer {
                write,
                sector: r.sector_number,
                segments: Segments::Direct { seg: r.seg, n },
                flush_before,
            }
        }
        Request::Discard(r) => {
            let Some(discard) = g.discard else {
                return Err(unsupported("discard not offered"));
            };
            let secure = r.flag & crate::ring::blkif::BLKIF_DISCARD_SECURE != 0;
            if secure && !discard.secure {
                return Err(unsupported("secure discard not offered"));
            }
            if g.read_only {
                return Err(error("discard on a read-only disk"));
            }
            check_range(g, r.sector_number, r.nr_sectors)?;
            Plan::Discard {
                sector: r.sector_number,
                nr_sectors: r.nr_sectors,
                secure,
            }
        }
        Request::Indirect(r) => {
            if offer.max_indirect_segments == 0 {
                return Err(unsupported("indirect requests not offered"));
            }
            let write = match r.indirect_op {
                BLKIF_OP_READ => false,
                BLKIF_OP_WRITE => true,
                op => return Err(error(format!("indirect operation {op}"))),
            };
            let n = usize::from(r.nr_segments);
            if n == 0 || n > offer.max_indirect_segments as usize {
                return Err(error(format!(
                    "{n} segments in an indirect request (at most {})",
                    offer.max_indirect_segments
                )));
            }
            let pages = n.div_ceil(SEGMENTS_PER_INDIRECT_PAGE);
            if pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST {
                return Err(error(format!("{pages} indirect pages")));
            }
            if write && g.read_only {
                return Err(error("write to a read-only disk"));
            }
            // The segments themselves are judged once copied out of their
            // pages ([`check_indirect_segments`]); a bound first.
            check_range(g, r.sector_number, 0)?;
            Plan::Transfer {
                write,
                sector: r.sector_number,
                segments: Segments::Indirect {
                    grefs: r.indirect_grefs,
                    pages,
                    n,
                },
                flush_before: false,
            }
        }
    };
    Ok(Checked {
        id,
        operation,
        plan,
    })
}

/// Judges the segments an indirect request's pages hold (already copied
/// out of the guest's pages) for a transfer from `sector`.
pub fn check_indirect_segments(
    segments: &[Segment],
    write: bool,
    sector: u64,
    offer: &Offer,
) -> Result<(), Refusal> {
    let sectors = segment_sectors(segments)?;
    check_transfer(&offer.geometry, write, sector, sectors)
}

/// Total sectors of `segments`, each within its page.
fn segment_sectors(segments: &[Segment]) -> Result<u64, Refusal> {
    let mut total = 0u64;
    for (i, s) in segments.iter().enumerate() {
        if s.first_sect > s.last_sect || s.last_sect >= SECTORS_PER_PAGE {
            return Err(error(format!(
                "segment {i}: sectors {}..={} of a page",
                s.first_sect, s.last_sect
            )));
        }
        total += u64::from(s.last_sect - s.first_sect) + 1;
    }
    Ok(total)
}

fn check_transfer(g: &Geometry, write: bool, sector: u64, sectors: u64) -> Result<(), Refusal> {
    if write && g.read_only {
        return Err(error("write to a read-only disk"));
    }
    check_range(g, sector, sectors)
}

fn check_range(g: &Geometry, sector: u64, sectors: u64) -> Result<(), Refusal> {
    match sector.checked_add(sectors) {
        Some(end) if end <= g.sectors && sector < g.sectors.max(1) => Ok(()),
        _ => Err(error(format!(
            "sectors {sector}+{sectors} past the end of the disk ({} sectors)",
            g.sectors
        ))),
    }
}

/// Byte offset of a sector.
pub fn byte_offset(sector: u64) -> u64 {
    sector * SECTOR_SIZE
}

#[cfg(test)]
mod tests;
