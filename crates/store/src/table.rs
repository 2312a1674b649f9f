//! Raw storage of the swarm-map tables (header + slots in one allocation): allocation,
//! freeing and slot addressing.

use std::alloc::Layout;

use crate::slab::Slab;
use std::ptr::NonNull;

use crate::sync::{AtomicU32, AtomicU64, AtomicUsize};

/// `next` states of a table. Anything else is the address of the successor table.
pub(crate) const NEXT_NONE: usize = 0;
pub(crate) const NEXT_GROW: usize = 2;

/// Header of an open-addressing table of `AtomicU64` slots; `cap * words` slot words follow it
/// in the same allocation.
///
/// Invariants: `cap` and `generation` never change; `used` counts slots that ever left EMPTY
/// (it only grows); `next` goes `NEXT_NONE` → `NEXT_GROW` (a migration was started; slots are
/// being frozen) → successor address, and never back.
#[repr(C)]
pub(crate) struct TableHeader {
    pub(crate) cap: u32,
    pub(crate) used: AtomicU32,
    pub(crate) next: AtomicUsize,
    /// One more than the predecessor's: identifies a shard's table without the ABA of an
    /// address (the cleaner's cursor compares it).
    pub(crate) generation: u64,
}

/// A borrowed view of a table. Copyable; valid while the epoch guard it was read under lives.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    ptr: NonNull<TableHeader>,
    words: usize,
    /// Copy of the header's `cap` (immutable), so that a lookup need not touch the header.
    cap: usize,
}

fn layout(cap: usize, words: usize) -> (Layout, usize) {
    let (l, off) = Layout::new::<TableHeader>()
        .extend(Layout::array::<AtomicU64>(cap * words).expect("table too large"))
        .expect("table too large");
    (l.pad_to_align(), off)
}

pub(crate) fn table_bytes(cap: usize, words: usize) -> usize {
    layout(cap, words).0.size()
}

impl Table {
    /// Allocates a table of `cap` slots of `words` words, all EMPTY.
    pub(crate) fn alloc(slab: &Slab, cap: usize, words: usize, generation: u64) -> Table {
        assert!(cap >= 1 && cap <= u32::MAX as usize);
        let (l, off) = layout(cap, words);
        let ptr = slab.alloc(l).cast::<TableHeader>();
        let raw = ptr.as_ptr().cast::<u8>();
        // SAFETY: `raw` is a fresh allocation of `l`, which holds the header at offset 0 and
        // `cap * words` AtomicU64 at `off`; each is initialised exactly once here before the
        // pointer is shared.
        unsafe {
            ptr.as_ptr().write(TableHeader {
                cap: cap as u32,
                used: AtomicU32::new(0),
                next: AtomicUsize::new(NEXT_NONE),
                generation,
            });
            init_slots(raw, off, cap * words);
        }
        Table { ptr, words, cap }
    }

    /// # Safety
    /// `addr` must come from [`Table::addr`] of a table allocated with the same `words`, and the
    /// table must not have been freed.
    #[inline]
    pub(crate) unsafe fn from_addr(addr: usize, words: usize) -> Table {
        // SAFETY: per the contract `addr` is a live, non-null table address.
        let ptr: NonNull<TableHeader> =
            unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(addr)) };
        // SAFETY: live table (contract); `cap` never changes.
        let cap = unsafe { ptr.as_ref() }.cap as usize;
        Table { ptr, words, cap }
    }

    /// Like [`Table::from_addr`], with the capacity known from elsewhere (no header read).
    ///
    /// # Safety
    /// As for [`Table::from_addr`], and `cap` must be the table's capacity.
    #[inline]
    pub(crate) unsafe fn from_addr_cap(addr: usize, words: usize, cap: usize) -> Table {
        // SAFETY: per the contract `addr` is a live, non-null table address.
        let ptr = unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(addr)) };
        Table { ptr, words, cap }
    }

    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.ptr.as_ptr().expose_provenance()
    }

    /// Frees the table.
    ///
    /// # Safety
    /// No thread may access the table afterwards, and it is freed at most once.
    pub(crate) unsafe fn free(self, slab: &Slab) {
        let cap = self.header().cap as usize;
        let (l, off) = layout(cap, self.words);
        // SAFETY: per the contract nobody else uses the table; every element was initialised
        // by `alloc` and is dropped once here, then the allocation of layout `l` is released.
        unsafe {
            let raw = self.ptr.as_ptr().cast::<u8>();
            drop_slots(raw, off, cap * self.words);
            std::ptr::drop_in_place(self.ptr.as_ptr());
            slab.free(self.ptr.cast(), l);
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &TableHeader {
        // SAFETY: a `Table` is only built for a live allocation (see `from_addr`), and callers
        // keep it alive with an epoch guard for as long as they use the view.
        unsafe { self.ptr.as_ref() }
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Word `k` of slot `i` (`k < words`, `i < cap`).
    #[inline]
    pub(crate) fn word(&self, i: usize, k: usize) -> &AtomicU64 {
        debug_assert!(i < self.cap() && k < self.words);
        let off =
            std::mem::size_of::<TableHeader>().next_multiple_of(std::mem::align_of::<AtomicU64>());
        // SAFETY: `i * words + k < cap * words`, so the element lies inside the slot array that
        // `alloc` initialised; the reference lives no longer than `self`'s guard.
        unsafe { slot_word(self.ptr.as_ptr().cast(), off, i * self.words + k) }
    }
}

/// Slot index for a hash in a table of `cap` slots (multiply-shift, any `cap`).
#[inline]
pub(crate) fn index(hash: u64, cap: usize) -> usize {
    (((hash >> 32) * cap as u64) >> 32) as usize
}

pub(crate) fn map_cap_for(n: usize, min: usize) -> usize {
    (n + n / 2 + 1).max(min)
}
pub(crate) fn map_max_used(cap: usize) -> usize {
    cap - cap / 8
}

/// Writes `n` EMPTY slot words `off` bytes into the fresh allocation at `raw`.
///
/// # Safety
/// `raw + off .. raw + off + n * size_of::<AtomicU64>()` must lie inside one allocation that
/// nothing else uses yet, aligned for `AtomicU64`.
pub(crate) unsafe fn init_slots(raw: *mut u8, off: usize, n: usize) {
    // SAFETY: per the contract the range is ours and aligned.
    unsafe {
        let slots = raw.add(off).cast::<AtomicU64>();
        for i in 0..n {
            slots.add(i).write(AtomicU64::new(0));
        }
    }
}

/// Drops the `n` slot words `off` bytes into the allocation at `raw`.
///
/// # Safety
/// They were written by [`init_slots`], are dropped once, and nothing uses them afterwards.
pub(crate) unsafe fn drop_slots(raw: *mut u8, off: usize, n: usize) {
    // SAFETY: per the contract.
    unsafe {
        let slots = raw.add(off).cast::<AtomicU64>();
        for i in 0..n {
            std::ptr::drop_in_place(slots.add(i));
        }
    }
}

/// Slot word `k` of the slot array `off` bytes into the allocation at `raw`.
///
/// # Safety
/// Word `k` must lie in a slot array written by [`init_slots`] that outlives `'a`.
#[inline]
pub(crate) unsafe fn slot_word<'a>(raw: *mut u8, off: usize, k: usize) -> &'a AtomicU64 {
    // SAFETY: per the contract the word is initialised and outlives `'a`.
    unsafe { &*raw.add(off).cast::<AtomicU64>().add(k) }
}
