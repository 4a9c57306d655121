//! A smoke test of the real-hypervisor platform, run inside a Xen dom0 by
//! `npm run e2e:xen` (`.ci/xen-e2e/run.sh`): it grants a page to its own domain through
//! gntalloc and maps it back through gntdev, copies it with grant copy, and
//! ping-pongs over an interdomain event channel whose two ends it binds
//! itself. It prints one line per check and `XEN-SMOKE PASS` or
//! `XEN-SMOKE FAIL`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use xen_core::platform::xen::{
    LinuxOps, XenEvtchn, XenGntalloc, XenGntdev, EVTCHN_DEVICE, GNTALLOC_DEVICE, GNTDEV_DEVICE,
};
use xen_core::platform::{CopySegment, CopySide, EventChannels, GntSt, GrantMapper, Port};

const SELF: u16 = 0;

fn wait(ch: &dyn EventChannels, port: Port) -> Result<(), String> {
    let mut p = libc::pollfd {
        fd: ch.fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 5000) } <= 0 {
        return Err(format!("no event on port {port} within 5 s"));
    }
    let mut pending = Vec::new();
    ch.pending(&mut pending).map_err(|e| e.to_string())?;
    if !pending.contains(&port) {
        return Err(format!("woken for {pending:?}, expected port {port}"));
    }
    ch.unmask(port).map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    let ops = Arc::new(LinuxOps);
    let alloc =
        XenGntalloc::open(ops.clone(), Path::new(GNTALLOC_DEVICE)).map_err(|e| e.to_string())?;
    let dev = XenGntdev::open(ops.clone(), Path::new(GNTDEV_DEVICE)).map_err(|e| e.to_string())?;

    // Grants: two pages granted to ourselves, mapped back, both directions.
    let pages = alloc
        .grant_pages(SELF, 2, true)
        .map_err(|e| format!("gntalloc: {e}"))?;
    let refs = pages.refs().to_vec();
    println!("SMOKE grant: gntalloc gave refs {refs:?}");
    pages
        .mem()
        .write(0, b"written through gntalloc")
        .map_err(|e| e.to_string())?;
    pages
        .mem()
        .write(4096, b"second page")
        .map_err(|e| e.to_string())?;
    let map = dev
        .map(SELF, &refs, true)
        .map_err(|e| format!("gntdev map: {e}"))?;
    let mut buf = [0u8; 24];
    map.mem().read(0, &mut buf).map_err(|e| e.to_string())?;
    if &buf != b"written through gntalloc" {
        return Err(format!(
            "mapped page reads {:?}",
            String::from_utf8_lossy(&buf)
        ));
    }
    let mut second = [0u8; 11];
    map.mem()
        .read(4096, &mut second)
        .map_err(|e| e.to_string())?;
    if &second != b"second page" {
        return Err("second page of the batch is wrong".into());
    }
    map.mem()
        .write(100, b"written through gntdev")
        .map_err(|e| e.to_string())?;
    let mut back = [0u8; 22];
    pages
        .mem()
        .read(100, &mut back)
        .map_err(|e| e.to_string())?;
    if &back != b"written through gntdev" {
        return Err("gntdev write not visible through gntalloc".into());
    }
    println!("SMOKE grant: mapped 2 pages back, data checked both ways");
    drop(map);

    // Grant copy from the first page into a local buffer.
    let mut out = vec![0u8; 24];
    let mut segs = [CopySegment::new(
        CopySide::Grant {
            domid: SELF,
            gref: refs[0],
            offset: 0,
        },
        CopySide::Into(&mut out),
        24,
    )];
    dev.copy(&mut segs)
        .map_err(|e| format!("grant copy: {e}"))?;
    if segs[0].status != GntSt::Okay {
        return Err(format!("grant copy status {}", segs[0].status));
    }
    if out != b"written through gntalloc" {
        return Err("grant copy returned wrong bytes".into());
    }
    println!("SMOKE copy: GNTTABOP_copy of 24 bytes checked");
    // A bad reference gets Xen's own status.
    let mut junk = vec![0u8; 8];
    let mut bad = [CopySegment::new(
        CopySide::Grant {
            domid: SELF,
            gref: 1 << 20,
            offset: 0,
        },
        CopySide::Into(&mut junk),
        8,
    )];
    dev.copy(&mut bad).map_err(|e| e.to_string())?;
    println!("SMOKE copy: out-of-range ref answered {}", bad[0].status);
    if bad[0].status == GntSt::Okay {
        return Err("a bad ref was copied".into());
    }
    drop(pages);

    // Event channels: both ends in this domain, on two handles.
    let a = XenEvtchn::open(ops.clone(), Path::new(EVTCHN_DEVICE)).map_err(|e| e.to_string())?;
    let b = XenEvtchn::open(ops, Path::new(EVTCHN_DEVICE)).map_err(|e| e.to_string())?;
    let pa = a.alloc_unbound(SELF).map_err(|e| e.to_string())?;
    let pb = b.bind_interdomain(SELF, pa).map_err(|e| e.to_string())?;
    println!("SMOKE evtchn: unbound port {pa} bound as {pb}");
    let rounds = 1000;
    let t0 = Instant::now();
    for _ in 0..rounds {
        a.notify(pa).map_err(|e| e.to_string())?;
        wait(&b, pb)?;
        b.notify(pb).map_err(|e| e.to_string())?;
        wait(&a, pa)?;
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("SMOKE evtchn: {rounds} round trips, {per:.1} us each (under TCG emulation)");
    match b.notify(pb + 1000) {
        Err(e) => println!(
            "SMOKE evtchn: notify on an unbound port answered {}",
            e.code()
        ),
        Ok(()) => return Err("notify on an unbound port succeeded".into()),
    }
    a.unbind(pa).map_err(|e| e.to_string())?;
    b.unbind(pb).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    match run() {
        Ok(()) => println!("XEN-SMOKE PASS"),
        Err(e) => {
            println!("XEN-SMOKE FAIL: {e}");
            std::process::exit(1);
        }
    }
}
