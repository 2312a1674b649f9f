//! Info-hash access list: off / allow / deny, loaded from a file of hex info hashes.
//!
//! The list in force lives in an [`AccessListSource`] (an `ArcSwap`). Reloading builds a new list
//! off to the side and swaps the pointer atomically; a file with a malformed line is refused as a
//! whole and the previous list stays in force. Workers hold an `arc_swap::Cache`, which costs one
//! atomic load per check and never takes a lock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::config::{AccessListMode, hex_val};

/// A loaded access list.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    mode: AccessListMode,
    hashes: HashSet<[u8; 20], ahash::RandomState>,
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessListError {
    /// The file could not be read. The cause is part of the message (and deliberately not
    /// an error `source`, so that a printed chain states it once).
    #[error("access list {path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A line is not 40 hex characters.
    #[error("access list {path}, line {line}: {reason}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl AccessList {
    /// A list that allows everything.
    pub fn off() -> Self {
        AccessList::default()
    }

    /// Builds a list from its text; errors carry the 1-based line number (`path` only for messages).
    pub fn parse(mode: AccessListMode, text: &str, path: &Path) -> Result<Self, AccessListError> {
        let mut hashes = HashSet::with_hasher(ahash::RandomState::new());
        for (i, line) in text.lines().enumerate() {
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let malformed = |reason: String| AccessListError::Malformed {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let b = content.as_bytes();
            if b.len() != 40 {
                return Err(malformed(format!(
                    "expected 40 hex characters, got {}",
                    b.len()
                )));
            }
            let mut h = [0u8; 20];
            for (j, pair) in b.chunks(2).enumerate() {
                match (hex_val(pair[0]), hex_val(pair[1])) {
                    (Some(hi), Some(lo)) => h[j] = hi << 4 | lo,
                    _ => return Err(malformed("not hexadecimal".into())),
                }
            }
            hashes.insert(h);
        }
        Ok(AccessList { mode, hashes })
    }

    /// Reads and parses `path`.
    pub fn load(mode: AccessListMode, path: &Path) -> Result<Self, AccessListError> {
        let text = std::fs::read_to_string(path).map_err(|cause| AccessListError::Io {
            path: path.to_owned(),
            cause,
        })?;
        Self::parse(mode, &text, path)
    }

    /// Whether announces for `info_hash` are served.
    #[inline]
    pub fn allows(&self, info_hash: &[u8; 20]) -> bool {
        match self.mode {
            AccessListMode::Off => true,
            AccessListMode::Allow => self.hashes.contains(info_hash),
            AccessListMode::Deny => !self.hashes.contains(info_hash),
        }
    }

    /// Number of hashes listed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no hash is listed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The mode.
    pub fn mode(&self) -> AccessListMode {
        self.mode
    }
}

/// The list in force plus where it comes from. Shared by workers (reading) and the maintenance
/// thread / SIGHUP handler (reloading).
#[derive(Debug)]
pub struct AccessListSource {
    current: ArcSwap<AccessList>,
    mode: AccessListMode,
    path: Option<PathBuf>,
    /// Successful loads so far (1 after the initial load). Lets tests wait for a reload.
    generation: AtomicU64,
    /// Failed reloads (the previous list stayed in force).
    failures: AtomicU64,
    /// Whether the most recent load attempt failed (a fixed file's next reload clears it).
    last_reload_failed: AtomicBool,
    /// Serialises reloads (cold path only) and remembers what the file looked like at the last
    /// load attempt.
    reload_lock: parking_lot::Mutex<Option<FileStamp>>,
}

/// What a file looked like: (mtime, length), or why it could not be examined (e.g. its
/// directory became unreadable after privileges were dropped).
type FileStamp = Result<(std::time::SystemTime, u64), std::io::ErrorKind>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).map_err(|e| e.kind())?;
    Ok((m.modified().map_err(|e| e.kind())?, m.len()))
}

/// What a successful [`AccessListSource::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The list is off (`access_list.mode = "off"`): there is nothing to reload.
    Off,
    /// The file was read and is in force, with this many info hashes.
    Loaded {
        /// Info hashes listed.
        hashes: usize,
    },
}

impl AccessListSource {
    /// Loads the initial list (an error here should stop the start).
    pub fn new(mode: AccessListMode, path: Option<PathBuf>) -> Result<Self, AccessListError> {
        let (list, st) = match (&path, mode) {
            (Some(p), m) if m != AccessListMode::Off => {
                let st = stamp(p);
                (AccessList::load(mode, p)?, Some(st))
            }
            _ => (AccessList::off(), None),
        };
        Ok(AccessListSource {
            current: ArcSwap::from_pointee(list),
            mode,
            path,
            generation: AtomicU64::new(1),
            failures: AtomicU64::new(0),
            last_reload_failed: AtomicBool::new(false),
            reload_lock: parking_lot::Mutex::new(st),
        })
    }

    /// A source that serves a fixed list (tests, embedding).
    pub fn fixed(list: AccessList) -> Self {
        AccessListSource {
            mode: list.mode,
            current: ArcSwap::from_pointee(list),
            path: None,
            generation: AtomicU64::new(1),
            failures: AtomicU64::new(0),
            last_reload_failed: AtomicBool::new(false),
            reload_lock: parking_lot::Mutex::new(None),
        }
    }

    /// A per-worker cache: `cache.load()` is one atomic load unless the list changed.
    pub fn cache(self: &Arc<Self>) -> AccessListCache {
        arc_swap::Cache::new(ArcSwapHolder(Arc::clone(self)))
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<AccessList> {
        self.current.load_full()
    }

    /// Successful loads so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Failed reloads so far (each left the previous list in force).
    pub fn failed_reloads(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Whether the most recent load attempt failed, i.e. the file on disk is not the list in
    /// force (false after the initial load and after every successful reload).
    pub fn last_reload_failed(&self) -> bool {
        self.last_reload_failed.load(Ordering::Acquire)
    }

    /// The file, unless the list is off.
    fn file(&self) -> Option<&Path> {
        self.path
            .as_deref()
            .filter(|_| self.mode != AccessListMode::Off)
    }

    /// Re-reads the file and swaps it in; on error the previous list stays, the failure is
    /// counted and the error returned. [`Reloaded::Off`] when the list is off.
    pub fn reload(&self) -> Result<Reloaded, AccessListError> {
        let Some(path) = self.file() else {
            return Ok(Reloaded::Off);
        };
        let mut seen = self.reload_lock.lock();
        // Remember the stamp even if the load fails, so a broken file is reported once.
        *seen = Some(stamp(path));
        let list = AccessList::load(self.mode, path).inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::AcqRel);
            self.last_reload_failed.store(true, Ordering::Release);
        })?;
        let hashes = list.len();
        self.current.store(Arc::new(list));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.last_reload_failed.store(false, Ordering::Release);
        tracing::info!(path = %path.display(), hashes, "access list loaded");
        Ok(Reloaded::Loaded { hashes })
    }

    /// Reloads if the file's modification time or length changed since the last load attempt,
    /// or if the file can no longer be examined (then the failed reload is logged and counted
    /// once, not at every poll). Returns whether a reload was attempted.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = self.file() else {
            return false;
        };
        let st = stamp(path);
        if self.reload_lock.lock().as_ref() == Some(&st) {
            return false;
        }
        if let Err(e) = self.reload() {
            tracing::error!("{e}; the previous access list stays in force");
        }
        true
    }
}

/// A worker's cached view of the list in force.
pub type AccessListCache = arc_swap::Cache<ArcSwapHolder, Arc<AccessList>>;

/// Adapter so that `arc_swap::Cache` can hold the shared source.
#[derive(Debug)]
pub struct ArcSwapHolder(Arc<AccessListSource>);

impl std::ops::Deref for ArcSwapHolder {
    type Target = ArcSwap<AccessList>;
    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> [u8; 20] {
        [b; 20]
    }

    #[test]
    fn parses_comments_blank_lines_and_case() {
        let text = "# header\n\n0101010101010101010101010101010101010101\n  ABABABABABABABABABABABABABABABABABABABAB  # trailing\n";
        let l = AccessList::parse(AccessListMode::Allow, text, Path::new("x")).unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.allows(&h(1)));
        assert!(l.allows(&h(0xab)));
        assert!(!l.allows(&h(2)));
        let d = AccessList::parse(AccessListMode::Deny, text, Path::new("x")).unwrap();
        assert!(!d.allows(&h(1)));
        assert!(d.allows(&h(2)));
        assert!(AccessList::off().allows(&h(1)));
    }

    #[test]
    fn malformed_line_is_reported_with_its_number() {
        let text = "0101010101010101010101010101010101010101\n# ok\nnot-a-hash\n";
        let e = AccessList::parse(AccessListMode::Allow, text, Path::new("list.txt")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("list.txt"), "{msg}");
        let text = "010101010101010101010101010101010101010g\n";
        let e = AccessList::parse(AccessListMode::Allow, text, Path::new("l")).unwrap_err();
        assert!(e.to_string().contains("line 1: not hexadecimal"), "{e}");
    }

    #[test]
    fn reload_keeps_previous_list_on_error_and_cache_sees_swaps() {
        let dir = crate::test_util::TempDir::new("acl");
        let path = dir.path().join("list");
        std::fs::write(&path, "0101010101010101010101010101010101010101\n").unwrap();
        let src =
            Arc::new(AccessListSource::new(AccessListMode::Allow, Some(path.clone())).unwrap());
        let mut cache = src.cache();
        assert!(cache.load().allows(&h(1)));
        assert!(!cache.load().allows(&h(2)));
        std::fs::write(&path, "0202020202020202020202020202020202020202\n").unwrap();
        src.reload().unwrap();
        assert_eq!(src.generation(), 2);
        assert!(!cache.load().allows(&h(1)));
        assert!(cache.load().allows(&h(2)));
        assert!(!src.last_reload_failed());
        std::fs::write(&path, "0303\n").unwrap();
        assert!(src.reload().is_err());
        assert!(src.last_reload_failed(), "the file on disk is not in force");
        assert_eq!(src.generation(), 2);
        assert_eq!(src.failed_reloads(), 1);
        assert!(cache.load().allows(&h(2)), "previous list stays in force");
        // Unchanged file: no reload attempted.
        assert!(!src.reload_if_changed());
        // A fixed file clears the failure.
        std::fs::write(&path, "0404040404040404040404040404040404040404\n").unwrap();
        src.reload().unwrap();
        assert!(!src.last_reload_failed());
    }

    /// Regression (issue 11): a file that can no longer be examined (gone, or its directory
    /// unreadable after dropping privileges) is a failed reload, logged and counted once.
    #[test]
    fn a_file_that_vanishes_is_one_counted_failure() {
        let dir = crate::test_util::TempDir::new("acl-gone");
        let path = dir.path().join("list");
        std::fs::write(&path, "0101010101010101010101010101010101010101\n").unwrap();
        let src = AccessListSource::new(AccessListMode::Deny, Some(path.clone())).unwrap();
        assert!(!src.reload_if_changed());
        std::fs::remove_file(&path).unwrap();
        assert!(src.reload_if_changed(), "the vanished file is noticed");
        assert_eq!((src.failed_reloads(), src.generation()), (1, 1));
        assert!(
            !src.reload_if_changed(),
            "and reported once, not at every poll"
        );
        assert_eq!(src.failed_reloads(), 1);
        assert!(
            !src.current().allows(&h(1)),
            "the previous list stays in force"
        );
        std::fs::write(&path, "0202020202020202020202020202020202020202\n").unwrap();
        assert!(src.reload_if_changed());
        assert_eq!(src.generation(), 2);
    }

    #[test]
    fn reload_says_when_the_list_is_off() {
        let src = AccessListSource::new(AccessListMode::Off, None).unwrap();
        assert_eq!(src.reload().unwrap(), Reloaded::Off);
        assert!(!src.reload_if_changed());
    }

    /// Regression (issue 11): the cause of an unreadable file is printed once in an error chain.
    #[test]
    fn a_missing_file_states_its_cause_once() {
        let e = AccessListSource::new(
            AccessListMode::Allow,
            Some("/nonexistent/fjord-list".into()),
        )
        .unwrap_err();
        let chain = format!(
            "{:#}",
            anyhow::Error::from(e).context("cannot load the access list")
        );
        let cause = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        assert_eq!(
            chain.matches("No such file").count(),
            1,
            "{chain} ({cause})"
        );
    }
}
