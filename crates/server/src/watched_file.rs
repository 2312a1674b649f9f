//! A value loaded from a file and reloaded when the file changes, the previous value staying
//! in force when a reload fails: what the access list and the torrent catalogue share.
//!
//! The value lives in an `ArcSwap`: readers load it without a lock (workers keep an
//! `arc_swap::Cache` of the access list, one atomic load per check), a reload builds the new
//! value off to the side and swaps the pointer. Reloads are serialised by a mutex that also
//! remembers what the file looked like (modification time and length, or why it could not be
//! examined) at the last attempt, so a poll reloads only a changed file and a broken file is
//! reported once, not at every poll.
//!
//! A file being rewritten in place (truncated, then written) must not be loaded half-written:
//! a poll ([`WatchedFile::poll`]) reloads a changed file only once it has looked the same
//! (modification time and length) at two polls in a row, so a reload waits for a file that has
//! been stable for one poll interval; the poll itself never sleeps. The read itself checks
//! that the file did not change while it was read ([`crate::access_list::read_list_file`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// What a file looked like: (mtime, length), or why it could not be examined (e.g. its
/// directory became unreadable after privileges were dropped).
type FileStamp = Result<(std::time::SystemTime, u64), std::io::ErrorKind>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).map_err(|e| e.kind())?;
    Ok((m.modified().map_err(|e| e.kind())?, m.len()))
}

/// A value from a file (or a fixed value when there is no file); see the module docs.
#[derive(Debug)]
pub struct WatchedFile<T> {
    current: ArcSwap<T>,
    path: Option<PathBuf>,
    /// Successful loads so far (1 after the initial load). Lets tests wait for a reload.
    generation: AtomicU64,
    /// Failed reloads (the previous value stayed in force).
    failures: AtomicU64,
    /// Whether the most recent load attempt failed (a fixed file's next reload clears it).
    last_reload_failed: AtomicBool,
    /// Serialises reloads (cold path only) and remembers the file's stamps.
    reload_lock: parking_lot::Mutex<Stamps>,
}

/// What a [`WatchedFile`] remembers of its file.
#[derive(Debug, Default)]
struct Stamps {
    /// The file's stamp at the last load attempt.
    attempted: Option<FileStamp>,
    /// A changed stamp seen at the last poll, not loaded yet (it must be seen again).
    pending: Option<FileStamp>,
}

impl<T> WatchedFile<T> {
    /// Loads `path` with `load` (an error here should stop the start), or serves `fixed` when
    /// there is no file.
    pub fn new<E>(
        path: Option<PathBuf>,
        fixed: T,
        load: impl FnOnce(&Path) -> Result<T, E>,
    ) -> Result<Self, E> {
        let (value, st) = match &path {
            Some(p) => {
                let st = stamp(p);
                (load(p)?, Some(st))
            }
            None => (fixed, None),
        };
        Ok(WatchedFile {
            current: ArcSwap::from_pointee(value),
            path,
            generation: AtomicU64::new(1),
            failures: AtomicU64::new(0),
            last_reload_failed: AtomicBool::new(false),
            reload_lock: parking_lot::Mutex::new(Stamps {
                attempted: st,
                pending: None,
            }),
        })
    }

    /// A fixed value, never reloaded.
    pub fn fixed(value: T) -> Self {
        WatchedFile {
            current: ArcSwap::from_pointee(value),
            path: None,
            generation: AtomicU64::new(1),
            failures: AtomicU64::new(0),
            last_reload_failed: AtomicBool::new(false),
            reload_lock: parking_lot::Mutex::new(Stamps::default()),
        }
    }

    /// The value in force now.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The swap cell itself (for `arc_swap::Cache`).
    pub fn cell(&self) -> &ArcSwap<T> {
        &self.current
    }

    /// The file, if the value comes from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Successful loads so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Failed reloads so far (each left the previous value in force).
    pub fn failed_reloads(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Whether the most recent load attempt failed, i.e. the file on disk is not the value in
    /// force (false after the initial load and after every successful reload).
    pub fn last_reload_failed(&self) -> bool {
        self.last_reload_failed.load(Ordering::Acquire)
    }

    /// Re-reads the file with `load` and swaps the result in; on error the previous value
    /// stays, the failure is counted and the error returned. `None` when there is no file.
    pub fn reload<E>(&self, load: impl FnOnce(&Path) -> Result<T, E>) -> Option<Result<Arc<T>, E>> {
        let path = self.path.as_deref()?;
        let mut seen = self.reload_lock.lock();
        // Remember the stamp even if the load fails, so a broken file is reported once.
        seen.attempted = Some(stamp(path));
        seen.pending = None;
        Some(match load(path) {
            Ok(value) => {
                let value = Arc::new(value);
                self.current.store(Arc::clone(&value));
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.last_reload_failed.store(false, Ordering::Release);
                Ok(value)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::AcqRel);
                self.last_reload_failed.store(true, Ordering::Release);
                Err(e)
            }
        })
    }

    /// The file's state for metrics, with `entries` in the value in force.
    pub fn status(&self, entries: u64) -> crate::metrics::ListFileStatus {
        crate::metrics::ListFileStatus {
            entries,
            reloads_ok: self.generation(),
            reloads_failed: self.failed_reloads(),
            last_reload_ok: !self.last_reload_failed(),
        }
    }

    /// Whether the file should be reloaded now: its modification time or length changed since
    /// the last load attempt, or it can no longer be examined, and it looked the same at the
    /// previous poll too (so it has been stable for a poll interval). Once per change: the
    /// attempt records the new state. False when there is no file.
    pub fn poll(&self) -> bool {
        let Some(path) = self.path.as_deref() else {
            return false;
        };
        let now = stamp(path);
        let mut seen = self.reload_lock.lock();
        if seen.attempted.as_ref() == Some(&now) {
            seen.pending = None;
            return false;
        }
        if seen.pending.as_ref() == Some(&now) {
            return true;
        }
        seen.pending = Some(now);
        false
    }
}
