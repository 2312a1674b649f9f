//! The torrent catalogue: info hashes an operator names, whose swarms are exported one series
//! each (`fjord_torrent_seeders{torrent="…"}`, …) and listed in `/stats`.
//!
//! The file has the access list's format ([`parse_listing`]): an info hash a line, then
//! optionally whitespace and a display name, `#` comments; it may be the access-list file
//! itself. A line without a name is catalogued under its hex info hash. It is reloaded like the
//! access list (when it changes, and on SIGHUP); a file with a bad line is refused as a whole,
//! counted and logged, and the previous catalogue stays in force.
//!
//! Names become Prometheus label values and HTML text, so they are made safe once, here:
//! control characters become spaces, runs of whitespace one space, and a name is cut to
//! [`MAX_NAME_CHARS`] characters. Names are unique (a repeated name gets the first eight hex
//! digits of its hash appended); a repeated info hash keeps its first line. Quoting for the
//! exposition format happens when it is written ([`crate::metrics`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::access_list::{ListFileError, parse_listing, read_list_file};
use crate::watched_file::WatchedFile;

/// Longest display name kept, in characters (longer names are cut, with `…`).
pub const MAX_NAME_CHARS: usize = 64;

const WHAT: &str = "catalogue";

/// An info hash as 40 lower-case hex characters.
pub fn hex(info_hash: &[u8; 20]) -> String {
    let mut s = String::with_capacity(40);
    for b in info_hash {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One catalogued torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The info hash (v1, or a v2 hash truncated to 20 bytes as announced).
    pub info_hash: [u8; 20],
    /// The display name: safe, bounded, unique within the catalogue.
    pub name: Arc<str>,
}

/// A loaded catalogue, in file order.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    entries: Vec<CatalogueEntry>,
    index: HashMap<[u8; 20], usize, ahash::RandomState>,
}

/// Control characters to spaces, whitespace runs to one space, trimmed, at most
/// [`MAX_NAME_CHARS`] characters.
fn safe_name(raw: &str) -> String {
    let words: Vec<&str> = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    if joined.chars().count() <= MAX_NAME_CHARS {
        return joined;
    }
    let cut: String = joined.chars().take(MAX_NAME_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

impl Catalogue {
    /// Builds a catalogue from its text; errors carry the 1-based line number.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ListFileError> {
        let listed = parse_listing(WHAT, text, path)?;
        let mut cat = Catalogue::default();
        let mut names: HashMap<Arc<str>, (), ahash::RandomState> = HashMap::default();
        for l in listed {
            if cat.index.contains_key(&l.info_hash) {
                continue;
            }
            let mut name = l.name.map(safe_name).unwrap_or_default();
            if name.is_empty() {
                name = hex(&l.info_hash);
            }
            if names.contains_key(name.as_str()) {
                let _ = write!(name, " ({})", &hex(&l.info_hash)[..8]);
            }
            let name: Arc<str> = name.into();
            names.insert(Arc::clone(&name), ());
            cat.index.insert(l.info_hash, cat.entries.len());
            cat.entries.push(CatalogueEntry {
                info_hash: l.info_hash,
                name,
            });
        }
        Ok(cat)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ListFileError> {
        Self::parse(&read_list_file(WHAT, path)?, path)
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[CatalogueEntry] {
        &self.entries
    }

    /// The name of a catalogued info hash.
    pub fn name_of(&self, info_hash: &[u8; 20]) -> Option<&Arc<str>> {
        self.index
            .get(info_hash)
            .and_then(|&i| self.entries.get(i))
            .map(|e| &e.name)
    }

    /// Torrents catalogued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is catalogued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The catalogue in force and its file (`stats.catalogue`); empty without one.
#[derive(Debug)]
pub struct CatalogueSource {
    file: WatchedFile<Catalogue>,
}

impl CatalogueSource {
    /// Loads the initial catalogue (an error here should stop the start).
    pub fn new(path: Option<PathBuf>) -> Result<Self, ListFileError> {
        Ok(CatalogueSource {
            file: WatchedFile::new(path, Catalogue::default(), Catalogue::load)?,
        })
    }

    /// The catalogue in force now.
    pub fn current(&self) -> Arc<Catalogue> {
        self.file.current()
    }

    /// The file and its load counts.
    pub fn file(&self) -> &WatchedFile<Catalogue> {
        &self.file
    }

    /// Re-reads the file now; `None` without one. On error the previous catalogue stays,
    /// the failure is counted and returned.
    pub fn reload(&self) -> Option<Result<usize, ListFileError>> {
        let result = self.file.reload(Catalogue::load)?;
        Some(result.map(|c| {
            if let Some(path) = self.file.path() {
                tracing::info!(path = %path.display(), torrents = c.len(), "catalogue loaded");
            }
            c.len()
        }))
    }

    /// Reloads if the file changed since the last attempt (logging a refusal once); returns
    /// whether a reload was attempted.
    pub fn reload_if_changed(&self) -> bool {
        if !self.file.poll() {
            return false;
        }
        if let Some(Err(e)) = self.reload() {
            tracing::error!("{e}; the previous catalogue stays in force");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_bounded_and_unique() {
        let long = "x".repeat(200);
        let text = format!(
            "0101010101010101010101010101010101010101 Nyheter\n\
             0202020202020202020202020202020202020202 Nyheter\n\
             0303030303030303030303030303030303030303\n\
             0404040404040404040404040404040404040404 {long}\n\
             0505050505050505050505050505050505050505 quote\" back\\slash \u{7}bell\tand   tabs\n\
             0101010101010101010101010101010101010101 repeated hash\n"
        );
        let c = Catalogue::parse(&text, Path::new("c")).unwrap();
        let names: Vec<&str> = c.entries().iter().map(|e| &*e.name).collect();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "Nyheter");
        assert_eq!(names[1], "Nyheter (02020202)");
        assert_eq!(names[2], "0303030303030303030303030303030303030303");
        assert_eq!(names[3].chars().count(), MAX_NAME_CHARS);
        assert!(names[3].ends_with('…'));
        assert_eq!(names[4], "quote\" back\\slash bell and tabs");
        assert_eq!(c.name_of(&[1; 20]).map(|n| &**n), Some("Nyheter"));
        assert_eq!(c.name_of(&[9; 20]), None);
    }

    /// Bad input: a line that does not parse keeps the previous catalogue.
    #[test]
    fn a_bad_line_keeps_the_previous_catalogue() {
        let dir = crate::test_util::TempDir::new("catalogue");
        let path = dir.path().join("catalogue.txt");
        std::fs::write(&path, "0101010101010101010101010101010101010101 One\n").unwrap();
        let src = CatalogueSource::new(Some(path.clone())).unwrap();
        assert_eq!(src.current().len(), 1);
        std::fs::write(
            &path,
            "0101010101010101010101010101010101010101 One\nnot a hash Two\n",
        )
        .unwrap();
        let e = src.reload().unwrap().unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().starts_with("catalogue "), "{e}");
        assert_eq!(src.current().len(), 1);
        assert_eq!(&*src.current().entries()[0].name, "One");
        assert_eq!(
            (src.file().generation(), src.file().failed_reloads()),
            (1, 1)
        );
        assert!(src.file().last_reload_failed());
        assert!(!src.reload_if_changed(), "a refused file is reported once");
        std::fs::write(
            &path,
            "0101010101010101010101010101010101010101 One\n0202020202020202020202020202020202020202 Two\n",
        )
        .unwrap();
        assert_eq!(src.reload().unwrap().unwrap(), 2);
        assert!(!src.file().last_reload_failed());
        assert!(CatalogueSource::new(None).unwrap().reload().is_none());
    }
}
