//! Test helpers shared by every storage: requests built from byte patterns,
//! run to completion on any [`Storage`] (waiting on its `wake_fd`, never on
//! a clock), and the checks every storage must pass.

use std::sync::Arc;

use super::{
    check_range, IoCompletion, IoOp, IoRequest, IoSegment, Page, Storage, StorageError, PAGE_SIZE,
};
use crate::platform::event_loop::wait_readable;
use crate::platform::{GrantMapping, Mmap};

/// What a read's pages hold before the read, so bytes it fails to fill show.
const UNREAD: u8 = 0xa5;

/// `len` deterministic bytes, different for each `seed`, never all zero.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8) | 1)
        .collect()
}

/// Segments laid out as `(start, len)` in fresh pages, filled from `data`
/// in order (the rest of each page holds [`UNREAD`]).
pub fn segments(layout: &[(u16, u16)], data: &[u8]) -> Vec<IoSegment> {
    let mut rest = data;
    layout
        .iter()
        .map(|&(start, len)| {
            let mut page = Page::new_boxed();
            page.0.fill(UNREAD);
            let mut seg = IoSegment::new(page, start, len);
            let n = rest.len().min(usize::from(len));
            seg.bytes_mut()[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            seg
        })
        .collect()
}

/// As [`segments`], each in a page of its own mapping standing for a
/// guest's page mapped through a persistent grant (zero copy); the
/// mappings are returned too, to look at the pages after the I/O.
pub fn guest_segments(
    layout: &[(u16, u16)],
    data: &[u8],
) -> (Vec<IoSegment>, Vec<Arc<GrantMapping>>) {
    let mut rest = data;
    let mut maps = Vec::new();
    let segments = layout
        .iter()
        .enumerate()
        .map(|(i, &(start, len))| {
            let mmap = Mmap::anonymous(PAGE_SIZE).expect("a page");
            let map = Arc::new(GrantMapping::new(
                mmap,
                7,
                vec![i as u32 + 8],
                true,
                Box::new(|| {}),
            ));
            let mem = map.mem();
            mem.fill(0, PAGE_SIZE, UNREAD).unwrap();
            let n = rest.len().min(usize::from(len));
            mem.write(usize::from(start), &rest[..n]).unwrap();
            rest = &rest[n..];
            maps.push(Arc::clone(&map));
            IoSegment::in_guest(map, start, len).expect("a writable page")
        })
        .collect();
    (segments, maps)
}

/// The bytes the segments cover, concatenated, whatever holds them.
pub fn gather_any(segments: &[IoSegment]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        let at = out.len();
        out.resize(at + usize::from(s.len()), 0);
        s.read_at(0, &mut out[at..]);
    }
    out
}

/// A read or write at `offset` through guest pages laid out as `layout`
/// (a write's filled from `data`), and the pages' mappings.
pub fn guest_io(
    tag: u64,
    op: IoOp,
    offset: u64,
    layout: &[(u16, u16)],
    data: &[u8],
) -> (IoRequest, Vec<Arc<GrantMapping>>) {
    let (segments, maps) = guest_segments(layout, data);
    let request = IoRequest {
        tag,
        op,
        offset,
        segments,
    };
    (request, maps)
}

/// Storage that accepts guest pages reads and writes them in place: a
/// write from guest pages at odd offsets lands on the disk, and a read into
/// guest pages fills exactly the segments (the rest of each page as it
/// was).
pub fn check_guest_pages(storage: &mut dyn Storage) {
    assert!(storage.accepts_guest_pages());
    let offset = 3 * 512;
    let data = pattern(9216, 9);
    let write_layout = [(1024, 3072), (0, 4096), (512, 2048)];
    let (request, _maps) = guest_io(30, IoOp::Write, offset, &write_layout, &data);
    let done = run(storage, request);
    done.result.expect("write from guest pages");
    assert!(done.segments.iter().all(IoSegment::in_guest_page));
    assert!(read_back(storage, offset, data.len()) == data);

    let read_layout = [(512, 512), (0, 4096), (2048, 2048), (0, 2560)];
    let (request, maps) = guest_io(31, IoOp::Read, offset, &read_layout, &[]);
    let done = run(storage, request);
    done.result.expect("read into guest pages");
    assert!(
        gather_any(&done.segments) == data,
        "read differs from write"
    );
    for (map, &(start, len)) in maps.iter().zip(&read_layout) {
        let mut page = vec![0; PAGE_SIZE];
        map.mem().read(0, &mut page).unwrap();
        let (start, end) = (usize::from(start), usize::from(start + len));
        assert!(
            page[..start]
                .iter()
                .chain(&page[end..])
                .all(|&b| b == UNREAD),
            "a read touched bytes outside its segment"
        );
    }
}

/// The bytes the segments cover, concatenated.
pub fn gather(segments: &[IoSegment]) -> Vec<u8> {
    segments.iter().flat_map(|s| s.bytes().to_vec()).collect()
}

/// A write of `data` at `offset`, through segments laid out as `layout`.
pub fn write(tag: u64, offset: u64, layout: &[(u16, u16)], data: &[u8]) -> IoRequest {
    let segments = segments(layout, data);
    assert_eq!(gather(&segments).len(), data.len(), "layout must fit data");
    IoRequest {
        tag,
        op: IoOp::Write,
        offset,
        segments,
    }
}

/// A read at `offset` into segments laid out as `layout`.
pub fn read(tag: u64, offset: u64, layout: &[(u16, u16)]) -> IoRequest {
    IoRequest {
        tag,
        op: IoOp::Read,
        offset,
        segments: segments(layout, &[]),
    }
}

/// A request without data.
pub fn bare(tag: u64, op: IoOp, offset: u64) -> IoRequest {
    IoRequest {
        tag,
        op,
        offset,
        segments: Vec::new(),
    }
}

/// Collects `n` completions, sleeping on the wake fd between polls.
pub fn reap(storage: &mut dyn Storage, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    loop {
        storage.completions(&mut out);
        assert!(out.len() <= n, "more completions than requests");
        if out.len() == n {
            return out;
        }
        match storage.wake_fd() {
            Some(fd) => {
                wait_readable(fd, None).expect("poll the wake fd");
                storage.woken();
            }
            None => panic!("synchronous storage left {} requests", n - out.len()),
        }
    }
}

/// Submits one request and waits for its completion.
pub fn run(storage: &mut dyn Storage, request: IoRequest) -> IoCompletion {
    let tag = request.tag;
    storage.submit(request);
    let done = reap(storage, 1).pop().expect("one completion");
    assert_eq!(done.tag, tag);
    done
}

/// Reads `len` bytes at `offset` in one segment-per-page request.
pub fn read_back(storage: &mut dyn Storage, offset: u64, len: usize) -> Vec<u8> {
    let layout: Vec<(u16, u16)> = (0..len.div_ceil(4096))
        .map(|i| (0, (len - i * 4096).min(4096) as u16))
        .collect();
    let done = run(storage, read(u64::MAX, offset, &layout));
    done.result.expect("read back");
    gather(&done.segments)
}

/// Writes across segment boundaries at odd offsets within pages, and reads
/// back through a different layout; the bytes around stay untouched.
pub fn check_round_trip(storage: &mut dyn Storage) {
    let offset = 7 * 512;
    let data = pattern(8704, 3);
    let write_layout = [(512, 3584), (0, 4096), (0, 1024)];
    let done = run(storage, write(1, offset, &write_layout, &data));
    done.result.expect("write");
    // The buffers come back as they went, in order.
    let back: Vec<(u16, u16)> = done.segments.iter().map(|s| (s.start(), s.len())).collect();
    assert_eq!(back, write_layout);

    let read_layout = [(1536, 2560), (0, 4096), (512, 2048)];
    let done = run(storage, read(2, offset, &read_layout));
    done.result.expect("read");
    let back: Vec<(u16, u16)> = done.segments.iter().map(|s| (s.start(), s.len())).collect();
    assert_eq!(back, read_layout);
    assert!(gather(&done.segments) == data, "read differs from write");
    // Bytes outside a segment are not the read's to touch.
    let first = done
        .segments
        .into_iter()
        .next()
        .and_then(IoSegment::into_page);
    assert!(first.expect("an own page").0[..1536]
        .iter()
        .all(|&b| b == UNREAD));

    let around = read_back(storage, 0, 16384);
    assert!(around[..offset as usize].iter().all(|&b| b == 0));
    assert!(around[offset as usize..offset as usize + data.len()] == data);
    assert!(around[offset as usize + data.len()..]
        .iter()
        .all(|&b| b == 0));
}

/// Requests outside a disk of `bytes` are refused with `OutOfRange`, with
/// their buffers given back.
pub fn check_out_of_range(storage: &mut dyn Storage, bytes: u64) {
    let cases = [
        read(10, bytes, &[(0, 512)]),
        read(11, bytes - 512, &[(0, 1024)]),
        write(12, bytes - 512, &[(0, 4096)], &pattern(4096, 1)),
        bare(
            13,
            IoOp::Discard {
                len: 1024,
                secure: false,
            },
            bytes - 512,
        ),
        bare(
            14,
            IoOp::Discard {
                len: 512,
                secure: false,
            },
            u64::MAX - 511,
        ),
        read(15, u64::MAX - 511, &[(0, 1024)]),
    ];
    for request in cases {
        let (tag, n) = (request.tag, request.segments.len());
        assert!(check_range(&storage.geometry(), &request).is_err());
        let done = run(storage, request);
        assert!(
            matches!(done.result, Err(StorageError::OutOfRange)),
            "tag {tag}: {:?}",
            done.result
        );
        assert_eq!(done.segments.len(), n);
    }
    // The last sector is inside.
    run(storage, read(16, bytes - 512, &[(0, 512)]))
        .result
        .expect("last sector");
}

/// A read-only disk refuses writes and discards, and still reads and flushes.
pub fn check_read_only(storage: &mut dyn Storage) {
    assert!(storage.geometry().read_only);
    let refused = [
        write(20, 0, &[(0, 512)], &pattern(512, 2)),
        bare(
            21,
            IoOp::Discard {
                len: 4096,
                secure: false,
            },
            0,
        ),
    ];
    for request in refused {
        let done = run(storage, request);
        assert!(matches!(done.result, Err(StorageError::ReadOnly)));
    }
    run(storage, read(22, 0, &[(0, 4096)]))
        .result
        .expect("read");
    run(storage, bare(23, IoOp::Flush, 0))
        .result
        .expect("flush");
}
