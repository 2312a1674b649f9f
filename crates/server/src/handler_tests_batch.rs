//! Handler tests: the staged batch path (issue 12).

use super::*;

/// A reply sink collecting (datagram index, reply bytes).
struct Collect {
    buf: [u8; MAX_REPLY],
    replies: Vec<(usize, Vec<u8>)>,
    room: usize,
}

impl crate::handler::ReplySink for Collect {
    fn buf(&mut self) -> Option<&mut [u8]> {
        (self.replies.len() < self.room).then_some(&mut self.buf[..])
    }
    fn commit(&mut self, j: usize, len: usize) {
        self.replies.push((j, self.buf[..len].to_vec()));
    }
}

/// Issue 12: a batch handled in stages (checks, prefetches, announces) gets exactly the
/// replies and counters that handling its datagrams one by one gets, for a mix of connects,
/// announces of both families (new peers, refreshes, stops, seeders), scrapes of swarms the
/// batch does not announce to, garbage and bad connection ids; a sink that fills up stops it.
#[test]
fn issue12_a_batch_answers_as_its_datagrams_one_by_one() {
    let (mut one, mut batch) = (handler(), handler());
    let srcs: Vec<SocketAddr> = (1..=6u8)
        .map(|i| v4([10, 0, 0, i], 6000))
        .chain((1..=3).map(|i| v6(&format!("2001:db8::{i}"), 6000)))
        .collect();
    // Connection ids are the same for both handlers (same key and clock).
    let ids: Vec<u64> = srcs.iter().map(|&s| connect(&mut one, s)).collect();
    for &s in &srcs {
        connect(&mut batch, s);
    }
    let mut datagrams: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for round in 0..3u8 {
        for (k, &s) in srcs.iter().enumerate() {
            let mut a = Ann::new(ids[k], 1 + (k as u8 % 3));
            a.left = if k % 2 == 0 { 0 } else { 100 };
            a.event = match (round, k % 4) {
                (0, _) => AnnounceEvent::Started,
                (2, 3) => AnnounceEvent::Stopped,
                _ => AnnounceEvent::None,
            };
            a.num_want = [-1, 0, 5][k % 3];
            datagrams.push((s, a.bytes()));
        }
        datagrams.push((srcs[0], connect_bytes(7)));
        datagrams.push((srcs[1], scrape_bytes(ids[1], 3, &[[9; 20], [8; 20]])));
        datagrams.push((srcs[2], b"garbage that parses as nothing".to_vec()));
        datagrams.push((srcs[3], Ann::new(0xdead, 1).bytes())); // a forged id
    }
    for chunk in datagrams.chunks(16) {
        let expected: Vec<(usize, Vec<u8>)> = chunk
            .iter()
            .enumerate()
            .filter_map(|(j, (s, d))| call(&mut one, *s, d).map(|r| (j, r)))
            .collect();
        let mut sink = Collect {
            buf: [0; MAX_REPLY],
            replies: Vec::new(),
            room: usize::MAX,
        };
        batch.handle_batch(
            Now::at(NOW),
            chunk.len(),
            |j| (chunk[j].0, &chunk[j].1[..]),
            &mut sink,
        );
        sink.replies.sort_by_key(|r| r.0);
        assert_eq!(sink.replies, expected);
    }
    assert_eq!(batch.counters, one.counters);
    // A full sink: no more replies than it has room for, and nothing panics.
    let mut sink = Collect {
        buf: [0; MAX_REPLY],
        replies: Vec::new(),
        room: 3,
    };
    let chunk = &datagrams[..16];
    batch.handle_batch(
        Now::at(NOW),
        chunk.len(),
        |j| (chunk[j].0, &chunk[j].1[..]),
        &mut sink,
    );
    assert_eq!(sink.replies.len(), 3);
}
