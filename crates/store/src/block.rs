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
//! [`CODE_CORPSE`] (a slot-less block left behind by a freed swarm). The state goes
//! `NEXT_NONE` → `NEXT_GROW`/`NEXT_KILL` (a migration started; slots are being frozen) →
//! the successor's address, and never back. A swarm's blocks form a chain through `next`; the
//! swarm map points at the newest one.
//!
//! Small blocks keep no `used`, `seeders` or `leechers`: they run full (an insert that finds no
//! empty slot migrates) and their counts come from a scan of at most `SMALL_MAX` slots. This
//! saves 16 bytes on the ~90 % of swarms that hold a handful of peers.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::slab::Slab;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::table::{drop_slots, init_slots, slot_word};

/// Largest capacity of a small block.
pub(crate) const SMALL_MAX: usize = 8;

pub(crate) const NEXT_NONE: u64 = 0;
pub(crate) const NEXT_GROW: u64 = 2;
pub(crate) const NEXT_KILL: u64 = 3;
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

/// A borrowed view of a block. Copyable; valid while the epoch guard it was read under lives.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    ptr: NonNull<Head>,
    cap: u32,
    words: u8,
    big: bool,
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

impl Block {
    /// Allocates a block with all slots EMPTY and state `NEXT_NONE`. A big block starts with
    /// `used = 0` and the given counts; a small one ignores them.
    pub(crate) fn alloc(
        slab: &Slab,
        info_hash: [u8; 20],
        cap: usize,
        words: usize,
        completed: u32,
        seeders: u32,
        leechers: u32,
    ) -> Block {
        assert!((1..=u32::MAX as usize).contains(&cap) && (1..=3).contains(&words));
        let big = cap > SMALL_MAX;
        let code = if big { CODE_BIG } else { cap as u64 };
        let b = Self::raw(slab, info_hash, cap, words, code, completed);
        if big {
            // SAFETY: `raw` allocated a big layout: the `Big` header follows `Head`; it is
            // initialised here, before the block is shared.
            unsafe {
                b.big_ptr().write(Big {
                    cap: cap as u32,
                    used: AtomicU32::new(0),
                    seeders: AtomicU32::new(seeders),
                    leechers: AtomicU32::new(leechers),
                })
            };
        }
        b
    }

    /// A slot-less block that marks a freed swarm in the map (a tombstone's referent).
    pub(crate) fn corpse(slab: &Slab, info_hash: [u8; 20], words: usize) -> Block {
        Self::raw(slab, info_hash, 0, words, CODE_CORPSE, COMPLETED_FROZEN)
    }

    fn raw(
        slab: &Slab,
        info_hash: [u8; 20],
        cap: usize,
        words: usize,
        code: u64,
        completed: u32,
    ) -> Block {
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
        }
    }

    /// # Safety
    /// `addr` must come from [`Block::addr`] of a block allocated with the same `words`, not yet
    /// freed, and published to this thread with Acquire (or allocated by it).
    #[inline]
    pub(crate) unsafe fn from_addr(addr: usize, words: usize) -> Block {
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
        };
        b.cap = match code {
            CODE_BIG => b.big_ref().cap,
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
    /// No thread may access the block afterwards, and it is freed at most once.
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
    pub(crate) fn head(&self) -> &Head {
        // SAFETY: a `Block` is only built for a live allocation (see `from_addr`), and callers
        // keep it alive with an epoch guard for as long as they use the view.
        unsafe { self.ptr.as_ref() }
    }

    #[inline]
    fn big_ptr(&self) -> *mut Big {
        let off = BIG_OFF;
        // SAFETY: only called on big blocks, whose allocation holds a `Big` at `off`.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(off).cast::<Big>() }
    }
    #[inline]
    fn big_ref(&self) -> &Big {
        // SAFETY: callers check `self.big`; the `Big` header was initialised by `alloc`.
        unsafe { &*self.big_ptr() }
    }

    /// The big header, if this is a big block.
    #[inline]
    pub(crate) fn big(&self) -> Option<&Big> {
        self.big.then(|| self.big_ref())
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
    pub(crate) fn info_hash(&self) -> &[u8; 20] {
        &self.head().info_hash
    }

    /// The migration state or successor address (Acquire: a successor's contents are visible).
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        self.head().next.load(Ordering::Acquire) & STATE_MASK
    }

    /// CAS of the state, keeping the size code; `Err` holds the current state.
    #[inline]
    pub(crate) fn cas_state(&self, from: u64, to: u64) -> Result<(), u64> {
        let code = self.head().code() << CODE_SHIFT;
        self.head()
            .next
            .compare_exchange(code | from, code | to, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|cur| cur & STATE_MASK)
    }

    /// Word `k` of slot `i` (`k < words`, `i < cap`).
    #[inline]
    pub(crate) fn word(&self, i: usize, k: usize) -> &AtomicU64 {
        let words = usize::from(self.words);
        debug_assert!(i < self.cap() && k < words);
        let off = if self.big {
            BIG_SLOTS_OFF
        } else {
            SMALL_SLOTS_OFF
        };
        // SAFETY: `i * words + k < cap * words`, so the element lies inside the slot array that
        // `raw` initialised; the reference lives no longer than `self`'s guard.
        unsafe { slot_word(self.ptr.as_ptr().cast(), off, i * words + k) }
    }
}

/// Capacity for a block that must hold `n` peers: exact for small blocks (they run full),
/// load 0.8 otherwise; then filled to the allocator chunk.
pub(crate) fn peer_cap_for(n: usize, words: usize) -> usize {
    let cap = if n <= SMALL_MAX {
        n.max(1)
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
