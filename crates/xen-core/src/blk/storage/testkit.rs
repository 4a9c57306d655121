//! Test helpers shared by every storage: requests built from byte patterns,
//! run to completion on any [`Storage`] (waiting on its `wake_fd`, never on
//! a clock), and the checks every storage must pass.

use super::{check_range, IoCompletion, IoOp, IoRequest, IoSegment, Page, Storage, StorageError};
use crate::platform::event_loop::wait_readable;

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
            let mut seg = IoSegment { page, start, len };
            let n = rest.len().min(usize::from(len));
            seg.bytes_mut()[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            seg
        })
        .collect()
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
    let back: Vec<(u16, u16)> = done.segments.iter().map(|s| (s.start, s.len)).collect();
    assert_eq!(back, write_layout);

    let read_layout = [(1536, 2560), (0, 4096), (512, 2048)];
    let done = run(storage, read(2, offset, &read_layout));
    done.result.expect("read");
    let back: Vec<(u16, u16)> = done.segments.iter().map(|s| (s.start, s.len)).collect();
    assert_eq!(back, read_layout);
    assert!(gather(&done.segments) == data, "read differs from write");
    // Bytes outside a segment are not the read's to touch.
    assert!(done.segments[0].page.0[..1536].iter().all(|&b| b == UNREAD));

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
