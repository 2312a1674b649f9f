//! The `primitive` layer: std atomics normally, loom's under `cfg(loom)`, plus the
//! reclamation shim (crossbeam-epoch normally; under loom retired memory is leaked, because
//! crossbeam-epoch does not run inside a loom model).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Called in the (short) waits on a v6 slot that another thread has reserved but not yet
/// published. Under loom it yields so the model can schedule the publisher.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

#[cfg(not(loom))]
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{Guard, pin};

    /// Runs `free` once no thread can still hold a reference obtained before this call.
    ///
    /// # Safety
    /// The memory `free` releases must already be unreachable for threads that pin after
    /// this call (unlinked from every shared location), and `free` must be called at most once
    /// for it.
    pub(crate) unsafe fn retire(guard: &Guard, free: impl FnOnce() + 'static) {
        // SAFETY: forwarded contract: the object is unlinked, so only threads pinned before
        // now can reach it, and crossbeam runs `free` after all of them have unpinned.
        unsafe { guard.defer_unchecked(free) }
    }
}

#[cfg(loom)]
pub(crate) mod epoch {
    /// Under loom there is no epoch: a guard is a token and retired memory is leaked.
    pub(crate) struct Guard;
    pub(crate) fn pin() -> Guard {
        Guard
    }
    /// # Safety
    /// Same contract as the non-loom version; this shim never frees (leaks) the memory.
    pub(crate) unsafe fn retire(_guard: &Guard, free: impl FnOnce() + 'static) {
        std::mem::forget(free);
    }
}
