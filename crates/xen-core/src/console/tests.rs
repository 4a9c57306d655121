//! Console backend and simulated guest, end to end over the simulated
//! hypervisor.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::platform::event_loop::wait_readable;
use crate::platform::sim::{SimHost, SimHypervisor};
use crate::platform::{GntSt, GrantError, Platform};
use crate::ring::console::{IN_SIZE, OUT_SIZE};
use crate::ring::ConsoleIndexes;

const BACK: DomId = 0;
const GUEST: DomId = 5;
const OTHER: DomId = 6;
/// A guard against a hang, far beyond what any step takes.
const WAIT: Duration = Duration::from_secs(30);

fn host() -> (SimHypervisor, SimHost) {
    crate::testutil::sim_host(&[BACK, GUEST, OTHER])
}

fn guest(host: &SimHost, domid: DomId) -> SimConsoleFrontend {
    SimConsoleFrontend::new(
        host.gnttab(domid).unwrap(),
        Arc::new(host.evtchn(domid).unwrap()),
        BACK,
    )
    .unwrap()
}

/// The backend domain's platform.
fn platform(host: &SimHost) -> Arc<Platform> {
    Arc::new(Platform::simulated(host, BACK).unwrap())
}

fn serve(
    host: &SimHost,
    guest: &SimConsoleFrontend,
    config: ConsoleConfig,
) -> (ConsoleBackend, Receiver<ConsoleEvent>) {
    let (tx, rx) = channel();
    let backend = ConsoleBackend::start(
        &platform(host),
        guest.domid(),
        guest.ring_ref(),
        guest.port(),
        config,
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
    )
    .unwrap();
    (backend, rx)
}

/// Output events until `len` bytes came (or the wait ran out); other events
/// are returned alongside.
fn output(rx: &Receiver<ConsoleEvent>, len: usize) -> (Vec<u8>, Vec<ConsoleEvent>) {
    let deadline = Instant::now() + WAIT;
    let mut bytes = Vec::new();
    let mut others = Vec::new();
    while bytes.len() < len {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ConsoleEvent::Output(b)) => bytes.extend(b),
            Ok(e) => others.push(e),
            Err(_) => break,
        }
    }
    (bytes, others)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn output_arrives_in_order_even_beyond_the_ring_size() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, rx) = serve(&host, &guest, ConsoleConfig::default());
    let data = pattern(5 * OUT_SIZE as usize + 123);
    for piece in data.chunks(700) {
        assert_eq!(guest.write_all(piece, WAIT), piece.len());
    }
    let (got, others) = output(&rx, data.len());
    assert!(
        got == data,
        "{} of {} bytes, in order",
        got.len(),
        data.len()
    );
    assert!(others.is_empty(), "{others:?}");
    let stats = backend.stats();
    assert_eq!(stats.bytes_out, data.len() as u64);
    assert!(stats.events >= 1);
    assert!(
        stats.notifications >= 1,
        "the guest hears about freed space"
    );
    assert_eq!(stats.clamped, 0);
}

#[test]
fn output_written_before_the_backend_started_is_delivered() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    assert_eq!(guest.write(b"early boot\n"), 11);
    let (_backend, rx) = serve(&host, &guest, ConsoleConfig::default());
    assert_eq!(output(&rx, 11).0, b"early boot\n");
}

#[test]
fn input_reaches_the_guest_with_a_notification() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, _rx) = serve(&host, &guest, ConsoleConfig::default());
    assert_eq!(backend.write_input(b"ls -l\n"), 6);
    assert!(
        guest.wait_notified(WAIT),
        "the backend notifies after input"
    );
    assert_eq!(guest.read_input(), b"ls -l\n");
    // More than the ring holds: the rest waits for room.
    let big = pattern(IN_SIZE as usize + 500);
    assert_eq!(backend.write_input(&big), IN_SIZE as usize);
    assert_eq!(backend.write_input(&big[IN_SIZE as usize..]), 0, "full");
    assert_eq!(guest.wait_input(WAIT), &big[..IN_SIZE as usize]);
    assert_eq!(backend.write_input(&big[IN_SIZE as usize..]), 500);
    assert_eq!(guest.wait_input(WAIT), &big[IN_SIZE as usize..]);
    assert_eq!(backend.stats().bytes_in, 6 + big.len() as u64);
}

#[test]
fn the_backend_notifies_the_guest_after_consuming() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, rx) = serve(&host, &guest, ConsoleConfig::default());
    assert_eq!(guest.write(b"x"), 1);
    assert!(guest.wait_notified(WAIT));
    assert_eq!(output(&rx, 1).0, b"x");
    let ix = guest.indexes().unwrap();
    assert_eq!(ix.out_cons, ix.out_prod, "consumed before notifying");
    assert!(backend.stats().notifications >= 1);
}

#[test]
fn rate_limiting_holds_events_past_the_limit_and_loses_nothing() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let config = ConsoleConfig {
        rate_limit_events: 5,
        rate_limit_window: Duration::from_millis(50),
        pty: false,
    };
    let (backend, rx) = serve(&host, &guest, config);
    let start = Instant::now();
    // One event per byte: each waits for the backend's answer.
    let data = pattern(20);
    for b in &data {
        assert_eq!(guest.write(std::slice::from_ref(b)), 1);
        assert!(guest.wait_notified(WAIT));
    }
    let elapsed = start.elapsed();
    assert_eq!(output(&rx, data.len()).0, data);
    let stats = backend.stats();
    assert!(stats.rate_limited >= 3, "{stats:?}");
    // The backend's first look at the page, before it waits for events, may
    // take the first byte; that byte's event then merges with the next one.
    assert!(stats.events == 20 || stats.events == 19, "{stats:?}");
    // 20 events at 5 per 50 ms take at least three more windows.
    assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
}

#[test]
fn an_event_storm_is_held_back_by_the_limit() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, rx) = serve(&host, &guest, ConsoleConfig::default());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        guest.notify();
    }
    assert_eq!(guest.write(b"still here"), 10);
    assert_eq!(output(&rx, 10).0, b"still here");
    let stats = backend.stats();
    // However long the storm took on this machine, each 200 ms window (a
    // partial one at each end included) served at most 30 events.
    let windows = start.elapsed().as_millis() / 200 + 2;
    assert!(
        stats.events as u128 <= 30 * windows,
        "{stats:?} in {windows} windows"
    );
    assert!(stats.rate_limited >= 1, "{stats:?}");
}

#[test]
fn hostile_indexes_are_clamped_and_another_console_keeps_working() {
    let (_hv, host) = host();
    let bad = guest(&host, GUEST);
    let good = guest(&host, OTHER);
    let (bad_backend, bad_rx) = serve(&host, &bad, ConsoleConfig::default());
    let (good_backend, good_rx) = serve(&host, &good, ConsoleConfig::default());

    // The guest claims 100000 bytes of output in a 2048-byte ring.
    assert!(bad.set_indexes(ConsoleIndexes {
        out_cons: 7,
        out_prod: 100_007,
        ..Default::default()
    }));
    bad.notify();
    let (got, others) = output(&bad_rx, OUT_SIZE as usize);
    assert_eq!(got.len(), OUT_SIZE as usize, "one buffer-full, no more");
    assert!(matches!(
        others.as_slice(),
        [ConsoleEvent::BogusIndexes(b)] if b.distance() == 100_000
    ));
    assert_eq!(bad_backend.stats().clamped, 1);

    // Input with the guest's consumer index ahead of the producer: refused.
    assert!(bad.set_indexes(ConsoleIndexes {
        in_cons: 5000,
        in_prod: 0,
        out_cons: 100_007,
        out_prod: 100_007,
    }));
    assert_eq!(bad_backend.write_input(b"hello"), 0);
    assert_eq!(bad_backend.stats().clamped, 2);

    // Garbage on every pass, from a thread, while the other console talks.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x9e37_79b9u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bad.set_indexes(ConsoleIndexes {
                    in_cons: x,
                    in_prod: x.rotate_left(7),
                    out_cons: x.rotate_left(13),
                    out_prod: x.rotate_left(21),
                });
                bad.notify();
            }
        });
        let data = pattern(3 * OUT_SIZE as usize);
        assert_eq!(good.write_all(&data, WAIT), data.len());
        assert!(output(&good_rx, data.len()).0 == data);
        assert_eq!(good_backend.write_input(b"ok"), 2);
        assert_eq!(good.wait_input(WAIT), b"ok");
        // The storm did reach its backend meanwhile (rate-limited).
        eventually("garbage passes", || bad_backend.stats().clamped > 2);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(good_backend.stats().clamped, 0);

    // The hostile console still works once its indexes are sane again.
    let ix = bad.indexes().unwrap();
    assert!(bad.set_indexes(ConsoleIndexes {
        in_cons: ix.in_prod,
        out_cons: ix.out_prod,
        ..ix
    }));
    // Let the backend drain what the storm left, then talk.
    eventually("the hostile console to settle", || {
        while bad_rx.try_recv().is_ok() {}
        let ix = bad.indexes().unwrap();
        ix.out_cons == ix.out_prod
    });
    assert_eq!(bad.write_all(b"sane", WAIT), 4);
    // A run that was under way when the storm stopped may still hand over
    // some of the storm's bytes: what matters is that ours come through.
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !got.ends_with(b"sane") && Instant::now() < deadline {
        if let Ok(ConsoleEvent::Output(b)) = bad_rx.recv_timeout(Duration::from_millis(50)) {
            got.extend(b);
        }
    }
    assert!(
        got.ends_with(b"sane"),
        "{} bytes, not ending in ours",
        got.len()
    );
}

#[test]
fn stop_unmaps_so_the_guest_can_end_access() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, _rx) = serve(&host, &guest, ConsoleConfig::default());
    assert!(matches!(
        guest.close(),
        Err(ConsoleError::Grant(GrantError::InUse(r))) if r == guest.ring_ref()
    ));
    assert_eq!(
        guest.write(b"still open"),
        10,
        "a failed close keeps it usable"
    );
    backend.stop();
    backend.stop();
    assert_eq!(backend.write_input(b"late"), 0, "nothing after stop");
    guest.close().unwrap();
    guest.close().unwrap();
    assert_eq!(guest.write(b"closed"), 0);
    assert!(guest.indexes().is_none());
}

#[test]
fn dropping_the_backend_stops_it() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let (backend, _rx) = serve(&host, &guest, ConsoleConfig::default());
    drop(backend);
    guest.close().unwrap();
}

#[test]
fn start_failures_name_what_went_wrong() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let platform = platform(&host);
    let start = |ring_ref, port| {
        ConsoleBackend::start(
            &platform,
            GUEST,
            ring_ref,
            port,
            ConsoleConfig::default(),
            Box::new(|_| {}),
        )
    };
    let err = start(guest.ring_ref() + 100, guest.port()).err().unwrap();
    assert!(
        matches!(&err, ConsoleError::MapRing { ring_ref, error, .. }
            if *ring_ref == guest.ring_ref() + 100 && error.gntst().is_some()),
        "{err}"
    );
    assert!(err.code().starts_with("GNTST_"), "{}", err.code());
    let err = start(guest.ring_ref(), guest.port() + 100).err().unwrap();
    assert!(
        matches!(&err, ConsoleError::BindEventChannel { remote_port, .. }
            if *remote_port == guest.port() + 100),
        "{err}"
    );
    assert!(err.code().starts_with('E'), "{}", err.code());
    // A failed start leaves nothing mapped.
    guest.close().unwrap();
    let missing = ConsoleBackend::start(
        &platform,
        77,
        8,
        1,
        ConsoleConfig::default(),
        Box::new(|_| {}),
    )
    .err()
    .unwrap();
    assert_eq!(missing.code(), GntSt::BadDomain.name());
}

fn primary_guest(host: &SimHost, domid: DomId) -> SimConsoleFrontend {
    SimConsoleFrontend::new_primary(
        host.gnttab(domid).unwrap(),
        Arc::new(host.evtchn(domid).unwrap()),
        BACK,
    )
    .unwrap()
}

#[test]
fn a_primary_console_is_served_through_the_reserved_grant_entry() {
    let (_hv, host) = host();
    let guest = primary_guest(&host, GUEST);
    assert_eq!(guest.ring_ref(), GNTTAB_RESERVED_CONSOLE);
    assert_ne!(
        guest.frame(),
        GNTTAB_RESERVED_CONSOLE,
        "console/ring-ref names a frame, not the entry"
    );
    // Written before the backend came, as a booting kernel does.
    assert_eq!(guest.write(b"early boot\n"), 11);
    let (tx, rx) = channel();
    let backend = ConsoleBackend::start(
        &platform(&host),
        GUEST,
        GNTTAB_RESERVED_CONSOLE,
        guest.port(),
        ConsoleConfig::default(),
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
    )
    .unwrap();
    assert_eq!(output(&rx, 11).0, b"early boot\n");
    assert_eq!(backend.write_input(b"root\n"), 5);
    assert_eq!(guest.wait_input(WAIT), b"root\n");
    // The page is the guest's frame: what the backend consumed shows there.
    let page = guest.page().unwrap();
    assert_eq!(
        page.load_u32(3080).unwrap(),
        11,
        "out_cons, in the frame console/ring-ref names"
    );
    backend.stop();
    guest.close().unwrap();
}

#[test]
fn a_guest_has_one_primary_console_and_gets_its_entry_back_on_close() {
    let (_hv, host) = host();
    let first = primary_guest(&host, GUEST);
    let again = SimConsoleFrontend::new_primary(
        host.gnttab(GUEST).unwrap(),
        Arc::new(host.evtchn(GUEST).unwrap()),
        BACK,
    );
    assert!(
        matches!(again, Err(ConsoleError::Grant(GrantError::InUse(0)))),
        "the reserved entry is taken"
    );
    // A console device of the same guest is granted elsewhere.
    let device = guest(&host, GUEST);
    assert_ne!(device.ring_ref(), GNTTAB_RESERVED_CONSOLE);
    first.close().unwrap();
    let second = primary_guest(&host, GUEST);
    assert_eq!(second.ring_ref(), GNTTAB_RESERVED_CONSOLE);
    // Another guest's reserved entry is its own.
    let other = primary_guest(&host, OTHER);
    assert_eq!(other.ring_ref(), GNTTAB_RESERVED_CONSOLE);
}

fn open_slave(path: &std::path::Path) -> OwnedFd {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn read_with_timeout(fd: &OwnedFd, len: usize) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < len && Instant::now() < deadline {
        if !wait_readable(fd.as_fd(), Some(Duration::from_millis(100))).unwrap() {
            continue;
        }
        let mut buf = [0u8; 256];
        if let Ok(n) = rustix::io::read(fd, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    got
}

#[test]
fn a_pty_round_trip() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let config = ConsoleConfig {
        pty: true,
        ..ConsoleConfig::default()
    };
    let (backend, rx) = serve(&host, &guest, config);
    let path = backend.pty_path().unwrap().to_owned();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    let tty = open_slave(&path);

    // Typed on the terminal: into the guest's `in` ring, unchanged.
    let typed = b"root\r\x03";
    assert_eq!(rustix::io::write(&tty, typed).unwrap(), typed.len());
    assert_eq!(guest.wait_input(WAIT), typed);

    // Written by the guest: on the terminal, and to the sink.
    assert_eq!(guest.write(b"login: \n"), 8);
    assert_eq!(read_with_timeout(&tty, 8), b"login: \n");
    assert_eq!(output(&rx, 8).0, b"login: \n");
    let stats = backend.stats();
    assert_eq!((stats.bytes_in, stats.pty_dropped), (6, 0));
}

#[test]
fn pty_input_larger_than_the_ring_waits_for_room() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let config = ConsoleConfig {
        pty: true,
        ..ConsoleConfig::default()
    };
    let (backend, _rx) = serve(&host, &guest, config);
    let tty = open_slave(backend.pty_path().unwrap());
    let typed = pattern(3 * IN_SIZE as usize);
    assert_eq!(rustix::io::write(&tty, &typed).unwrap(), typed.len());
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < typed.len() && Instant::now() < deadline {
        got.extend(guest.wait_input(Duration::from_millis(100)));
    }
    assert!(got == typed, "{} of {} bytes", got.len(), typed.len());
}

#[test]
fn pty_output_nobody_reads_is_dropped_not_blocking_the_guest() {
    let (_hv, host) = host();
    let guest = guest(&host, GUEST);
    let config = ConsoleConfig {
        pty: true,
        rate_limit_events: 0,
        ..ConsoleConfig::default()
    };
    let (backend, rx) = serve(&host, &guest, config);
    let data = pattern(256 * 1024);
    assert_eq!(guest.write_all(&data, WAIT), data.len());
    let (got, _) = output(&rx, data.len());
    assert!(got == data, "the sink still gets everything");
    let stats = backend.stats();
    assert!(stats.pty_dropped > 0, "{stats:?}");
    assert!(stats.pty_dropped < data.len() as u64, "{stats:?}");
}
