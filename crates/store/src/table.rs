//! Raw storage of the swarm-map tables (header + slots in one allocation): allocation,
//! freeing and slot addressing.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::slab::Slab;
use crate::sync::epoch::Guard;
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// `next` states of a table. Anything else is the address of the successor table.
const NEXT_NONE: usize = 0;
const NEXT_GROW: usize = 2;

/// Header of an open-addressing table of `AtomicU64` slots; `cap * words` slot words follow it
/// in the same allocation.
///
/// Invariants: `cap` and `generation` never change; `used` counts slots that ever left EMPTY
/// (it only grows); `next` goes `NEXT_NONE` → `NEXT_GROW` (a migration was started; slots are
/// being frozen) → successor address, and never back ([`TableNext`]).
#[repr(C)]
pub(crate) struct TableHeader {
    pub(crate) cap: u32,
    pub(crate) used: AtomicU32,
    next: AtomicUsize,
    /// One more than the predecessor's: identifies a shard's table without the ABA of an
    /// address (the cleaner's cursor compares it).
    pub(crate) generation: u64,
}

/// A borrowed view of a table, valid for `'g`: the pin of the epoch guard it was read under
/// (as crossbeam-epoch's `Shared<'g, T>`). Copyable.
///
/// Invariant: the table, its successor (and theirs), and every block their slots name, stay
/// allocated for all of `'g` (*Reclamation* in docs/architecture.md). Views are made by
/// [`Table::alloc`] (tied to the allocating thread's guard), by [`Table::next`], and by the
/// escape hatches [`Table::from_addr`] and [`Table::from_addr_cap`] (shard words, retire
/// closures, `Drop`).
#[derive(Clone, Copy)]
pub(crate) struct Table<'g> {
    ptr: NonNull<TableHeader>,
    words: usize,
    /// Copy of the header's `cap` (immutable), so that a lookup need not touch the header.
    cap: usize,
    _guard: PhantomData<&'g Guard>,
}

/// A map table's migration state: `None` → `Grow` → `Successor`, and never back.
#[derive(Clone, Copy)]
pub(crate) enum TableNext<'g> {
    /// No migration.
    None,
    /// A migration was started: slots are being frozen.
    Grow,
    /// The migration's successor table.
    Successor(Table<'g>),
}

impl TableNext<'_> {
    #[inline]
    fn bits(self) -> usize {
        match self {
            TableNext::None => NEXT_NONE,
            TableNext::Grow => NEXT_GROW,
            TableNext::Successor(t) => t.addr(),
        }
    }
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

impl<'g> Table<'g> {
    /// Allocates a table of `cap` slots of `words` words, all EMPTY. The view lives as long as
    /// the allocating thread's pin: once published, the table is retired through the epoch;
    /// unpublished, it is its allocator's to free.
    pub(crate) fn alloc(
        slab: &Slab,
        cap: usize,
        words: usize,
        generation: u64,
        _g: &'g Guard,
    ) -> Self {
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
        Table {
            ptr,
            words,
            cap,
            _guard: PhantomData,
        }
    }

    /// The view of the table at `addr`, for a lifetime the caller chooses (the escape hatch of
    /// the guard-bound views).
    ///
    /// # Safety
    /// `addr` must come from [`Table::addr`] of a table allocated with the same `words`, which
    /// stays allocated for all of `'a` with everything it leads to (its successors, and the
    /// blocks their slots name). Its initialisation must be visible to this thread (published
    /// to it with Acquire or a CAS, or allocated by it).
    #[inline]
    pub(crate) unsafe fn from_addr<'a>(addr: usize, words: usize) -> Table<'a> {
        // SAFETY: per the contract `addr` is a live, non-null table address.
        let ptr: NonNull<TableHeader> =
            unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(addr)) };
        // SAFETY: live table (contract); `cap` never changes.
        let cap = unsafe { ptr.as_ref() }.cap as usize;
        Table {
            ptr,
            words,
            cap,
            _guard: PhantomData,
        }
    }

    /// Like [`Table::from_addr`], with the capacity known from elsewhere (no header read).
    ///
    /// # Safety
    /// As for [`Table::from_addr`], and `cap` must be the table's capacity.
    #[inline]
    pub(crate) unsafe fn from_addr_cap<'a>(addr: usize, words: usize, cap: usize) -> Table<'a> {
        // SAFETY: per the contract `addr` is a live, non-null table address.
        let ptr = unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(addr)) };
        Table {
            ptr,
            words,
            cap,
            _guard: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.ptr.as_ptr().expose_provenance()
    }

    /// Frees the table.
    ///
    /// # Safety
    /// No thread may access the table afterwards (this view and its copies included), and it
    /// is freed at most once.
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
    pub(crate) fn header(&self) -> &'g TableHeader {
        // SAFETY: the view's invariant: the table stays allocated for `'g`.
        unsafe { self.ptr.as_ref() }
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// True if a migration was started (the state is not [`TableNext::None`]); Acquire.
    #[inline]
    pub(crate) fn is_migrating(&self) -> bool {
        self.header().next.load(Ordering::Acquire) != NEXT_NONE
    }

    /// The migration state (Acquire: a successor's contents are visible).
    #[inline]
    pub(crate) fn next(&self) -> TableNext<'g> {
        self.decode(self.header().next.load(Ordering::Acquire))
    }

    /// CAS of the migration state; `Err` holds the current one.
    #[inline]
    pub(crate) fn cas_next(
        &self,
        from: TableNext<'g>,
        to: TableNext<'g>,
    ) -> Result<(), TableNext<'g>> {
        self.header()
            .next
            .compare_exchange(from.bits(), to.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|cur| self.decode(cur))
    }

    #[inline]
    fn decode(&self, bits: usize) -> TableNext<'g> {
        match bits {
            NEXT_NONE => TableNext::None,
            NEXT_GROW => TableNext::Grow,
            // SAFETY: a successor published in `next` of a table that lives for `'g`, read
            // with Acquire. A table's successor is unlinked from its shard only after the
            // table itself was, so it outlives every pin that can still reach the table
            // (*Reclamation*, 1), and the blocks its slots name live as long as it (2, 4).
            a => TableNext::Successor(unsafe { Table::from_addr(a, self.words) }),
        }
    }

    /// Word `k` of slot `i`, unchecked.
    ///
    /// # Safety
    /// `i < cap` and `k < words`.
    #[inline]
    unsafe fn word(&self, i: usize, k: usize) -> &'g AtomicU64 {
        debug_assert!(i < self.cap() && k < self.words);
        let off =
            std::mem::size_of::<TableHeader>().next_multiple_of(std::mem::align_of::<AtomicU64>());
        // SAFETY: per the contract `i * words + k < cap * words`, so the element lies inside
        // the slot array that `alloc` initialised; the table stays allocated for `'g` (the
        // view's invariant).
        unsafe { slot_word(self.ptr.as_ptr().cast(), off, i * self.words + k) }
    }
}

/// A map table's slots are its first words (map tables have one word per slot).
impl<'g> Slots for Table<'g> {
    type Slot = &'g AtomicU64;
    #[inline]
    fn cap(&self) -> usize {
        self.cap
    }
    #[inline]
    unsafe fn slot_unchecked(self, i: usize) -> &'g AtomicU64 {
        // SAFETY: `i < cap` (the contract), and every table has at least one word per slot.
        unsafe { self.word(i, 0) }
    }
}

/// A view of an open-addressing slot array (a block, a map table): what [`Probe`] and
/// [`Slots::slots`] walk. Their positions are in bounds by construction, so the slots are
/// reached without a bounds check (one would cost ~9 % of an announce's instructions).
pub(crate) trait Slots: Copy {
    /// What one slot gives access to.
    type Slot: Copy;
    /// Number of slots (below 2^32).
    fn cap(&self) -> usize;
    /// Slot `i`, without a bounds check.
    ///
    /// # Safety
    /// `i < self.cap()`.
    unsafe fn slot_unchecked(self, i: usize) -> Self::Slot;
    /// Slot `i`, or `None` past the end.
    #[inline]
    fn slot(self, i: usize) -> Option<Self::Slot> {
        // SAFETY: checked just before.
        (i < self.cap()).then(|| unsafe { self.slot_unchecked(i) })
    }
    /// Every slot, in order.
    #[inline]
    fn slots(self) -> impl Iterator<Item = Self::Slot> {
        // SAFETY: `i < cap`.
        (0..self.cap()).map(move |i| unsafe { self.slot_unchecked(i) })
    }
    /// The probe sequence of `hash`: from its home slot ([`index`]), every slot once, wrapping.
    #[inline]
    fn probe(self, hash: u64) -> Probe<Self> {
        let cap = self.cap();
        Probe {
            view: self,
            i: index(hash, cap),
            left: cap,
        }
    }
}

/// Linear probing over the slots of a view: [`Probe::current`] is the slot at hand,
/// [`Probe::advance`] moves on (wrapping at the end); `None` once every slot was visited. As an
/// iterator it yields each slot once. Invariant: `left > 0` implies `i < cap`.
#[derive(Clone, Copy)]
pub(crate) struct Probe<V> {
    view: V,
    i: usize,
    left: usize,
}

impl<V: Slots> Probe<V> {
    /// The slot at hand, or `None` when every slot was visited.
    #[inline]
    pub(crate) fn current(&self) -> Option<V::Slot> {
        // SAFETY: the invariant: `left > 0` means `i < cap`. It holds from the start
        // (`index(hash, cap) < cap` for `0 < cap < 2^32`; for `cap = 0`, `left = 0`) and
        // `advance` keeps it.
        (self.left > 0).then(|| unsafe { self.view.slot_unchecked(self.i) })
    }
    /// Moves to the next slot, wrapping at the end.
    #[inline]
    pub(crate) fn advance(&mut self) {
        self.i = if self.i + 1 == self.view.cap() {
            0
        } else {
            self.i + 1
        };
        self.left = self.left.saturating_sub(1);
    }
}

impl<V: Slots> Iterator for Probe<V> {
    type Item = V::Slot;
    #[inline]
    fn next(&mut self) -> Option<V::Slot> {
        let s = self.current()?;
        self.advance();
        Some(s)
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
