//! Announces by client software, counted by each worker with one table lookup and one
//! increment per announce.
//!
//! [`ClientTally`] is a small direct-mapped table keyed by the first eight bytes of the peer
//! id (`-qB4630-`, `-TR3000-`, …), which for nearly every client name the software and its
//! version and nothing else. Each slot holds the key, what the decoder
//! ([`fjord_protocol::client::identify`]) made of it, and two counts (announces, of which
//! `started`). An announce hashes its eight bytes to one bucket of [`WAYS`] slots and bumps the
//! slot holding them: no decoding, no allocation, no lock, and the version comes for free
//! (it is part of the key).
//!
//! The first announce with a new prefix misses and is decoded (cold path). A prefix whose
//! answer depends on those eight bytes alone ([`Identified::fixed_prefix`]) takes a free slot
//! of its bucket; anything else — garbage, a client whose id has random bytes early, or a
//! full bucket — is counted per client in [`ClientTally::unlisted`], without its version. So
//! a flood of random peer ids costs one decode each and lands in `other`; it can neither add
//! a label nor take a slot. Only well-formed prefixes take slots, at most [`SLOTS`] per
//! worker, and once they are taken later versions are still counted under their client.
//!
//! Workers publish their tally with their other counters; [`ClientTally::merge`] adds one
//! tally into another (slot by slot, overflowing into `unlisted`) when the slots are summed.

use fjord_protocol::client::{Client, Identified, Version, identify};

/// Slots per bucket (a bucket's keys are 32 bytes: half a cache line).
pub const WAYS: usize = 4;
/// Buckets (the top eight bits of the hashed key pick one).
pub const BUCKETS: usize = 256;
/// Prefixes a worker itemises with their version.
pub const SLOTS: usize = WAYS * BUCKETS;
/// Number of clients (the label set of `fjord_client_*`).
pub const CLIENTS: usize = Client::ALL.len();

/// Announces and `started` events of one client (or one client version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientCount {
    /// Announces answered.
    pub announces: u64,
    /// Of which with event `started` (a download beginning).
    pub started: u64,
}

impl ClientCount {
    fn add(&mut self, o: ClientCount) {
        self.announces += o.announces;
        self.started += o.started;
    }
}

/// What a slot's key decoded to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Decoded {
    client: Client,
    version: Option<Version>,
}

/// One worker's announces by client software (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTally {
    /// First eight bytes of a peer id (little-endian); 0 = free slot.
    keys: [[u64; WAYS]; BUCKETS],
    /// What each key decoded to (written once, when the slot is taken).
    decoded: [[Decoded; WAYS]; BUCKETS],
    counts: [[ClientCount; WAYS]; BUCKETS],
    /// Counted without a slot, by client index: garbage, ids without a fixed prefix, full
    /// buckets. Their versions are not itemised.
    pub unlisted: [ClientCount; CLIENTS],
}

impl Default for ClientTally {
    fn default() -> Self {
        ClientTally {
            keys: [[0; WAYS]; BUCKETS],
            decoded: [[Decoded::default(); WAYS]; BUCKETS],
            counts: [[ClientCount::default(); WAYS]; BUCKETS],
            unlisted: [ClientCount::default(); CLIENTS],
        }
    }
}

impl std::fmt::Debug for ClientTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTally")
            .field("slots_used", &self.slots_used())
            .field("per_client", &self.per_client())
            .finish()
    }
}

#[inline]
fn prefix_key(peer_id: &[u8; 20]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *peer_id;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// Fibonacci hashing: the top eight bits of the product pick the bucket.
#[inline]
fn bucket(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 as usize
}

impl ClientTally {
    /// Counts one announce from `peer_id`; `started` if its event is `started`. The hot path:
    /// one bucket read, one compare per way, one increment (two with `started`).
    #[inline]
    pub fn count(&mut self, peer_id: &[u8; 20], started: bool) {
        let key = prefix_key(peer_id);
        let b = bucket(key);
        if key != 0
            && let Some(w) = self.keys[b].iter().position(|&k| k == key)
        {
            let c = &mut self.counts[b][w];
            c.announces += 1;
            c.started += u64::from(started);
            return;
        }
        self.miss(peer_id, key, b, started);
    }

    /// A prefix not in the table: decode it, and give it a slot if it may have one.
    #[cold]
    #[inline(never)]
    fn miss(&mut self, peer_id: &[u8; 20], key: u64, b: usize, started: bool) {
        let one = ClientCount {
            announces: 1,
            started: u64::from(started),
        };
        let id = identify(peer_id);
        self.add_prefix(key, b, id, one);
    }

    /// Adds `n` under `key` (bucket `b`): into its slot, a free slot of the bucket if `id`
    /// allows one, or `unlisted`.
    fn add_prefix(&mut self, key: u64, b: usize, id: Identified, n: ClientCount) {
        if key != 0 && id.fixed_prefix {
            let ways = &mut self.keys[b];
            let found = ways
                .iter()
                .position(|&k| k == key)
                .or_else(|| ways.iter().position(|&k| k == 0));
            if let Some(w) = found {
                if ways[w] == 0 {
                    ways[w] = key;
                    self.decoded[b][w] = Decoded {
                        client: id.client,
                        version: id.version,
                    };
                }
                self.counts[b][w].add(n);
                return;
            }
        }
        self.unlisted[id.client as usize].add(n);
    }

    /// Adds another worker's tally into this one.
    pub fn merge(&mut self, o: &ClientTally) {
        for (b, ways) in o.keys.iter().enumerate() {
            for (w, &key) in ways.iter().enumerate() {
                if key == 0 {
                    continue;
                }
                let d = o.decoded[b][w];
                let id = Identified {
                    client: d.client,
                    version: d.version,
                    fixed_prefix: true,
                };
                self.add_prefix(key, b, id, o.counts[b][w]);
            }
        }
        for (x, y) in self.unlisted.iter_mut().zip(o.unlisted) {
            x.add(y);
        }
    }

    /// Every itemised prefix: (client, version, counts).
    fn slots(&self) -> impl Iterator<Item = (Decoded, ClientCount)> + '_ {
        self.keys.iter().enumerate().flat_map(move |(b, ways)| {
            ways.iter()
                .enumerate()
                .filter(|&(_, &k)| k != 0)
                .map(move |(w, _)| (self.decoded[b][w], self.counts[b][w]))
        })
    }

    /// Slots taken.
    pub fn slots_used(&self) -> usize {
        self.keys.iter().flatten().filter(|&&k| k != 0).count()
    }

    /// Counts by client, indexed like [`Client::ALL`].
    pub fn per_client(&self) -> [ClientCount; CLIENTS] {
        let mut out = self.unlisted;
        for (d, c) in self.slots() {
            out[d.client as usize].add(c);
        }
        out
    }

    /// Counts by (client, version), versions of the same major.minor summed, sorted by
    /// client then version. Announces whose version is not itemised (unlisted, or a prefix
    /// without a version) are not in it: the client's total minus these is "other versions".
    pub fn per_version(&self) -> Vec<(Client, Version, ClientCount)> {
        let mut out: Vec<(Client, Version, ClientCount)> = Vec::new();
        for (d, c) in self.slots() {
            let Some(v) = d.version else { continue };
            match out
                .iter_mut()
                .find(|(cl, ver, _)| *cl == d.client && *ver == v)
            {
                Some((_, _, sum)) => sum.add(c),
                None => out.push((d.client, v, c)),
            }
        }
        out.sort_by_key(|&(c, v, _)| (c, v));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8], tail: u8) -> [u8; 20] {
        let mut out = [tail; 20];
        out[..prefix.len()].copy_from_slice(prefix);
        out
    }

    #[test]
    fn counts_by_client_and_version() {
        let mut t = ClientTally::default();
        for i in 0..5 {
            t.count(&id(b"-qB4630-", i), i == 0);
        }
        t.count(&id(b"-qB4640-", 1), true);
        t.count(&id(b"-qB5010-", 1), false);
        t.count(&id(b"-TR3000-", 7), true);
        t.count(&id(b"-LT2080-", 7), false);
        let per = t.per_client();
        let q = per[Client::QBittorrent as usize];
        assert_eq!((q.announces, q.started), (7, 2));
        assert_eq!(per[Client::Transmission as usize].started, 1);
        assert_eq!(per[Client::Libtorrent as usize].announces, 1);
        assert_eq!(per[Client::Other as usize].announces, 0);
        let versions: Vec<(Client, String, u64)> = t
            .per_version()
            .into_iter()
            .map(|(c, v, n)| (c, v.to_string(), n.announces))
            .collect();
        assert_eq!(
            versions,
            [
                (Client::QBittorrent, "4.6".to_string(), 6),
                (Client::QBittorrent, "5.0".to_string(), 1),
                (Client::Transmission, "3.00".to_string(), 1),
                (Client::Libtorrent, "2.0".to_string(), 1),
            ]
        );
        assert_eq!(t.slots_used(), 5);
    }

    /// Bad input: random peer ids are `other`, take no slot and add no label.
    #[test]
    fn garbage_peer_ids_are_other_and_take_no_slot() {
        let mut t = ClientTally::default();
        let mut s: u64 = 1;
        for _ in 0..10_000 {
            let mut pid = [0u8; 20];
            for b in pid.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (s >> 56) as u8;
            }
            t.count(&pid, false);
        }
        t.count(&[0; 20], true); // the all-zero key is never a slot
        assert_eq!(t.slots_used(), 0);
        let per = t.per_client();
        assert_eq!(per[Client::Other as usize].announces, 10_001);
        assert_eq!(per.iter().map(|c| c.announces).sum::<u64>(), 10_001);
    }

    #[test]
    fn a_full_bucket_still_counts_the_client() {
        let mut t = ClientTally::default();
        // Far more distinct well-formed qBittorrent prefixes than slots.
        let chars = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut n = 0u64;
        for &a in chars {
            for &b in chars {
                t.count(&id(&[b'-', b'q', b'B', b'4', b'6', a, b, b'-'], 0), false);
                n += 1;
            }
        }
        assert!(t.slots_used() <= SLOTS);
        assert_eq!(t.per_client()[Client::QBittorrent as usize].announces, n);
        assert!(t.unlisted[Client::QBittorrent as usize].announces > 0);
    }

    #[test]
    fn merge_adds_two_workers() {
        let (mut a, mut b) = (ClientTally::default(), ClientTally::default());
        a.count(&id(b"-UT355W-", 1), true);
        b.count(&id(b"-UT355W-", 2), false);
        b.count(&id(b"-TR4060-", 2), false);
        b.count(&[0xfe; 20], false);
        a.merge(&b);
        let per = a.per_client();
        assert_eq!(per[Client::UTorrent as usize].announces, 2);
        assert_eq!(per[Client::UTorrent as usize].started, 1);
        assert_eq!(per[Client::Transmission as usize].announces, 1);
        assert_eq!(per[Client::Other as usize].announces, 1);
        assert_eq!(a.slots_used(), 2);
    }
}
