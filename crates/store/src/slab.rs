//! The store's own memory for blocks: size-classed slabs, shared by all threads, lock-free.
//!
//! Why: with the system allocator the store's ~14 requested bytes per IPv4 peer became 21–25
//! bytes of RSS with one worker per core (glibc gives each thread its own arena) and 31 after
//! a churn phase (frees scattered over chunks of every size). Here every block size has its own
//! class, so a freed block is reused by the next block of its size, whichever thread frees or
//! allocates, and a chunk whose objects are all free gives its pages back to the kernel.
//!
//! Layout:
//! * a **region** is 8 MiB of address space from the system allocator; untouched pages cost
//!   no memory. Chunks are cut from the current region by an atomic bump, each aligned to its
//!   size; regions are freed when the slab is dropped;
//! * a **chunk** holds objects of one class: a header (free count, bitmap of free objects)
//!   and the objects, 8-byte aligned. It is 32 KiB for objects up to 1 KiB, and up to 1 MiB
//!   (at least 7 objects) for larger ones. The chunk of an object is its address rounded
//!   down to its class's chunk size;
//! * a **class** is an object size: 32 to 128 bytes in steps of 8, then eight sizes per
//!   doubling up to 128 KiB (93 classes; a block's capacity is rounded up to fill its class,
//!   see `fitted_cap`, so the rounding becomes free slots). Larger
//!   blocks get their own pages from the kernel (`mmap`, returned by `munmap`), and map tables
//!   use the system allocator. A class keeps its chunks in an append-only directory and a hint
//!   of the chunk that last had room. Only touched pages are resident, so a class's partly
//!   used chunk costs what its objects use.
//!
//! The protocol of a chunk (`free` = free objects not reserved, `bits` = free objects):
//! * allocate: reserve one object by decrementing `free` (CAS, never below 0, never while
//!   RELEASING), then claim any set bit (CAS); there is one, since a free sets its bit before
//!   it increments `free`. The claim is Acquire: it follows the free's Release, so the object's
//!   previous life happens-before its next one;
//! * free: set the bit (Release), increment `free`; the one that brings `free` to the number of
//!   objects may CAS it to `RELEASING`, drop the object pages (`madvise(MADV_DONTNEED)`: they
//!   read as zeros afterwards; the first page, which holds the header, is kept), then clear
//!   the flag. No allocator can hold or reserve an object of the chunk meanwhile: every object
//!   was free and unreserved when the CAS succeeded, and reservations wait for the flag;
//! * bitmaps have no ABA: a freed object can be handed out again at once, so unpublished
//!   blocks are freed immediately, and published ones after the epoch as before.
//!
//! Deferred frees run after the store may be gone (crossbeam runs them later), so retired
//! blocks hold an `Arc<Slab>`: the regions go when the last reference does.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc, handle_alloc_error};
use std::ptr::{NonNull, null_mut};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// Size (and alignment) of the chunks of classes up to 1 KiB.
const CHUNK: usize = 32 * 1024;
/// Largest chunk (classes of large objects).
const MAX_CHUNK: usize = 1 << 20;
/// Address space per region.
const REGION: usize = 8 << 20;
/// Largest object a class holds; larger blocks are mapped on their own.
pub(crate) const MAX_OBJECT: usize = 128 * 1024;
/// Bitmap words of a chunk: enough for objects of the smallest class (32 bytes).
const BITMAP_WORDS: usize = (CHUNK / 32).div_ceil(64);
/// Chunks per directory page, and directory pages per class: 1M chunks (32 GiB) per class.
const DIR_PAGE: usize = 4096;
const DIR_PAGES: usize = 256;
/// Classes: 32..=128 bytes by 8 (13 exact sizes: most blocks are small), then eight per
/// doubling (12.5 % apart) up to 128 KiB. Few classes above the smallest sizes matter: a
/// block compacted or grown to a nearby size lands in the same class, so freed objects are
/// reused rather than left in pools of sizes nobody asks for any more.
const LINEAR_CLASSES: usize = 13;
const CLASSES: usize = LINEAR_CLASSES + 10 * 8;
/// `free` while a chunk's pages are being dropped.
const RELEASING: u32 = 1 << 31;

/// The object size of class `c`.
const fn class_size(c: usize) -> usize {
    if c < LINEAR_CLASSES {
        32 + 8 * c
    } else {
        let (d, k) = ((c - LINEAR_CLASSES) / 8, (c - LINEAR_CLASSES) % 8);
        (128 << d) + (k + 1) * (16 << d)
    }
}

/// The chunk size (and alignment) of class `c`: 32 KiB up to 1 KiB objects, else room for at
/// least 7 objects.
const fn chunk_size(c: usize) -> usize {
    if class_size(c) <= 1024 {
        CHUNK
    } else {
        let want = (8 * class_size(c)).next_power_of_two();
        if want > MAX_CHUNK { MAX_CHUNK } else { want }
    }
}

/// Whether blocks come from the slabs. Not under loom (its models would explore the slab's
/// atomics too; the store's protocol is what they check), nor with `--cfg fjord_system_alloc`,
/// which `.ci/valgrind-store` sets so that memcheck sees every block's allocation and free
/// (a premature free into a slab would be invisible to it).
const ENABLED: bool = !cfg!(any(loom, fjord_system_alloc));

/// The class of objects of `size` bytes (rounded up), or `None` beyond [`MAX_OBJECT`] (or
/// when the slabs are off).
pub(crate) const fn class_of(size: usize) -> Option<usize> {
    if !ENABLED || size > MAX_OBJECT {
        None
    } else if size <= 32 {
        Some(0)
    } else if size <= 128 {
        Some((size - 32).div_ceil(8))
    } else {
        // (128 << d, 256 << d]: eight classes of 16 << d bytes.
        let d = (usize::BITS - 1 - ((size - 1) >> 7).leading_zeros()) as usize;
        let k = (size - (128 << d)).div_ceil(16 << d) - 1;
        Some(LINEAR_CLASSES + d * 8 + k)
    }
}

#[repr(C)]
struct Chunk {
    /// Free objects not reserved by an allocator, with [`RELEASING`] while pages are dropped.
    free: AtomicU32,
    objects: u32,
    size: u32,
    /// Offset of object 0 from the chunk's start.
    first: u32,
    /// This chunk's index in its class's directory.
    index: u32,
    /// Bit `i` set: object `i` is free.
    bits: [AtomicU64; BITMAP_WORDS],
}

const FIRST: usize = size_of::<Chunk>().next_multiple_of(16);

impl Chunk {
    /// Reserves one object: false if none is free (or the chunk is being released).
    fn reserve(&self) -> bool {
        let mut v = self.free.load(Relaxed);
        loop {
            if v == 0 || v & RELEASING != 0 {
                return false;
            }
            match self.free.compare_exchange_weak(v, v - 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(x) => v = x,
            }
        }
    }

    /// Claims a free object after a successful [`Chunk::reserve`]; returns its address.
    fn claim(&self) -> NonNull<u8> {
        loop {
            for (w, word) in self.bits.iter().enumerate() {
                let mut v = word.load(Relaxed);
                while v != 0 {
                    let b = v.trailing_zeros() as usize;
                    match word.compare_exchange_weak(v, v & !(1 << b), Acquire, Relaxed) {
                        Ok(_) => {
                            let off = self.first as usize + (w * 64 + b) * self.size as usize;
                            let base = std::ptr::from_ref(self).cast::<u8>().cast_mut();
                            // SAFETY: object `w * 64 + b` < `objects` lies inside the chunk.
                            return unsafe { NonNull::new_unchecked(base.add(off)) };
                        }
                        Err(x) => v = x,
                    }
                }
            }
            // A reservation guarantees a set bit; a concurrent claim took the one we saw.
            std::hint::spin_loop();
        }
    }

    /// Gives object `p` back; the last one out drops the chunk's object pages.
    ///
    /// # Safety
    /// `p` was claimed from this chunk and is not used any more.
    unsafe fn give_back(&self, p: *mut u8, chunk_len: usize, hint: &AtomicUsize) {
        let base = std::ptr::from_ref(self) as usize;
        let i = (p as usize - base - self.first as usize) / self.size as usize;
        if self.size as usize > PAGE {
            // The pages wholly inside the object are its alone, and it is still ours (its
            // bit is not set yet): drop them now.
            // SAFETY: per the contract nobody uses the object any more.
            unsafe { drop_range(p as usize, p as usize + self.size as usize) };
        }
        self.bits[i / 64].fetch_or(1 << (i % 64), Release);
        let freed = self.free.fetch_add(1, AcqRel) + 1;
        hint.fetch_min(self.index as usize, Relaxed);
        if freed == self.objects
            && self
                .free
                .compare_exchange(self.objects, self.objects | RELEASING, Acquire, Relaxed)
                .is_ok()
        {
            // SAFETY: every object of the chunk is free and unreserved, and stays so while
            // RELEASING is set; the header's page is not dropped.
            unsafe { drop_pages(base, chunk_len) };
            self.free.store(self.objects, Release);
        }
    }
}

/// Drops the pages of chunk `base` after its first page (the header's): they read as zeros
/// afterwards, and cost no memory until written again.
///
/// # Safety
/// Nothing may be stored in those pages that anyone reads again without writing it first.
unsafe fn drop_pages(base: usize, len: usize) {
    // SAFETY: forwarded.
    unsafe { drop_range(base + FIRST, base + len) };
}

const PAGE: usize = 4096;

/// Drops the whole pages inside `start..end` (see [`drop_pages`]).
///
/// # Safety
/// As for [`drop_pages`], for that range of a live chunk.
unsafe fn drop_range(start: usize, end: usize) {
    #[cfg(target_os = "linux")]
    {
        let (start, end) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if start < end {
            // SAFETY: a page-aligned range inside a live chunk of ours (per the contract its
            // contents may be discarded); madvise only drops them.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, end);
}

struct Class {
    size: usize,
    /// Its chunks' size and alignment.
    chunk: usize,
    /// Chunks reserved in `dir` (some may not be stored yet).
    count: AtomicUsize,
    /// No chunk below this index has a free object (approximately: allocation is lowest
    /// chunk first, so that the high chunks drain, empty and give their pages back).
    hint: AtomicUsize,
    dir: Box<[AtomicPtr<[AtomicPtr<Chunk>; DIR_PAGE]>]>,
}

/// A region: address space chunks are cut from.
struct Region {
    base: *mut u8,
    /// Bytes handed out as chunks.
    used: AtomicUsize,
    /// The previous region (for `Drop`).
    older: *mut Region,
}

/// The slabs of one store (see the module documentation).
pub(crate) struct Slab {
    classes: Box<[Class]>,
    region: AtomicPtr<Region>,
}

// SAFETY: the raw pointers are owned by the slab (regions and directory pages) and only ever
// accessed through atomics or under the protocol above.
unsafe impl Send for Slab {}
// SAFETY: as above: every shared mutation is atomic.
unsafe impl Sync for Slab {}

const REGION_LAYOUT: Layout = match Layout::from_size_align(REGION, MAX_CHUNK) {
    Ok(l) => l,
    Err(_) => panic!("region layout"),
};

impl Slab {
    /// The bytes a request of `size` gets, so that `fitted_cap` turns the slack into slots:
    /// its class's object size, or beyond the classes glibc's chunk (`size + 8` rounded up to
    /// 16, at least 32) minus its 8-byte header.
    pub(crate) const fn usable_size(size: usize) -> usize {
        match class_of(size) {
            Some(c) => class_size(c),
            None => {
                let chunk = (size + 8).next_multiple_of(16);
                (if chunk < 32 { 32 } else { chunk }) - 8
            }
        }
    }

    pub(crate) fn new() -> Slab {
        Slab {
            classes: (0..CLASSES)
                .map(|c| Class {
                    size: class_size(c),
                    chunk: chunk_size(c),
                    count: AtomicUsize::new(0),
                    hint: AtomicUsize::new(0),
                    dir: (0..DIR_PAGES).map(|_| AtomicPtr::new(null_mut())).collect(),
                })
                .collect(),
            region: AtomicPtr::new(null_mut()),
        }
    }

    /// Memory for `l` (size ≥ 1, align ≤ 8): from its class, or pages of its own beyond
    /// [`MAX_OBJECT`].
    pub(crate) fn alloc(&self, l: Layout) -> NonNull<u8> {
        debug_assert!(l.align() <= 8 && l.size() > 0);
        let Some(c) = class_of(l.size()) else {
            return large::alloc(l);
        };
        let class = &self.classes[c];
        let n = class.count.load(Acquire);
        let start = class.hint.load(Relaxed);
        for i in start..n {
            if let Some(chunk) = self.chunk(class, i)
                && chunk.reserve()
            {
                if i != start {
                    // Chunks start..i were full; unless a free lowered the hint meanwhile.
                    let _ = class.hint.compare_exchange(start, i, Relaxed, Relaxed);
                }
                return chunk.claim();
            }
        }
        self.grow(class, start)
    }

    /// Test/debug: (bytes of chunks cut, bytes of objects in use, bytes of objects free).
    pub(crate) fn usage(&self) -> (usize, usize, usize) {
        self.usage_by_class()
            .iter()
            .fold((0, 0, 0), |a, &(_, c, u, f)| (a.0 + c, a.1 + u, a.2 + f))
    }

    /// Test/debug: per class, (object size, bytes of chunks, bytes in use, bytes free).
    pub(crate) fn usage_by_class(&self) -> Vec<(usize, usize, usize, usize)> {
        self.classes
            .iter()
            .map(|class| {
                let (mut chunks, mut used, mut free) = (0, 0, 0);
                for i in 0..class.count.load(Acquire) {
                    if let Some(c) = self.chunk(class, i) {
                        chunks += class.chunk;
                        let f = (c.free.load(Relaxed) & !RELEASING) as usize;
                        used += (c.objects as usize - f) * class.size;
                        free += f * class.size;
                    }
                }
                (class.size, chunks, used, free)
            })
            .collect()
    }

    /// Gives memory from [`Slab::alloc`] back.
    ///
    /// # Safety
    /// `p` came from `alloc` with layout `l` on this slab and is not used any more.
    pub(crate) unsafe fn free(&self, p: NonNull<u8>, l: Layout) {
        let Some(c) = class_of(l.size()) else {
            // SAFETY: per the contract, from `large::alloc` with this layout.
            unsafe { large::free(p, l) };
            return;
        };
        let class = &self.classes[c];
        let chunk = (p.as_ptr() as usize & !(class.chunk - 1)) as *const Chunk;
        // SAFETY: an object of a class lives in a chunk, whose header starts at the address
        // rounded down to the class's chunk size; chunks live as long as the slab.
        unsafe { (*chunk).give_back(p.as_ptr(), class.chunk, &class.hint) };
    }

    fn chunk(&self, class: &Class, i: usize) -> Option<&Chunk> {
        let page = class.dir[i / DIR_PAGE].load(Acquire);
        if page.is_null() {
            return None;
        }
        // SAFETY: directory pages are allocated once, published with Release, freed in Drop.
        let p = unsafe { &(*page)[i % DIR_PAGE] }.load(Acquire);
        // SAFETY: chunk headers are initialised before they are published with Release.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// A new chunk for `class`, with one object claimed for the caller; `hint` is the hint
    /// the caller's scan started from (every chunk from it was full).
    fn grow(&self, class: &Class, hint: usize) -> NonNull<u8> {
        let base = self.cut_chunk(class.chunk);
        let objects = (class.chunk - FIRST) / class.size;
        let chunk = base.cast::<Chunk>();
        // SAFETY: `base` is a fresh, aligned piece of a region of the chunk's size that nothing
        // else uses; the header is written once here before the chunk is published.
        unsafe {
            chunk.as_ptr().write(Chunk {
                free: AtomicU32::new(objects as u32 - 1),
                objects: objects as u32,
                size: class.size as u32,
                first: FIRST as u32,
                index: 0,
                bits: std::array::from_fn(|w| {
                    let lo = w * 64;
                    let n = objects.saturating_sub(lo).min(64);
                    // Object 0 is the caller's.
                    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                    AtomicU64::new(if w == 0 { all & !1 } else { all })
                }),
            });
        }
        let i = class.count.fetch_add(1, AcqRel);
        assert!(i < DIR_PAGE * DIR_PAGES, "slab class directory full");
        // SAFETY: the header was written above; nothing else knows the chunk yet.
        unsafe { (*chunk.as_ptr()).index = i as u32 };
        let slot = &class.dir[i / DIR_PAGE];
        let mut page = slot.load(Acquire);
        if page.is_null() {
            let l = Layout::new::<[AtomicPtr<Chunk>; DIR_PAGE]>();
            // SAFETY: non-zero size; all-zero bytes are null AtomicPtrs.
            let fresh = unsafe { alloc_zeroed(l) }.cast::<[AtomicPtr<Chunk>; DIR_PAGE]>();
            if fresh.is_null() {
                handle_alloc_error(l);
            }
            match slot.compare_exchange(null_mut(), fresh, AcqRel, Acquire) {
                Ok(_) => page = fresh,
                Err(cur) => {
                    // SAFETY: never published.
                    unsafe { dealloc(fresh.cast(), l) };
                    page = cur;
                }
            }
        }
        // SAFETY: a published directory page; the slot `i` is ours (fetch_add above).
        unsafe { &(*page)[i % DIR_PAGE] }.store(chunk.as_ptr(), Release);
        let _ = class.hint.compare_exchange(hint, i, Relaxed, Relaxed);
        // SAFETY: object 0 lies inside the chunk.
        unsafe { NonNull::new_unchecked(base.as_ptr().add(FIRST)) }
    }

    /// A fresh piece of address space of `len` bytes (a power of two ≤ [`MAX_CHUNK`]), aligned
    /// to `len`.
    fn cut_chunk(&self, len: usize) -> NonNull<u8> {
        loop {
            let r = self.region.load(Acquire);
            if !r.is_null() {
                // SAFETY: regions are freed only in Drop.
                let region = unsafe { &*r };
                let mut off = region.used.load(Relaxed);
                loop {
                    let start = off.next_multiple_of(len);
                    if start + len > REGION {
                        break;
                    }
                    match region
                        .used
                        .compare_exchange_weak(off, start + len, Relaxed, Relaxed)
                    {
                        // SAFETY: inside the region; aligned to `len` since the region is
                        // aligned to MAX_CHUNK, a multiple of `len`.
                        Ok(_) => return unsafe { NonNull::new_unchecked(region.base.add(start)) },
                        Err(x) => off = x,
                    }
                }
            }
            // SAFETY: non-zero size.
            let base = unsafe { alloc(REGION_LAYOUT) };
            if base.is_null() {
                handle_alloc_error(REGION_LAYOUT);
            }
            let fresh = Box::into_raw(Box::new(Region {
                base,
                used: AtomicUsize::new(0),
                older: r,
            }));
            if self
                .region
                .compare_exchange(r, fresh, AcqRel, Acquire)
                .is_err()
            {
                // SAFETY: never published.
                unsafe {
                    dealloc(base, REGION_LAYOUT);
                    drop(Box::from_raw(fresh));
                }
            }
        }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        for class in self.classes.iter() {
            for page in class.dir.iter() {
                let p = page.load(Relaxed);
                if !p.is_null() {
                    // SAFETY: allocated in `grow` with this layout, freed once here.
                    unsafe { dealloc(p.cast(), Layout::new::<[AtomicPtr<Chunk>; DIR_PAGE]>()) };
                }
            }
        }
        let mut r = self.region.load(Relaxed);
        while !r.is_null() {
            // SAFETY: every region was boxed in `cut_chunk` and is freed once here; `&mut self`:
            // no block of the slab is used any more.
            let region = unsafe { Box::from_raw(r) };
            // SAFETY: allocated in `cut_chunk` with this layout; freed once, with its box.
            unsafe { dealloc(region.base, REGION_LAYOUT) };
            r = region.older;
        }
    }
}

/// Blocks beyond [`MAX_OBJECT`]: pages of their own, given back to the kernel when freed (a
/// growing big swarm leaves no holes behind). `mmap` on Linux, the system allocator elsewhere.
mod large {
    use std::alloc::{Layout, handle_alloc_error};
    use std::ptr::NonNull;

    #[cfg(target_os = "linux")]
    pub(super) fn alloc(l: Layout) -> NonNull<u8> {
        if !super::ENABLED {
            // SAFETY: non-zero size.
            let p = unsafe { std::alloc::alloc(l) };
            return NonNull::new(p).unwrap_or_else(|| handle_alloc_error(l));
        }
        // SAFETY: an anonymous private mapping: no file, no fixed address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                l.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            handle_alloc_error(l);
        }
        // SAFETY: mmap succeeded: a page-aligned, non-null mapping of `l.size()` bytes.
        unsafe { NonNull::new_unchecked(p.cast()) }
    }

    /// # Safety
    /// `p` came from [`alloc`] with layout `l` and is not used any more.
    #[cfg(target_os = "linux")]
    pub(super) unsafe fn free(p: NonNull<u8>, l: Layout) {
        if !super::ENABLED {
            // SAFETY: per the contract, from `std::alloc::alloc` with `l`.
            unsafe { std::alloc::dealloc(p.as_ptr(), l) };
            return;
        }
        // SAFETY: per the contract, our own mapping of `l.size()` bytes, unmapped once.
        let r = unsafe { libc::munmap(p.as_ptr().cast(), l.size()) };
        debug_assert_eq!(r, 0, "munmap of a block");
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn alloc(l: Layout) -> NonNull<u8> {
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc(l) };
        NonNull::new(p).unwrap_or_else(|| handle_alloc_error(l))
    }

    /// # Safety
    /// `p` came from [`alloc`] with layout `l` and is not used any more.
    #[cfg(not(target_os = "linux"))]
    pub(super) unsafe fn free(p: NonNull<u8>, l: Layout) {
        // SAFETY: per the contract.
        unsafe { std::alloc::dealloc(p.as_ptr(), l) };
    }
}

#[cfg(all(test, not(fjord_system_alloc)))]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_in_order() {
        let mut last = 0;
        for c in 0..CLASSES {
            assert!(class_size(c) > last, "class {c}");
            assert_eq!(class_of(class_size(c)), Some(c), "size {}", class_size(c));
            assert_eq!(class_of(last + 1), Some(c), "size {}", last + 1);
            assert_eq!(class_size(c) % 8, 0);
            assert!((chunk_size(c) - FIRST) / class_size(c) >= 7, "class {c}");
            last = class_size(c);
        }
        assert_eq!(last, MAX_OBJECT);
        assert_eq!(class_of(MAX_OBJECT + 1), None);
        // Rounding costs at most 1/8.
        for size in 129..=MAX_OBJECT {
            assert!(rounded(size) * 8 <= size * 9, "{size}");
        }
    }

    fn rounded(size: usize) -> usize {
        class_of(size).map_or(size, class_size)
    }

    /// Threads allocate and free objects of random sizes, each filled with its owner's
    /// pattern and checked before it is freed: no object is handed out twice.
    #[test]
    fn concurrent_allocations_never_overlap() {
        let slab = Slab::new();
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let slab = &slab;
                sc.spawn(move || {
                    let mut x = 0x9e37_79b9 ^ t;
                    let mut held: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
                    for i in 0..20_000u32 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let size =
                            [40, 56, 96, 200, 1_000, 3_000, 40_000, 200_000][(x % 8) as usize];
                        let l = Layout::from_size_align(size, 8).unwrap();
                        let p = slab.alloc(l);
                        let tag = (t as u8) ^ (i as u8);
                        // SAFETY: a fresh object of `size` bytes, ours alone.
                        unsafe { p.as_ptr().write_bytes(tag, size) };
                        held.push((p, l, tag));
                        if held.len() > 64 || x % 3 == 0 {
                            let (p, l, tag) = held.swap_remove((x as usize / 8) % held.len());
                            // SAFETY: ours, not freed yet.
                            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), l.size()) };
                            assert!(bytes.iter().all(|&b| b == tag), "object overwritten");
                            // SAFETY: from `alloc` with `l`, not used any more.
                            unsafe { slab.free(p, l) };
                        }
                    }
                    for (p, l, _) in held {
                        // SAFETY: as above.
                        unsafe { slab.free(p, l) };
                    }
                });
            }
        });
        let (_, used, _) = slab.usage();
        assert_eq!(used, 0, "every object was given back");
    }

    /// A chunk whose objects are all free drops its pages (they read as zeros), and its
    /// objects are handed out again.
    #[test]
    #[cfg(target_os = "linux")]
    fn an_empty_chunk_gives_its_pages_back() {
        let slab = Slab::new();
        let l = Layout::from_size_align(64, 8).unwrap();
        let per_chunk = (CHUNK - FIRST) / 64;
        let ps: Vec<_> = (0..per_chunk).map(|_| slab.alloc(l)).collect();
        for p in &ps {
            // SAFETY: ours.
            unsafe { p.as_ptr().write_bytes(0xAB, 64) };
        }
        for p in &ps {
            // SAFETY: from `alloc`, not used any more.
            unsafe { slab.free(*p, l) };
        }
        // The last object of the chunk lies in a dropped page: it reads as zeros now.
        let last = *ps.iter().max().unwrap();
        let again: Vec<_> = (0..per_chunk).map(|_| slab.alloc(l)).collect();
        assert!(again.contains(&last), "the chunk is reused");
        // SAFETY: handed out again; we only read it.
        let b = unsafe { std::slice::from_raw_parts(last.as_ptr(), 64) };
        assert!(b.iter().all(|&x| x == 0), "the page was dropped");
        assert_eq!(slab.usage().0, CHUNK, "one chunk, reused");
    }
}
