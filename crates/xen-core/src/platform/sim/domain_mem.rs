//! A domain's memory as another party sees it: its grant table (v1 entries in
//! its first frames), the hypervisor's active grant entries, and the frames
//! themselves. Pinning checks an entry exactly as Xen does and sets the
//! in-use flags the granting guest sees.
//!
//! Every process of the simulated host shares the active entries, so their
//! bookkeeping must survive a process that dies at any instruction. Each
//! active entry ([`ACTIVE_ENTRY_SIZE`] bytes) has:
//!
//! - a lock word holding the pid of the process in its critical section (0
//!   when free). A waiter spins briefly, then asks the kernel whether the
//!   holder still runs (`kill(pid, 0)`, and `/proc/<pid>/stat` for a zombie
//!   not yet reaped); a holder that ended can never release the lock, so the
//!   waiter takes it over with a compare-and-swap from that pid to its own
//!   (of two waiters, one wins). Taking over repairs the guest-visible flags
//!   from the pin counts, the state the dead holder may have left half
//!   changed (flags set before the count, or the count dropped before the
//!   flags). A lock-free design would not do: the last unpin must clear
//!   GTF_reading in the guest's entry with no new pin in between, and the
//!   counts and the flags are two words in two memories.
//! - the pin counts, and the frame and grantee recorded at the first pin, as
//!   Xen's `struct active_grant_entry` keeps them: later pins of a pinned
//!   entry use those and do not trust the guest's entry again.
//!
//! The guest's own entry is changed only by [`set_status_v1`], Xen's
//! `_set_status_v1`: one compare-and-swap over the 32-bit word {flags,
//! domid}, so the domid it checked is the one it committed, given up with
//! GNTST_general_error after [`SET_STATUS_RETRIES`] retries so that a guest
//! flipping its entry cannot livelock a backend.
//!
//! Not handled: pins a process took and never dropped because it died (Linux
//! unmaps a dead process's grants; here its counts stay), and pid reuse in
//! the instant between a holder's death and a waiter's check.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Pid;

use super::core::{
    active_len, DomainConfig, DomainFds, ACTIVE_DOMID, ACTIVE_ENTRY_SIZE, ACTIVE_FRAME,
    ACTIVE_HEADER, ACTIVE_LOCK, ACTIVE_PIN,
};
use crate::platform::abi::*;
use crate::platform::memory::{Mmap, SharedMem};
use crate::platform::{DomId, GntSt, GrantRef};

/// A read-only pin.
const PIN_READ: u32 = 1;
/// A writable pin.
const PIN_WRITE: u32 = 1 << 16;
const PIN_READ_MASK: u32 = 0xffff;
const PIN_WRITE_MASK: u32 = 0xffff << 16;

/// Retries of the compare-and-swap on a guest's entry before giving up, as
/// Xen: the guest can change its entry faster than we can retry.
pub const SET_STATUS_RETRIES: u32 = 4;

/// Busy-wait rounds on a held entry lock before asking whether its holder
/// still runs (the lock is held for a few hundred instructions).
const LOCK_SPINS: u32 = 128;
/// How often a waiter asks again whether a holder still runs.
const HOLDER_CHECK_INTERVAL: Duration = Duration::from_millis(1);

// The combined word {flags, domid} is the first 32 bits of a v1 entry.
const _: () = assert!(GRANT_ENTRY_FLAGS == 0 && GRANT_ENTRY_DOMID == 2);

/// The first 32 bits of a v1 entry as one value (Xen's `union
/// grant_combo`): converted through bytes, so it is right on either
/// endianness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Combo {
    flags: u16,
    domid: DomId,
}

impl Combo {
    fn from_raw(raw: u32) -> Combo {
        let [f0, f1, d0, d1] = raw.to_ne_bytes();
        Combo {
            flags: u16::from_ne_bytes([f0, f1]),
            domid: u16::from_ne_bytes([d0, d1]),
        }
    }

    fn raw(self) -> u32 {
        let [f0, f1] = self.flags.to_ne_bytes();
        let [d0, d1] = self.domid.to_ne_bytes();
        u32::from_ne_bytes([f0, f1, d0, d1])
    }
}

/// The guest's {flags, domid} word, as [`set_status_v1`] uses it (the
/// guest's memory; a scripted guest in tests).
trait ComboWord {
    /// The current value.
    fn load(&self) -> u32;
    /// Replaces `current` with `new`; the value found if it was not `current`.
    fn compare_exchange(&self, current: u32, new: u32) -> Result<u32, u32>;
}

impl ComboWord for AtomicU32 {
    fn load(&self) -> u32 {
        // Acquire: the guest writes domid and frame before the flags that
        // grant them (with a barrier); what we then read of the entry is
        // what it granted.
        AtomicU32::load(self, Ordering::Acquire)
    }

    fn compare_exchange(&self, current: u32, new: u32) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// Xen's `_set_status_v1`: sets GTF_reading (and GTF_writing if `writable`)
/// in the guest's entry with one compare-and-swap over {flags, domid}, after
/// checking on the same snapshot that the entry permits access to `grantee`
/// (`check_entry`: only for an entry not pinned yet, as Xen) and, for a
/// writable pin, is not read-only. A guest that keeps changing the word
/// gets GNTST_general_error after [`SET_STATUS_RETRIES`] retries.
fn set_status_v1(
    word: &impl ComboWord,
    grantee: DomId,
    writable: bool,
    check_entry: bool,
) -> Result<(), GntSt> {
    let mut seen = word.load();
    let mut retries = 0;
    loop {
        let entry = Combo::from_raw(seen);
        if check_entry
            && (entry.flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || entry.domid != grantee)
        {
            return Err(GntSt::GeneralError);
        }
        if writable && entry.flags & GTF_READONLY != 0 {
            return Err(GntSt::GeneralError);
        }
        let set = GTF_READING | if writable { GTF_WRITING } else { 0 };
        let new = Combo {
            flags: entry.flags | set,
            ..entry
        };
        match word.compare_exchange(seen, new.raw()) {
            Ok(_) => return Ok(()),
            // "Shared grant entry is unstable".
            Err(_) if retries == SET_STATUS_RETRIES => return Err(GntSt::GeneralError),
            Err(now) => {
                retries += 1;
                seen = now;
            }
        }
    }
}

/// This process's id, as a lock holder.
fn own_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Whether the process `pid` has ended: gone, or a zombie (it will never
/// run again, whether or not its parent reaped it yet). Processes are
/// assumed to share one pid namespace.
fn process_ended(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        // Not a pid at all: nobody can release it.
        return true;
    };
    // Otherwise alive, or alive under another user (EPERM): a zombie yet?
    if rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH) {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X' | 'x')),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// A held active-entry lock; released when dropped.
struct EntryLock<'a> {
    word: &'a AtomicU32,
    holder: u32,
}

impl EntryLock<'_> {
    /// Takes the lock, waiting while a live process holds it and taking it
    /// over from one that ended. Returns whether it was taken over (the
    /// state it guards may be half updated).
    fn acquire(word: &AtomicU32) -> (EntryLock<'_>, bool) {
        let me = own_pid();
        let mut spins = 0;
        let mut checked: Option<Instant> = None;
        loop {
            // Acquire: what the previous holder wrote under the lock (its
            // Release store of 0) is visible to us.
            let holder =
                match word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return (EntryLock { word, holder: me }, false),
                    Err(holder) => holder,
                };
            if holder == 0 {
                continue;
            }
            if spins < LOCK_SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if checked.is_none_or(|t| t.elapsed() >= HOLDER_CHECK_INTERVAL) {
                checked = Some(Instant::now());
                // Only the dead holder's pid is replaced: if the lock changed
                // hands meanwhile, the compare-and-swap fails.
                if process_ended(holder)
                    && word
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return (EntryLock { word, holder: me }, true);
                }
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for EntryLock<'_> {
    fn drop(&mut self) {
        // Release: our updates under the lock are visible to the next holder.
        // Conditional, so that a lock taken from us (only if we were thought
        // dead) is not released under its new holder.
        let _ = self
            .word
            .compare_exchange(self.holder, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// One active grant entry (see the module documentation).
struct ActiveEntry<'a> {
    lock: &'a AtomicU32,
    /// Read pins in the low 16 bits, writable pins in the high 16.
    pin: &'a AtomicU32,
    frame: &'a AtomicU32,
    domid: &'a AtomicU32,
}

/// A domain's shared memory, mapped into this process.
pub struct DomainMem {
    /// Its configuration.
    pub config: DomainConfig,
    memory_fd: OwnedFd,
    memory: Mmap,
    active: Mmap,
    portgen: Mmap,
}

impl DomainMem {
    /// Maps what the hypervisor handed over.
    pub fn map(fds: DomainFds) -> std::io::Result<DomainMem> {
        let c = fds.config;
        let memory = Mmap::map_fd(fds.memory.as_fd(), 0, c.pages as usize * PAGE_SIZE, true)?;
        let active = Mmap::map_fd(fds.active.as_fd(), 0, active_len(&c), true)?;
        let portgen = Mmap::map_fd(fds.portgen.as_fd(), 0, c.max_ports as usize * 4, false)?;
        Ok(DomainMem {
            config: c,
            memory_fd: fds.memory,
            memory,
            active,
            portgen,
        })
    }

    /// The domain's id.
    pub fn domid(&self) -> DomId {
        self.config.domid
    }

    /// Whether the domain still exists.
    pub fn alive(&self) -> bool {
        self.active.mem().load_u32(0).unwrap_or(0) == 1
    }

    /// The whole of the domain's memory.
    pub fn memory(&self) -> SharedMem<'_> {
        self.memory.mem()
    }

    /// The memory descriptor (to map single frames).
    pub fn memory_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.memory_fd.as_fd()
    }

    /// The generation of one of the domain's ports.
    pub fn port_generation(&self, port: u32) -> Option<u32> {
        self.portgen.mem().load_u32(port as usize * 4).ok()
    }

    /// The `flags` word of a grant entry.
    pub fn entry_flags(&self, gref: GrantRef) -> Option<&AtomicU16> {
        self.in_table(gref)?;
        self.memory
            .mem()
            .atomic_u16(gref as usize * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_FLAGS)
            .ok()
    }

    /// The {flags, domid} word of a grant entry, as Xen updates it.
    fn entry_combo(&self, gref: GrantRef) -> Option<&AtomicU32> {
        self.in_table(gref)?;
        self.memory
            .mem()
            .atomic_u32(gref as usize * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_FLAGS)
            .ok()
    }

    fn in_table(&self, gref: GrantRef) -> Option<()> {
        (gref < self.config.grant_entries()).then_some(())
    }

    /// The `frame` of a grant entry.
    pub fn entry_frame(&self, gref: GrantRef) -> Option<u32> {
        self.in_table(gref)?;
        self.memory
            .mem()
            .load_u32(gref as usize * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_FRAME)
            .ok()
    }

    fn active_entry(&self, gref: GrantRef) -> Option<ActiveEntry<'_>> {
        self.in_table(gref)?;
        let mem = self.active.mem();
        let base = ACTIVE_HEADER + gref as usize * ACTIVE_ENTRY_SIZE;
        Some(ActiveEntry {
            lock: mem.atomic_u32(base + ACTIVE_LOCK).ok()?,
            pin: mem.atomic_u32(base + ACTIVE_PIN).ok()?,
            frame: mem.atomic_u32(base + ACTIVE_FRAME).ok()?,
            domid: mem.atomic_u32(base + ACTIVE_DOMID).ok()?,
        })
    }

    /// Pins a grant for `grantee`, as Xen does for a map or a copy: the entry
    /// must permit access to `grantee`, and not be read-only if `writable`;
    /// the guest then sees GTF_reading (and GTF_writing) until unpinned.
    /// An entry already pinned answers from what was recorded at its first
    /// pin (grantee, frame), as Xen's active entry does. Returns the granted
    /// frame.
    pub fn pin(&self, gref: GrantRef, grantee: DomId, writable: bool) -> Result<u32, GntSt> {
        if !self.alive() {
            return Err(GntSt::BadDomain);
        }
        let (Some(act), Some(combo), Some(flags)) = (
            self.active_entry(gref),
            self.entry_combo(gref),
            self.entry_flags(gref),
        ) else {
            return Err(GntSt::BadGntref);
        };
        let (_lock, taken_over) = EntryLock::acquire(act.lock);
        // Relaxed under the lock: its Acquire ordered us after the previous
        // holder's updates.
        let pins = act.pin.load(Ordering::Relaxed);
        if taken_over {
            Self::settle_flags(flags, pins);
        }
        let (add, mask) = if writable {
            (PIN_WRITE, PIN_WRITE_MASK)
        } else {
            (PIN_READ, PIN_READ_MASK)
        };
        if pins & mask == mask {
            // The count would overflow.
            return Err(GntSt::GeneralError);
        }
        if pins != 0 && act.domid.load(Ordering::Relaxed) != u32::from(grantee) {
            return Err(GntSt::GeneralError);
        }
        // The guest's entry is touched for the first pin, and for the first
        // writable one (GTF_writing); other pins change only our counts.
        if pins == 0 || (writable && pins & PIN_WRITE_MASK == 0) {
            set_status_v1(combo, grantee, writable, pins == 0)?;
            if pins == 0 {
                let frame = self.entry_frame(gref).ok_or(GntSt::BadGntref)?;
                if frame < self.config.grant_frames || frame >= self.config.pages {
                    Self::settle_flags(flags, pins);
                    return Err(GntSt::GeneralError);
                }
                act.frame.store(frame, Ordering::Relaxed);
                act.domid.store(u32::from(grantee), Ordering::Relaxed);
            }
        }
        act.pin.store(pins + add, Ordering::Relaxed);
        Ok(act.frame.load(Ordering::Relaxed))
    }

    /// Drops a pin taken by [`DomainMem::pin`].
    pub fn unpin(&self, gref: GrantRef, writable: bool) {
        let (Some(act), Some(flags)) = (self.active_entry(gref), self.entry_flags(gref)) else {
            return;
        };
        let (_lock, _) = EntryLock::acquire(act.lock);
        let (sub, mask) = if writable {
            (PIN_WRITE, PIN_WRITE_MASK)
        } else {
            (PIN_READ, PIN_READ_MASK)
        };
        let mut pins = act.pin.load(Ordering::Relaxed);
        if pins & mask != 0 {
            pins -= sub;
            act.pin.store(pins, Ordering::Relaxed);
        }
        // Also repairs flags a dead holder left, if we took its lock over.
        Self::settle_flags(flags, pins);
    }

    /// Clears the in-use flags the remaining pins no longer justify (an
    /// atomic and, as Xen's `gnttab_clear_flags`: never a loop the guest
    /// could stall).
    fn settle_flags(flags: &AtomicU16, pins: u32) {
        let mut clear = 0;
        if pins == 0 {
            clear |= GTF_READING;
        }
        if pins & PIN_WRITE_MASK == 0 {
            clear |= GTF_WRITING;
        }
        flags.fetch_and(!clear, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};

    use super::*;
    use crate::platform::sim::{DomainConfig, SimGntTable, SimHypervisor};
    use crate::platform::GrantTable;

    const BACK: DomId = 0;
    const FRONT: DomId = 5;
    const OTHER: DomId = 6;

    struct Guest {
        _hv: SimHypervisor,
        gt: Arc<SimGntTable>,
        dm: Arc<DomainMem>,
        gref: GrantRef,
        frame: u32,
    }

    /// A guest that granted one page to the backend, writable.
    fn guest() -> Guest {
        let hv = SimHypervisor::new();
        for d in [BACK, FRONT, OTHER] {
            hv.create_domain(DomainConfig::new(d)).unwrap();
        }
        let host = hv.host();
        let gt = host.gnttab(FRONT).unwrap();
        let dm = host.domain_mem(FRONT).unwrap();
        let frame = gt.alloc_page().unwrap();
        let gref = gt.grant(BACK, frame, false).unwrap();
        Guest {
            _hv: hv,
            gt,
            dm,
            gref,
            frame,
        }
    }

    /// Runs `f` on its own thread and waits at most `secs` for it, so that a
    /// hang fails this test instead of stalling the suite.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("still waiting after {secs}s"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the thread panicked"),
        }
    }

    fn in_use(gt: &SimGntTable, gref: GrantRef) -> u16 {
        gt.entry_flags(gref).unwrap() & (GTF_READING | GTF_WRITING)
    }

    /// A pid that is no process: a child that exited and was reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// A guest's {flags, domid} word that changes under the hypervisor as
    /// `interfere` says, just before each compare-and-swap (its argument:
    /// the attempt, from 0).
    struct ScriptedGuest<F: Fn(u32, u32) -> Option<u32>> {
        word: Cell<u32>,
        attempts: Cell<u32>,
        interfere: F,
    }

    impl<F: Fn(u32, u32) -> Option<u32>> ScriptedGuest<F> {
        fn new(entry: Combo, interfere: F) -> Self {
            ScriptedGuest {
                word: Cell::new(entry.raw()),
                attempts: Cell::new(0),
                interfere,
            }
        }

        fn entry(&self) -> Combo {
            Combo::from_raw(self.word.get())
        }
    }

    impl<F: Fn(u32, u32) -> Option<u32>> ComboWord for ScriptedGuest<F> {
        fn load(&self) -> u32 {
            self.word.get()
        }

        fn compare_exchange(&self, current: u32, new: u32) -> Result<u32, u32> {
            let attempt = self.attempts.get();
            self.attempts.set(attempt + 1);
            if let Some(changed) = (self.interfere)(attempt, self.word.get()) {
                self.word.set(changed);
            }
            if self.word.get() == current {
                self.word.set(new);
                Ok(current)
            } else {
                Err(self.word.get())
            }
        }
    }

    const GRANTED: Combo = Combo {
        flags: GTF_PERMIT_ACCESS,
        domid: BACK,
    };

    #[test]
    fn the_combined_word_is_flags_then_domid_in_memory() {
        let c = Combo {
            flags: 0x1234,
            domid: 0xabcd,
        };
        let bytes = c.raw().to_ne_bytes();
        assert_eq!(bytes[..2], 0x1234u16.to_ne_bytes());
        assert_eq!(bytes[2..], 0xabcdu16.to_ne_bytes());
        assert_eq!(Combo::from_raw(c.raw()), c);
    }

    #[test]
    fn set_status_gives_up_after_four_retries_on_an_entry_that_keeps_changing() {
        // The guest toggles a flag bit it may toggle before every attempt.
        let flip = |_: u32, now: u32| Some(now ^ u32::from(1u16 << 7));
        let guest = ScriptedGuest::new(GRANTED, flip);
        assert_eq!(
            set_status_v1(&guest, BACK, true, true),
            Err(GntSt::GeneralError)
        );
        assert_eq!(guest.attempts.get(), 1 + SET_STATUS_RETRIES);
        assert_eq!(guest.entry().flags & (GTF_READING | GTF_WRITING), 0);

        // Four interferences are survived: the fifth attempt commits.
        let guest = ScriptedGuest::new(GRANTED, |attempt, now| {
            (attempt < SET_STATUS_RETRIES).then_some(now ^ u32::from(1u16 << 7))
        });
        assert_eq!(set_status_v1(&guest, BACK, true, true), Ok(()));
        assert_eq!(guest.attempts.get(), 1 + SET_STATUS_RETRIES);
        assert_eq!(
            guest.entry().flags & (GTF_READING | GTF_WRITING),
            GTF_READING | GTF_WRITING
        );
        assert_eq!(guest.entry().domid, BACK);
    }

    #[test]
    fn set_status_commits_the_domid_it_checked() {
        // Between the check and the compare-and-swap the guest grants the
        // entry to another domain, leaving the flags as they were: a swap of
        // the flags alone would succeed and pin a frame granted to OTHER.
        let regrant = |attempt: u32, now: u32| {
            (attempt == 0).then_some(
                Combo {
                    domid: OTHER,
                    ..Combo::from_raw(now)
                }
                .raw(),
            )
        };
        let guest = ScriptedGuest::new(GRANTED, regrant);
        assert_eq!(
            set_status_v1(&guest, BACK, false, true),
            Err(GntSt::GeneralError)
        );
        assert_eq!(guest.attempts.get(), 1, "the retry sees the new domid");
        assert_eq!(
            guest.entry(),
            Combo {
                flags: GTF_PERMIT_ACCESS,
                domid: OTHER
            }
        );

        // A pinned entry is not checked again, but a writable pin of an
        // entry made read-only meanwhile still fails.
        let make_readonly = |attempt: u32, now: u32| {
            (attempt == 0).then(|| {
                let entry = Combo::from_raw(now);
                Combo {
                    flags: entry.flags | GTF_READONLY,
                    ..entry
                }
                .raw()
            })
        };
        let guest = ScriptedGuest::new(
            Combo {
                flags: GTF_PERMIT_ACCESS | GTF_READING,
                domid: BACK,
            },
            make_readonly,
        );
        assert_eq!(
            set_status_v1(&guest, BACK, true, false),
            Err(GntSt::GeneralError)
        );
        assert_eq!(guest.entry().flags & GTF_WRITING, 0);
    }

    #[test]
    fn a_guest_flipping_its_entry_never_stalls_a_pin_nor_gets_a_foreign_domid_committed() {
        use std::sync::atomic::AtomicU64;

        let g = guest();
        let (dm, gref, frame) = (g.dm.clone(), g.gref, g.frame);
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        // The hostile guest grants the entry to OTHER and back, as fast as
        // it can, each time with one store of the whole word and no in-use
        // flag. The flags stay GTF_permit_access throughout, so a hypervisor
        // that swapped the flags alone, having read the domid apart, would
        // succeed while the domid is OTHER. Any GTF_reading found on the
        // OTHER state was committed there by the hypervisor.
        let flipper = {
            let (dm, stop, flips) = (dm.clone(), stop.clone(), flips.clone());
            std::thread::spawn(move || {
                let combo = dm.entry_combo(gref).unwrap();
                let to_other = Combo {
                    domid: OTHER,
                    ..GRANTED
                };
                let mut foreign = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    combo.swap(to_other.raw(), Ordering::AcqRel);
                    let old = Combo::from_raw(combo.swap(GRANTED.raw(), Ordering::AcqRel));
                    if old.flags & GTF_READING != 0 {
                        assert_eq!(old.domid, OTHER);
                        foreign += 1;
                    }
                    flips.fetch_add(1, Ordering::Relaxed);
                }
                foreign
            })
        };
        let pins = {
            let flips = flips.clone();
            within(120, move || {
                // Pin while the guest flips: at least 100 000 pins, and on
                // until the guest flipped 2 000 000 times meanwhile (or 20 s).
                let started = Instant::now();
                while flips.load(Ordering::Relaxed) == 0 {
                    std::thread::yield_now();
                }
                let first_flip = flips.load(Ordering::Relaxed);
                let (mut ok, mut refused) = (0u32, 0u32);
                while ok + refused < 100_000
                    || (flips.load(Ordering::Relaxed) - first_flip < 2_000_000
                        && started.elapsed() < Duration::from_secs(20))
                {
                    let writable = (ok + refused) % 2 == 0;
                    match dm.pin(gref, BACK, writable) {
                        Ok(f) => {
                            assert_eq!(f, frame, "the granted frame");
                            ok += 1;
                            dm.unpin(gref, writable);
                        }
                        Err(s) => {
                            assert_eq!(s, GntSt::GeneralError);
                            refused += 1;
                        }
                    }
                }
                (ok, refused)
            })
        };
        stop.store(true, Ordering::Relaxed);
        let foreign = flipper.join().unwrap();
        assert!(pins.0 + pins.1 >= 100_000, "{pins:?}");
        assert_eq!(
            foreign, 0,
            "GTF_reading committed on an entry granted to OTHER ({pins:?} pins)"
        );
        // Nothing left pinned.
        let act = g.dm.active_entry(gref).unwrap();
        assert_eq!(act.pin.load(Ordering::Relaxed), 0);
        assert_eq!(act.lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn concurrent_pins_keep_counts_and_in_use_flags_right() {
        let g = guest();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (dm, gref, frame) = (g.dm.clone(), g.gref, g.frame);
                std::thread::spawn(move || {
                    let flags = dm.entry_flags(gref).unwrap();
                    for i in 0..3_000 {
                        let writable = (t + i) % 3 == 0;
                        assert_eq!(dm.pin(gref, BACK, writable), Ok(frame));
                        // While we hold the pin, the guest must see it.
                        let f = flags.load(Ordering::Acquire);
                        assert_ne!(f & GTF_READING, 0, "reading while pinned");
                        if writable {
                            assert_ne!(f & GTF_WRITING, 0, "writing while pinned writable");
                        }
                        dm.unpin(gref, writable);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let act = g.dm.active_entry(g.gref).unwrap();
        assert_eq!(act.pin.load(Ordering::Relaxed), 0, "every pin dropped");
        assert_eq!(act.lock.load(Ordering::Relaxed), 0, "the lock is free");
        assert_eq!(in_use(&g.gt, g.gref), 0);
        g.gt.end_access(g.gref).unwrap();
    }

    #[test]
    fn a_lock_left_by_a_process_that_died_does_not_block_the_next_pin() {
        let g = guest();
        let act = g.dm.active_entry(g.gref).unwrap();
        // Reaped: no such process any more.
        act.lock.store(dead_pid(), Ordering::Release);
        let (dm, gref) = (g.dm.clone(), g.gref);
        assert_eq!(within(30, move || dm.pin(gref, BACK, true)), Ok(g.frame));
        assert_eq!(act.lock.load(Ordering::Acquire), 0, "released after use");
        assert_eq!(act.pin.load(Ordering::Relaxed), PIN_WRITE);

        // Exited but not reaped yet (a zombie): it will not release either.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
            assert!(Instant::now() < deadline, "the child never exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        act.lock.store(pid, Ordering::Release);
        let (dm, gref) = (g.dm.clone(), g.gref);
        within(30, move || dm.unpin(gref, true));
        child.wait().unwrap();
        assert_eq!(act.pin.load(Ordering::Relaxed), 0);
        assert_eq!(in_use(&g.gt, g.gref), 0);
    }

    #[test]
    fn a_lock_holder_is_waited_for_while_it_runs_and_taken_over_when_it_dies() {
        let g = guest();
        let act = g.dm.active_entry(g.gref).unwrap();
        let mut holder = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        act.lock.store(holder.id(), Ordering::Release);
        let (tx, rx) = mpsc::channel();
        let (dm, gref) = (g.dm.clone(), g.gref);
        std::thread::spawn(move || tx.send(dm.pin(gref, BACK, false)));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "a live holder is not robbed"
        );
        assert_eq!(act.pin.load(Ordering::Relaxed), 0);
        // The holder dies holding the lock.
        holder.kill().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap(),
            Ok(g.frame)
        );
        holder.wait().unwrap();
        assert_eq!(act.pin.load(Ordering::Relaxed), PIN_READ);
        assert_eq!(in_use(&g.gt, g.gref), GTF_READING);
        g.dm.unpin(g.gref, false);
        assert_eq!(in_use(&g.gt, g.gref), 0);
    }

    #[test]
    fn taking_over_a_dead_holders_lock_repairs_the_guest_flags() {
        let g = guest();
        // The holder died in a writable pin after setting the flags and
        // before counting its pin.
        assert!(g.gt.write_entry(
            g.gref,
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
            BACK,
            g.frame
        ));
        let act = g.dm.active_entry(g.gref).unwrap();
        act.lock.store(dead_pid(), Ordering::Release);
        let (dm, gref) = (g.dm.clone(), g.gref);
        assert_eq!(within(30, move || dm.pin(gref, BACK, false)), Ok(g.frame));
        assert_eq!(
            in_use(&g.gt, g.gref),
            GTF_READING,
            "no writable pin exists: GTF_writing is cleared"
        );
        g.dm.unpin(g.gref, false);
        assert_eq!(in_use(&g.gt, g.gref), 0);
        g.gt.end_access(g.gref).unwrap();
    }

    #[test]
    fn a_pinned_entry_answers_from_what_its_first_pin_recorded() {
        let g = guest();
        let (dm, gt, r) = (&g.dm, &g.gt, g.gref);
        assert_eq!(dm.pin(r, BACK, false), Ok(g.frame));
        // The guest rewrites the entry while it is pinned: another grantee,
        // another frame, read-only.
        let other_frame = gt.alloc_page().unwrap();
        assert!(gt.write_entry(
            r,
            GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING,
            OTHER,
            other_frame
        ));
        assert_eq!(dm.pin(r, BACK, false), Ok(g.frame), "the recorded frame");
        assert_eq!(dm.pin(r, OTHER, false), Err(GntSt::GeneralError));
        assert_eq!(
            dm.pin(r, BACK, true),
            Err(GntSt::GeneralError),
            "a writable pin of a read-only entry"
        );
        dm.unpin(r, false);
        dm.unpin(r, false);
        assert_eq!(in_use(gt, r), 0);
        // Unpinned, the entry is checked afresh.
        assert_eq!(dm.pin(r, BACK, false), Err(GntSt::GeneralError));
        assert_eq!(dm.pin(r, OTHER, false), Ok(other_frame));
        dm.unpin(r, false);
    }

    #[test]
    fn pin_counts_refuse_to_overflow() {
        let g = guest();
        let act = g.dm.active_entry(g.gref).unwrap();
        assert_eq!(g.dm.pin(g.gref, BACK, false), Ok(g.frame));
        act.pin.store(PIN_READ_MASK, Ordering::Relaxed);
        assert_eq!(g.dm.pin(g.gref, BACK, false), Err(GntSt::GeneralError));
        assert_eq!(g.dm.pin(g.gref, BACK, true), Ok(g.frame));
        assert_eq!(act.pin.load(Ordering::Relaxed), PIN_READ_MASK | PIN_WRITE);
    }
}
