//! Tests of [`FileDisk`] on image files in the temporary directory, and of
//! the block-device decisions that need no device.

use std::collections::BTreeSet;
use std::io::Write;

use tempfile::NamedTempFile;

use super::super::testkit::{
    bare, check_out_of_range, check_read_only, check_round_trip, gather, pattern, read, read_back,
    reap, run, write,
};
use super::*;

/// An image of `len` bytes holding `data` from its start.
fn image(len: u64, data: &[u8]) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("temporary file");
    file.write_all(data).unwrap();
    file.as_file().set_len(len).unwrap();
    file
}

fn open(file: &NamedTempFile, options: FileOptions) -> FileDisk {
    FileDisk::open(file.path(), options).expect("open the image")
}

fn writable() -> FileOptions {
    FileOptions::default()
}

#[test]
fn round_trip_across_segments_at_odd_offsets() {
    let file = image(64 * 512, &[]);
    check_round_trip(&mut open(&file, writable()));
}

#[test]
fn out_of_range_is_refused() {
    let file = image(100 * 512, &[]);
    check_out_of_range(&mut open(&file, writable()), 100 * 512);
}

#[test]
fn read_only_refuses_writes_and_discards() {
    let file = image(8192, &pattern(8192, 4));
    let options = FileOptions {
        read_only: true,
        ..writable()
    };
    check_read_only(&mut open(&file, options));
    assert!(std::fs::read(file.path()).unwrap() == pattern(8192, 4));
}

#[test]
fn geometry_of_an_image_file() {
    // A tail shorter than a sector is not part of the disk.
    let file = image((1 << 20) + 100, &[]);
    let disk = open(&file, writable());
    let g = disk.geometry();
    assert_eq!(g.sectors, 2048);
    assert_eq!((g.sector_size, g.physical_sector_size), (512, 4096));
    assert!(g.volatile_cache && !g.read_only);
    let discard = DiscardInfo {
        granularity: 4096,
        alignment: 0,
        secure: false,
    };
    assert_eq!(g.discard, Some(discard));
    assert!(disk.wake_fd().is_some());
}

#[test]
fn reads_past_the_end_of_the_file_are_zeros() {
    let file = image(8192, &pattern(8192, 6));
    let mut disk = open(&file, writable());
    // Someone shrinks the image under the open disk.
    file.as_file().set_len(4096 + 512).unwrap();
    let done = run(&mut disk, read(1, 4096, &[(0, 512), (512, 3584)]));
    done.result.unwrap();
    let back = gather(&done.segments);
    assert!(back[..512] == pattern(8192, 6)[4096..4608]);
    assert!(back[512..].iter().all(|&b| b == 0));
}

#[test]
fn flush_succeeds() {
    let file = image(4096, &[]);
    let mut disk = open(&file, writable());
    run(&mut disk, write(1, 0, &[(0, 4096)], &pattern(4096, 1)))
        .result
        .unwrap();
    run(&mut disk, bare(2, IoOp::Flush, 0)).result.unwrap();
}

#[test]
fn discard_punches_a_hole_or_says_unsupported() {
    let data = pattern(16384, 7);
    let file = image(16384, &data);
    let mut disk = open(&file, writable());
    let op = IoOp::Discard {
        len: 6656,
        secure: false,
    };
    match run(&mut disk, bare(1, op, 2048)).result {
        Ok(()) => {
            let mut expect = data.clone();
            expect[2048..2048 + 6656].fill(0);
            assert!(read_back(&mut disk, 0, 16384) == expect);
        }
        // The file system cannot punch holes: said so, data untouched.
        Err(StorageError::Unsupported) => assert!(read_back(&mut disk, 0, 16384) == data),
        Err(e) => panic!("discard failed: {e}"),
    }
}

#[test]
fn secure_discard_of_a_file_is_unsupported() {
    let file = image(8192, &[]);
    let mut disk = open(&file, writable());
    let op = IoOp::Discard {
        len: 4096,
        secure: true,
    };
    let done = run(&mut disk, bare(1, op, 0));
    assert!(matches!(done.result, Err(StorageError::Unsupported)));
}

/// Submits one 2-page write per tag (at `tag * 8192`) without waiting.
fn submit_writes(disk: &mut FileDisk, tags: std::ops::Range<u64>) {
    for tag in tags {
        let data = pattern(8192, tag as u8);
        disk.submit(write(tag, tag * 8192, &[(0, 4096), (0, 4096)], &data));
    }
}

/// Each completion's tag, checking it succeeded and counting its pages.
fn tags(done: &[IoCompletion], pages: &mut usize) -> Vec<u64> {
    for c in done {
        assert!(c.result.is_ok(), "tag {}: {:?}", c.tag, c.result);
        *pages += c.segments.len();
    }
    done.iter().map(|c| c.tag).collect()
}

/// `tags` holds each of `0..n` exactly once.
fn assert_each_once(mut tags: Vec<u64>, n: u64) {
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>());
}

#[test]
fn many_requests_in_flight_complete_once_each() {
    const N: u64 = 200;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable());
    submit_writes(&mut disk, 0..N);
    let mut pages = 0;
    assert_each_once(tags(&reap(&mut disk, N as usize), &mut pages), N);
    assert_eq!(pages, 2 * N as usize);

    for tag in 0..N {
        disk.submit(read(tag, tag * 8192, &[(0, 4096), (0, 4096)]));
    }
    let done = reap(&mut disk, N as usize);
    for c in &done {
        assert!(
            gather(&c.segments) == pattern(8192, c.tag as u8),
            "tag {}",
            c.tag
        );
    }
    let mut pages = 0;
    assert_each_once(tags(&done, &mut pages), N);
    assert_eq!(pages, 2 * N as usize);
    // Nothing more comes.
    let mut more = Vec::new();
    disk.completions(&mut more);
    assert!(more.is_empty());
}

#[test]
fn close_gives_back_every_completion_not_reaped() {
    const N: u64 = 64;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable());
    submit_writes(&mut disk, 0..N);
    let mut reaped = Vec::new();
    disk.completions(&mut reaped);
    let rest = disk.close();
    let mut pages = 0;
    let mut all = tags(&reaped, &mut pages);
    all.extend(tags(&rest, &mut pages));
    assert_each_once(all, N);
    assert_eq!(pages, 2 * N as usize);
}

#[test]
fn drop_with_requests_in_flight_finishes_them() {
    const N: u64 = 64;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable());
    submit_writes(&mut disk, 0..N);
    let mut reaped = Vec::new();
    disk.completions(&mut reaped);
    let reaped = tags(&reaped, &mut 0);
    assert_eq!(reaped.iter().collect::<BTreeSet<_>>().len(), reaped.len());
    drop(disk);
    // Every submitted write reached the file before the drop returned.
    let bytes = std::fs::read(file.path()).unwrap();
    for tag in 0..N {
        let at = (tag * 8192) as usize;
        assert!(
            bytes[at..at + 8192] == pattern(8192, tag as u8),
            "tag {tag}"
        );
    }
}

#[test]
fn refusals_wake_the_fd_too() {
    let file = image(4096, &[]);
    let mut disk = open(&file, writable());
    disk.submit(read(1, 4096, &[(0, 512)]));
    let done = reap(&mut disk, 1);
    assert!(matches!(done[0].result, Err(StorageError::OutOfRange)));
}

#[test]
fn zero_workers_means_one() {
    let file = image(64 * 512, &[]);
    let options = FileOptions {
        workers: 0,
        ..writable()
    };
    check_round_trip(&mut open(&file, options));
}

#[test]
fn direct_io_round_trip_or_refusal() {
    let file = image(65536, &[]);
    let options = FileOptions {
        direct: true,
        ..writable()
    };
    let mut disk = match FileDisk::open(file.path(), options) {
        Ok(disk) => disk,
        // A file system without O_DIRECT refuses the open.
        Err(e) => return assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
    };
    let g = disk.geometry();
    assert!(g.sector_size.is_power_of_two() && (512..=4096).contains(&g.sector_size));
    let data = pattern(8192, 8);
    run(&mut disk, write(1, 8192, &[(0, 4096), (0, 4096)], &data))
        .result
        .unwrap();
    assert!(read_back(&mut disk, 8192, 8192) == data);
}

#[test]
fn other_file_types_are_refused() {
    let options = FileOptions {
        read_only: true,
        ..writable()
    };
    let e = FileDisk::open("/dev/null", options).err().expect("refused");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn discard_method_per_backing() {
    use DiscardMethod::*;
    assert_eq!(discard_method(Backing::File, false), PunchHole);
    assert_eq!(discard_method(Backing::File, true), Unsupported);
    assert_eq!(discard_method(Backing::BlockDevice, false), BlkDiscard);
    assert_eq!(discard_method(Backing::BlockDevice, true), BlkSecDiscard);
}

#[test]
fn block_ioctl_opcodes_match_linux_fs_h() {
    assert_eq!(BLKDISCARD as u64, 0x1277);
    assert_eq!(BLKSECDISCARD as u64, 0x127d);
    #[cfg(target_pointer_width = "64")]
    assert_eq!(BLKGETSIZE64 as u64, 0x8008_1272);
}

#[test]
fn eopnotsupp_means_unsupported() {
    assert!(matches!(
        discard_error(Errno::OPNOTSUPP),
        StorageError::Unsupported
    ));
    assert!(matches!(discard_error(Errno::INVAL), StorageError::Io(_)));
}

#[test]
fn block_discard_info_from_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("8:0");
    let part = disk.join("sda1");
    std::fs::create_dir_all(disk.join("queue")).unwrap();
    std::fs::create_dir_all(&part).unwrap();
    let put = |path: PathBuf, v: &str| std::fs::write(path, v).unwrap();
    put(disk.join("queue/discard_max_bytes"), "0\n");
    put(disk.join("queue/discard_granularity"), "4096\n");
    assert_eq!(block_discard_info(&disk), None);

    put(disk.join("queue/discard_max_bytes"), "2147450880\n");
    put(part.join("discard_alignment"), "1024\n");
    let info = |granularity, alignment| {
        Some(DiscardInfo {
            granularity,
            alignment,
            secure: false,
        })
    };
    assert_eq!(block_discard_info(&disk), info(4096, 0));
    // A partition reads its disk's queue, and its own alignment.
    assert_eq!(block_discard_info(&part), info(4096, 1024));
    // No sysfs directory: no discard.
    assert_eq!(block_discard_info(&dir.path().join("nope")), None);
}

#[test]
fn short_transfers_resume_mid_segment() {
    let segs = super::super::testkit::segments(&[(0, 512), (0, 0), (100, 1000)], &[]);
    let mut at = (0, 0);
    advance(&segs, &mut at, 100);
    assert_eq!(at, (0, 100));
    // The end of a segment skips the empty one after it.
    advance(&segs, &mut at, 412);
    assert_eq!(at, (2, 0));
    advance(&segs, &mut at, 999);
    assert_eq!(at, (2, 999));
    advance(&segs, &mut at, 1);
    assert_eq!(at, (3, 0));
}
