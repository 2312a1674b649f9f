//! The snapshot format: random contents written and read back equal (proptest), and every way a
//! file can be damaged refused with its reason: truncated at every offset, every single bit
//! flipped, wrong magic, wrong version, wrong checksum, an empty file, trailing bytes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;

use super::*;

type Peers4 = Vec<(SocketAddrV4, bool, u32)>;
type Peers6 = Vec<(SocketAddrV6, bool, u32)>;

/// What a file holds, as the reader hands it out (records of one swarm merged, as restoring
/// them does: completed counts added, peers appended).
#[derive(Debug, Default, PartialEq, Eq)]
struct Contents {
    v4: BTreeMap<[u8; 20], (u32, Peers4)>,
    v6: BTreeMap<[u8; 20], (u32, Peers6)>,
}

fn write(written_unix: u64, c: &Contents) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), written_unix).unwrap();
    for (ih, (completed, peers)) in &c.v4 {
        w.swarm(ih, *completed, peers).unwrap();
    }
    for (ih, (completed, peers)) in &c.v6 {
        w.swarm(ih, *completed, peers).unwrap();
    }
    let (bytes, totals) = w.finish().unwrap();
    assert_eq!(totals.bytes, bytes.len() as u64);
    bytes
}

fn read(bytes: &[u8]) -> Result<(u64, Contents), SnapshotError> {
    let mut c = Contents::default();
    let (header, _) = read_snapshot(bytes, |_, ih, completed, peers| match peers {
        RecordPeers::V4(p) => {
            let e = c.v4.entry(*ih).or_default();
            e.0 += completed;
            e.1.extend_from_slice(p);
        }
        RecordPeers::V6(p) => {
            let e = c.v6.entry(*ih).or_default();
            e.0 += completed;
            e.1.extend_from_slice(p);
        }
    })?;
    Ok((header.written_unix, c))
}

/// A small file with both families, several blocks' worth of nothing fancy.
fn sample() -> Contents {
    let mut c = Contents::default();
    for s in 0..5u8 {
        let peers4 = (0..(s as u32 + 1))
            .map(|i| {
                (
                    SocketAddrV4::new(Ipv4Addr::new(10, s, 0, i as u8), 6881 + i as u16),
                    i % 2 == 0,
                    i * 8,
                )
            })
            .collect();
        c.v4.insert([s; 20], (u32::from(s) * 3, peers4));
    }
    let peers6 = vec![(
        SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 51413, 0, 0),
        true,
        32_767,
    )];
    c.v6.insert([0xAB; 20], (9, peers6));
    c
}

fn peers4() -> impl Strategy<Value = Peers4> {
    prop::collection::vec(
        (any::<u32>(), 1..=u16::MAX, any::<bool>(), 0..=MAX_AGE_SECS)
            .prop_map(|(ip, port, s, age)| (SocketAddrV4::new(Ipv4Addr::from(ip), port), s, age)),
        1..40,
    )
}

fn peers6() -> impl Strategy<Value = Peers6> {
    prop::collection::vec(
        (any::<u128>(), 1..=u16::MAX, any::<bool>(), 0..=MAX_AGE_SECS).prop_map(
            |(ip, port, s, age)| (SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0), s, age),
        ),
        1..20,
    )
}

fn contents() -> impl Strategy<Value = Contents> {
    (
        prop::collection::btree_map(any::<[u8; 20]>(), (any::<u32>(), peers4()), 0..30),
        prop::collection::btree_map(any::<[u8; 20]>(), (any::<u32>(), peers6()), 0..30),
    )
        .prop_map(|(v4, v6)| Contents { v4, v6 })
}

proptest! {
    #[test]
    fn random_contents_are_read_back_equal(c in contents(), t in any::<u64>()) {
        let bytes = write(t, &c);
        let (t2, back) = read(&bytes).unwrap();
        prop_assert_eq!(t2, t);
        prop_assert_eq!(back, c);
    }
}

#[test]
fn a_swarm_larger_than_a_record_and_many_blocks_round_trip() {
    let mut c = Contents::default();
    let big: Peers4 = (0..(MAX_PEERS_PER_RECORD as u32 * 2 + 5))
        .map(|i| {
            (
                SocketAddrV4::new(Ipv4Addr::from(i), 1),
                i % 3 == 0,
                i % 4000,
            )
        })
        .collect();
    c.v4.insert([1; 20], (42, big));
    // Enough small swarms for several 1 MiB blocks.
    for i in 0..60_000u32 {
        let mut ih = [0u8; 20];
        ih[..4].copy_from_slice(&i.to_be_bytes());
        ih[4] = 2;
        c.v4.insert(
            ih,
            (i, vec![(SocketAddrV4::new(Ipv4Addr::from(i), 2), false, 8)]),
        );
    }
    let bytes = write(7, &c);
    let mut totals = None;
    let (_, back) = read(&bytes).unwrap();
    assert_eq!(back, c);
    read_snapshot(&bytes[..], |_, _, _, _| {})
        .map(|(_, t)| totals = Some(t))
        .unwrap();
    let t = totals.unwrap();
    assert!(t.blocks >= 3, "{t:?}");
    assert_eq!(t.records, 60_000 + 3, "the big swarm takes three records");
    // 8 bytes per IPv4 peer plus 28 per record, plus block and file framing.
    let peers = MAX_PEERS_PER_RECORD as u64 * 2 + 5 + 60_000;
    assert!(t.bytes < peers * 8 + t.records * 28 + t.blocks * 13 + 100);
}

#[test]
fn an_empty_store_is_a_valid_snapshot() {
    let bytes = write(5, &Contents::default());
    assert_eq!(read(&bytes).unwrap(), (5, Contents::default()));
}

#[test]
fn truncated_at_every_offset_is_refused() {
    let bytes = write(1, &sample());
    for len in 0..bytes.len() {
        match read(&bytes[..len]) {
            Err(SnapshotError::Empty) => assert_eq!(len, 0),
            Err(SnapshotError::Truncated(_)) => assert!(len > 0),
            other => panic!("truncated to {len} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn every_single_bit_flip_is_refused() {
    let bytes = write(1, &sample());
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let r = read(&b);
        assert!(r.is_err(), "bit {bit} flipped: read as {r:?}");
    }
}

#[test]
fn foreign_files_and_wrong_versions_are_refused_by_name() {
    let good = write(1, &sample());
    assert_eq!(read(b"").unwrap_err(), SnapshotError::Empty);
    assert_eq!(read(b"{\"json\": 1}").unwrap_err(), SnapshotError::Foreign);
    assert_eq!(read(b"FJ").unwrap_err().reason(), "truncated");
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    assert_eq!(read(&wrong_magic).unwrap_err(), SnapshotError::Foreign);
    // A future version with a correct header checksum: refused as a version, not as damage.
    let mut future = good.clone();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&future[..HEADER_BYTES - 4]);
    future[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(read(&future).unwrap_err(), SnapshotError::Version(2));
    assert_eq!(SnapshotError::Version(2).reason(), "version");
}

#[test]
fn wrong_checksums_and_inconsistent_blocks_are_refused() {
    let good = write(1, &sample());
    let mut header_crc = good.clone();
    header_crc[HEADER_BYTES - 1] ^= 0x80;
    assert_eq!(
        read(&header_crc).unwrap_err(),
        SnapshotError::Checksum("the header")
    );
    let mut block_crc = good.clone();
    let last_block_crc = good.len() - (BLOCK_HEAD + END_PAYLOAD + 4) - 1;
    block_crc[last_block_crc] ^= 1;
    assert_eq!(
        read(&block_crc).unwrap_err(),
        SnapshotError::Checksum("a block")
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(read(&trailing).unwrap_err().reason(), "malformed");
    // A block length beyond the limit is refused before anything is allocated for it.
    let mut huge = good.clone();
    huge[HEADER_BYTES + 5..HEADER_BYTES + 9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        read(&huge).unwrap_err(),
        SnapshotError::Malformed("a block length")
    );
    // A record count that disagrees with the payload, checksum recomputed: structure checked too.
    let mut recount = good.clone();
    let records = le_u32(&recount[HEADER_BYTES + 1..HEADER_BYTES + 5]);
    recount[HEADER_BYTES + 1..HEADER_BYTES + 5].copy_from_slice(&(records + 1).to_le_bytes());
    let len = le_u32(&recount[HEADER_BYTES + 5..HEADER_BYTES + 9]) as usize;
    let end = HEADER_BYTES + BLOCK_HEAD + len;
    let crc = crc32fast::hash(&recount[HEADER_BYTES..end]);
    recount[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(read(&recount).unwrap_err().reason(), "malformed");
}

#[test]
fn ages_beyond_fifteen_bits_are_written_as_the_largest() {
    let mut c = Contents::default();
    c.v4.insert(
        [3; 20],
        (
            0,
            vec![(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1), true, 1 << 20)],
        ),
    );
    let (_, back) = read(&write(0, &c)).unwrap();
    assert_eq!(
        back.v4[&[3; 20]].1,
        [(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            true,
            MAX_AGE_SECS
        )]
    );
}
