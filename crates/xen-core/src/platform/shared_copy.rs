//! Copies to and from memory another party may write at the same moment
//! (a guest's granted pages, a shared ring). A plain `memcpy` of memory
//! that changes under it is undefined behaviour in Rust's model: the
//! compiler may assume the bytes stay put. So every copy here is either
//! inline assembly, opaque to the compiler, reading or writing each byte
//! once, or volatile word-sized accesses.
//!
//! Which assembly depends on the CPU, decided once per process. With ERMS
//! (the "enhanced REP MOVSB" of every x86-64 since 2012) `rep movsb` and
//! `rep stosb` are the fastest copy there is. Without it, and under an
//! emulator such as QEMU's TCG, which runs a `rep` string instruction one
//! element at a time, they are many times slower than a loop of 16-byte
//! SSE2 moves (part of every x86-64), which is what those CPUs get: the
//! block backend's data path copies every byte of a request through here.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

const WORD: usize = std::mem::size_of::<usize>();

/// From this many bytes on, a copy uses the assembly; below it, the
/// start-up cost is more than the volatile loop's.
#[cfg(target_arch = "x86_64")]
const BULK_MIN: usize = 256;

/// How a large copy is done on this CPU.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bulk {
    /// `rep movsb` / `rep stosb` (ERMS).
    StringOps,
    /// 16-byte SSE2 loads and stores, 64 bytes per turn.
    Vector,
}

/// The large-copy method of this CPU, found with `cpuid` on first use.
#[cfg(target_arch = "x86_64")]
pub(super) fn bulk() -> Bulk {
    static CHOICE: AtomicU8 = AtomicU8::new(0);
    match CHOICE.load(Ordering::Relaxed) {
        1 => Bulk::StringOps,
        2 => Bulk::Vector,
        _ => {
            let b = if has_erms() {
                Bulk::StringOps
            } else {
                Bulk::Vector
            };
            CHOICE.store(if b == Bulk::StringOps { 1 } else { 2 }, Ordering::Relaxed);
            b
        }
    }
}

/// Whether the CPU has ERMS (CPUID leaf 7, EBX bit 9).
#[cfg(target_arch = "x86_64")]
fn has_erms() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // `cpuid` exists on every x86-64 CPU and only reads identification
    // registers (the unsafe block is for older toolchains, where the
    // intrinsics are unsafe functions).
    #[allow(unused_unsafe)]
    // SAFETY: as above: no memory is touched, every x86-64 has the
    // instruction, and leaf 7 is asked only when leaf 0 says it exists.
    unsafe {
        __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ebx & (1 << 9) != 0
    }
}

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
/// `src..src+dst.len()` must be mapped readable and not overlap `dst`.
pub(super) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= BULK_MIN {
        // SAFETY: the caller's contract, passed on.
        return unsafe { bulk_copy(bulk(), src, dst.as_mut_ptr(), dst.len()) };
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { volatile_copy_out(src, dst) }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst..dst+src.len()` must be mapped writable and not overlap `src`.
pub(super) unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    if src.len() >= BULK_MIN {
        // SAFETY: the caller's contract, passed on.
        return unsafe { bulk_copy(bulk(), src.as_ptr(), dst, src.len()) };
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { volatile_copy_in(src, dst) }
}

/// Sets `len` bytes of shared memory at `dst` to `byte`.
///
/// # Safety
/// `dst..dst+len` must be mapped writable.
pub(super) unsafe fn fill_bytes(dst: *mut u8, len: usize, byte: u8) {
    #[cfg(target_arch = "x86_64")]
    if len >= BULK_MIN {
        // SAFETY: the caller's contract, passed on.
        return unsafe { bulk_fill(bulk(), dst, len, byte) };
    }
    let pattern = [byte; FILL_CHUNK];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(pattern.len());
        // SAFETY: inside the caller's range.
        unsafe { volatile_copy_in(&pattern[..n], dst.add(at)) };
        at += n;
    }
}

/// The pattern buffer of a fill done with volatile stores.
const FILL_CHUNK: usize = 256;

/// Copies `len` bytes from `src` to `dst` with `how`.
///
/// # Safety
/// Both ranges mapped (`src` readable, `dst` writable) and disjoint; at
/// least one of them is private memory.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn bulk_copy(how: Bulk, src: *const u8, dst: *mut u8, len: usize) {
    match how {
        Bulk::StringOps => {
            // SAFETY: `rep movsb` copies rcx bytes from rsi to rdi, both
            // ranges mapped and disjoint (the caller's contract). The block
            // is opaque to the compiler, which therefore assumes nothing
            // about the shared bytes (they may change under the copy, as
            // they may under a volatile access; each byte is accessed once).
            // The direction flag is clear at any Rust code boundary (the
            // ABI), so the copy goes forward; rsi, rdi and rcx are declared
            // clobbered.
            unsafe {
                std::arch::asm!(
                    "rep movsb",
                    inout("rcx") len => _,
                    inout("rsi") src => _,
                    inout("rdi") dst => _,
                    options(nostack, preserves_flags)
                );
            }
        }
        Bulk::Vector => {
            let blocks = len & !63;
            if blocks > 0 {
                // SAFETY: each turn loads 64 bytes at `s` and stores them at
                // `d`, then moves both on and counts `n` down by 64 until it
                // is 0: `blocks` is a positive multiple of 64 no larger than
                // `len`, so every access is inside the caller's ranges. The
                // block is opaque to the compiler, as above, and accesses
                // each byte once; the xmm registers and flags it changes are
                // declared (no `preserves_flags`).
                unsafe {
                    std::arch::asm!(
                        "2:",
                        "movdqu xmm0, [{s}]",
                        "movdqu xmm1, [{s} + 16]",
                        "movdqu xmm2, [{s} + 32]",
                        "movdqu xmm3, [{s} + 48]",
                        "movdqu [{d}], xmm0",
                        "movdqu [{d} + 16], xmm1",
                        "movdqu [{d} + 32], xmm2",
                        "movdqu [{d} + 48], xmm3",
                        "add {s}, 64",
                        "add {d}, 64",
                        "sub {n}, 64",
                        "jnz 2b",
                        s = inout(reg) src => _,
                        d = inout(reg) dst => _,
                        n = inout(reg) blocks => _,
                        out("xmm0") _,
                        out("xmm1") _,
                        out("xmm2") _,
                        out("xmm3") _,
                        options(nostack)
                    );
                }
            }
            if blocks < len {
                // SAFETY: the rest of the caller's ranges, under 64 bytes,
                // byte by byte; an `asm` block, like the rest, so that
                // neither side's bytes are assumed stable.
                unsafe {
                    std::arch::asm!(
                        "rep movsb",
                        inout("rcx") len - blocks => _,
                        inout("rsi") src.add(blocks) => _,
                        inout("rdi") dst.add(blocks) => _,
                        options(nostack, preserves_flags)
                    );
                }
            }
        }
    }
}

/// Sets `len` bytes at `dst` to `byte` with `how`.
///
/// # Safety
/// `dst..dst+len` must be mapped writable.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn bulk_fill(how: Bulk, dst: *mut u8, len: usize, byte: u8) {
    let blocks = match how {
        Bulk::StringOps => 0,
        Bulk::Vector => len & !63,
    };
    if blocks > 0 {
        let pattern = u64::from_ne_bytes([byte; 8]);
        // SAFETY: the pattern is spread over xmm0, which is then stored 64
        // bytes per turn at `d` until `n` (a positive multiple of 64, at
        // most `len`) is 0: every store is inside the caller's range. The
        // registers and flags changed are declared.
        unsafe {
            std::arch::asm!(
                "movq xmm0, {p}",
                "punpcklqdq xmm0, xmm0",
                "2:",
                "movdqu [{d}], xmm0",
                "movdqu [{d} + 16], xmm0",
                "movdqu [{d} + 32], xmm0",
                "movdqu [{d} + 48], xmm0",
                "add {d}, 64",
                "sub {n}, 64",
                "jnz 2b",
                p = in(reg) pattern,
                d = inout(reg) dst => _,
                n = inout(reg) blocks => _,
                out("xmm0") _,
                options(nostack)
            );
        }
    }
    if blocks < len {
        // SAFETY: `rep stosb` stores al into rcx bytes from rdi: the rest
        // of the caller's range; opaque to the compiler, as above.
        unsafe {
            std::arch::asm!(
                "rep stosb",
                inout("rcx") len - blocks => _,
                inout("rdi") dst.add(blocks) => _,
                in("al") byte,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// Copies `dst.len()` bytes from shared memory at `src` with volatile loads:
/// bytes up to a word boundary, then whole words, then the tail.
///
/// # Safety
/// `src..src+dst.len()` must be mapped readable and not overlap `dst`.
unsafe fn volatile_copy_out(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = src.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    for (i, d) in dst.iter_mut().enumerate().take(head) {
        // SAFETY: byte `i` of the source range (the caller's contract).
        *d = unsafe { std::ptr::read_volatile(src.add(i)) };
    }
    for w in 0..words {
        let at = head + w * WORD;
        // SAFETY: a word inside the source range, aligned (`head` brought
        // `src + at` to a word boundary).
        let v = unsafe { std::ptr::read_volatile(src.add(at) as *const usize) };
        dst[at..at + WORD].copy_from_slice(&v.to_ne_bytes());
    }
    for (i, d) in dst.iter_mut().enumerate().skip(head + words * WORD) {
        // SAFETY: byte `i` of the source range.
        *d = unsafe { std::ptr::read_volatile(src.add(i)) };
    }
}

/// Copies `src` into shared memory at `dst` with volatile stores, as
/// [`volatile_copy_out`] loads.
///
/// # Safety
/// `dst..dst+src.len()` must be mapped writable and not overlap `src`.
unsafe fn volatile_copy_in(src: &[u8], dst: *mut u8) {
    let len = src.len();
    let head = dst.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    for (i, b) in src.iter().enumerate().take(head) {
        // SAFETY: byte `i` of the destination range (the caller's contract).
        unsafe { std::ptr::write_volatile(dst.add(i), *b) };
    }
    for w in 0..words {
        let at = head + w * WORD;
        let mut word = [0u8; WORD];
        word.copy_from_slice(&src[at..at + WORD]);
        // SAFETY: a word inside the destination range, aligned.
        unsafe { std::ptr::write_volatile(dst.add(at) as *mut usize, usize::from_ne_bytes(word)) };
    }
    for (i, b) in src.iter().enumerate().skip(head + words * WORD) {
        // SAFETY: byte `i` of the destination range.
        unsafe { std::ptr::write_volatile(dst.add(i), *b) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Both methods, whatever this CPU would choose: every byte of the range
    /// and none around it, at any alignment of either side and any length
    /// around the block size.
    #[test]
    fn both_bulk_methods_copy_and_fill_exactly_their_range() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 + 5 + i / 253) as u8).collect();
        let lens = [
            1,
            63,
            64,
            65,
            127,
            128,
            255,
            256,
            257,
            1000,
            4096,
            4096 + 17,
        ];
        for how in [Bulk::StringOps, Bulk::Vector] {
            for src_at in 0..9 {
                for dst_at in 0..9 {
                    for len in lens {
                        let mut out = vec![0xeeu8; len + 32];
                        // SAFETY: both ranges lie inside their own vectors.
                        unsafe {
                            bulk_copy(
                                how,
                                data.as_ptr().add(src_at),
                                out.as_mut_ptr().add(dst_at + 8),
                                len,
                            )
                        };
                        let at = dst_at + 8;
                        assert_eq!(
                            &out[at..at + len],
                            &data[src_at..src_at + len],
                            "{how:?} {src_at}/{dst_at}/{len}"
                        );
                        assert!(
                            out[..at].iter().all(|b| *b == 0xee),
                            "{how:?} before, {len}"
                        );
                        assert!(
                            out[at + len..].iter().all(|b| *b == 0xee),
                            "{how:?} after, {len}"
                        );
                    }
                }
                for len in lens {
                    let mut out = vec![0xeeu8; len + 32];
                    // SAFETY: inside the vector.
                    unsafe { bulk_fill(how, out.as_mut_ptr().add(src_at + 8), len, 0x5a) };
                    let at = src_at + 8;
                    assert!(
                        out[at..at + len].iter().all(|b| *b == 0x5a),
                        "{how:?} fill {len}"
                    );
                    assert!(
                        out[..at].iter().all(|b| *b == 0xee),
                        "{how:?} fill before, {len}"
                    );
                    assert!(
                        out[at + len..].iter().all(|b| *b == 0xee),
                        "{how:?} fill after, {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_choice_follows_the_cpu_and_stays() {
        let first = bulk();
        assert_eq!(first == Bulk::StringOps, has_erms());
        assert_eq!(bulk(), first);
    }
}
