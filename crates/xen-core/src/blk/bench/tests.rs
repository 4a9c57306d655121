//! The benchmark's workloads, run briefly: they measure and verify.

use super::*;

const SHORT: Duration = Duration::from_millis(30);

fn small(queues: usize, depth: u32, segments: u32, write: bool, random: bool) -> Workload {
    Workload {
        queues,
        depth,
        segments,
        write,
        random,
        region_bytes: 4 << 20,
        persistent: false,
        timing: true,
        poll: Duration::ZERO,
    }
}

/// Runs `w` for a few ms, longer if no request completed in the window
/// (unoptimised, a round of 1 MiB requests takes a while).
fn measure(w: &Workload) -> BlkFigures {
    let mut duration = SHORT;
    loop {
        let f = run(w, duration).unwrap();
        if f.requests > 0 || duration > Duration::from_secs(5) {
            return f;
        }
        duration *= 4;
    }
}

#[test]
fn random_4k_reads_and_writes_on_one_and_two_queues_verify_their_data() {
    // (queues, depth, persistent grants, polling window in µs)
    for (queues, depth, persistent, poll) in [
        (1, 1, false, 0),
        (1, 32, false, 0),
        (2, 32, true, 0),
        (1, 1, true, 50),
        (2, 32, true, 50),
    ] {
        for write in [false, true] {
            let w = Workload {
                persistent,
                timing: true,
                poll: Duration::from_micros(poll),
                ..small(queues, depth, 1, write, true)
            };
            let f = measure(&w);
            let what = format!("{w:?}: {f:?}");
            assert!(f.requests > 0 && f.requests_per_sec > 0.0, "{what}");
            assert_eq!(f.bytes_per_sec, f.requests_per_sec * 4096.0, "{what}");
            // Reads check every answer; writes read back each queue's last.
            assert!(f.verified >= queues as u64, "{what}");
            if !write {
                assert!(f.verified >= f.requests, "{what}");
            }
        }
    }
}

#[test]
fn sequential_indirect_reads_and_writes_verify_their_data() {
    for (queues, segments, persistent) in [
        (1, 32, false),
        (1, 256, false),
        (1, 256, true),
        (2, 32, true),
    ] {
        for write in [false, true] {
            let w = Workload {
                persistent,
                timing: true,
                ..small(queues, 8, segments, write, false)
            };
            let f = measure(&w);
            let what = format!("{w:?}: {f:?}");
            assert!(f.requests > 0 && f.bytes_per_sec > 0.0, "{what}");
            assert!(f.verified >= queues as u64, "{what}");
        }
    }
}

#[test]
fn the_public_entry_points_measure_something() {
    let w = Workload {
        region_bytes: REGION_BYTES,
        persistent: true,
        ..small(1, 4, 1, false, true)
    };
    let f = run(&w, Duration::from_millis(20)).unwrap();
    assert!(f.requests_per_sec > 0.0 && f.verified > 0);
    for block in [4096, 128 << 10, 1 << 20] {
        assert!(memcpy_blocks(block, Duration::from_millis(5)).unwrap() > 0.0);
    }
    for block in [128 << 10, 1 << 20] {
        assert!(memcpy_from_region(block, Duration::from_millis(5)).unwrap() > 0.0);
    }
}

#[test]
fn unworkable_workloads_are_refused() {
    assert!(run(&small(0, 1, 1, false, true), SHORT).is_err());
    assert!(run(&small(1, 1000, 1, false, true), SHORT).is_err());
    assert!(run(&small(1, 1, 300, false, true), SHORT).is_err());
    assert!(memcpy_blocks(0, SHORT).is_err());
    assert!(memcpy_from_region(0, SHORT).is_err());
}
