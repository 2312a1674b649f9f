//! Info-hash access list: off / allow / deny, loaded from a file of hex info hashes.
//!
//! The list in force lives in an [`AccessListSource`] (a [`WatchedFile`]: an `ArcSwap`).
//! Reloading builds a new list off to the side and swaps the pointer atomically; a file with a
//! malformed line is refused as a whole and the previous list stays in force. Workers hold an
//! `arc_swap::Cache`, which costs one atomic load per check and never takes a lock.
//!
//! The file format ([`parse_listing`]) is shared with the torrent catalogue
//! ([`crate::catalogue`]): one info hash (40 hex characters) a line, optionally followed by
//! whitespace and a display name, `#` starting a comment anywhere. The access list ignores the
//! names, so one file can be both.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{AccessListMode, hex_val};
use crate::watched_file::WatchedFile;

/// A loaded access list.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    mode: AccessListMode,
    hashes: HashSet<[u8; 20], ahash::RandomState>,
}

/// Why a list file (access list or catalogue) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListFileError {
    /// The file could not be read. The cause is part of the message (and deliberately not
    /// an error `source`, so that a printed chain states it once).
    #[error("{what} {path}: {cause}")]
    Io {
        /// Which file: "access list" or "catalogue".
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// The file changed while it was read (it is being written): not loaded.
    #[error("{what} {path} changed while it was read; not loaded (replace the file by rename)")]
    Unstable {
        /// Which file: "access list" or "catalogue".
        what: &'static str,
        /// File.
        path: PathBuf,
    },
    /// An allow list that would lose more entries than `access_list.max_shrink_fraction`.
    #[error(
        "{what} {path}: {new} entries would replace {old}, more than access_list.max_shrink_fraction \
         = {max_fraction} of them lost; refused (a restart loads it, or raise the fraction)"
    )]
    Shrink {
        /// Which file.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Entries in force.
        old: usize,
        /// Entries in the file.
        new: usize,
        /// The configured fraction.
        max_fraction: f64,
    },
    /// A line does not start with 40 hex characters.
    #[error("{what} {path}, line {line}: {reason}")]
    Malformed {
        /// Which file: "access list" or "catalogue".
        what: &'static str,
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The access list's name for [`ListFileError`].
pub type AccessListError = ListFileError;

/// One entry of a list file: an info hash and the name written after it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedHash<'a> {
    /// The info hash.
    pub info_hash: [u8; 20],
    /// The rest of the line after the hash and whitespace, trimmed (`None` if empty).
    pub name: Option<&'a str>,
}

/// Parses a list file: per line, 40 hex characters, optionally whitespace and a name; `#`
/// starts a comment (so names cannot contain it); blank lines are skipped. The first bad line
/// refuses the whole file, with its 1-based number; `what` and `path` are for the message.
pub fn parse_listing<'a>(
    what: &'static str,
    text: &'a str,
    path: &Path,
) -> Result<Vec<ListedHash<'a>>, ListFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let malformed = |reason: String| ListFileError::Malformed {
            what,
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let (hex, rest) =
            content.split_at(content.find(char::is_whitespace).unwrap_or(content.len()));
        let b = hex.as_bytes();
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
        let name = rest.trim();
        out.push(ListedHash {
            info_hash: h,
            name: (!name.is_empty()).then_some(name),
        });
    }
    Ok(out)
}

/// Reads a list file as text, refusing it ([`ListFileError::Unstable`]) if its modification
/// time or length changed while it was read, or the bytes read are not its length.
pub(crate) fn read_list_file(what: &'static str, path: &Path) -> Result<String, ListFileError> {
    let io = |cause| ListFileError::Io {
        what,
        path: path.to_owned(),
        cause,
    };
    let stamp = |f: &std::fs::File| -> Result<_, ListFileError> {
        let m = f.metadata().map_err(io)?;
        Ok((m.modified().ok(), m.len()))
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let before = stamp(&file)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
    let after = stamp(&file)?;
    if before != after || text.len() as u64 != after.1 {
        return Err(ListFileError::Unstable {
            what,
            path: path.to_owned(),
        });
    }
    Ok(text)
}

const WHAT: &str = "access list";

impl AccessList {
    /// A list that allows everything.
    pub fn off() -> Self {
        AccessList::default()
    }

    /// Builds a list from its text; errors carry the 1-based line number (`path` only for messages).
    pub fn parse(mode: AccessListMode, text: &str, path: &Path) -> Result<Self, AccessListError> {
        let hashes = parse_listing(WHAT, text, path)?
            .into_iter()
            .map(|l| l.info_hash)
            .collect();
        Ok(AccessList { mode, hashes })
    }

    /// Reads and parses `path`.
    pub fn load(mode: AccessListMode, path: &Path) -> Result<Self, AccessListError> {
        Self::parse(mode, &read_list_file(WHAT, path)?, path)
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
    file: WatchedFile<AccessList>,
    mode: AccessListMode,
    /// `access_list.max_shrink_fraction` (allow lists only).
    max_shrink: f64,
    /// Reloads refused by [`Refused`] reason.
    refused: [AtomicU64; Refused::ALL.len()],
}

/// Why a reload was refused although the file parsed (or before it could be parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// An allow list that lost more than `access_list.max_shrink_fraction` of its entries.
    Shrink,
    /// The file changed while it was read.
    Unstable,
}

impl Refused {
    /// All reasons, in index order.
    pub const ALL: [Refused; 2] = [Refused::Shrink, Refused::Unstable];
    /// Label value (`fjord_access_list_refused_total{reason=…}`).
    pub fn name(self) -> &'static str {
        match self {
            Refused::Shrink => "shrink",
            Refused::Unstable => "unstable",
        }
    }
}

/// Entries an allow list of `old` may lose in one reload: `fraction` of them, at least one,
/// but never the last one unless `fraction` is 1.
fn shrink_allowed(old: usize, new: usize, fraction: f64) -> bool {
    if fraction >= 1.0 || new >= old {
        return true;
    }
    if new == 0 {
        return false;
    }
    let may_lose = ((old as f64 * fraction) as usize).max(1);
    old - new <= may_lose
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
        let path = path.filter(|_| mode != AccessListMode::Off);
        let file = WatchedFile::new(path, AccessList::off(), |p| AccessList::load(mode, p))?;
        if mode == AccessListMode::Allow && file.current().is_empty() {
            tracing::warn!("the allow list is empty: every announce is refused");
        }
        Ok(AccessListSource {
            file,
            mode,
            max_shrink: 0.2,
            refused: Default::default(),
        })
    }

    /// Sets `access_list.max_shrink_fraction` (default 0.2).
    pub fn with_max_shrink_fraction(mut self, fraction: f64) -> Self {
        self.max_shrink = fraction;
        self
    }

    /// Reloads refused for `reason` so far.
    pub fn refused(&self, reason: Refused) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// A source that serves a fixed list (tests, embedding).
    pub fn fixed(list: AccessList) -> Self {
        AccessListSource {
            mode: list.mode,
            file: WatchedFile::fixed(list),
            max_shrink: 0.2,
            refused: Default::default(),
        }
    }

    /// A per-worker cache: `cache.load()` is one atomic load unless the list changed.
    pub fn cache(self: &Arc<Self>) -> AccessListCache {
        arc_swap::Cache::new(ArcSwapHolder(Arc::clone(self)))
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<AccessList> {
        self.file.current()
    }

    /// The file and its load counts.
    pub fn file(&self) -> &WatchedFile<AccessList> {
        &self.file
    }

    /// Successful loads so far.
    pub fn generation(&self) -> u64 {
        self.file.generation()
    }

    /// Failed reloads so far (each left the previous list in force).
    pub fn failed_reloads(&self) -> u64 {
        self.file.failed_reloads()
    }

    /// Whether the most recent load attempt failed, i.e. the file on disk is not the list in
    /// force (false after the initial load and after every successful reload).
    pub fn last_reload_failed(&self) -> bool {
        self.file.last_reload_failed()
    }

    /// Re-reads the file and swaps it in; on error the previous list stays, the failure is
    /// counted and the error returned. [`Reloaded::Off`] when the list is off. An allow list
    /// that would lose more than `max_shrink_fraction` of its entries (or all of them) is
    /// refused; a smaller shrink is logged as a warning.
    pub fn reload(&self) -> Result<Reloaded, AccessListError> {
        let (mode, fraction) = (self.mode, self.max_shrink);
        let old = self.file.current().len();
        let Some(result) = self.file.reload(|p| {
            let list = AccessList::load(mode, p)?;
            if mode == AccessListMode::Allow && !shrink_allowed(old, list.len(), fraction) {
                return Err(ListFileError::Shrink {
                    what: WHAT,
                    path: p.to_owned(),
                    old,
                    new: list.len(),
                    max_fraction: fraction,
                });
            }
            Ok(list)
        }) else {
            return Ok(Reloaded::Off);
        };
        let hashes = match result {
            Ok(list) => list.len(),
            Err(e) => {
                let reason = match e {
                    ListFileError::Shrink { .. } => Some(Refused::Shrink),
                    ListFileError::Unstable { .. } => Some(Refused::Unstable),
                    _ => None,
                };
                if let Some(r) = reason {
                    self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        if let Some(path) = self.file.path() {
            if hashes < old {
                tracing::warn!(path = %path.display(), hashes, was = old, "access list loaded, smaller");
            } else {
                tracing::info!(path = %path.display(), hashes, "access list loaded");
            }
        }
        Ok(Reloaded::Loaded { hashes })
    }

    /// Reloads if the file changed since the last load attempt and has looked the same for one
    /// poll ([`WatchedFile::poll`]), or if it can no longer be examined (then the failed reload
    /// is logged and counted once, not at every poll). Returns whether a reload was attempted.
    pub fn reload_if_changed(&self) -> bool {
        if !self.file.poll() {
            return false;
        }
        match self.reload() {
            Ok(_) => {}
            Err(e @ (ListFileError::Shrink { .. } | ListFileError::Unstable { .. })) => {
                tracing::warn!("{e}; the previous access list stays in force")
            }
            Err(e) => tracing::error!("{e}; the previous access list stays in force"),
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
    type Target = arc_swap::ArcSwap<AccessList>;
    fn deref(&self) -> &Self::Target {
        self.0.file.cell()
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

    /// An optional name after the hash (the catalogue's format) is accepted and ignored.
    #[test]
    fn names_after_the_hash_are_accepted() {
        let text = "0101010101010101010101010101010101010101 Dagsrevyen 2026-05-17\n\
                    0202020202020202020202020202020202020202\tSkam, episode 3 # note\n\
                    0303030303030303030303030303030303030303#no name\n";
        let l = AccessList::parse(AccessListMode::Allow, text, Path::new("x")).unwrap();
        assert_eq!(l.len(), 3);
        let listed = parse_listing("catalogue", text, Path::new("x")).unwrap();
        let names: Vec<Option<&str>> = listed.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [Some("Dagsrevyen 2026-05-17"), Some("Skam, episode 3"), None]
        );
        let e = parse_listing("catalogue", "01 a name\n", Path::new("c.txt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "catalogue c.txt, line 1: expected 40 hex characters, got 2"
        );
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
        assert!(
            !src.reload_if_changed(),
            "seen once: wait for it to be stable"
        );
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
        assert!(!src.reload_if_changed());
        assert!(src.reload_if_changed());
        assert_eq!(src.generation(), 2);
    }

    fn hashes(n: usize) -> String {
        (0..n).map(|i| format!("{i:040x}\n")).collect()
    }

    /// Issue 15: a file rewritten in place (truncated, then written in pieces) is loaded only
    /// once it has looked the same at two polls, so a poll in the middle of the writing loads
    /// nothing.
    #[test]
    fn a_file_being_written_is_not_loaded_until_it_is_stable() {
        let dir = crate::test_util::TempDir::new("acl-write");
        let path = dir.path().join("list");
        std::fs::write(&path, hashes(1000)).unwrap();
        let src = AccessListSource::new(AccessListMode::Allow, Some(path.clone())).unwrap();
        let full = hashes(1000);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        for piece in full.as_bytes().chunks(4096) {
            std::io::Write::write_all(&mut file, piece).unwrap();
            assert!(!src.reload_if_changed(), "a growing file is not loaded");
            assert_eq!(src.current().len(), 1000);
        }
        drop(file);
        // The last poll saw it complete; unchanged since: loaded (the same 1,000 hashes).
        assert!(src.reload_if_changed());
        assert_eq!((src.generation(), src.current().len()), (2, 1000));
        assert_eq!(src.failed_reloads(), 0);
    }

    /// Issue 15: an allow list that loses more than `max_shrink_fraction` of its entries, or all
    /// of them, is refused and counted; a smaller shrink is taken; 1.0 takes anything.
    #[test]
    fn an_allow_list_that_shrinks_too_much_is_refused() {
        let dir = crate::test_util::TempDir::new("acl-shrink");
        let path = dir.path().join("list");
        std::fs::write(&path, hashes(1000)).unwrap();
        let src = AccessListSource::new(AccessListMode::Allow, Some(path.clone()))
            .unwrap()
            .with_max_shrink_fraction(0.2);
        std::fs::write(&path, hashes(700)).unwrap();
        let e = src.reload().unwrap_err();
        assert!(
            e.to_string().contains("700 entries would replace 1000"),
            "{e}"
        );
        assert_eq!(src.refused(Refused::Shrink), 1);
        assert!(src.last_reload_failed());
        assert_eq!(src.current().len(), 1000, "the previous list stays");
        std::fs::write(&path, "").unwrap();
        assert!(src.reload().is_err(), "to zero");
        assert_eq!(src.refused(Refused::Shrink), 2);
        std::fs::write(&path, hashes(800)).unwrap();
        assert_eq!(src.reload().unwrap(), Reloaded::Loaded { hashes: 800 });
        assert!(!src.last_reload_failed());
        // Growing is always taken; so is a deny list shrinking.
        std::fs::write(&path, hashes(5000)).unwrap();
        assert_eq!(src.reload().unwrap(), Reloaded::Loaded { hashes: 5000 });
        let deny = AccessListSource::new(AccessListMode::Deny, Some(path.clone())).unwrap();
        std::fs::write(&path, hashes(1)).unwrap();
        assert_eq!(deny.reload().unwrap(), Reloaded::Loaded { hashes: 1 });
        // Forced: any shrink.
        let forced = AccessListSource::new(AccessListMode::Allow, Some(path.clone()))
            .unwrap()
            .with_max_shrink_fraction(1.0);
        std::fs::write(&path, "").unwrap();
        assert_eq!(forced.reload().unwrap(), Reloaded::Loaded { hashes: 0 });
        assert_eq!(forced.refused(Refused::Shrink), 0);
    }

    #[test]
    fn small_lists_may_always_lose_one_entry_but_not_the_last() {
        assert!(shrink_allowed(3, 2, 0.2));
        assert!(!shrink_allowed(3, 1, 0.2));
        assert!(!shrink_allowed(1, 0, 0.2));
        assert!(shrink_allowed(1, 0, 1.0));
        assert!(shrink_allowed(1000, 800, 0.2));
        assert!(!shrink_allowed(1000, 799, 0.2));
        assert!(shrink_allowed(0, 0, 0.2));
        assert!(shrink_allowed(10, 50, 0.0));
        assert!(shrink_allowed(10, 9, 0.0), "one entry may always go");
        assert!(!shrink_allowed(10, 8, 0.0));
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
