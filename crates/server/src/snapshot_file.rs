//! The snapshot file: the peer store's swarms written out on stop (and every
//! `state.snapshot_interval_secs`) and read back on start. Compact, versioned, checksummed;
//! nothing in it is trusted until its checksum and structure have been checked.
//!
//! Layout (integers little-endian unless said otherwise):
//!
//! ```text
//! header   magic "FJORDSNP" (8) | version u32 | flags u32 (0) | written_unix u64 | crc32 u32
//! block*   kind u8 (4 = IPv4 swarms, 6 = IPv6 swarms) | records u32 | payload_len u32
//!          | payload | crc32 u32 (over kind .. payload)
//! end      kind u8 (0xFF) | 0 u32 | 24 u32 | records u64 | peers u64 | blocks u64 | crc32 u32
//! EOF      nothing may follow the end block
//!
//! record   info_hash [20] | completed u32 | peers u32 | peer * peers
//! peer     IPv4: ip [4] | port u16 (big-endian) | age_and_seeder u16
//!          IPv6: ip [16] | port u16 (big-endian) | age_and_seeder u16
//!          age_and_seeder: bit 15 = seeder, bits 0-14 = seconds since its last announce
//! ```
//!
//! An IPv4 peer takes 8 bytes and an IPv6 peer 20, plus 28 bytes per record (per swarm).
//! A swarm with more than [`MAX_PEERS_PER_RECORD`] peers is split over several records, the
//! later ones with `completed` = 0 (restoring adds a record's `completed` to its swarm). A block
//! is closed once its payload passes [`BLOCK_TARGET_BYTES`], so a reader never holds more than
//! [`MAX_PAYLOAD_BYTES`] of it; the reader refuses any length above that before allocating.
//!
//! Every field is checked before it is used: a truncated file, a flipped bit, a foreign file, a
//! newer version, counts that disagree, trailing bytes: each is a [`SnapshotError`] with a
//! [`reason`](SnapshotError::reason) for the metric `fjord_snapshot_load_failures_total`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use crate::fjord_store::PeerAddress;

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"FJORDSNP";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 28;
/// A block is closed when its payload reaches this many bytes.
pub const BLOCK_TARGET_BYTES: usize = 1 << 20;
/// Peers in one record at most (a larger swarm takes several records).
pub const MAX_PEERS_PER_RECORD: usize = 65_536;
/// The largest payload a block may have: the target plus one full IPv6 record.
pub const MAX_PAYLOAD_BYTES: usize = BLOCK_TARGET_BYTES + RECORD_HEAD + MAX_PEERS_PER_RECORD * 20;
/// Largest age a peer entry can carry (15 bits; the store's peer timeout is at most 32,767).
pub const MAX_AGE_SECS: u32 = 0x7FFF;

const RECORD_HEAD: usize = 28;
const BLOCK_HEAD: usize = 9;
const KIND_END: u8 = 0xFF;
const END_PAYLOAD: usize = 24;
const SEEDER_BIT: u16 = 0x8000;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SnapshotError {
    /// The file has no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// The file ends before its end block.
    #[error("the file is truncated (it ends inside {0})")]
    Truncated(&'static str),
    /// The file does not start with the snapshot magic.
    #[error("not a fjord snapshot (no FJORDSNP magic)")]
    Foreign,
    /// The file was written by a format this build does not know.
    #[error("format version {0}, this fjord reads version {VERSION}")]
    Version(u32),
    /// A checksum does not match the bytes it covers.
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
    /// The bytes are well checksummed but do not make sense (a count, a length, a kind).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The file could not be read (permissions, a directory in its place, an I/O error).
    #[error("cannot read it: {0}")]
    Unreadable(String),
}

impl SnapshotError {
    /// Every value [`SnapshotError::reason`] returns (the metric's `reason` label values).
    pub const REASONS: [&'static str; 7] = [
        "empty",
        "truncated",
        "foreign",
        "version",
        "checksum",
        "malformed",
        "unreadable",
    ];

    /// The `reason` label of `fjord_snapshot_load_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SnapshotError::Empty => "empty",
            SnapshotError::Truncated(_) => "truncated",
            SnapshotError::Foreign => "foreign",
            SnapshotError::Version(_) => "version",
            SnapshotError::Checksum(_) => "checksum",
            SnapshotError::Malformed(_) => "malformed",
            SnapshotError::Unreadable(_) => "unreadable",
        }
    }
}

/// A peer address family as the file stores it.
pub trait SnapshotAddr: PeerAddress {
    /// The block kind of this family's swarms.
    const KIND: u8;
    /// Bytes of one peer entry.
    const ENTRY_BYTES: usize;
    /// Appends the address and port.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads an address and port from exactly `ENTRY_BYTES - 2` bytes.
    fn get(bytes: &[u8]) -> Self;
}

impl SnapshotAddr for SocketAddrV4 {
    const KIND: u8 = 4;
    const ENTRY_BYTES: usize = 8;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ip().octets());
        out.extend_from_slice(&self.port().to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let mut ip = [0u8; 4];
        ip.copy_from_slice(&b[..4]);
        SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes([b[4], b[5]]))
    }
}

impl SnapshotAddr for SocketAddrV6 {
    const KIND: u8 = 6;
    const ENTRY_BYTES: usize = 20;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ip().octets());
        out.extend_from_slice(&self.port().to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[..16]);
        SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([b[16], b[17]]), 0, 0)
    }
}

/// What a snapshot holds, counted by its writer or its reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotTotals {
    /// Records (a swarm takes one, or several when it is very large).
    pub records: u64,
    /// Peer entries.
    pub peers: u64,
    /// Blocks of records.
    pub blocks: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Writes a snapshot to `out`, one swarm at a time.
pub struct SnapshotWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    block_kind: u8,
    block_records: u32,
    totals: SnapshotTotals,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header; `written_unix` is the wall-clock time of the snapshot (the reader ages
    /// every peer by the time that passed since).
    pub fn new(mut out: W, written_unix: u64) -> io::Result<Self> {
        let mut head = Vec::with_capacity(HEADER_BYTES);
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&written_unix.to_le_bytes());
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&head)?;
        Ok(SnapshotWriter {
            out,
            block: Vec::with_capacity(MAX_PAYLOAD_BYTES + BLOCK_HEAD),
            block_kind: 0,
            block_records: 0,
            totals: SnapshotTotals {
                bytes: HEADER_BYTES as u64,
                ..SnapshotTotals::default()
            },
        })
    }

    /// Adds one swarm: its completed count and its peers as `(address, seeder, age in seconds)`
    /// (ages above [`MAX_AGE_SECS`] are written as that: such a peer has expired anyway).
    pub fn swarm<A: SnapshotAddr>(
        &mut self,
        info_hash: &[u8; 20],
        completed: u32,
        peers: &[(A, bool, u32)],
    ) -> io::Result<()> {
        let mut completed = completed;
        for chunk in peers.chunks(MAX_PEERS_PER_RECORD) {
            if self.block_kind != A::KIND || self.block.len() >= BLOCK_TARGET_BYTES + BLOCK_HEAD {
                self.flush_block()?;
                self.block_kind = A::KIND;
                self.block.push(A::KIND);
                self.block.extend_from_slice(&[0; 8]); // records and length, set on flush
            }
            self.block.extend_from_slice(info_hash);
            self.block.extend_from_slice(&completed.to_le_bytes());
            self.block
                .extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            for (addr, seeder, age) in chunk {
                addr.put(&mut self.block);
                let v = (*age).min(MAX_AGE_SECS) as u16 | if *seeder { SEEDER_BIT } else { 0 };
                self.block.extend_from_slice(&v.to_le_bytes());
            }
            self.block_records += 1;
            self.totals.records += 1;
            self.totals.peers += chunk.len() as u64;
            completed = 0;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let payload = (self.block.len() - BLOCK_HEAD) as u32;
        self.block[1..5].copy_from_slice(&self.block_records.to_le_bytes());
        self.block[5..9].copy_from_slice(&payload.to_le_bytes());
        let crc = crc32fast::hash(&self.block);
        self.block.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.block)?;
        self.totals.blocks += 1;
        self.totals.bytes += self.block.len() as u64;
        self.block.clear();
        self.block_records = 0;
        self.block_kind = 0;
        Ok(())
    }

    /// Writes the last block and the end block; returns the output and what was written.
    pub fn finish(mut self) -> io::Result<(W, SnapshotTotals)> {
        self.flush_block()?;
        let mut end = Vec::with_capacity(BLOCK_HEAD + END_PAYLOAD + 4);
        end.push(KIND_END);
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&(END_PAYLOAD as u32).to_le_bytes());
        end.extend_from_slice(&self.totals.records.to_le_bytes());
        end.extend_from_slice(&self.totals.peers.to_le_bytes());
        end.extend_from_slice(&self.totals.blocks.to_le_bytes());
        let crc = crc32fast::hash(&end);
        end.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&end)?;
        self.totals.bytes += end.len() as u64;
        self.out.flush()?;
        Ok((self.out, self.totals))
    }
}

/// One record's peers, as the reader hands them out.
#[derive(Debug, Clone, Copy)]
pub enum RecordPeers<'a> {
    /// Peers of an IPv4 swarm.
    V4(&'a [(SocketAddrV4, bool, u32)]),
    /// Peers of an IPv6 swarm.
    V6(&'a [(SocketAddrV6, bool, u32)]),
}

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Wall-clock time the snapshot was written, Unix seconds.
    pub written_unix: u64,
}

/// Reads a snapshot from `input`, calling `record(header, info_hash, completed, peers)` for every
/// record of every block once that block's checksum and structure are checked. On an error some
/// records may already have been handed out: the caller must then discard what it built from
/// them (the server restores into a fresh store and drops it).
pub fn read_snapshot<R: Read>(
    mut input: R,
    mut record: impl FnMut(&SnapshotHeader, &[u8; 20], u32, RecordPeers<'_>),
) -> Result<(SnapshotHeader, SnapshotTotals), SnapshotError> {
    let mut head = [0u8; HEADER_BYTES];
    let got = read_full(&mut input, &mut head)?;
    if got == 0 {
        return Err(SnapshotError::Empty);
    }
    // Magic before length: a short foreign file is foreign, not a truncated snapshot.
    let magic_seen = got.min(MAGIC.len());
    if head[..magic_seen] != MAGIC[..magic_seen] {
        return Err(SnapshotError::Foreign);
    }
    if got < HEADER_BYTES {
        return Err(SnapshotError::Truncated("the header"));
    }
    let (body, crc) = head.split_at(HEADER_BYTES - 4);
    if crc32fast::hash(body) != le_u32(crc) {
        return Err(SnapshotError::Checksum("the header"));
    }
    let version = le_u32(&head[8..12]);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    if le_u32(&head[12..16]) != 0 {
        return Err(SnapshotError::Malformed("unknown header flags"));
    }
    let header = SnapshotHeader {
        written_unix: le_u64(&head[16..24]),
    };
    let mut totals = SnapshotTotals {
        bytes: HEADER_BYTES as u64,
        ..SnapshotTotals::default()
    };
    let mut block = Vec::new();
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    loop {
        let mut bh = [0u8; BLOCK_HEAD];
        if read_full(&mut input, &mut bh)? < BLOCK_HEAD {
            return Err(SnapshotError::Truncated("a block header"));
        }
        let kind = bh[0];
        let records = le_u32(&bh[1..5]);
        let len = le_u32(&bh[5..9]) as usize;
        let fits = if kind == KIND_END {
            len == END_PAYLOAD
        } else {
            len <= MAX_PAYLOAD_BYTES
        };
        if !fits {
            return Err(SnapshotError::Malformed("a block length"));
        }
        block.clear();
        block.extend_from_slice(&bh);
        block.resize(BLOCK_HEAD + len + 4, 0);
        if read_full(&mut input, &mut block[BLOCK_HEAD..])? < len + 4 {
            return Err(SnapshotError::Truncated("a block"));
        }
        let (covered, crc) = block.split_at(BLOCK_HEAD + len);
        if crc32fast::hash(covered) != le_u32(crc) {
            return Err(SnapshotError::Checksum("a block"));
        }
        totals.bytes += block.len() as u64;
        let payload = &covered[BLOCK_HEAD..];
        match kind {
            KIND_END => {
                let want = (
                    le_u64(&payload[..8]),
                    le_u64(&payload[8..16]),
                    le_u64(&payload[16..24]),
                );
                if records != 0 || want != (totals.records, totals.peers, totals.blocks) {
                    return Err(SnapshotError::Malformed(
                        "the end block's totals disagree with the blocks read",
                    ));
                }
                let mut extra = [0u8; 1];
                if read_full(&mut input, &mut extra)? != 0 {
                    return Err(SnapshotError::Malformed("bytes after the end block"));
                }
                return Ok((header, totals));
            }
            SocketAddrV4::KIND => {
                parse_block(payload, records, &mut v4, &mut totals, |ih, c, p| {
                    record(&header, ih, c, RecordPeers::V4(p))
                })?
            }
            SocketAddrV6::KIND => {
                parse_block(payload, records, &mut v6, &mut totals, |ih, c, p| {
                    record(&header, ih, c, RecordPeers::V6(p))
                })?
            }
            _ => return Err(SnapshotError::Malformed("an unknown block kind")),
        }
        totals.blocks += 1;
    }
}

/// Parses a checksummed block of `records` records of family `A`; hands each to `f`.
fn parse_block<A: SnapshotAddr>(
    mut payload: &[u8],
    records: u32,
    scratch: &mut Vec<(A, bool, u32)>,
    totals: &mut SnapshotTotals,
    mut f: impl FnMut(&[u8; 20], u32, &[(A, bool, u32)]),
) -> Result<(), SnapshotError> {
    if records == 0 {
        return Err(SnapshotError::Malformed("a block without records"));
    }
    for _ in 0..records {
        let Some((head, rest)) = payload.split_first_chunk::<RECORD_HEAD>() else {
            return Err(SnapshotError::Malformed("a record runs past its block"));
        };
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&head[..20]);
        let completed = le_u32(&head[20..24]);
        let peers = le_u32(&head[24..28]) as usize;
        if peers == 0 || peers > MAX_PEERS_PER_RECORD {
            return Err(SnapshotError::Malformed("a record's peer count"));
        }
        let bytes = peers * A::ENTRY_BYTES;
        if rest.len() < bytes {
            return Err(SnapshotError::Malformed("a record runs past its block"));
        }
        let (entries, rest) = rest.split_at(bytes);
        scratch.clear();
        for e in entries.chunks_exact(A::ENTRY_BYTES) {
            let (addr, tail) = e.split_at(A::ENTRY_BYTES - 2);
            let v = u16::from_le_bytes([tail[0], tail[1]]);
            scratch.push((
                A::get(addr),
                v & SEEDER_BIT != 0,
                u32::from(v & !SEEDER_BIT),
            ));
        }
        f(&info_hash, completed, scratch);
        totals.records += 1;
        totals.peers += peers as u64;
        payload = rest;
    }
    if !payload.is_empty() {
        return Err(SnapshotError::Malformed(
            "bytes after a block's last record",
        ));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, SnapshotError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapshotError::Unreadable(e.to_string())),
        }
    }
    Ok(n)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[path = "snapshot_file_tests.rs"]
mod tests;
