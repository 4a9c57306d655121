//! A domain's memory as another party sees it: its grant table (v1 entries in
//! its first frames), the hypervisor's pin counts, and the frames themselves.
//! Pinning checks an entry exactly as Xen does and sets the in-use flags the
//! granting guest sees.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use super::core::{DomainConfig, DomainFds, ACTIVE_HEADER};
use crate::platform::abi::*;
use crate::platform::memory::{Mmap, SharedMem};
use crate::platform::{DomId, GntSt, GrantRef};

/// Lock bit of an entry's pin word (hypervisor-private, shared between the
/// processes of the simulated host).
const PIN_LOCK: u32 = 1 << 31;
/// A read-only pin.
const PIN_READ: u32 = 1;
/// A writable pin.
const PIN_WRITE: u32 = 1 << 16;
const PIN_READ_MASK: u32 = 0xffff;
const PIN_WRITE_MASK: u32 = 0x7fff << 16;

/// A domain's shared memory, mapped into this process.
pub struct DomainMem {
    /// Its configuration.
    pub config: DomainConfig,
    memory_fd: OwnedFd,
    memory: Mmap,
    active: Mmap,
    portgen: Mmap,
}

struct PinGuard<'a>(&'a AtomicU32);

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_and(!PIN_LOCK, Ordering::Release);
    }
}

impl DomainMem {
    /// Maps what the hypervisor handed over.
    pub fn map(fds: DomainFds) -> std::io::Result<DomainMem> {
        let c = fds.config;
        let memory = Mmap::map_fd(fds.memory.as_fd(), 0, c.pages as usize * PAGE_SIZE, true)?;
        let active = Mmap::map_fd(
            fds.active.as_fd(),
            0,
            ACTIVE_HEADER + c.grant_entries() as usize * 4,
            true,
        )?;
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

    fn in_table(&self, gref: GrantRef) -> Option<()> {
        (gref < self.config.grant_entries()).then_some(())
    }

    /// The `domid` of a grant entry.
    pub fn entry_domid(&self, gref: GrantRef) -> Option<DomId> {
        self.in_table(gref)?;
        let a = self
            .memory
            .mem()
            .atomic_u16(gref as usize * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_DOMID)
            .ok()?;
        Some(a.load(Ordering::Acquire))
    }

    /// The `frame` of a grant entry.
    pub fn entry_frame(&self, gref: GrantRef) -> Option<u32> {
        self.in_table(gref)?;
        self.memory
            .mem()
            .load_u32(gref as usize * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_FRAME)
            .ok()
    }

    fn pin_word(&self, gref: GrantRef) -> Option<&AtomicU32> {
        self.in_table(gref)?;
        self.active
            .mem()
            .atomic_u32(ACTIVE_HEADER + gref as usize * 4)
            .ok()
    }

    fn lock(word: &AtomicU32) -> PinGuard<'_> {
        loop {
            let v = word.load(Ordering::Relaxed);
            if v & PIN_LOCK == 0
                && word
                    .compare_exchange_weak(v, v | PIN_LOCK, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return PinGuard(word);
            }
            std::hint::spin_loop();
        }
    }

    /// Pins a grant for `grantee`, as Xen does for a map or a copy: the entry
    /// must permit access to `grantee`, and not be read-only if `writable`;
    /// the guest then sees GTF_reading (and GTF_writing) until unpinned.
    /// Returns the granted frame.
    pub fn pin(&self, gref: GrantRef, grantee: DomId, writable: bool) -> Result<u32, GntSt> {
        if !self.alive() {
            return Err(GntSt::BadDomain);
        }
        let (Some(word), Some(flags)) = (self.pin_word(gref), self.entry_flags(gref)) else {
            return Err(GntSt::BadGntref);
        };
        let _guard = Self::lock(word);
        let pins = word.load(Ordering::Relaxed);
        let full = if writable {
            pins & PIN_WRITE_MASK == PIN_WRITE_MASK
        } else {
            pins & PIN_READ_MASK == PIN_READ_MASK
        };
        if full {
            return Err(GntSt::GeneralError);
        }
        // The guest may change its entry at any time: decide on one snapshot
        // of the flags and commit it with a compare-and-swap.
        loop {
            let f = flags.load(Ordering::Acquire);
            let domid = self.entry_domid(gref).ok_or(GntSt::BadGntref)?;
            if f & GTF_TYPE_MASK != GTF_PERMIT_ACCESS
                || domid != grantee
                || (writable && f & GTF_READONLY != 0)
            {
                return Err(GntSt::GeneralError);
            }
            let set = GTF_READING | if writable { GTF_WRITING } else { 0 };
            if flags
                .compare_exchange(f, f | set, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        let frame = self.entry_frame(gref).ok_or(GntSt::BadGntref)?;
        if frame < self.config.grant_frames || frame >= self.config.pages {
            Self::settle_flags(flags, pins);
            return Err(GntSt::GeneralError);
        }
        word.store(
            (pins + if writable { PIN_WRITE } else { PIN_READ }) | PIN_LOCK,
            Ordering::Relaxed,
        );
        Ok(frame)
    }

    /// Drops a pin taken by [`DomainMem::pin`].
    pub fn unpin(&self, gref: GrantRef, writable: bool) {
        let (Some(word), Some(flags)) = (self.pin_word(gref), self.entry_flags(gref)) else {
            return;
        };
        let _guard = Self::lock(word);
        let pins = word.load(Ordering::Relaxed) & !PIN_LOCK;
        let dec = if writable { PIN_WRITE } else { PIN_READ };
        let pins = pins.saturating_sub(dec);
        word.store(pins | PIN_LOCK, Ordering::Relaxed);
        Self::settle_flags(flags, pins);
    }

    /// Clears the in-use flags the remaining pins no longer justify.
    fn settle_flags(flags: &AtomicU16, pins: u32) {
        let mut clear = 0;
        if pins & (PIN_READ_MASK | PIN_WRITE_MASK) == 0 {
            clear |= GTF_READING;
        }
        if pins & PIN_WRITE_MASK == 0 {
            clear |= GTF_WRITING;
        }
        flags.fetch_and(!clear, Ordering::AcqRel);
    }
}
