//! The `primitive` layer: std atomics normally, loom's under `cfg(loom)`, plus the
//! reclamation shim (crossbeam-epoch normally; under loom retired memory is leaked, because
//! crossbeam-epoch does not run inside a loom model).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Exponential back-off for the one wait left in the store (see `Family::copy_peer`) and the
/// bounded wait before an IPv6 inserter cancels a stalled reservation: crossbeam's `Backoff`
/// (spins, then yields the CPU), and under loom a yield so the model can schedule the other
/// thread (`is_completed` after one step there, to keep the models small).
pub(crate) struct Backoff {
    #[cfg(not(loom))]
    inner: crossbeam_utils::Backoff,
    #[cfg(loom)]
    steps: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            #[cfg(not(loom))]
            inner: crossbeam_utils::Backoff::new(),
            #[cfg(loom)]
            steps: 0,
        }
    }
    /// Waits a little longer than last time: spins first, then yields the CPU.
    #[inline]
    pub(crate) fn snooze(&mut self) {
        #[cfg(not(loom))]
        self.inner.snooze();
        #[cfg(loom)]
        {
            self.steps += 1;
            loom::thread::yield_now();
        }
    }
    /// True once waiting has gone on long enough that the other thread is probably not
    /// running (crossbeam: after ~10 steps, a few microseconds).
    #[inline]
    pub(crate) fn is_completed(&self) -> bool {
        #[cfg(not(loom))]
        return self.inner.is_completed();
        #[cfg(loom)]
        return self.steps >= 1;
    }
}

#[cfg(not(loom))]
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{Guard, pin};

    /// Runs what this thread and the global queue hold of retired memory whose epoch has
    /// passed (each flush moves the local garbage to the global queue and collects some).
    pub(crate) fn drain() {
        for _ in 0..256 {
            pin().flush();
        }
    }

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
    //! Under loom there is no epoch: a guard is a token and retired memory is kept until the
    //! store is dropped. Loom runs every thread of a model on the test's one OS thread, and a
    //! store is dropped only once the last `Arc` of it is gone, after every model thread that
    //! could still hold a reference into it has finished; so its `drop` (which calls `drain`)
    //! frees what it retired. Without this, every execution of a model would leak the tables
    //! its migrations and shrinks retired (gigabytes over a model's thousands of executions).
    use std::cell::RefCell;

    type Retired = Vec<Box<dyn FnOnce()>>;
    std::thread_local! {
        static RETIRED: RefCell<Retired> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) struct Guard;
    pub(crate) fn pin() -> Guard {
        Guard
    }
    /// Runs everything retired on this OS thread (the model's threads) so far.
    pub(crate) fn drain() {
        let retired = RETIRED.with(|r| std::mem::take(&mut *r.borrow_mut()));
        for free in retired {
            free();
        }
    }
    /// # Safety
    /// Same contract as the non-loom version; `free` runs at the next `drain`.
    pub(crate) unsafe fn retire(_guard: &Guard, free: impl FnOnce() + 'static) {
        RETIRED.with(|r| r.borrow_mut().push(Box::new(free)));
    }
}
