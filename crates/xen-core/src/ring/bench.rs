//! Ring throughput for `bench/platform`: request+response round trips per
//! second through blkif rings on the simulated host, each frontend a thread
//! of the guest, the backend a source on dom0's platform event loop (as a
//! block backend will run). Read it against the same run's bare eventfd
//! round trip (`platform::bench::eventfd_round_trips`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::blkif::{
    BlkifNative, DirectRequest, Request, Response, Segment, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_READ, BLKIF_RSP_OKAY,
};
use super::shared::{BackRing, BackRingState, FrontRing};
use crate::platform::event_loop::{wait_readable, Control, Wake};
use crate::platform::sim::{DomainConfig, SimHypervisor};
use crate::platform::{DomId, EventChannels, GrantMapping, GrantTable, Platform, Port};

const BACK: DomId = 0;
const GUEST: DomId = 9;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The backend of one queue: answers every request it finds, as a block
/// backend would answer reads it had already done.
struct Echo {
    map: GrantMapping,
    port: Port,
    state: Option<BackRingState>,
}

impl Echo {
    fn serve(&mut self, cx: &mut Control<'_>) -> Result<(), super::shared::SharedRingError> {
        let mem = self.map.mem();
        let mut ring = match self.state {
            Some(s) => BackRing::<BlkifNative>::resume(mem, s)?,
            None => BackRing::<BlkifNative>::attach(mem)?,
        };
        loop {
            while let Some(raw) = ring.copy_request()? {
                let id = Request::decode::<BlkifNative>(&raw).id();
                let rsp = Response {
                    id,
                    operation: BLKIF_OP_READ,
                    status: BLKIF_RSP_OKAY,
                };
                ring.write_response(&rsp.encode::<BlkifNative>())?;
            }
            if ring.push_responses_and_check_notify()? {
                cx.notify(self.port);
            }
            if !ring.final_check_for_requests()? {
                break;
            }
        }
        self.state = Some(ring.state());
        Ok(())
    }
}

/// Round trips per second through `queues` rings at once (one guest thread
/// each, one request in flight per ring), measured for `duration`.
pub fn ring_round_trips(queues: usize, duration: Duration) -> io::Result<f64> {
    let hv = SimHypervisor::new();
    hv.create_domain(DomainConfig::new(BACK))?;
    hv.create_domain(DomainConfig::new(GUEST))?;
    let host = hv.host();
    let platform = Arc::new(Platform::simulated(&host, BACK).map_err(other)?);
    let gt = host.gnttab(GUEST).map_err(other)?;
    let stop = AtomicBool::new(false);
    let mut sources = Vec::new();
    let mut fronts = Vec::new();
    for _ in 0..queues {
        let frame = gt
            .alloc_page()
            .ok_or_else(|| other("the guest has no free page"))?;
        let gref = gt.grant(BACK, frame, false).map_err(other)?;
        let evtchn = host.evtchn(GUEST).map_err(other)?;
        let guest_port = evtchn.alloc_unbound(BACK).map_err(other)?;
        {
            let page = gt.page(frame).ok_or_else(|| other("no page"))?;
            FrontRing::<BlkifNative>::init(page).map_err(other)?;
        }
        let map = platform.gntdev().map(GUEST, &[gref], true).map_err(other)?;
        let port = platform
            .evtchn()
            .bind_interdomain(GUEST, guest_port)
            .map_err(other)?;
        let mut echo = Echo {
            map,
            port,
            state: None,
        };
        let source = move |_why: Wake, cx: &mut Control<'_>| {
            // A broken ring would stop answering; the benchmark then
            // times out below rather than measuring nonsense.
            let _ = echo.serve(cx);
        };
        sources.push(
            platform
                .event_loop()
                .add(Some(port), Box::new(source), false)?,
        );
        fronts.push((frame, evtchn, guest_port));
    }
    let trips: io::Result<Vec<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = fronts
            .iter()
            .map(|(frame, evtchn, port)| {
                let gt = &gt;
                let stop = &stop;
                s.spawn(move || -> io::Result<u64> {
                    let page = gt.page(*frame).ok_or_else(|| other("no page"))?;
                    let mut ring = FrontRing::<BlkifNative>::init(page).map_err(other)?;
                    let mut done = 0u64;
                    let mut pending = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let req = Request::Direct(DirectRequest {
                            operation: BLKIF_OP_READ,
                            nr_segments: 0,
                            handle: 0,
                            id: done,
                            sector_number: done,
                            seg: [Segment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST],
                        });
                        ring.write_request(&req.encode::<BlkifNative>())
                            .map_err(other)?;
                        if ring.push_requests_and_check_notify().map_err(other)? {
                            evtchn.notify(*port).map_err(other)?;
                        }
                        // Wait for the answer as a guest driver does: take
                        // responses, and sleep only after the final check.
                        loop {
                            if ring.copy_response().map_err(other)?.is_some() {
                                break;
                            }
                            if ring.final_check_for_responses().map_err(other)? {
                                continue;
                            }
                            if !wait_readable(evtchn.fd(), Some(Duration::from_secs(10)))? {
                                return Err(other("no response within 10 s"));
                            }
                            pending.clear();
                            evtchn.pending(&mut pending).map_err(other)?;
                            for p in &pending {
                                evtchn.unmask(*p).map_err(other)?;
                            }
                        }
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(other("a guest thread panicked")))
            })
            .collect()
    });
    drop(sources);
    let total: u64 = trips?.iter().sum();
    Ok(total as f64 / duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_round_on_one_and_two_queues() {
        for queues in [1, 2] {
            let rate = ring_round_trips(queues, Duration::from_millis(100)).unwrap();
            assert!(rate > 0.0, "{queues} queues: no round trip completed");
        }
    }
}
