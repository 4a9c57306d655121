//! The simulated hypervisor against Xen's rules.

use std::time::Duration;

use super::*;
use crate::platform::abi::*;
use crate::platform::{CopySegment, CopySide, EventChannels, GntSt, GrantMapper, GrantTable, Port};

const BACK: DomId = 0;
const FRONT: DomId = 5;
const OTHER: DomId = 6;

fn hv() -> SimHypervisor {
    let hv = SimHypervisor::new();
    for d in [BACK, FRONT, OTHER] {
        hv.create_domain(DomainConfig::new(d)).unwrap();
    }
    hv
}

/// A frame of the frontend filled with `byte` and granted to `to`.
fn granted_page(gt: &SimGntTable, to: DomId, byte: u8, readonly: bool) -> (u32, u32) {
    let frame = gt.alloc_page().unwrap();
    gt.page(frame).unwrap().fill(0, PAGE_SIZE, byte).unwrap();
    (frame, gt.grant(to, frame, readonly).unwrap())
}

fn wait_pending(ch: &SimEvtchn) -> Vec<Port> {
    for _ in 0..500 {
        let mut out = Vec::new();
        ch.pending(&mut out).unwrap();
        if !out.is_empty() {
            return out;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Vec::new()
}

fn pending_now(ch: &SimEvtchn) -> Vec<Port> {
    let mut out = Vec::new();
    ch.pending(&mut out).unwrap();
    out
}

#[test]
fn a_mapping_shares_memory_both_ways_and_sets_in_use_flags() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (f1, r1) = granted_page(&gt, BACK, 0x11, false);
    let (_f2, r2) = granted_page(&gt, BACK, 0x22, false);
    assert!(
        r1 >= GNTTAB_NR_RESERVED_ENTRIES,
        "reserved entries are not handed out"
    );
    let gntdev = host.gntdev(BACK);
    let map = gntdev.map(FRONT, &[r1, r2], true).unwrap();
    assert_eq!(map.len(), 2 * PAGE_SIZE);
    let mut b = [0u8; 2];
    map.mem().read(PAGE_SIZE - 1, &mut b).unwrap();
    assert_eq!(b, [0x11, 0x22], "frames are contiguous in the mapping");
    map.mem().write(0, b"hello").unwrap();
    let mut seen = [0u8; 5];
    gt.page(f1).unwrap().read(0, &mut seen).unwrap();
    assert_eq!(&seen, b"hello");
    let flags = gt.entry_flags(r1).unwrap();
    assert_eq!(
        flags & (GTF_READING | GTF_WRITING),
        GTF_READING | GTF_WRITING
    );
    // Ending access while mapped fails, as on Xen.
    assert!(matches!(gt.end_access(r1), Err(GrantError::InUse(r)) if r == r1));
    drop(map);
    assert_eq!(gt.entry_flags(r1).unwrap() & (GTF_READING | GTF_WRITING), 0);
    gt.end_access(r1).unwrap();
    gt.end_access(r2).unwrap();
    assert!(matches!(gt.end_access(r1), Err(GrantError::NotGranted(_))));
}

#[test]
fn read_only_maps_set_only_the_reading_flag_and_pins_count() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (_, r) = granted_page(&gt, BACK, 7, true);
    let gntdev = host.gntdev(BACK);
    let a = gntdev.map(FRONT, &[r], false).unwrap();
    let b = gntdev.map(FRONT, &[r], false).unwrap();
    assert!(!a.writable());
    assert_eq!(
        gt.entry_flags(r).unwrap() & (GTF_READING | GTF_WRITING),
        GTF_READING
    );
    drop(a);
    assert_eq!(
        gt.entry_flags(r).unwrap() & GTF_READING,
        GTF_READING,
        "still mapped once"
    );
    drop(b);
    assert_eq!(gt.entry_flags(r).unwrap() & GTF_READING, 0);
}

#[test]
fn bad_grants_fail_with_xen_status_and_leave_other_mappings_intact() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let gntdev = host.gntdev(BACK);
    let (_, good) = granted_page(&gt, BACK, 0x5a, false);
    let keep = gntdev.map(FRONT, &[good], true).unwrap();

    let entries = DomainConfig::new(FRONT).grant_entries();
    let err = gntdev.map(FRONT, &[entries], false).unwrap_err();
    assert_eq!(
        err.gntst(),
        Some(GntSt::BadGntref),
        "ref out of the table's range"
    );

    let (_, to_other) = granted_page(&gt, OTHER, 1, false);
    let err = gntdev.map(FRONT, &[to_other], false).unwrap_err();
    assert_eq!(
        err.gntst(),
        Some(GntSt::GeneralError),
        "ref granted to another domain"
    );

    let (_, ro) = granted_page(&gt, BACK, 2, true);
    let err = gntdev.map(FRONT, &[ro], true).unwrap_err();
    assert_eq!(
        err.gntst(),
        Some(GntSt::GeneralError),
        "writable map of a read-only grant"
    );
    assert_eq!(gt.entry_flags(ro).unwrap() & (GTF_READING | GTF_WRITING), 0);

    let err = gntdev.map(42, &[good], false).unwrap_err();
    assert_eq!(err.gntst(), Some(GntSt::BadDomain), "no such domain");

    let err = gntdev
        .map(FRONT, &[GNTTAB_NR_RESERVED_ENTRIES + 500], false)
        .unwrap_err();
    assert_eq!(
        err.gntst(),
        Some(GntSt::GeneralError),
        "an entry never granted"
    );

    // The mapping made before is untouched.
    let mut b = [0u8; 1];
    keep.mem().read(100, &mut b).unwrap();
    assert_eq!(b, [0x5a]);
    assert_eq!(gt.entry_flags(good).unwrap() & GTF_WRITING, GTF_WRITING);
}

#[test]
fn a_reserved_entry_is_filled_by_the_toolstack_only_and_stays_reserved() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let frame = gt.alloc_page().unwrap();
    gt.page(frame).unwrap().fill(0, PAGE_SIZE, 0x7c).unwrap();
    // Entry 0 is the console's (GNTTAB_RESERVED_CONSOLE).
    gt.grant_reserved(0, BACK, frame, false).unwrap();
    let map = host.gntdev(BACK).map(FRONT, &[0], true).unwrap();
    let mut b = [0u8; 1];
    map.mem().read(7, &mut b).unwrap();
    assert_eq!(b, [0x7c], "the reserved entry maps the frame it names");
    assert!(
        matches!(
            gt.grant_reserved(0, BACK, frame, false),
            Err(GrantError::InUse(0))
        ),
        "a granted reserved entry is not filled again"
    );
    assert!(matches!(gt.end_access(0), Err(GrantError::InUse(0))));
    drop(map);
    gt.end_access(0).unwrap();
    assert_eq!(
        host.gntdev(BACK)
            .map(FRONT, &[0], false)
            .unwrap_err()
            .gntst(),
        Some(GntSt::GeneralError),
        "an ended reserved entry grants nothing"
    );
    // Ended, it does not join the pool ordinary grants come from.
    for _ in 0..64 {
        let f = gt.alloc_page().unwrap();
        assert!(gt.grant(BACK, f, true).unwrap() >= GNTTAB_NR_RESERVED_ENTRIES);
    }
    // And can be filled again, by the toolstack.
    gt.grant_reserved(0, BACK, frame, true).unwrap();
    assert_eq!(gt.entry_flags(0), Some(GTF_PERMIT_ACCESS | GTF_READONLY));

    let err = gt.grant_reserved(GNTTAB_NR_RESERVED_ENTRIES, BACK, frame, false);
    assert_eq!(
        err.unwrap_err().gntst(),
        Some(GntSt::BadGntref),
        "only reserved entries"
    );
    let err = gt.grant_reserved(1, BACK, 0, false);
    assert_eq!(
        err.unwrap_err().gntst(),
        Some(GntSt::BadPage),
        "never the grant table's own frames"
    );
}

#[test]
fn an_empty_map_batch_is_einval_as_on_gntdev() {
    let hv = hv();
    let host = hv.host();
    let gntdev = host.gntdev(BACK);
    let err = gntdev.map(FRONT, &[], true).unwrap_err();
    assert!(
        matches!(err, GrantError::Os(ref e) if e.raw_os_error() == Some(libc::EINVAL)),
        "{err:?}"
    );
    assert_eq!(err.code(), "EINVAL");
    // Refused before anything else: even for a domain that does not exist.
    assert_eq!(gntdev.map(42, &[], false).unwrap_err().code(), "EINVAL");
}

#[test]
fn a_failed_batch_undoes_its_partial_successes() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (_, a) = granted_page(&gt, BACK, 1, false);
    let (_, b) = granted_page(&gt, BACK, 2, false);
    let (_, bad) = granted_page(&gt, OTHER, 3, false);
    let err = host
        .gntdev(BACK)
        .map(FRONT, &[a, b, bad], true)
        .unwrap_err();
    assert!(matches!(
        err,
        GrantError::Status {
            index: 2,
            status: GntSt::GeneralError
        }
    ));
    for r in [a, b] {
        assert_eq!(
            gt.entry_flags(r).unwrap() & (GTF_READING | GTF_WRITING),
            0,
            "ref {r}"
        );
        gt.end_access(r).unwrap();
    }
}

#[test]
fn a_guest_changing_its_entry_is_checked_at_map_time() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let gntdev = host.gntdev(BACK);
    // A hostile guest points an entry at its grant table, or past its memory.
    let r = GNTTAB_NR_RESERVED_ENTRIES + 1000;
    assert!(gt.write_entry(r, GTF_PERMIT_ACCESS, BACK, 0));
    assert_eq!(
        gntdev.map(FRONT, &[r], false).unwrap_err().gntst(),
        Some(GntSt::GeneralError)
    );
    assert!(gt.write_entry(r, GTF_PERMIT_ACCESS, BACK, 1_000_000));
    assert_eq!(
        gntdev.map(FRONT, &[r], false).unwrap_err().gntst(),
        Some(GntSt::GeneralError)
    );
    assert_eq!(
        gt.entry_flags(r).unwrap(),
        GTF_PERMIT_ACCESS,
        "no flag left set by a failed map"
    );
    // Or a type that is not permit_access.
    assert!(gt.write_entry(r, 2, BACK, 10));
    assert_eq!(
        gntdev.map(FRONT, &[r], false).unwrap_err().gntst(),
        Some(GntSt::GeneralError)
    );
}

#[test]
fn grant_copy_checks_each_segment() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (frame, rw) = granted_page(&gt, BACK, 0, false);
    let (_, ro) = granted_page(&gt, BACK, 9, true);
    let gntdev = host.gntdev(BACK);
    let data = vec![0xabu8; 512];
    let mut back = vec![0u8; 512];
    let mut ro_out = vec![0u8; 8];
    let mut segs = vec![
        CopySegment::new(
            CopySide::From(&data),
            CopySide::Grant {
                domid: FRONT,
                gref: rw,
                offset: 1024,
            },
            512,
        ),
        CopySegment::new(
            CopySide::Grant {
                domid: FRONT,
                gref: ro,
                offset: 0,
            },
            CopySide::Into(&mut ro_out),
            8,
        ),
        CopySegment::new(
            CopySide::From(&data),
            CopySide::Grant {
                domid: FRONT,
                gref: ro,
                offset: 0,
            },
            8,
        ),
        CopySegment::new(
            CopySide::From(&data),
            CopySide::Grant {
                domid: FRONT,
                gref: rw,
                offset: 4000,
            },
            200,
        ),
        CopySegment::new(
            CopySide::From(&data),
            CopySide::Grant {
                domid: FRONT,
                gref: 99_999,
                offset: 0,
            },
            8,
        ),
        CopySegment::new(
            CopySide::From(&data),
            CopySide::Grant {
                domid: 77,
                gref: rw,
                offset: 0,
            },
            8,
        ),
    ];
    gntdev.copy(&mut segs).unwrap();
    let statuses: Vec<GntSt> = segs.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            GntSt::Okay,
            GntSt::Okay,
            GntSt::GeneralError,
            GntSt::BadCopyArg,
            GntSt::BadGntref,
            GntSt::BadDomain
        ]
    );
    drop(segs);
    assert_eq!(ro_out, [9; 8]);
    let mut check = [0u8; 512];
    gt.page(frame).unwrap().read(1024, &mut check).unwrap();
    assert_eq!(check, [0xab; 512]);
    let mut segs = vec![CopySegment::new(
        CopySide::Grant {
            domid: FRONT,
            gref: rw,
            offset: 1024,
        },
        CopySide::Into(&mut back),
        512,
    )];
    gntdev.copy(&mut segs).unwrap();
    assert_eq!(segs[0].status, GntSt::Okay);
    drop(segs);
    assert_eq!(back, data);
    assert_eq!(
        gt.entry_flags(rw).unwrap() & (GTF_READING | GTF_WRITING),
        0,
        "no pin left after a copy"
    );
}

#[test]
fn event_channels_deliver_mask_and_unmask() {
    let hv = hv();
    let host = hv.host();
    let front = host.evtchn(FRONT).unwrap();
    let back = host.evtchn(BACK).unwrap();
    let fport = front.alloc_unbound(BACK).unwrap();
    let bport = back.bind_interdomain(FRONT, fport).unwrap();
    assert!(pending_now(&back).is_empty());
    front.notify(fport).unwrap();
    front.notify(fport).unwrap();
    assert_eq!(
        wait_pending(&back),
        [bport],
        "two notifications, one delivery"
    );
    // Masked until unmasked: a notification meanwhile is held, not lost.
    front.notify(fport).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    assert!(pending_now(&back).is_empty());
    back.unmask(bport).unwrap();
    assert_eq!(wait_pending(&back), [bport]);
    back.unmask(bport).unwrap();
    // The other direction.
    back.notify(bport).unwrap();
    assert_eq!(wait_pending(&front), [fport]);
}

#[test]
fn event_channel_errors_are_errnos() {
    let hv = hv();
    let host = hv.host();
    let front = host.evtchn(FRONT).unwrap();
    let back = host.evtchn(BACK).unwrap();
    assert_eq!(
        back.notify(77).unwrap_err().code(),
        "ENOTCONN",
        "notify on an unbound port"
    );
    assert_eq!(back.unbind(77).unwrap_err().code(), "ENOTCONN");
    assert_eq!(
        back.bind_interdomain(42, 1).unwrap_err().code(),
        "ESRCH",
        "no such domain"
    );
    let for_other = front.alloc_unbound(OTHER).unwrap();
    assert_eq!(
        back.bind_interdomain(FRONT, for_other).unwrap_err().code(),
        "EINVAL",
        "not allocated for us"
    );
    assert_eq!(
        back.bind_interdomain(FRONT, 999).unwrap_err().code(),
        "EINVAL"
    );
    // A port of another handle cannot be used through this one.
    let fport = front.alloc_unbound(BACK).unwrap();
    let bport = back.bind_interdomain(FRONT, fport).unwrap();
    let second = host.evtchn(BACK).unwrap();
    assert_eq!(second.notify(bport).unwrap_err().code(), "ENOTCONN");
    // The good channel still works.
    front.notify(fport).unwrap();
    assert_eq!(wait_pending(&back), [bport]);
}

#[test]
fn closing_one_end_unbinds_the_other_and_rebinding_works() {
    let hv = hv();
    let host = hv.host();
    let front = host.evtchn(FRONT).unwrap();
    let fport = front.alloc_unbound(BACK).unwrap();
    let back = host.evtchn(BACK).unwrap();
    let bport = back.bind_interdomain(FRONT, fport).unwrap();
    front.notify(fport).unwrap();
    assert_eq!(wait_pending(&back), [bport]);
    back.unmask(bport).unwrap();
    back.unbind(bport).unwrap();
    // The frontend's port is unbound again: its events are dropped silently.
    front.notify(fport).unwrap();
    // A backend restarts and binds again to the same frontend port.
    let back2 = host.evtchn(BACK).unwrap();
    let bport2 = back2.bind_interdomain(FRONT, fport).unwrap();
    front.notify(fport).unwrap();
    assert_eq!(
        wait_pending(&back2),
        [bport2],
        "the frontend found its new peer"
    );
    // Dropping a handle closes its ports.
    drop(back2);
    let back3 = host.evtchn(BACK).unwrap();
    back3.bind_interdomain(FRONT, fport).unwrap();
}

#[test]
fn a_destroyed_domain_cannot_be_mapped_but_mappings_stay_valid() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (_, r) = granted_page(&gt, BACK, 0x77, false);
    let gntdev = host.gntdev(BACK);
    let map = gntdev.map(FRONT, &[r], false).unwrap();
    let front = host.evtchn(FRONT).unwrap();
    let fport = front.alloc_unbound(BACK).unwrap();
    let back = host.evtchn(BACK).unwrap();
    let bport = back.bind_interdomain(FRONT, fport).unwrap();
    assert!(hv.destroy_domain(FRONT));
    assert_eq!(
        gntdev.map(FRONT, &[r], false).unwrap_err().gntst(),
        Some(GntSt::BadDomain)
    );
    assert_eq!(
        back.bind_interdomain(FRONT, fport).unwrap_err().code(),
        "ESRCH"
    );
    let mut b = [0u8; 1];
    map.mem().read(0, &mut b).unwrap();
    assert_eq!(b, [0x77]);
    // Our end is unbound now: notifying it is dropped, not an error.
    back.notify(bport).unwrap();
    // The id can be reused by a new domain, which starts clean.
    hv.create_domain(DomainConfig::new(FRONT)).unwrap();
    assert_eq!(
        gntdev.map(FRONT, &[r], false).unwrap_err().gntst(),
        Some(GntSt::GeneralError)
    );
}

#[test]
fn cross_process_frontend_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control");
    let hv = hv();
    let _server = hv.serve(&socket).unwrap();
    let host = hv.host();
    let back = host.evtchn(BACK).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "platform::sim::tests::child_frontend",
            "--ignored",
            "--nocapture",
        ])
        .env("XENRX_SIM_CONTROL", &socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The child prints "<ref> <port>" once it granted a page and allocated a port.
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "child ended early"
        );
        if let Some(rest) = line.strip_prefix("READY ") {
            line = rest.trim().to_owned();
            break;
        }
    }
    let (gref, port) = line.split_once(' ').unwrap();
    let (gref, port): (u32, u32) = (gref.parse().unwrap(), port.parse().unwrap());
    let map = host.gntdev(BACK).map(FRONT, &[gref], true).unwrap();
    let mut b = [0u8; 4];
    map.mem().read(0, &mut b).unwrap();
    assert_eq!(&b, b"PING", "data written by the other process");
    map.mem().write(0, b"PONG").unwrap();
    let bport = back.bind_interdomain(FRONT, port).unwrap();
    back.notify(bport).unwrap();
    assert_eq!(wait_pending(&back), [bport], "the child notified back");
    drop(map);
    assert!(child.wait().unwrap().success());
}

/// The frontend half of `cross_process_frontend_and_backend`, in a child
/// process.
#[test]
#[ignore = "runs as the child process of cross_process_frontend_and_backend"]
fn child_frontend() {
    let socket = std::env::var_os("XENRX_SIM_CONTROL").expect("started by the parent test");
    let host = SimHost::connect(std::path::Path::new(&socket)).unwrap();
    let gt = host.gnttab(FRONT).unwrap();
    let frame = gt.alloc_page().unwrap();
    gt.page(frame).unwrap().write(0, b"PING").unwrap();
    let gref = gt.grant(BACK, frame, false).unwrap();
    let ch = host.evtchn(FRONT).unwrap();
    let port = ch.alloc_unbound(BACK).unwrap();
    println!("READY {gref} {port}");
    assert!(!wait_pending(&ch).is_empty(), "woken by the parent");
    let mut b = [0u8; 4];
    gt.page(frame).unwrap().read(0, &mut b).unwrap();
    assert_eq!(&b, b"PONG");
    ch.notify(port).unwrap();
    // The parent unmaps after our notification; then access can end.
    for _ in 0..500 {
        if gt.end_access(gref).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("access could not be ended");
}

#[test]
fn domains_have_run_states() {
    let hv = hv();
    assert_eq!(hv.run_state(FRONT), Some(DomainRunState::default()));
    assert!(hv.set_paused(FRONT, true));
    assert!(hv.run_state(FRONT).unwrap().paused);
    assert!(hv.set_shutdown(FRONT, Some(shutdown::CRASH)));
    assert_eq!(hv.run_state(FRONT).unwrap().shutdown, Some(shutdown::CRASH));
    assert!(!hv.set_paused(99, true));
    hv.destroy_domain(FRONT);
    assert_eq!(hv.run_state(FRONT), None);
}

#[test]
fn a_read_only_grant_mapping_refuses_writes_instead_of_faulting() {
    let hv = hv();
    let host = hv.host();
    let gt = host.gnttab(FRONT).unwrap();
    let (_frame, gref) = granted_page(&gt, BACK, 0x5a, true);
    let map = host.gntdev(BACK).map(FRONT, &[gref], false).unwrap();
    assert!(!map.writable());
    let mem = map.mem();
    assert!(mem.write(0, b"guest data").unwrap_err().read_only);
    assert!(mem.atomic_u32(0).is_err());
    let mut b = [0u8; 2];
    mem.read(0, &mut b).unwrap();
    assert_eq!(b, [0x5a, 0x5a], "reading works");
}
