//! The real-hypervisor code with the OS calls faked: what it asks the
//! kernel, and how it reads the answers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::abi::*;
use super::ops::DeviceOps;
use super::*;
use crate::platform::abi::PAGE_SIZE;
use crate::platform::memory::Mmap;
use crate::platform::{CopySegment, CopySide, EventChannels, GntSt, GrantError, GrantMapper};

/// One recorded ioctl: the request and a copy of the argument bytes.
#[derive(Debug, Clone)]
struct Call {
    request: u64,
    arg: Vec<u8>,
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    /// Results for successive ioctls (Ok(value) or Err(errno)).
    results: Mutex<VecDeque<Result<i32, i32>>>,
    /// Statuses the fake kernel writes into GRANT_COPY segments.
    copy_statuses: Mutex<VecDeque<i16>>,
    reads: Mutex<VecDeque<io::Result<Vec<u8>>>>,
    writes: Mutex<Vec<Vec<u8>>>,
    mmaps: Mutex<Vec<(usize, bool, u64)>>,
    fail_mmap: Mutex<bool>,
    opened: Mutex<Vec<(String, bool)>>,
    /// The last descriptor opened, to make it readable.
    readable: Mutex<Option<OwnedFd>>,
    /// The memory behind the last mapping, for the test's guest side.
    granted: Mutex<Option<OwnedFd>>,
}

impl Fake {
    /// The kernel has events for `ports`: the next read returns them.
    fn deliver(&self, ports: &[u32]) {
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
        self.reads.lock().unwrap().push_back(Ok(bytes));
        let fd = self.readable.lock().unwrap();
        rustix::io::write(fd.as_ref().unwrap(), &1u64.to_ne_bytes()).unwrap();
    }
}

/// Bytes of an ioctl argument, as the kernel sizes it. The fake reads and
/// writes arguments at the C offsets of the uapi headers, not through our
/// Rust types, so these tests check the layout the typed builders produce.
fn arg_len(request: u64, arg: *const u8) -> usize {
    // SAFETY: (test) reads the count field of the variable-size structs the
    // code under test passed.
    unsafe {
        match request {
            IOCTL_GNTDEV_MAP_GRANT_REF => 16 + 8 * (*(arg as *const u32)) as usize,
            IOCTL_GNTALLOC_ALLOC_GREF => 16 + 4 * (*(arg.add(4) as *const u32)) as usize,
            _ => ((request >> 16) & 0x3fff) as usize,
        }
    }
}

impl DeviceOps for Fake {
    fn open(&self, path: &Path, nonblocking: bool) -> io::Result<OwnedFd> {
        self.opened
            .lock()
            .unwrap()
            .push((path.display().to_string(), nonblocking));
        // An eventfd: readable exactly while `deliver` queued ports, so an
        // event loop can wait on it as on /dev/xen/evtchn.
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK)?;
        *self.readable.lock().unwrap() = Some(fd.try_clone()?);
        Ok(fd)
    }

    unsafe fn ioctl(
        &self,
        fd: BorrowedFd<'_>,
        request: u64,
        arg: *mut libc::c_void,
    ) -> io::Result<i32> {
        assert!(fd.as_raw_fd() >= 0);
        let p = arg as *mut u8;
        let len = arg_len(request, p);
        // SAFETY: (test) the code under test passed `len` valid bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        self.calls.lock().unwrap().push(Call {
            request,
            arg: bytes,
        });
        let result = self.results.lock().unwrap().pop_front().unwrap_or(Ok(0));
        match request {
            IOCTL_GNTDEV_MAP_GRANT_REF | IOCTL_GNTALLOC_ALLOC_GREF if result.is_ok() => {
                // The kernel's answer: index 0x5000 (and grant ids for gntalloc).
                // SAFETY: (test) index is the u64 at offset 8 of both structs.
                unsafe { *(p.add(8) as *mut u64) = 0x5000 };
                if request == IOCTL_GNTALLOC_ALLOC_GREF {
                    // SAFETY: (test) count ids follow the 16-byte header.
                    let count = unsafe { *(p.add(4) as *const u32) };
                    for i in 0..count {
                        // SAFETY: (test) id `i` of `count` lies inside the argument.
                        unsafe { *(p.add(16 + 4 * i as usize) as *mut u32) = 100 + i };
                    }
                }
            }
            IOCTL_GNTDEV_GRANT_COPY => {
                // SAFETY: (test) the struct points to `count` segments.
                let copy = unsafe { &*(p as *const GntdevGrantCopy) };
                for i in 0..copy.count as usize {
                    let status = self.copy_statuses.lock().unwrap().pop_front().unwrap_or(0);
                    // SAFETY: (test) segment `i` of `count` the code passed.
                    unsafe { (*copy.segments.add(i)).status = status };
                }
            }
            _ => {}
        }
        result.map_err(io::Error::from_raw_os_error)
    }

    fn mmap(
        &self,
        _fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        offset: u64,
    ) -> io::Result<Mmap> {
        self.mmaps.lock().unwrap().push((len, writable, offset));
        if *self.fail_mmap.lock().unwrap() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        // Memory the test can map too, as the guest's side of the grant.
        let memory = rustix::fs::memfd_create("fake-grant", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&memory, len as u64)?;
        let map = Mmap::map_fd(memory.as_fd(), 0, len, writable)?;
        *self.granted.lock().unwrap() = Some(memory);
        Ok(map)
    }

    fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.lock().unwrap().pop_front() {
            Some(Ok(data)) => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Some(Err(e)) => Err(e),
            None => {
                // Nothing pending: the device stops polling readable.
                let _ = rustix::io::read(fd, &mut [0u8; 8]);
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            }
        }
    }

    fn write(&self, _fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        self.writes.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn evtchn_packs_its_ioctls_and_maps_errno() {
    let fake = Arc::new(Fake::default());
    let ch = XenEvtchn::open(fake.clone(), Path::new(EVTCHN_DEVICE)).unwrap();
    assert_eq!(
        fake.opened.lock().unwrap()[0],
        (EVTCHN_DEVICE.to_string(), true)
    );
    fake.results.lock().unwrap().extend([
        Ok(17),
        Ok(9),
        Err(libc::ESRCH),
        Ok(0),
        Err(libc::ENOTCONN),
    ]);
    assert_eq!(ch.bind_interdomain(5, 3).unwrap(), 17);
    assert_eq!(ch.alloc_unbound(5).unwrap(), 9);
    let e = ch.bind_interdomain(42, 1).unwrap_err();
    assert_eq!(e.code(), "ESRCH");
    assert!(e.to_string().contains("domain 42"));
    ch.notify(17).unwrap();
    assert_eq!(ch.notify(99).unwrap_err().code(), "ENOTCONN");
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls[0].request, IOCTL_EVTCHN_BIND_INTERDOMAIN);
    assert_eq!(u32s(&calls[0].arg), [5, 3]);
    assert_eq!(calls[1].request, IOCTL_EVTCHN_BIND_UNBOUND_PORT);
    assert_eq!(u32s(&calls[1].arg), [5]);
    assert_eq!(calls[3].request, IOCTL_EVTCHN_NOTIFY);
    assert_eq!(u32s(&calls[3].arg), [17]);
}

#[test]
fn evtchn_reads_pending_ports_in_batches_and_unmasks_by_writing() {
    let fake = Arc::new(Fake::default());
    let ch = XenEvtchn::open(fake.clone(), Path::new(EVTCHN_DEVICE)).unwrap();
    let full: Vec<u8> = (0..256u32).flat_map(|p| p.to_ne_bytes()).collect();
    fake.reads.lock().unwrap().extend([
        Ok(full),
        Ok([300u32.to_ne_bytes(), 301u32.to_ne_bytes()].concat()),
    ]);
    let mut out = Vec::new();
    ch.pending(&mut out).unwrap();
    assert_eq!(out.len(), 258, "a full buffer means: read again");
    assert_eq!(out[257], 301);
    out.clear();
    ch.pending(&mut out).unwrap();
    assert!(out.is_empty(), "EAGAIN: nothing pending");
    fake.reads
        .lock()
        .unwrap()
        .push_back(Err(io::Error::from_raw_os_error(libc::EFAULT)));
    assert_eq!(ch.pending(&mut out).unwrap_err().code(), "EFAULT");
    ch.unmask(301).unwrap();
    assert_eq!(fake.writes.lock().unwrap()[0], 301u32.to_ne_bytes());
    // The event loop reads and unmasks a real device through io_uring; a
    // fake's descriptor is not the device, so it is read only through the
    // fake.
    assert!(ch.device().is_none());
}

#[test]
fn gntdev_maps_a_batch_at_the_returned_index_and_unmaps_on_drop() {
    let fake = Arc::new(Fake::default());
    let dev = XenGntdev::open(fake.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    let map = dev.map(7, &[10, 11, 12], true).unwrap();
    assert_eq!(map.len(), 3 * PAGE_SIZE);
    let call = fake.calls.lock().unwrap()[0].clone();
    assert_eq!(call.request, IOCTL_GNTDEV_MAP_GRANT_REF);
    let w = u32s(&call.arg);
    assert_eq!(w[0], 3, "count");
    assert_eq!(&w[4..], [7, 10, 7, 11, 7, 12], "(domid, ref) pairs");
    assert_eq!(fake.mmaps.lock().unwrap()[0], (3 * PAGE_SIZE, true, 0x5000));
    drop(map);
    let unmap = fake.calls.lock().unwrap()[1].clone();
    assert_eq!(unmap.request, IOCTL_GNTDEV_UNMAP_GRANT_REF);
    assert_eq!(u32s(&unmap.arg), [0x5000, 0, 3, 0], "index then count");
}

#[test]
fn gntdev_refuses_an_empty_batch_before_any_call() {
    let fake = Arc::new(Fake::default());
    let dev = XenGntdev::open(fake.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    let err = dev.map(7, &[], true).unwrap_err();
    assert!(
        matches!(err, GrantError::Os(ref e) if e.raw_os_error() == Some(libc::EINVAL)),
        "{err:?}"
    );
    assert_eq!(err.code(), "EINVAL");
    assert!(fake.calls.lock().unwrap().is_empty(), "no ioctl");
    assert!(fake.mmaps.lock().unwrap().is_empty(), "no mmap");
}

#[test]
fn gntdev_undoes_the_ioctl_when_the_hypervisor_refuses_the_mapping() {
    let fake = Arc::new(Fake::default());
    let dev = XenGntdev::open(fake.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    *fake.fail_mmap.lock().unwrap() = true;
    let err = dev.map(7, &[10, 11], false).unwrap_err();
    assert!(
        matches!(err, GrantError::Os(ref e) if e.raw_os_error() == Some(libc::EFAULT)),
        "{err}"
    );
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].request, IOCTL_GNTDEV_UNMAP_GRANT_REF);
    // An ioctl failure maps nothing at all.
    fake.results.lock().unwrap().push_back(Err(libc::ENOMEM));
    *fake.fail_mmap.lock().unwrap() = false;
    assert!(dev.map(7, &[1], false).is_err());
    assert_eq!(fake.mmaps.lock().unwrap().len(), 1);
}

#[test]
fn gntdev_copies_in_batches_and_reports_each_status() {
    let fake = Arc::new(Fake::default());
    let dev = XenGntdev::open(fake.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    let data = vec![1u8; 4096];
    let mut segs: Vec<CopySegment<'_>> = (0..COPY_BATCH + 3)
        .map(|i| {
            CopySegment::new(
                CopySide::From(&data),
                CopySide::Grant {
                    domid: 7,
                    gref: i as u32,
                    offset: 0,
                },
                4096,
            )
        })
        .collect();
    // One malformed segment is answered locally and not sent.
    segs[1].dest = CopySide::Grant {
        domid: 7,
        gref: 1,
        offset: 100,
    };
    let mut statuses: VecDeque<i16> = VecDeque::new();
    statuses.extend(std::iter::repeat_n(0, COPY_BATCH + 2));
    statuses[4] = GntSt::BadGntref as i16;
    *fake.copy_statuses.lock().unwrap() = statuses;
    dev.copy(&mut segs).unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{} segments in two ioctls", segs.len());
    assert!(calls.iter().all(|c| c.request == IOCTL_GNTDEV_GRANT_COPY));
    assert_eq!(u32s(&calls[0].arg)[0], (COPY_BATCH - 1) as u32);
    assert_eq!(u32s(&calls[1].arg)[0], 3);
    assert_eq!(segs[0].status, GntSt::Okay);
    assert_eq!(segs[1].status, GntSt::BadCopyArg);
    assert_eq!(
        segs[5].status,
        GntSt::BadGntref,
        "statuses line up past the skipped segment"
    );
    assert_eq!(segs[COPY_BATCH + 2].status, GntSt::Okay);
}

#[test]
fn gntalloc_grants_pages_and_ends_the_grants_on_drop() {
    let fake = Arc::new(Fake::default());
    let dev = XenGntalloc::open(fake.clone(), Path::new(GNTALLOC_DEVICE)).unwrap();
    let pages = dev.grant_pages(0, 2, true).unwrap();
    assert_eq!(pages.refs(), [100, 101]);
    let call = fake.calls.lock().unwrap()[0].clone();
    assert_eq!(call.request, IOCTL_GNTALLOC_ALLOC_GREF);
    assert_eq!(
        u32s(&call.arg)[0],
        u32::from(GNTALLOC_FLAG_WRITABLE) << 16,
        "domid 0, writable"
    );
    assert_eq!(u32s(&call.arg)[1], 2);
    pages.mem().write(0, b"data").unwrap();
    drop(pages);
    let dealloc = fake.calls.lock().unwrap()[1].clone();
    assert_eq!(dealloc.request, IOCTL_GNTALLOC_DEALLOC_GREF);
    assert_eq!(u32s(&dealloc.arg)[..3], [0x5000, 0, 2]);
}

#[test]
fn missing_devices_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = check_devices(dir.path()).unwrap_err();
    assert!(err.0.contains("/dev/xen/evtchn not found"), "{err}");
    std::fs::create_dir_all(dir.path().join("dev/xen")).unwrap();
    std::fs::write(dir.path().join("dev/xen/evtchn"), b"").unwrap();
    let err = check_devices(dir.path()).unwrap_err();
    assert!(err.0.contains("xen-gntdev"), "{err}");
    std::fs::write(dir.path().join("dev/xen/gntdev"), b"").unwrap();
    check_devices(dir.path()).unwrap();
    // On this machine the real platform is absent and says so.
    if !Path::new(EVTCHN_DEVICE).exists() {
        let err = XenPlatform::open().err().unwrap();
        assert!(err.0.contains("not found"), "{err}");
    }
}

/// A data path in TypeScript on the real-Xen platform: the event loop waits
/// on /dev/xen/evtchn, a port bound for the batch fires, the listener is
/// told once, takes the port, copies through gntdev and unmasks by writing
/// the port back, as libxenevtchn does.
#[test]
fn a_batched_data_path_runs_on_the_xen_platform_code() {
    use crate::platform::port_batch::PortBatch;
    use crate::platform::{Platform, PlatformKind};
    use std::sync::mpsc;
    use std::time::Duration;

    let evtchn_ops = Arc::new(Fake::default());
    let gntdev_ops = Arc::new(Fake::default());
    let evtchn = XenEvtchn::open(evtchn_ops.clone(), Path::new(EVTCHN_DEVICE)).unwrap();
    let gntdev = XenGntdev::open(gntdev_ops.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    let platform = Platform::new(PlatformKind::Xen, 0, Arc::new(evtchn), Arc::new(gntdev)).unwrap();
    let batch = PortBatch::new();
    let (told_tx, told) = mpsc::channel();
    batch.listen(Some(Arc::new(move || told_tx.send(()).unwrap())));
    evtchn_ops.results.lock().unwrap().push_back(Ok(42));
    let (port, _handle) = batch.bind(&platform, 5, 3).unwrap();
    assert_eq!(port, 42);
    let bind = evtchn_ops.calls.lock().unwrap()[0].clone();
    assert_eq!(bind.request, IOCTL_EVTCHN_BIND_INTERDOMAIN);
    assert_eq!(u32s(&bind.arg), [5, 3]);

    // The kernel reports the port: the listener is told, the port queued.
    evtchn_ops.deliver(&[42]);
    told.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(batch.take(), [42]);

    // The handler's work: a grant copy out of the guest's page.
    let mut buf = [0u8; 16];
    let mut segs = [CopySegment::new(
        CopySide::Grant {
            domid: 5,
            gref: 9,
            offset: 0,
        },
        CopySide::Into(&mut buf),
        16,
    )];
    platform.gntdev().copy(&mut segs).unwrap();
    assert_eq!(segs[0].status, GntSt::Okay);
    assert_eq!(
        gntdev_ops.calls.lock().unwrap()[0].request,
        IOCTL_GNTDEV_GRANT_COPY
    );

    // Held until handled: the loop did not unmask it; the handler does.
    assert!(evtchn_ops.writes.lock().unwrap().is_empty());
    platform.evtchn().unmask(port).unwrap();
    assert_eq!(evtchn_ops.writes.lock().unwrap()[0], 42u32.to_ne_bytes());

    // The next event tells the listener again.
    evtchn_ops.deliver(&[42]);
    told.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(batch.take(), [42]);
    platform.event_loop().stop();
}

/// The console backend on the real-Xen code path: its page mapped through
/// gntdev, its port bound and delivered through /dev/xen/evtchn, served as
/// a source of the platform's event loop; the guest's output comes out,
/// the guest is notified and the port unmasked by writing it back.
#[test]
fn the_console_runs_on_the_event_loop_of_the_xen_platform() {
    use crate::console::{ConsoleBackend, ConsoleConfig, ConsoleEvent};
    use crate::platform::{Platform, PlatformKind};
    use crate::ring::ConsoleRing;
    use std::sync::mpsc;
    use std::time::Duration;

    let evtchn_ops = Arc::new(Fake::default());
    let gntdev_ops = Arc::new(Fake::default());
    let evtchn = XenEvtchn::open(evtchn_ops.clone(), Path::new(EVTCHN_DEVICE)).unwrap();
    let gntdev = XenGntdev::open(gntdev_ops.clone(), Path::new(GNTDEV_DEVICE)).unwrap();
    let platform =
        Arc::new(Platform::new(PlatformKind::Xen, 0, Arc::new(evtchn), Arc::new(gntdev)).unwrap());
    evtchn_ops.results.lock().unwrap().push_back(Ok(77));
    let (tx, rx) = mpsc::channel();
    let backend = ConsoleBackend::start(
        &platform,
        5,
        8,
        3,
        ConsoleConfig::default(),
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
    )
    .unwrap();
    assert_eq!(backend.local_port(), 77);
    let map = gntdev_ops.calls.lock().unwrap()[0].clone();
    assert_eq!(map.request, IOCTL_GNTDEV_MAP_GRANT_REF);
    assert_eq!(u32s(&map.arg[16..]), [5, 8], "domain 5, grant 8");

    // The guest writes to its console and signals.
    let memory = gntdev_ops.granted.lock().unwrap().take().unwrap();
    let guest_page = Mmap::map_fd(memory.as_fd(), 0, PAGE_SIZE, true).unwrap();
    let guest = ConsoleRing::frontend(guest_page.mem()).unwrap();
    assert_eq!(guest.write(b"login: ").unwrap(), 7);
    evtchn_ops.deliver(&[77]);
    let mut out = Vec::new();
    while out.len() < 7 {
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            ConsoleEvent::Output(b) => out.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(out, b"login: ");
    // Notified (ring.h-style: once for the pass) and unmasked after it.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while evtchn_ops.writes.lock().unwrap().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let notified = evtchn_ops
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.request == IOCTL_EVTCHN_NOTIFY && u32s(&c.arg) == [77]);
    assert!(notified, "the guest was notified on port 77");
    assert!(evtchn_ops
        .writes
        .lock()
        .unwrap()
        .contains(&77u32.to_ne_bytes().to_vec()));
    backend.stop();
    let unbound = evtchn_ops
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.request == IOCTL_EVTCHN_UNBIND && u32s(&c.arg) == [77]);
    assert!(unbound, "stopping closed the port");
}
