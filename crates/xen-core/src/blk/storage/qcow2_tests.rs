//! Tests of [`Qcow2Disk`] on images that `qemu-img` makes in a temporary
//! directory, and checked by `qemu-img` after they are closed. Without
//! `qemu-img` (package qemu-utils) each test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::super::testkit::{
    bare, check_out_of_range, check_read_only, check_round_trip, gather, pattern, read, read_back,
    reap, run, write,
};
use super::*;

const MIB: u64 = 1 << 20;

/// A temporary directory, if `qemu-img` is there to make images in it.
fn workdir() -> Option<TempDir> {
    let found = Command::new("qemu-img").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: qemu-img is not installed (apt-get install qemu-utils)");
        return None;
    }
    Some(tempfile::tempdir().expect("temporary directory"))
}

/// Runs `program` with `args`, which must succeed; returns its stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> String {
    tool("qemu-img", args)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// A new empty qcow2 image of `size` bytes; `options` go to `-o`.
fn create(dir: &TempDir, name: &str, size: u64, options: &str) -> PathBuf {
    let path = dir.path().join(name);
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([text(&path), &size]);
    qemu_img(&args);
    path
}

/// A qcow2 image converted from a raw one holding `data`; `extra`
/// arguments go to `qemu-img convert` (e.g. `-c` to compress).
fn convert_from_raw(dir: &TempDir, name: &str, data: &[u8], extra: &[&str]) -> PathBuf {
    let raw = dir.path().join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let path = dir.path().join(name);
    let mut args = vec!["convert", "-q", "-f", "raw", "-O", "qcow2"];
    args.extend(extra);
    args.extend([text(&raw), text(&path)]);
    qemu_img(&args);
    path
}

/// The guest-visible bytes of a closed image, by `qemu-img convert`.
fn contents(image: &Path) -> Vec<u8> {
    let raw = image.with_extension("out.raw");
    qemu_img(&["convert", "-q", "-O", "raw", text(image), text(&raw)]);
    std::fs::read(raw).unwrap()
}

/// `qemu-img check` finds no errors and no leaks.
fn assert_clean(image: &Path) {
    let report = qemu_img(&["check", text(image)]);
    assert!(report.contains("No errors were found"), "{report}");
    assert!(!report.contains("leaked"), "{report}");
}

fn open(path: &Path) -> Qcow2Disk {
    Qcow2Disk::open(path, Qcow2Options::default()).expect("open the image")
}

/// Why the image at `path` fails to open, read-write or read-only alike.
fn open_error(path: &Path) -> String {
    let errors = [Qcow2Options::default(), read_only()].map(|options| {
        let e = Qcow2Disk::open(path, options).err().expect("refused");
        assert!(e.to_string().contains(text(path)), "{e}");
        e.to_string()
    });
    errors[0].clone()
}

fn read_only() -> Qcow2Options {
    Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    }
}

/// Writes `data` at `offset` in one request, segment per page, and records
/// it in `model`.
fn put(disk: &mut Qcow2Disk, model: &mut [u8], offset: u64, data: &[u8]) {
    let layout: Vec<(u16, u16)> = data.chunks(4096).map(|c| (0, c.len() as u16)).collect();
    run(disk, write(offset, offset, &layout, data))
        .result
        .expect("write");
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

fn flush(disk: &mut Qcow2Disk) {
    run(disk, bare(99, IoOp::Flush, 0)).result.expect("flush");
}

fn discard(disk: &mut Qcow2Disk, offset: u64, len: u64, secure: bool) -> IoCompletion {
    run(disk, bare(98, IoOp::Discard { len, secure }, offset))
}

#[test]
fn round_trip_across_segments_at_odd_offsets() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", MIB, "");
    let mut disk = open(&path);
    check_round_trip(&mut disk);
    disk.close().expect("close");
    assert_clean(&path);
}

#[test]
fn out_of_range_is_refused() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", 100 * 512, "");
    check_out_of_range(&mut open(&path), 100 * 512);
}

#[test]
fn read_only_refuses_writes_and_discards() {
    let Some(dir) = workdir() else { return };
    let data = pattern(256 << 10, 4);
    let path = convert_from_raw(&dir, "a.qcow2", &data, &[]);
    let before = std::fs::read(&path).unwrap();
    let mut disk = Qcow2Disk::open(&path, read_only()).expect("open read-only");
    check_read_only(&mut disk);
    assert!(read_back(&mut disk, 0, data.len()) == data);
    disk.close().expect("close");
    assert!(std::fs::read(&path).unwrap() == before, "image changed");
}

#[test]
fn geometry_follows_the_image() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", 3 * MIB, "cluster_size=16384");
    let disk = open(&path);
    let g = disk.geometry();
    assert_eq!(g.sectors, 3 * MIB / 512);
    assert_eq!((g.sector_size, g.physical_sector_size), (512, 4096));
    assert!(g.volatile_cache && !g.read_only);
    let discard = DiscardInfo {
        granularity: 16384,
        alignment: 0,
        secure: false,
    };
    assert_eq!(g.discard, Some(discard));
    assert!(disk.wake_fd().is_some());

    // Version 2 images have no zero clusters: no discard.
    let v2 = create(&dir, "v2.qcow2", MIB, "compat=0.10");
    assert_eq!(open(&v2).geometry().discard, None);
}

#[test]
fn reads_what_qemu_img_converted() {
    let Some(dir) = workdir() else { return };
    // Data, a hole, and data again, over cluster boundaries.
    let mut data = vec![0u8; 2 * MIB as usize];
    data[..300_000].copy_from_slice(&pattern(300_000, 7));
    data[MIB as usize + 4096..][..70_000].copy_from_slice(&pattern(70_000, 8));
    let path = convert_from_raw(&dir, "a.qcow2", &data, &[]);
    let mut disk = Qcow2Disk::open(&path, read_only()).unwrap();
    assert!(read_back(&mut disk, 0, data.len()) == data);
    // Odd segment layout, crossing a cluster boundary.
    let done = run(&mut disk, read(1, 65536 - 1024, &[(512, 1024), (0, 4096)]));
    done.result.unwrap();
    assert!(gather(&done.segments) == data[65536 - 1024..][..5120]);
}

#[test]
fn reads_what_qemu_io_wrote() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", 2 * MIB, "");
    let commands = "write -P 0x5a 65536 12288";
    let ran = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", commands, text(&path)])
        .output();
    if !ran.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: qemu-io is missing or failed: {ran:?}");
        return;
    }
    let mut disk = Qcow2Disk::open(&path, read_only()).unwrap();
    let back = read_back(&mut disk, 61440, 20480);
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert!(back[4096..16384].iter().all(|&b| b == 0x5a));
    assert!(back[16384..].iter().all(|&b| b == 0));
}

#[test]
fn writes_survive_close_check_and_convert() {
    let Some(dir) = workdir() else { return };
    let size = 4 * MIB;
    let path = create(&dir, "a.qcow2", size, "");
    let mut model = vec![0u8; size as usize];
    let mut disk = open(&path);
    // Inside one cluster, across clusters, a sector at the end, overwrite.
    put(&mut disk, &mut model, 512, &pattern(1024, 1));
    put(&mut disk, &mut model, 65536 - 4096, &pattern(3 * 4096, 2));
    put(&mut disk, &mut model, size - 512, &pattern(512, 3));
    put(&mut disk, &mut model, MIB, &pattern(200 * 1024, 4));
    put(&mut disk, &mut model, MIB + 8192, &pattern(4096, 5));
    flush(&mut disk);
    assert!(read_back(&mut disk, 0, size as usize) == model);
    assert!(disk.close().expect("close").is_empty());
    assert_clean(&path);
    assert!(contents(&path) == model);

    // Opened again, the data is still there.
    let mut disk = Qcow2Disk::open(&path, read_only()).unwrap();
    assert!(read_back(&mut disk, 0, size as usize) == model);
}

#[test]
fn many_requests_in_flight_all_complete() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", 2 * MIB, "");
    let mut disk = open(&path);
    let data = pattern(64 * 4096, 9);
    for (i, chunk) in data.chunks(4096).enumerate() {
        disk.submit(write(i as u64, i as u64 * 4096, &[(0, 4096)], chunk));
    }
    disk.submit(bare(1000, IoOp::Flush, 0));
    let done = reap(&mut disk, 65);
    assert!(done.iter().all(|c| c.result.is_ok()));
    assert!(read_back(&mut disk, 0, data.len()) == data);
    disk.close().unwrap();
    assert_clean(&path);
}

#[test]
fn discard_reads_zeros_and_keeps_the_image_consistent() {
    let Some(dir) = workdir() else { return };
    let size = 2 * MIB;
    let path = create(&dir, "a.qcow2", size, "");
    let mut model = vec![0u8; size as usize];
    let mut disk = open(&path);
    put(&mut disk, &mut model, 0, &pattern(512 * 1024, 6));
    flush(&mut disk);
    // Whole clusters, then a range with partial clusters at both ends.
    discard(&mut disk, 65536, 2 * 65536, false).result.unwrap();
    discard(&mut disk, 300_000 - 300_000 % 512, 100 * 1024, false)
        .result
        .unwrap();
    model[65536..3 * 65536].fill(0);
    model[299_520..299_520 + 100 * 1024].fill(0);
    assert!(read_back(&mut disk, 0, size as usize) == model);
    let secure = discard(&mut disk, 0, 65536, true);
    assert!(matches!(secure.result, Err(StorageError::Unsupported)));
    disk.close().unwrap();
    assert_clean(&path);
    assert!(contents(&path) == model);
}

#[test]
fn backing_image_shows_through_until_written() {
    let Some(dir) = workdir() else { return };
    let base_data = pattern(MIB as usize, 11);
    let base = convert_from_raw(&dir, "base.qcow2", &base_data, &[]);
    let overlay = dir.path().join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        text(&overlay),
    ]);
    let base_before = std::fs::read(&base).unwrap();

    let mut model = base_data.clone();
    let mut disk = open(&overlay);
    assert_eq!(disk.geometry().sectors, MIB / 512);
    assert!(read_back(&mut disk, 0, MIB as usize) == model);
    // A partial cluster: the rest of it comes from the backing image.
    put(
        &mut disk,
        &mut model,
        70_000 - 70_000 % 512,
        &pattern(1536, 12),
    );
    discard(&mut disk, 4 * 65536, 65536, false).result.unwrap();
    model[4 * 65536..5 * 65536].fill(0);
    assert!(read_back(&mut disk, 0, MIB as usize) == model);
    disk.close().unwrap();

    assert_clean(&overlay);
    assert!(contents(&overlay) == model);
    assert!(std::fs::read(&base).unwrap() == base_before, "base changed");

    // Not following references, the image fails to open, saying why.
    let denied = Qcow2Options {
        follow_references: false,
        ..Qcow2Options::default()
    };
    let e = Qcow2Disk::open(&overlay, denied).err().expect("refused");
    assert!(e.to_string().contains("base.qcow2"), "{e}");
}

#[test]
fn compressed_clusters_read_and_overwrite() {
    let Some(dir) = workdir() else { return };
    // Compressible: runs of one byte per 4 KiB.
    let mut data: Vec<u8> = (0..MIB as usize).map(|i| (i / 4096) as u8 | 1).collect();
    let path = convert_from_raw(&dir, "a.qcow2", &data, &["-c"]);
    let map = qemu_img(&["map", "--output=json", text(&path)]);
    assert!(
        map.contains("\"compressed\": true"),
        "not compressed: {map}"
    );

    let mut disk = open(&path);
    assert!(read_back(&mut disk, 0, data.len()) == data);
    put(&mut disk, &mut data, 65536 + 512, &pattern(2048, 13));
    assert!(read_back(&mut disk, 0, data.len()) == data);
    disk.close().unwrap();
    assert_clean(&path);
    assert!(contents(&path) == data);
}

#[test]
fn internal_snapshots_keep_their_data() {
    let Some(dir) = workdir() else { return };
    let old = pattern(256 * 1024, 14);
    let path = convert_from_raw(&dir, "a.qcow2", &old, &[]);
    qemu_img(&["snapshot", "-c", "before", text(&path)]);
    let mut model = old.clone();
    let mut disk = open(&path);
    put(&mut disk, &mut model, 4096, &pattern(8192, 15));
    disk.close().unwrap();
    assert_clean(&path);
    assert!(contents(&path) == model);
    // The snapshot's clusters were copied on write, not overwritten.
    let snap = dir.path().join("snap.raw");
    let snapshot = "snapshot.name=before";
    qemu_img(&[
        "convert",
        "-q",
        "-l",
        snapshot,
        "-O",
        "raw",
        text(&path),
        text(&snap),
    ]);
    assert!(std::fs::read(snap).unwrap() == old);
}

#[test]
fn damaged_and_foreign_files_fail_to_open() {
    let Some(dir) = workdir() else { return };
    let good = std::fs::read(create(&dir, "good.qcow2", MIB, "")).unwrap();
    let patched = |at: usize, bytes: &[u8]| {
        let mut image = good.clone();
        image[at..at + bytes.len()].copy_from_slice(bytes);
        image
    };
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let be64 = |v: u64| v.to_be_bytes().to_vec();
    let (no_magic, past_end) = ("no QFI\\xfb magic", "past the end of the file");
    // (what, the file, what the error says)
    let cases = [
        ("empty", Vec::new(), no_magic),
        ("raw", pattern(65536, 1), no_magic),
        ("magic only", QCOW2_MAGIC.to_vec(), "truncated qcow2 header"),
        ("truncated header", good[..60].to_vec(), "truncated"),
        // An empty image: header, refcount table, refcount block, L1 table,
        // one cluster each; imago would read the missing ones as zeros.
        (
            "cut in the refcount table",
            good[..65636].to_vec(),
            past_end,
        ),
        (
            "cut in the refcount block",
            good[..131172].to_vec(),
            past_end,
        ),
        ("cut before the L1 table", good[..196608].to_vec(), past_end),
        (
            "no refcount block",
            patched(65536, &[0; 8]),
            "no refcount block",
        ),
        (
            "no refcount table",
            patched(56, &be32(0)),
            "no refcount table",
        ),
        (
            "refcount block on its table",
            patched(65536, &be64(1 << 16)),
            "overlaps",
        ),
        ("version 9", patched(4, &be32(9)), "v9"),
        ("cluster bits 63", patched(20, &be32(63)), "cluster size"),
        ("encrypted", patched(32, &be32(1)), "encrypted"),
        ("huge L1", patched(36, &be32(u32::MAX)), past_end),
        (
            "L1 on the refcount table",
            patched(40, &be64(0x10000)),
            "overlaps",
        ),
        ("L1 past the end", patched(40, &be64(1 << 50)), past_end),
        (
            "refcounts past the end",
            patched(48, &be64(1 << 50)),
            past_end,
        ),
        ("unknown feature", patched(72, &be64(1 << 40)), "feature"),
        ("dirty", patched(72, &be64(1)), "dirty"),
        // Backing file name at byte 0x200, 5000 bytes long.
        (
            "long backing name",
            patched(8, &[be64(0x200), be32(5000)].concat()),
            "too long",
        ),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(format!("{name}.img"));
        std::fs::write(&path, &bytes).unwrap();
        let e = open_error(&path);
        assert!(e.contains(why), "{name}: {e}");
    }
}

#[test]
fn a_writable_image_is_locked_against_another_open() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", MIB, "");
    let disk = open(&path);
    for options in [Qcow2Options::default(), read_only()] {
        let e = Qcow2Disk::open(&path, options).err().expect("locked");
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
    }
    disk.close().unwrap();
    // Readers share it; a writer waits for them all to close.
    let r1 = Qcow2Disk::open(&path, read_only()).unwrap();
    let r2 = Qcow2Disk::open(&path, read_only()).unwrap();
    assert!(Qcow2Disk::open(&path, Qcow2Options::default()).is_err());
    drop((r1, r2));
    open(&path).close().unwrap();
}

#[test]
fn handles_share_one_open_image() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", 2 * MIB, "");
    let mut first = open(&path);
    let weak = first.downgrade();
    let mut second = first.try_clone().unwrap();
    let mut third = weak.upgrade().expect("open").unwrap();
    // Requests in flight on all three at once.
    let data = pattern(96 * 4096, 16);
    let mut handles = [&mut first, &mut second, &mut third];
    for (i, chunk) in data.chunks(4096).enumerate() {
        let request = write(i as u64, i as u64 * 4096, &[(0, 4096)], chunk);
        handles[i % 3].submit(request);
    }
    for disk in handles.iter_mut() {
        let done = reap(*disk, 32);
        assert!(done.iter().all(|c| c.result.is_ok()));
    }
    assert!(read_back(&mut second, 0, data.len()) == data);
    // The image stays open until its last handle closes.
    first.close().unwrap();
    second.close().unwrap();
    assert!(weak.upgrade().is_some());
    third.close().unwrap();
    assert!(weak.upgrade().is_none());
    assert_clean(&path);
    assert!(contents(&path)[..data.len()] == data);
}

#[test]
fn is_qcow2_sniffs_the_magic() {
    let Some(dir) = workdir() else { return };
    let qcow2 = create(&dir, "a.qcow2", MIB, "");
    assert!(is_qcow2(&qcow2).unwrap());
    let raw = dir.path().join("a.raw");
    std::fs::write(&raw, pattern(4096, 1)).unwrap();
    assert!(!is_qcow2(&raw).unwrap());
    std::fs::write(&raw, b"QF").unwrap();
    assert!(!is_qcow2(&raw).unwrap());
    let missing = is_qcow2(dir.path().join("missing")).unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
}

#[test]
fn l1_entries_pointing_at_metadata_or_nowhere_fail_to_open() {
    let Some(dir) = workdir() else { return };
    let path = convert_from_raw(&dir, "a.qcow2", &pattern(256 * 1024, 17), &[]);
    let good = std::fs::read(&path).unwrap();
    let l1 = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    let refcounts = u64::from_be_bytes(good[48..56].try_into().unwrap());
    // The copied flag, and where the entry says the L2 table is.
    let copied = 1u64 << 63;
    let cases = [
        ("on the header", copied | 0x200, "overlaps the header"),
        (
            "on the refcount table",
            copied | refcounts,
            "overlaps the refcount table",
        ),
        (
            "on the L1 table",
            copied | l1 as u64,
            "overlaps the L1 table",
        ),
        ("past the end", copied | 1 << 30, "past the end of the file"),
        ("unaligned", copied | 0x5_0200, "not aligned"),
    ];
    for (name, entry, why) in cases {
        let mut image = good.clone();
        image[l1..l1 + 8].copy_from_slice(&entry.to_be_bytes());
        std::fs::write(&path, &image).unwrap();
        let e = open_error(&path);
        assert!(e.contains(why), "{name}: {e}");
    }
}

#[test]
fn zstd_compressed_images_are_refused() {
    let Some(dir) = workdir() else { return };
    let path = create(&dir, "a.qcow2", MIB, "compression_type=zstd");
    let e = open_error(&path);
    assert!(e.contains("compression"), "{e}");
}
