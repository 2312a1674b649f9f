//! Swarm blocks: one allocation per version of a swarm, holding its identity, its counters and
//! its open-addressing table of peer slots.
//!
//! ```text
//! small (cap <= SMALL_MAX)        big (cap > SMALL_MAX)
//! +0  next       AtomicU64        +0  next
//! +8  info_hash  [u8; 20]         +8  info_hash
//! +28 completed  AtomicU32        +28 completed
//! +32 slots      cap * words      +32 cap, used, seeders, leechers (4 x u32)
//!                                 +48 slots
//! ```
//!
//! `next` packs the migration state (bits 0..48) with an immutable size code (bits 48..64):
//! the capacity of a small block, [`CODE_BIG`] (capacity in the big header) or
//! [`CODE_CORPSE`] (a slot-less block left behind by a freed swarm). The state ([`Next`]) goes
//! `None` → `Grow`/`Kill` (a migration started; slots are being frozen) → the successor's
//! address, and never back. A swarm's blocks form a chain through `next`; the
//! swarm map points at the newest one.
//!
//! Small blocks keep no `used`, `seeders` or `leechers`: they run full (an insert that finds no
//! empty slot migrates) and their counts come from a scan of at most `SMALL_MAX` slots. This
//! saves 16 bytes on the ~90 % of swarms that hold a handful of peers.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::addr::MetaCell;
use crate::slab::Slab;
use crate::sync::epoch::Guard;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::table::{Slots, drop_slots, init_slots, slot_word};

/// Largest capacity of a small block.
pub(crate) const SMALL_MAX: usize = 8;

const NEXT_NONE: u64 = 0;
const NEXT_GROW: u64 = 2;
const NEXT_KILL: u64 = 3;
/// Bits of `next` that hold the state or the successor's address.
const STATE_MASK: u64 = (1 << 48) - 1;
const CODE_SHIFT: u32 = 48;
const CODE_BIG: u64 = 0;
const CODE_CORPSE: u64 = 0xFFFF;

/// Bit 31 of `completed`: set by a migration, after which the counter no longer changes.
pub(crate) const COMPLETED_FROZEN: u32 = 1 << 31;

#[repr(C)]
pub(crate) struct Head {
    next: AtomicU64,
    pub(crate) info_hash: [u8; 20],
    pub(crate) completed: AtomicU32,
    /// Under loom, a plain copy of the size code: the code bits of `next` never change, but
    /// loom would explore every store a load of `next` may see, multiplying the executions of
    /// each model for no gain.
    #[cfg(loom)]
    code: u64,
}

impl Head {
    /// The immutable size code.
    #[inline]
    fn code(&self) -> u64 {
        #[cfg(loom)]
        return self.code;
        #[cfg(not(loom))]
        return self.next.load(Ordering::Relaxed) >> CODE_SHIFT;
    }
}

/// The second header of a big block. `cap` never changes; `used` counts slots that ever left
/// EMPTY (it only grows); `seeders`/`leechers` obey "increment before publish, decrement after
/// unpublish", so they are never negative and equal the stored peers at quiescence.
#[repr(C)]
pub(crate) struct Big {
    cap: u32,
    pub(crate) used: AtomicU32,
    pub(crate) seeders: AtomicU32,
    pub(crate) leechers: AtomicU32,
}

/// A borrowed view of a block, valid for `'g`: the pin of the epoch guard it was read under
/// (as crossbeam-epoch's `Shared<'g, T>`), so the compiler checks that no view outlives it.
/// Copyable.
///
/// Invariant: the block, and every block its state names (its successor, and that one's, …),
/// stays allocated for all of `'g`. Views are made by [`Block::alloc`] and [`Block::corpse`]
/// (tied to the allocating thread's guard), by [`Block::state`] (a successor, see *Reclamation*
/// in docs/architecture.md), by the swarm map's slot decoding, and by the escape hatch
/// [`Block::from_addr`] (retire closures and `Drop`).
#[derive(Clone, Copy)]
pub(crate) struct Block<'g> {
    ptr: NonNull<Head>,
    cap: u32,
    words: u8,
    big: bool,
    _guard: PhantomData<&'g Guard>,
}

/// A block's migration state (bits 0..48 of `next`): it goes `None` → `Grow` | `Kill` →
/// `Successor`, and never back.
#[derive(Clone, Copy)]
pub(crate) enum Next<'g> {
    /// No migration.
    None,
    /// A migration to a block for the live peers was started (growth or compaction).
    Grow,
    /// A migration that frees the swarm if it finds no live peer was started.
    Kill,
    /// The migration's successor (a block, or a corpse if the swarm was freed).
    Successor(Block<'g>),
}

impl Next<'_> {
    #[inline]
    fn bits(self) -> u64 {
        match self {
            Next::None => NEXT_NONE,
            Next::Grow => NEXT_GROW,
            Next::Kill => NEXT_KILL,
            Next::Successor(b) => b.addr() as u64,
        }
    }
}

const BIG_OFF: usize = size_of::<Head>().next_multiple_of(align_of::<Big>());
const SMALL_SLOTS_OFF: usize = size_of::<Head>().next_multiple_of(align_of::<AtomicU64>());
const BIG_SLOTS_OFF: usize = (BIG_OFF + size_of::<Big>()).next_multiple_of(align_of::<AtomicU64>());

fn layout(cap: usize, words: usize, big: bool) -> (Layout, usize) {
    let mut l = Layout::new::<Head>();
    if big {
        l = l.extend(Layout::new::<Big>()).expect("block too large").0;
    }
    let (l, off) = l
        .extend(Layout::array::<AtomicU64>(cap * words).expect("block too large"))
        .expect("block too large");
    (l.pad_to_align(), off)
}

/// Bytes of a block of `cap` slots: (headers, slots).
pub(crate) fn block_bytes(cap: usize, words: usize) -> (usize, usize) {
    let (l, off) = layout(cap, words, cap > SMALL_MAX);
    (off, l.size() - off)
}

/// The capacity to allocate for at least `cap` slots: rounded up to fill the memory the
/// allocator hands out for it, so the slack becomes free slots. The store's slabs
/// ([`Slab`]) round up to their class size (8-byte steps to 256 bytes, 16 to 1,024: a 2-peer
/// IPv4 swarm gets 3 slots in a 56-byte object); beyond, glibc hands out chunks of
/// `request + 8` rounded up to 16 bytes. Small blocks stay small. Exact under loom.
pub(crate) fn fitted_cap(cap: usize, words: usize) -> usize {
    if cfg!(loom) {
        return cap;
    }
    let big = cap > SMALL_MAX;
    let (l, off) = layout(cap, words, big);
    let usable = Slab::usable_size(l.size());
    let fit = (usable - off) / (8 * words);
    if big { fit } else { fit.min(SMALL_MAX) }
}

/// A new big block's counts: downloads completed so far, and the peers it starts with.
#[derive(Clone, Copy, Default)]
pub(crate) struct StartCounts {
    pub(crate) completed: u32,
    pub(crate) seeders: u32,
    pub(crate) leechers: u32,
}

impl<'g> Block<'g> {
    /// Allocates a block with all slots EMPTY and state [`Next::None`]. A big block starts
    /// with `used = 0` and the given counts; a small one keeps only `completed`. The view lives
    /// as long as the allocating thread's pin: once published, the block is retired through
    /// the epoch; unpublished, it is its allocator's to free.
    pub(crate) fn alloc(
        slab: &Slab,
        info_hash: [u8; 20],
        cap: usize,
        words: usize,
        counts: StartCounts,
        _g: &'g Guard,
    ) -> Block<'g> {
        assert!((1..=u32::MAX as usize).contains(&cap) && (1..=3).contains(&words));
        let big = cap > SMALL_MAX;
        let code = if big { CODE_BIG } else { cap as u64 };
        let b = Self::raw(slab, info_hash, cap, words, code, counts.completed);
        if big {
            // SAFETY: `raw` allocated a big layout: the `Big` header follows `Head`; it is
            // initialised here, before the block is shared.
            unsafe {
                b.big_ptr().write(Big {
                    cap: cap as u32,
                    used: AtomicU32::new(0),
                    seeders: AtomicU32::new(counts.seeders),
                    leechers: AtomicU32::new(counts.leechers),
                })
            };
        }
        b
    }

    /// A slot-less block that marks a freed swarm in the map (a tombstone's referent).
    pub(crate) fn corpse(slab: &Slab, info_hash: [u8; 20], words: usize, _g: &'g Guard) -> Self {
        Self::raw(slab, info_hash, 0, words, CODE_CORPSE, COMPLETED_FROZEN)
    }

    fn raw(
        slab: &Slab,
        info_hash: [u8; 20],
        cap: usize,
        words: usize,
        code: u64,
        completed: u32,
    ) -> Self {
        let big = code == CODE_BIG;
        let (l, off) = layout(cap, words, big);
        debug_assert_eq!(off, if big { BIG_SLOTS_OFF } else { SMALL_SLOTS_OFF });
        let ptr = slab.alloc(l).cast::<Head>();
        let raw = ptr.as_ptr().cast::<u8>();
        assert!(
            (raw.expose_provenance() as u64) >> CODE_SHIFT == 0,
            "block address does not fit 48 bits"
        );
        // SAFETY: `raw` is a fresh allocation of `l`: the head at offset 0 and `cap * words`
        // AtomicU64 at `off` are each initialised exactly once here before the block is shared.
        unsafe {
            ptr.as_ptr().write(Head {
                next: AtomicU64::new(code << CODE_SHIFT),
                info_hash,
                completed: AtomicU32::new(completed),
                #[cfg(loom)]
                code,
            });
            init_slots(raw, off, cap * words);
        }
        Block {
            ptr,
            cap: cap as u32,
            words: words as u8,
            big,
            _guard: PhantomData,
        }
    }

    /// The view of the block at `addr`, for a lifetime the caller chooses: the escape hatch
    /// of the guard-bound views, for the swarm map's and `next`'s decoding (whose lifetime the
    /// caller ties to its guard) and for retire closures and `Drop` (which own the block).
    ///
    /// # Safety
    /// `addr` must come from [`Block::addr`] of a block allocated with the same `words`, and the
    /// block must stay allocated for all of `'a`, with every block its state names (so
    /// [`Block::state`] may be read). Its initialisation must be visible to this thread: it was
    /// published to it with Acquire (or a CAS), or allocated by it.
    #[inline]
    pub(crate) unsafe fn from_addr<'a>(addr: usize, words: usize) -> Block<'a> {
        // SAFETY: per the contract `addr` is a live, non-null block address.
        let ptr: NonNull<Head> =
            unsafe { NonNull::new_unchecked(std::ptr::with_exposed_provenance_mut(addr)) };
        // SAFETY: live block (contract).
        let code = unsafe { ptr.as_ref() }.code();
        let mut b = Block {
            ptr,
            cap: 0,
            words: words as u8,
            big: code == CODE_BIG,
            _guard: PhantomData,
        };
        b.cap = match code {
            // SAFETY: the code says the block is big.
            CODE_BIG => unsafe { b.big_unchecked() }.cap,
            CODE_CORPSE => 0,
            c => c as u32,
        };
        b
    }

    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.ptr.as_ptr().expose_provenance()
    }

    /// Frees the block (to `slab`, the one it was allocated from).
    ///
    /// # Safety
    /// No thread may access the block afterwards (this view and its copies included), and it
    /// is freed at most once.
    pub(crate) unsafe fn free(self, slab: &Slab) {
        let words = usize::from(self.words);
        let code = self.head().code();
        let cap = self.cap as usize;
        let (l, off) = layout(cap, words, self.big);
        // SAFETY: per the contract nobody else uses the block; every element was initialised
        // by `raw`/`alloc` and is dropped once here, then the allocation of layout `l` is
        // released.
        unsafe {
            let raw = self.ptr.as_ptr().cast::<u8>();
            drop_slots(raw, off, cap * words);
            if code == CODE_BIG {
                std::ptr::drop_in_place(self.big_ptr());
            }
            std::ptr::drop_in_place(self.ptr.as_ptr());
            slab.free(self.ptr.cast(), l);
        }
    }

    #[inline]
    pub(crate) fn head(&self) -> &'g Head {
        // SAFETY: the view's invariant: the block stays allocated for `'g`.
        unsafe { self.ptr.as_ref() }
    }

    /// Where a big block's second header lies.
    ///
    /// # Safety
    /// The block must be big (the view's `big`, or its size code, says so).
    #[inline]
    unsafe fn big_ptr(&self) -> *mut Big {
        // SAFETY: per the contract the allocation holds a `Big` at `BIG_OFF`.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(BIG_OFF).cast::<Big>() }
    }
    /// The second header, without checking that there is one.
    ///
    /// # Safety
    /// As for [`Block::big_ptr`]; and the header must be initialised (by [`Block::alloc`],
    /// before the view was shared).
    #[inline]
    unsafe fn big_unchecked(&self) -> &'g Big {
        // SAFETY: per the contract a `Big` is initialised there; the view's invariant keeps
        // the block allocated for `'g`.
        unsafe { &*self.big_ptr() }
    }

    /// The big header, if this is a big block.
    #[inline]
    pub(crate) fn big(&self) -> Option<&'g Big> {
        // SAFETY: `self.big` is set from the size code, fixed at allocation, and `alloc`
        // initialises the header of every big block before it returns it.
        self.big.then(|| unsafe { self.big_unchecked() })
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap as usize
    }

    #[inline]
    pub(crate) fn is_corpse(&self) -> bool {
        self.cap == 0
    }

    #[inline]
    pub(crate) fn info_hash(&self) -> &'g [u8; 20] {
        &self.head().info_hash
    }

    /// True if a migration was started (the state is not [`Next::None`]). Acquire, as
    /// [`Block::state`].
    #[inline]
    pub(crate) fn is_migrating(&self) -> bool {
        self.head().next.load(Ordering::Acquire) & STATE_MASK != NEXT_NONE
    }

    /// The migration state (Acquire: a successor's contents are visible).
    #[inline]
    pub(crate) fn state(&self) -> Next<'g> {
        self.decode(self.head().next.load(Ordering::Acquire) & STATE_MASK)
    }

    /// CAS of the state, keeping the size code; `Err` holds the current state.
    #[inline]
    pub(crate) fn cas_state(&self, from: Next<'g>, to: Next<'g>) -> Result<(), Next<'g>> {
        let code = self.head().code() << CODE_SHIFT;
        self.head()
            .next
            .compare_exchange(
                code | from.bits(),
                code | to.bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|cur| self.decode(cur & STATE_MASK))
    }

    /// The state that `bits` of this block's `next` (loaded with Acquire) encode.
    #[inline]
    fn decode(&self, bits: u64) -> Next<'g> {
        match bits {
            NEXT_NONE => Next::None,
            NEXT_GROW => Next::Grow,
            NEXT_KILL => Next::Kill,
            // SAFETY: a successor published in `next` of a block that lives for `'g`, read
            // with Acquire; a successor is retired only after it was replaced in the map, after
            // its predecessor was, so it outlives every pin that can still reach the
            // predecessor (*Successors reached through `next`*), and so do its own successors.
            a => Next::Successor(unsafe { Block::from_addr(a as usize, usize::from(self.words)) }),
        }
    }

    /// Word `k` of slot `i`, unchecked.
    ///
    /// # Safety
    /// `i < cap` and `k < words`.
    #[inline]
    unsafe fn word(&self, i: usize, k: usize) -> &'g AtomicU64 {
        // SAFETY: the caller's contract, with the block's own `words`.
        unsafe { self.word_of(i, k, usize::from(self.words)) }
    }

    /// [`Block::word`] with the slot size given by the caller: a constant where the family is
    /// known at compile time (a walk's stride then needs no multiplication).
    ///
    /// # Safety
    /// `i < cap`, `k < words`, and `words` is the block's own number of words per slot.
    #[inline(always)]
    unsafe fn word_of(&self, i: usize, k: usize, words: usize) -> &'g AtomicU64 {
        debug_assert!(i < self.cap() && k < words && words == usize::from(self.words));
        let off = if self.big {
            BIG_SLOTS_OFF
        } else {
            SMALL_SLOTS_OFF
        };
        // SAFETY: per the contract `i * words + k < cap * words`, so the element lies inside
        // the slot array that `raw` initialised; the block stays allocated for `'g` (the
        // view's invariant).
        unsafe { slot_word(self.ptr.as_ptr().cast(), off, i * words + k) }
    }

    /// Slot `i`'s meta word, for a family of `words` words per slot.
    ///
    /// # Safety
    /// `i < cap`, and `words` is the block's own number of words per slot.
    #[inline(always)]
    pub(crate) unsafe fn meta_of(self, i: usize, words: usize) -> MetaCell<'g> {
        // SAFETY: the contract; every slot has its meta word at word 0.
        MetaCell::new(unsafe { self.word_of(i, 0, words) })
    }
    /// Slot `i`'s address words (as [`Slot::addr_words`]), for `words` words per slot.
    ///
    /// # Safety
    /// `i < cap`, and `words` is the block's own number of words per slot.
    #[inline(always)]
    pub(crate) unsafe fn addr_words_of(self, i: usize, words: usize) -> [u64; 2] {
        if words == 3 {
            // SAFETY: the contract: slot `i` exists and has 3 words.
            unsafe {
                [
                    self.word_of(i, 1, words).load(Ordering::Relaxed),
                    self.word_of(i, 2, words).load(Ordering::Relaxed),
                ]
            }
        } else {
            [0; 2]
        }
    }
}

impl<'g> Slots for Block<'g> {
    type Slot = Slot<'g>;
    #[inline]
    fn cap(&self) -> usize {
        self.cap as usize
    }
    #[inline]
    unsafe fn slot_unchecked(self, i: usize) -> Slot<'g> {
        Slot { block: self, i }
    }
}

/// Slot `i` of a block, with `i < cap`: made only through [`Slots`] (a scan or a probe), so
/// its words are reached without a bounds check.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'g> {
    block: Block<'g>,
    i: usize,
}

impl<'g> Slot<'g> {
    /// The slot's meta word.
    #[inline]
    pub(crate) fn meta(self) -> MetaCell<'g> {
        // SAFETY: `i < cap` (the type's invariant); every block has a meta word per slot.
        MetaCell::new(unsafe { self.block.word(self.i, 0) })
    }
    /// An IPv6 slot's address words (zeros in an IPv4 block). Relaxed: they are written once,
    /// before the meta word that the caller read with Acquire was published.
    #[inline]
    pub(crate) fn addr_words(self) -> [u64; 2] {
        if self.block.words == 3 {
            // SAFETY: `i < cap` (the type's invariant) and the block has 3 words per slot.
            unsafe {
                [
                    self.block.word(self.i, 1).load(Ordering::Relaxed),
                    self.block.word(self.i, 2).load(Ordering::Relaxed),
                ]
            }
        } else {
            [0; 2]
        }
    }
    /// True if the slot holds address `addr` (always true in an IPv4 block, whose key is in
    /// the meta word); the words are compared one by one.
    #[inline]
    pub(crate) fn has_addr(self, addr: [u64; 2]) -> bool {
        if self.block.words != 3 {
            return true;
        }
        // SAFETY: `i < cap` (the type's invariant) and the block has 3 words per slot.
        unsafe {
            self.block.word(self.i, 1).load(Ordering::Relaxed) == addr[0]
                && self.block.word(self.i, 2).load(Ordering::Relaxed) == addr[1]
        }
    }
    /// Writes an IPv6 slot's address words (Relaxed: the caller then publishes its meta word
    /// with Release). Nothing in an IPv4 block.
    #[inline]
    pub(crate) fn store_addr(self, addr: [u64; 2]) {
        if self.block.words == 3 {
            // SAFETY: `i < cap` (the type's invariant) and the block has 3 words per slot.
            unsafe {
                self.block.word(self.i, 1).store(addr[0], Ordering::Relaxed);
                self.block.word(self.i, 2).store(addr[1], Ordering::Relaxed);
            }
        }
    }
}

/// Capacity for a block that must hold `n` peers: for small blocks (they run full) `n` and
/// half as many again (a swarm's first block holds 1; a growing swarm then migrates at 1, 3, 6
/// and 8 peers instead of at every new one), load 0.8 otherwise; then filled to the allocator
/// chunk.
pub(crate) fn peer_cap_for(n: usize, words: usize) -> usize {
    let cap = if n <= SMALL_MAX {
        (n + n / 2).clamp(1, SMALL_MAX)
    } else {
        n + n / 4 + 1
    };
    fitted_cap(cap, words)
}

/// Slots of a big block that may be used (live + tombstones) before an insert migrates it to
/// a bigger one.
pub(crate) fn peer_max_used(cap: usize) -> usize {
    cap - cap / 10
}
