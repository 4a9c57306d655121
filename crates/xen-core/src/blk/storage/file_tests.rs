//! Tests of [`FileDisk`] on image files in the temporary directory, each
//! run on every engine (see `for_each_engine!`), and of the block-device
//! decisions that need no device.

use std::collections::BTreeSet;
use std::io::Write;

use tempfile::NamedTempFile;

use super::super::testkit::{
    bare, check_guest_pages, check_out_of_range, check_read_only, check_round_trip, gather,
    gather_any, guest_io, pattern, read, read_back, reap, run, write,
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

fn writable(engine: Engine) -> FileOptions {
    FileOptions {
        engine,
        ..FileOptions::default()
    }
}

/// Whether the kernel offers io_uring; if not, says which test skips it.
/// (`auto_picks_uring_exactly_when_the_kernel_offers_it` checks the engine
/// is there wherever the probe succeeds.)
fn uring_offered(test: &str) -> bool {
    match uring::probe() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test} on io_uring: the kernel does not offer it ({e})");
            false
        }
    }
}

/// The io_uring engine of `disk`, which must have one.
fn ring(disk: &FileDisk) -> &Uring {
    match &disk.io {
        Io::Uring(ring) => ring,
        Io::Threads(_) => panic!("the thread engine runs"),
        Io::Inline(_) => panic!("the inline engine runs"),
    }
}

/// Each test body named, taking an engine, runs once per engine: as
/// `with_threads::NAME`, `with_inline::NAME` and `with_uring::NAME`, the
/// last only where the kernel offers io_uring (elsewhere it says that it
/// skips).
macro_rules! for_each_engine {
    ($($name:ident),* $(,)?) => {
        mod with_threads {
            $(#[test]
            fn $name() {
                super::$name(super::Engine::Threads);
            })*
        }
        mod with_inline {
            $(#[test]
            fn $name() {
                super::$name(super::Engine::Inline);
            })*
        }
        mod with_uring {
            $(#[test]
            fn $name() {
                if super::uring_offered(stringify!($name)) {
                    super::$name(super::Engine::Uring);
                }
            })*
        }
    };
}

for_each_engine!(
    round_trip_across_segments_at_odd_offsets,
    out_of_range_is_refused,
    read_only_refuses_writes_and_discards,
    geometry_of_an_image_file,
    reads_past_the_end_of_the_file_are_zeros,
    guest_pages_are_read_and_written_in_place,
    reads_past_the_end_into_guest_pages_are_zeros,
    flush_after_writes_succeeds,
    discard_punches_a_hole_or_says_unsupported,
    secure_discard_of_a_file_is_unsupported,
    many_requests_in_flight_complete_once_each,
    a_batch_starts_together_and_refuses_alone,
    close_gives_back_every_completion_not_reaped,
    drop_with_requests_in_flight_finishes_them,
    refusals_wake_the_fd_too,
    direct_io_round_trip_or_refusal,
    more_segments_than_one_call_takes,
    block_device_discards_reach_the_ioctl,
);

fn round_trip_across_segments_at_odd_offsets(engine: Engine) {
    let file = image(64 * 512, &[]);
    check_round_trip(&mut open(&file, writable(engine)));
}

fn out_of_range_is_refused(engine: Engine) {
    let file = image(100 * 512, &[]);
    check_out_of_range(&mut open(&file, writable(engine)), 100 * 512);
}

fn read_only_refuses_writes_and_discards(engine: Engine) {
    let file = image(8192, &pattern(8192, 4));
    let options = FileOptions {
        read_only: true,
        ..writable(engine)
    };
    check_read_only(&mut open(&file, options));
    assert!(std::fs::read(file.path()).unwrap() == pattern(8192, 4));
}

fn geometry_of_an_image_file(engine: Engine) {
    // A tail shorter than a sector is not part of the disk.
    let file = image((1 << 20) + 100, &[]);
    let disk = open(&file, writable(engine));
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
    // Only the inline engine finishes requests in `submit`.
    assert_eq!(disk.wake_fd().is_none(), engine == Engine::Inline);
}

fn reads_past_the_end_of_the_file_are_zeros(engine: Engine) {
    let file = image(8192, &pattern(8192, 6));
    let mut disk = open(&file, writable(engine));
    // Someone shrinks the image under the open disk.
    file.as_file().set_len(4096 + 512).unwrap();
    let done = run(&mut disk, read(1, 4096, &[(0, 512), (512, 3584)]));
    done.result.unwrap();
    let back = gather(&done.segments);
    assert!(back[..512] == pattern(8192, 6)[4096..4608]);
    assert!(back[512..].iter().all(|&b| b == 0));
    if engine == Engine::Uring {
        // The short read went on with a second entry, which met the end.
        assert!(ring(&disk).continued() >= 1);
    }
}

fn guest_pages_are_read_and_written_in_place(engine: Engine) {
    let file = image(64 * 512, &[]);
    check_guest_pages(&mut open(&file, writable(engine)));
}

fn reads_past_the_end_into_guest_pages_are_zeros(engine: Engine) {
    let file = image(8192, &pattern(8192, 6));
    let mut disk = open(&file, writable(engine));
    file.as_file().set_len(4096 + 512).unwrap();
    let (request, maps) = guest_io(1, IoOp::Read, 4096, &[(0, 512), (512, 3584)], &[]);
    let done = run(&mut disk, request);
    done.result.unwrap();
    let back = gather_any(&done.segments);
    assert!(back[..512] == pattern(8192, 6)[4096..4608]);
    assert!(back[512..].iter().all(|&b| b == 0));
    // The zeros went into the guest's page itself, from the segment's start.
    let mut page = vec![0; 4096];
    maps[1].mem().read(0, &mut page).unwrap();
    assert!(page[..512].iter().all(|&b| b == 0xa5) && page[512..].iter().all(|&b| b == 0));
}

fn flush_after_writes_succeeds(engine: Engine) {
    const N: u64 = 16;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable(engine));
    run(&mut disk, write(N, 0, &[(0, 4096)], &pattern(4096, 1)))
        .result
        .unwrap();
    run(&mut disk, bare(N + 1, IoOp::Flush, 0)).result.unwrap();
    // A flush behind writes still in flight (the queue fences them; storage
    // need not): each succeeds, and the writes are in the file.
    submit_writes(&mut disk, 0..N);
    disk.submit(bare(N, IoOp::Flush, 0));
    assert_each_once(tags(&reap(&mut disk, N as usize + 1), &mut 0), N + 1);
    run(&mut disk, bare(N + 1, IoOp::Flush, 0)).result.unwrap();
    assert_written(&file, 0..N);
}

fn discard_punches_a_hole_or_says_unsupported(engine: Engine) {
    let data = pattern(16384, 7);
    let file = image(16384, &data);
    let mut disk = open(&file, writable(engine));
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

fn secure_discard_of_a_file_is_unsupported(engine: Engine) {
    let file = image(8192, &[]);
    let mut disk = open(&file, writable(engine));
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

/// The file holds what `submit_writes` wrote for `tags`.
fn assert_written(file: &NamedTempFile, tags: std::ops::Range<u64>) {
    let bytes = std::fs::read(file.path()).unwrap();
    for tag in tags {
        let at = (tag * 8192) as usize;
        assert!(
            bytes[at..at + 8192] == pattern(8192, tag as u8),
            "tag {tag}"
        );
    }
}

/// `tags` holds each of `0..n` exactly once.
fn assert_each_once(mut tags: Vec<u64>, n: u64) {
    tags.sort_unstable();
    assert_eq!(tags, (0..n).collect::<Vec<_>>());
}

fn many_requests_in_flight_complete_once_each(engine: Engine) {
    const N: u64 = 200;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable(engine));
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

/// `submit_many`: every request of a batch completes once, a refused one
/// (past the end) alone, and the batch is taken whole (the list is left
/// empty, for the caller to fill again).
fn a_batch_starts_together_and_refuses_alone(engine: Engine) {
    const N: u64 = 40;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable(engine));
    let mut batch: Vec<IoRequest> = (0..N)
        .map(|tag| {
            write(
                tag,
                tag * 8192,
                &[(0, 4096), (0, 4096)],
                &pattern(8192, tag as u8),
            )
        })
        .collect();
    // Past the end of the disk, and a transfer of nothing.
    batch.push(write(N, N * 8192, &[(0, 4096)], &pattern(4096, 0)));
    batch.push(write(N + 1, 0, &[], &[]));
    disk.submit_many(&mut batch);
    assert!(batch.is_empty());
    let done = reap(&mut disk, N as usize + 2);
    let mut refused = Vec::new();
    let mut ok = Vec::new();
    for c in &done {
        match &c.result {
            Ok(()) => ok.push(c.tag),
            Err(e) => {
                assert!(matches!(e, StorageError::OutOfRange), "tag {}: {e}", c.tag);
                refused.push(c.tag);
            }
        }
    }
    assert_eq!(refused, vec![N]);
    ok.retain(|t| *t != N + 1);
    assert_each_once(ok, N);
    assert_written(&file, 0..N);
}

fn close_gives_back_every_completion_not_reaped(engine: Engine) {
    const N: u64 = 64;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable(engine));
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

fn drop_with_requests_in_flight_finishes_them(engine: Engine) {
    const N: u64 = 64;
    let file = image(N * 8192, &[]);
    let mut disk = open(&file, writable(engine));
    submit_writes(&mut disk, 0..N);
    let mut reaped = Vec::new();
    disk.completions(&mut reaped);
    let reaped = tags(&reaped, &mut 0);
    assert_eq!(reaped.iter().collect::<BTreeSet<_>>().len(), reaped.len());
    drop(disk);
    // Every submitted write reached the file before the drop returned.
    assert_written(&file, 0..N);
}

fn refusals_wake_the_fd_too(engine: Engine) {
    let file = image(4096, &[]);
    let mut disk = open(&file, writable(engine));
    disk.submit(read(1, 4096, &[(0, 512)]));
    let done = reap(&mut disk, 1);
    assert!(matches!(done[0].result, Err(StorageError::OutOfRange)));
}

/// Segments of 512 bytes at `start`s varying with the index.
fn many_segments(n: usize, shift: u16) -> Vec<(u16, u16)> {
    (0..n)
        .map(|i| ((i as u16 + shift) % 8 * 512, 512))
        .collect()
}

fn more_segments_than_one_call_takes(engine: Engine) {
    // One request of more segments than one system call or ring entry
    // takes goes on after the first IOV_MAX, as after a short transfer.
    let n = IOV_MAX + 100;
    let len = n * 512;
    let file = image(len as u64 + 4096, &[]);
    let mut disk = open(&file, writable(engine));
    let data = pattern(len, 9);
    run(&mut disk, write(1, 512, &many_segments(n, 0), &data))
        .result
        .unwrap();
    let done = run(&mut disk, read(2, 512, &many_segments(n, 3)));
    done.result.unwrap();
    assert!(gather(&done.segments) == data);
    assert!(std::fs::read(file.path()).unwrap()[512..512 + len] == data);
    if engine == Engine::Uring {
        assert!(ring(&disk).continued() >= 2, "one more entry each");
    }
}

fn block_device_discards_reach_the_ioctl(engine: Engine) {
    // A regular file taken for a block device: the discard ioctl (the
    // io_uring engine's helper thread does it) is refused with ENOTTY,
    // and that completion wakes the fd like the ring's.
    let file = image(65536, &pattern(65536, 2));
    let options = writable(engine);
    let (_, geometry) = probe(file.as_file(), &options).unwrap();
    let fd = file.reopen().unwrap().into();
    let mut disk = FileDisk::start(fd, Backing::BlockDevice, geometry, &options).unwrap();
    assert_eq!(disk.engine(), engine);
    for (tag, secure) in [(1, false), (2, true)] {
        let op = IoOp::Discard { len: 4096, secure };
        match run(&mut disk, bare(tag, op, 4096)).result {
            Err(StorageError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY)),
            other => panic!("discard: {other:?}"),
        }
    }
    // Discards and transfers at once, on both paths.
    let discard = IoOp::Discard {
        len: 512,
        secure: false,
    };
    disk.submit(bare(3, discard, 0));
    disk.submit(read(4, 0, &[(0, 4096)]));
    let mut done = reap(&mut disk, 2);
    done.sort_by_key(|c| c.tag);
    assert!(matches!(done[0].result, Err(StorageError::Io(_))));
    assert!(gather(&done[1].segments) == pattern(4096, 2));
    assert_eq!(disk.close().len(), 0);
}

#[test]
fn auto_picks_uring_exactly_when_the_kernel_offers_it() {
    let file = image(4096, &[]);
    let offered = uring::probe();
    let auto = open(&file, writable(Engine::Auto)).engine();
    let forced = FileDisk::open(file.path(), writable(Engine::Uring));
    if in_memory(&file.reopen().unwrap().into()) {
        // A temporary directory in memory: see the test below.
        assert_eq!(auto, Engine::Inline);
        return;
    }
    match &offered {
        Ok(_) => {
            assert_eq!(auto, Engine::Uring);
            assert_eq!(forced.unwrap().engine(), Engine::Uring);
        }
        Err(e) => {
            eprintln!("io_uring is not offered here ({e}): the uring tests skip");
            assert_eq!(auto, Engine::Threads);
            assert!(forced.is_err(), "Engine::Uring must not fall back");
        }
    }
    let threads = open(&file, writable(Engine::Threads));
    assert_eq!(threads.engine(), Engine::Threads);
    assert_eq!(FileOptions::default().engine, Engine::Auto);
}

/// An image in memory (here in /dev/shm, tmpfs on Linux) gets the inline
/// engine, unless it is opened for direct I/O; any engine can be asked for.
#[test]
fn auto_picks_inline_for_an_image_in_memory() {
    let shm = std::path::Path::new("/dev/shm");
    let file = match tempfile::NamedTempFile::new_in(shm) {
        Ok(f) if in_memory(&f.reopen().unwrap().into()) => f,
        _ => {
            eprintln!("SKIPPED auto_picks_inline_for_an_image_in_memory: no tmpfs at /dev/shm");
            return;
        }
    };
    file.as_file().set_len(65536).unwrap();
    let mut disk = open(&file, writable(Engine::Auto));
    assert_eq!(disk.engine(), Engine::Inline);
    // Done in submit: the completion is there at once, with no fd to wait on.
    assert!(disk.wake_fd().is_none());
    let data = pattern(8192, 4);
    disk.submit(write(1, 4096, &[(0, 4096), (0, 4096)], &data));
    let mut done = Vec::new();
    disk.completions(&mut done);
    assert_eq!(done.len(), 1);
    done[0].result.as_ref().unwrap();
    assert!(read_back(&mut disk, 4096, 8192) == data);
    // One open disk at a time: each holds the image's lock.
    drop(disk);
    assert_eq!(
        open(&file, writable(Engine::Threads)).engine(),
        Engine::Threads
    );
    let direct = FileOptions {
        direct: true,
        ..writable(Engine::Auto)
    };
    // tmpfs takes O_DIRECT from Linux 6.6 on.
    if let Ok(disk) = FileDisk::open(file.path(), direct) {
        assert_ne!(disk.engine(), Engine::Inline);
    }
}

#[test]
fn uring_backlog_beyond_the_submission_queue() {
    if !uring_offered("uring_backlog_beyond_the_submission_queue") {
        return;
    }
    let file = image(4096, &[]);
    let slots = ring(&open(&file, writable(Engine::Uring))).slots();
    let n = 3 * slots as u64 + 5;
    let file = image(n * 8192, &[]);
    let mut disk = open(&file, writable(Engine::Uring));
    // Nothing is reaped yet, so no slot is free again.
    submit_writes(&mut disk, 0..n);
    assert_eq!(ring(&disk).backlogged(), n as usize - slots);
    assert_each_once(tags(&reap(&mut disk, n as usize), &mut 0), n);
    assert_eq!(ring(&disk).backlogged(), 0);
    for tag in 0..n {
        disk.submit(read(tag, tag * 8192, &[(0, 4096), (0, 4096)]));
    }
    for c in reap(&mut disk, n as usize) {
        assert!(
            gather(&c.segments) == pattern(8192, c.tag as u8),
            "tag {}",
            c.tag
        );
    }
}

#[test]
fn uring_close_waits_for_the_kernel_and_the_backlog() {
    if !uring_offered("uring_close_waits_for_the_kernel_and_the_backlog") {
        return;
    }
    let file = image(4096, &[]);
    let slots = ring(&open(&file, writable(Engine::Uring))).slots() as u64;
    let n = 2 * slots + 3;
    let file = image(n * 8192, &[]);
    let mut disk = open(&file, writable(Engine::Uring));
    submit_writes(&mut disk, 0..n);
    disk.submit(bare(n, IoOp::Flush, 0));
    assert!(ring(&disk).backlogged() > 0);
    let mut pages = 0;
    assert_each_once(tags(&disk.close(), &mut pages), n + 1);
    assert_eq!(pages, 2 * n as usize);
    assert_written(&file, 0..n);
}

#[test]
fn zero_workers_means_one() {
    let file = image(64 * 512, &[]);
    let options = FileOptions {
        workers: 0,
        // The workers are the thread engine's.
        ..writable(Engine::Threads)
    };
    check_round_trip(&mut open(&file, options));
}

fn direct_io_round_trip_or_refusal(engine: Engine) {
    let file = image(65536, &[]);
    let options = FileOptions {
        direct: true,
        ..writable(engine)
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
        ..writable(Engine::Auto)
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

/// The io_uring engine's fd stays readable until `woken`, whatever
/// `completions` took (it reads the ring only, with no system call), and
/// `woken` quiets it.
#[test]
fn uring_reap_leaves_the_fd_to_woken() {
    if !uring_offered("uring_reap_leaves_the_fd_to_woken") {
        return;
    }
    use crate::platform::event_loop::wait_readable;
    use std::time::Duration;
    let file = image(8 * 8192, &[]);
    let mut disk = open(&file, writable(Engine::Uring));
    let readable =
        |disk: &FileDisk| wait_readable(disk.wake_fd().unwrap(), Some(Duration::ZERO)).unwrap();
    disk.submit(write(1, 0, &[(0, 4096)], &pattern(4096, 1)));
    let mut done = Vec::new();
    while done.is_empty() {
        wait_readable(disk.wake_fd().unwrap(), None).unwrap();
        disk.completions(&mut done);
    }
    assert_eq!(done[0].tag, 1);
    assert!(done[0].result.is_ok());
    assert!(readable(&disk), "completions left the fd alone");
    disk.woken();
    assert!(!readable(&disk), "woken quieted it");
    let mut more = Vec::new();
    disk.completions(&mut more);
    assert!(more.is_empty());
}

#[test]
fn an_image_is_locked_for_its_process_and_its_queues_share_the_lock() {
    let file = image(1 << 20, &[]);
    let rw = writable(Engine::Threads);
    let ro = FileOptions {
        read_only: true,
        ..rw
    };
    let first = FileImage::open(file.path(), rw).unwrap();
    // Every queue's handle works on the one locked open file.
    let mut a = first.disk().unwrap();
    let mut b = first.disk().unwrap();
    check_round_trip(&mut a);
    check_round_trip(&mut b);
    // Another opener, writable or not, is refused while it is held.
    for options in [rw, ro] {
        let e = FileImage::open(file.path(), options).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }
    // The lock lasts while any handle does, not only the first.
    drop(first);
    drop(a);
    assert!(FileImage::open(file.path(), rw).is_err());
    drop(b);
    let again = FileImage::open(file.path(), rw).unwrap();
    drop(again);
    // Readers share: two read-only opens, and no writer beside them.
    let r1 = FileImage::open(file.path(), ro).unwrap();
    let r2 = FileImage::open(file.path(), ro).unwrap();
    assert!(FileImage::open(file.path(), rw).is_err());
    drop((r1, r2));
    assert!(FileImage::open(file.path(), rw).is_ok());
}
