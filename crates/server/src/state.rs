//! The state directory (`state.dir`): the swarm snapshot ([`crate::snapshot_file`]) and the
//! generated connection-id key, so that a restart or an upgrade loses neither the swarms nor
//! the connection ids handed out before it.
//!
//! Files, all created mode 0600:
//! - `snapshot.bin`: written to `snapshot.bin.tmp`, fsynced, renamed over the old one, and the
//!   directory fsynced, so a crash at any point leaves either the old or the new snapshot.
//!   A file that cannot be trusted is renamed to `snapshot.bin.bad-<unix time>` and never read
//!   again.
//! - `connection-id.key`: 32 hex characters and a newline, created once (written to a
//!   temporary file, fsynced, then hard-linked into place, so two processes starting together
//!   agree on one key) and reused at every start while `connection_id.key` is empty.
//!
//! Everything here runs on the maintenance thread or before the workers start: never on a
//! worker.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::fjord_store::PeerStore;
use crate::snapshot_file::{
    RecordPeers, SnapshotError, SnapshotTotals, SnapshotWriter, read_snapshot,
};

/// The snapshot's file name in the state directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The generated connection-id key's file name in the state directory.
pub const KEY_FILE: &str = "connection-id.key";

/// The state directory, checked to exist (created if missing) and to be a directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// A snapshot written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// What the file holds.
    pub totals: SnapshotTotals,
    /// How long walking the store and writing (fsyncs included) took.
    pub duration: Duration,
}

/// What loading the snapshot at start found.
#[derive(Debug)]
pub enum Loaded {
    /// No snapshot: a first start (or one without a clean stop and periodic snapshots).
    Missing,
    /// Restored.
    Restored {
        /// The file's contents.
        totals: SnapshotTotals,
        /// Peers put back in the store (the rest had expired, or the store's limits refused them).
        restored_peers: u64,
        /// Seconds between the snapshot's writing and now (wall clock).
        age_secs: u64,
        /// How long reading and restoring took.
        duration: Duration,
    },
    /// Refused: the store built from it must be discarded.
    Refused {
        /// Why.
        error: SnapshotError,
        /// Where the file was moved (`None` if moving it failed as well; the log says why).
        set_aside: Option<PathBuf>,
    },
}

/// Where the generated connection-id key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Read from `connection-id.key`.
    Reused,
    /// Generated now and stored (first start, or the old file was unusable and set aside).
    Created,
}

impl StateDir {
    /// Opens (creating it, mode 0700, if missing) the directory at `path`.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)?;
        }
        let meta = fs::metadata(path)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "exists but is not a directory",
            ));
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot file's path.
    pub fn snapshot_path(&self) -> PathBuf {
        self.path.join(SNAPSHOT_FILE)
    }

    /// Walks `store` (as the cleaner does: per-shard pins, workers never blocked) into a new
    /// snapshot file that replaces the old one atomically. `store_now` is the store's clock,
    /// `unix_now` the wall clock recorded in the file.
    pub fn write_snapshot(
        &self,
        store: &PeerStore,
        store_now: u32,
        unix_now: u64,
    ) -> io::Result<Written> {
        let started = Instant::now();
        let tmp = self.path.join(format!("{SNAPSHOT_FILE}.tmp"));
        let result = write_store(store, store_now, unix_now, &tmp).and_then(|totals| {
            fs::rename(&tmp, self.snapshot_path())?;
            self.sync_dir()?;
            Ok(totals)
        });
        match result {
            Ok(totals) => Ok(Written {
                totals,
                duration: started.elapsed(),
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    /// Reads the snapshot into `store` (which must be fresh), peers aged by the time since it
    /// was written and those expired meanwhile left out. On [`Loaded::Refused`] the file has been
    /// set aside and `store` holds a partial restore: the caller discards it.
    pub fn load_snapshot(&self, store: &PeerStore, store_now: u32, unix_now: u64) -> Loaded {
        let started = Instant::now();
        let path = self.snapshot_path();
        let file = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => Err(SnapshotError::Unreadable(e.to_string())),
            Ok(m) if m.is_dir() => Err(SnapshotError::Unreadable(
                "a directory is in its place".into(),
            )),
            Ok(m) if !m.is_file() => Err(SnapshotError::Unreadable("not a regular file".into())),
            Ok(_) => File::open(&path).map_err(|e| SnapshotError::Unreadable(e.to_string())),
        };
        let restored_peers = AtomicU64::new(0);
        let mut written = 0u64;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_RESTORE_THREADS);
        let result = file.and_then(|f| {
            // The reader checks and decodes; `threads` restorers put the peers back (the store
            // takes concurrent inserts without locks). Records travel in chunks.
            std::thread::scope(|scope| {
                let (tx, rx) = crossbeam_channel::bounded::<RestoreChunk>(threads * 2);
                for _ in 0..threads {
                    let rx = rx.clone();
                    let restored = &restored_peers;
                    scope.spawn(move || {
                        for chunk in rx {
                            restored.fetch_add(chunk.restore(store, store_now), Ordering::Relaxed);
                        }
                    });
                }
                drop(rx);
                let mut chunk = RestoreChunk::default();
                let read = read_snapshot(
                    BufReader::with_capacity(1 << 20, f),
                    |header, ih, completed, peers| {
                        // The time the file lay on disk, added to every peer's age (0 if the
                        // clock went back).
                        let down = u32::try_from(unix_now.saturating_sub(header.written_unix))
                            .unwrap_or(u32::MAX);
                        chunk.push(ih, completed, peers, down);
                        if chunk.peers() >= RESTORE_CHUNK_PEERS {
                            // The restorers only stop when the channel closes: send cannot fail.
                            let _ = tx.send(std::mem::take(&mut chunk));
                        }
                    },
                );
                if read.is_ok() {
                    let _ = tx.send(chunk);
                }
                read
            })
            .map(|(header, totals)| {
                written = header.written_unix;
                totals
            })
        });
        let restored_peers = restored_peers.into_inner();
        match result {
            Ok(totals) => Loaded::Restored {
                totals,
                restored_peers,
                age_secs: unix_now.saturating_sub(written),
                duration: started.elapsed(),
            },
            Err(error) => Loaded::Refused {
                error,
                set_aside: self.set_aside(&path, unix_now),
            },
        }
    }

    /// Renames `path` to `<path>.bad-<unix_now>` (or `.bad-<unix_now>-<n>` if taken).
    fn set_aside(&self, path: &Path, unix_now: u64) -> Option<PathBuf> {
        let name = path.file_name()?.to_string_lossy().into_owned();
        for n in 0..100u32 {
            let suffix = if n == 0 {
                format!("{name}.bad-{unix_now}")
            } else {
                format!("{name}.bad-{unix_now}-{n}")
            };
            let target = self.path.join(suffix);
            if target.exists() {
                continue;
            }
            return match fs::rename(path, &target) {
                Ok(()) => Some(target),
                Err(e) => {
                    tracing::error!(
                        "cannot set {} aside as {}: {e}",
                        path.display(),
                        target.display()
                    );
                    None
                }
            };
        }
        None
    }

    /// The connection-id key kept in the directory: read, or created if there is none. A file
    /// that is not a key is set aside (logged) and replaced.
    pub fn connection_id_key(&self, unix_now: u64) -> io::Result<([u8; 16], KeyOrigin)> {
        let path = self.path.join(KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => match crate::config::parse_key(text.trim()) {
                Ok(key) => {
                    let mode = fs::metadata(&path)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        tracing::warn!(
                            "{} is readable by others (mode {:o}): `chmod 600` it",
                            path.display(),
                            mode & 0o777
                        );
                    }
                    return Ok((key, KeyOrigin::Reused));
                }
                Err(reason) => {
                    let aside = self.set_aside(&path, unix_now);
                    tracing::error!(
                        "{} is not a connection-id key ({reason}); set aside as {}, a new key \
                         is generated: connection ids issued before this start are refused",
                        path.display(),
                        aside.map_or("(not moved)".into(), |p| p.display().to_string())
                    );
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        let mut key = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        let tmp = self
            .path
            .join(format!("{KEY_FILE}.tmp-{}", std::process::id()));
        let created = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(f, "{hex}")?;
            f.sync_all()?;
            // A link does not replace an existing file: if another process created the key
            // meanwhile, use that one.
            match fs::hard_link(&tmp, &path) {
                Ok(()) => self.sync_dir().map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        let _ = fs::remove_file(&tmp);
        match created {
            Ok(true) => Ok((key, KeyOrigin::Created)),
            Ok(false) => self.connection_id_key(unix_now),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", path.display()),
            )),
        }
    }
}

/// Restoring threads at most.
const MAX_RESTORE_THREADS: usize = 8;
/// Peers handed to a restoring thread at once.
const RESTORE_CHUNK_PEERS: usize = 1 << 16;

/// Records of one family in one flat vector: `(info hash, completed, end of its peers)`.
struct FamilyChunk<A> {
    swarms: Vec<([u8; 20], u32, usize)>,
    peers: Vec<(A, bool, u32)>,
}

impl<A> Default for FamilyChunk<A> {
    fn default() -> Self {
        FamilyChunk {
            swarms: Vec::new(),
            peers: Vec::new(),
        }
    }
}

impl<A: crate::fjord_store::PeerAddress> FamilyChunk<A> {
    /// Adds a record, each peer `extra` seconds older.
    fn push(&mut self, ih: &[u8; 20], completed: u32, peers: &[(A, bool, u32)], extra: u32) {
        self.peers.extend(
            peers
                .iter()
                .map(|&(a, seeder, age)| (a, seeder, age.saturating_add(extra))),
        );
        self.swarms.push((*ih, completed, self.peers.len()));
    }

    fn restore(&self, store: &PeerStore, store_now: u32) -> u64 {
        let mut start = 0;
        let mut stored = 0;
        for (ih, completed, end) in &self.swarms {
            stored += store.restore(ih, *completed, &self.peers[start..*end], store_now) as u64;
            start = *end;
        }
        stored
    }
}

/// Decoded records on their way to a restoring thread.
#[derive(Default)]
struct RestoreChunk {
    v4: FamilyChunk<SocketAddrV4>,
    v6: FamilyChunk<SocketAddrV6>,
}

impl RestoreChunk {
    fn push(&mut self, ih: &[u8; 20], completed: u32, peers: RecordPeers<'_>, extra: u32) {
        match peers {
            RecordPeers::V4(p) => self.v4.push(ih, completed, p, extra),
            RecordPeers::V6(p) => self.v6.push(ih, completed, p, extra),
        }
    }

    fn peers(&self) -> usize {
        self.v4.peers.len() + self.v6.peers.len()
    }

    /// Puts the records back; the peers stored.
    fn restore(&self, store: &PeerStore, store_now: u32) -> u64 {
        self.v4.restore(store, store_now) + self.v6.restore(store, store_now)
    }
}

fn write_store(
    store: &PeerStore,
    store_now: u32,
    unix_now: u64,
    tmp: &Path,
) -> io::Result<SnapshotTotals> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let mut w = SnapshotWriter::new(BufWriter::with_capacity(1 << 20, file), unix_now)?;
    let mut failed = None;
    store.export::<SocketAddrV4>(store_now, |ih, completed, peers| {
        if failed.is_none() {
            failed = w.swarm(ih, completed, peers).err();
        }
    });
    store.export::<SocketAddrV6>(store_now, |ih, completed, peers| {
        if failed.is_none() {
            failed = w.swarm(ih, completed, peers).err();
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let (out, totals) = w.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(totals)
}

/// Snapshot counts for `/metrics`, kept by the maintenance thread and the start-up code.
#[derive(Debug, Default)]
pub struct SnapshotStatus {
    inner: Mutex<SnapshotCounts>,
}

/// What `/metrics` exports about snapshots.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SnapshotCounts {
    /// Snapshots written.
    pub writes_ok: u64,
    /// Snapshot writes that failed (the previous file stays).
    pub writes_failed: u64,
    /// The last successful write: seconds it took.
    pub last_duration_secs: f64,
    /// The last successful write: bytes of the file.
    pub last_bytes: u64,
    /// The last successful write: peers in it.
    pub last_peers: u64,
    /// The last successful write: Unix time (0 = none yet).
    pub last_unix: u64,
    /// Peers restored at start.
    pub restored_peers: u64,
    /// Snapshot files refused at start, by [`SnapshotError::REASONS`] index.
    pub load_failures: [u64; SnapshotError::REASONS.len()],
}

impl SnapshotStatus {
    /// The counts now.
    pub fn counts(&self) -> SnapshotCounts {
        *self.inner.lock()
    }

    /// Records a write's outcome.
    pub fn wrote(&self, result: &io::Result<Written>, unix_now: u64) {
        let mut c = self.inner.lock();
        match result {
            Ok(w) => {
                c.writes_ok += 1;
                c.last_duration_secs = w.duration.as_secs_f64();
                c.last_bytes = w.totals.bytes;
                c.last_peers = w.totals.peers;
                c.last_unix = unix_now;
            }
            Err(_) => c.writes_failed += 1,
        }
    }

    /// Records the load at start.
    pub fn loaded(&self, loaded: &Loaded) {
        let mut c = self.inner.lock();
        match loaded {
            Loaded::Missing => {}
            Loaded::Restored { restored_peers, .. } => c.restored_peers = *restored_peers,
            Loaded::Refused { error, .. } => {
                let i = SnapshotError::REASONS
                    .iter()
                    .position(|r| *r == error.reason())
                    .unwrap_or(0);
                c.load_failures[i] += 1;
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
