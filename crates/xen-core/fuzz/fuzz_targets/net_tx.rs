//! netif transmit slots on arbitrary bytes: judging a packet never panics
//! and never reads past what was pushed; a packet it accepts takes no
//! more slots than it was given, its fragments stay in their pages and add
//! up to the packet's length, and a chain longer than any packet is
//! always refused one way or the other.

#![no_main]

use libfuzzer_sys::fuzz_target;

use xen_core::net::tx::{judge, Judged, FATAL_SLOTS, MAX_SLOTS};
use xen_core::ring::netif::TX_REQUEST_SIZE;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let slots: Vec<[u8; TX_REQUEST_SIZE]> = rest
        .chunks_exact(TX_REQUEST_SIZE)
        .map(|c| c.try_into().expect("chunk size"))
        .collect();
    if slots.is_empty() {
        return;
    }
    let mut asked = 0u32;
    let verdict = judge(
        |i| {
            asked = asked.max(i + 1);
            slots.get(i as usize).copied()
        },
        flags & 1 != 0,
    );
    // Never asked beyond one past the end (to learn the chain ran out).
    assert!(asked as usize <= slots.len() + 1);
    match verdict {
        Judged::Fatal(why) => assert!(!why.is_empty()),
        Judged::Packet(p) => {
            assert!(p.slots as usize <= slots.len());
            assert!(p.slots as usize == p.fragments.len() + p.extra_ids.len());
            assert!(p.fragments.len() < FATAL_SLOTS + 1);
            for f in &p.fragments {
                assert!(usize::from(f.offset) + usize::from(f.len) <= 4096);
            }
            let sum: usize = p.fragments.iter().map(|f| usize::from(f.len)).sum();
            assert_eq!(sum, p.len);
            if p.refused.is_none() {
                assert!(p.fragments.len() <= MAX_SLOTS);
                assert!(p.fragments[0].len >= 14);
                assert!(p.offload.gso.is_none() || flags & 1 != 0);
            }
        }
    }
});
