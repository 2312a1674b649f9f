//! Outstanding requests and the check every reply goes through.
//!
//! Each socket owns an [`Outstanding`] table with a fixed number of slots (the in-flight
//! bound). A request's transaction id names its slot and the slot's generation, so a reply
//! for a request that already timed out (its slot reused) is recognised as unexpected rather
//! than matched with the wrong request. [`classify`] then checks the reply against what was
//! asked: the action, the exact length, the peer entry size of the socket's address family
//! and the number of scrape rows.

use fjord_protocol::{IpFamily, Response};

/// The kind of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Connect (action 0).
    Connect,
    /// Announce (action 1).
    Announce,
    /// Scrape (action 2).
    Scrape,
}

impl Kind {
    /// The BEP 15 action number.
    pub fn action(self) -> u32 {
        match self {
            Kind::Connect => 0,
            Kind::Announce => 1,
            Kind::Scrape => 2,
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self.action() as usize
    }
}

/// A request that was sent and not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    /// What was asked.
    pub kind: Kind,
    /// Number of info hashes in a scrape (0 otherwise).
    pub scrape_hashes: u8,
    /// When it was sent, in the caller's clock (nanoseconds).
    pub sent_ns: u64,
}

impl Issued {
    /// A request of `kind` sent at `sent_ns` (a scrape of `scrape_hashes` hashes).
    pub fn new(kind: Kind, scrape_hashes: u8, sent_ns: u64) -> Self {
        Self {
            kind,
            scrape_hashes,
            sent_ns,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u16,
    live: bool,
    issued: Issued,
}

/// Fixed-size table of outstanding requests of one socket. Never allocates after `new`.
#[derive(Debug)]
pub struct Outstanding {
    slots: Box<[Slot]>,
    /// Indices of free slots (a stack).
    free: Vec<u16>,
}

impl Outstanding {
    /// A table with room for `capacity` (1..=65536) requests in flight.
    pub fn new(capacity: usize) -> Self {
        assert!(
            (1..=1 << 16).contains(&capacity),
            "in-flight bound out of range"
        );
        let empty = Slot {
            generation: 0,
            live: false,
            issued: Issued {
                kind: Kind::Connect,
                scrape_hashes: 0,
                sent_ns: 0,
            },
        };
        Self {
            slots: vec![empty; capacity].into_boxed_slice(),
            free: (0..capacity).rev().map(|i| i as u16).collect(),
        }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a slot for a new request and returns its transaction id, or `None` when full.
    pub fn issue(&mut self, issued: Issued) -> Option<u32> {
        let index = self.free.pop()?;
        let slot = &mut self.slots[usize::from(index)];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.issued = issued;
        Some(u32::from(slot.generation) << 16 | u32::from(index))
    }

    /// Completes the request with this transaction id, if it is outstanding.
    pub fn take(&mut self, transaction_id: u32) -> Option<Issued> {
        let index = (transaction_id & 0xffff) as u16;
        let generation = (transaction_id >> 16) as u16;
        let slot = self.slots.get_mut(usize::from(index))?;
        if !slot.live || slot.generation != generation {
            return None;
        }
        slot.live = false;
        self.free.push(index);
        Some(slot.issued)
    }

    /// Forgets every request sent before `deadline_ns`, calling `on_expired` for each.
    pub fn expire(&mut self, deadline_ns: u64, mut on_expired: impl FnMut(Issued)) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.live && slot.issued.sent_ns < deadline_ns {
                slot.live = false;
                self.free.push(index as u16);
                on_expired(slot.issued);
            }
        }
    }
}

/// Why a reply was judged malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Its action is neither the one asked nor an error.
    WrongAction,
    /// Its length is wrong for its action (connect ≠ 16, announce < 20, scrape not 8 + 12 n),
    /// or the datagram did not fit the receive buffer.
    WrongLength,
    /// An announce reply's peer list is not a whole number of entries of the socket's family
    /// (6 bytes for IPv4, 18 for IPv6).
    WrongEntrySize,
    /// A scrape reply with another number of rows than hashes asked.
    WrongRowCount,
    /// The codec refused it for another reason.
    Unparsable,
}

impl Malformed {
    /// All reasons, in report order.
    pub const ALL: [Malformed; 5] = [
        Malformed::WrongAction,
        Malformed::WrongLength,
        Malformed::WrongEntrySize,
        Malformed::WrongRowCount,
        Malformed::Unparsable,
    ];

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::WrongAction => "wrong_action",
            Malformed::WrongLength => "wrong_length",
            Malformed::WrongEntrySize => "wrong_entry_size",
            Malformed::WrongRowCount => "wrong_row_count",
            Malformed::Unparsable => "unparsable",
        }
    }
}

/// What a received datagram turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A valid connect reply.
    Connect {
        /// The request it answers.
        issued: Issued,
        /// The connection id granted.
        connection_id: u64,
    },
    /// A valid announce reply.
    Announce {
        /// The request it answers.
        issued: Issued,
        /// Number of peer entries.
        peers: u32,
    },
    /// A valid scrape reply.
    Scrape {
        /// The request it answers.
        issued: Issued,
    },
    /// An error reply (action 3) to an outstanding request.
    Error {
        /// The request it answers.
        issued: Issued,
    },
    /// A reply to an outstanding request that breaks the protocol; the request is done.
    Malformed {
        /// The request it answers.
        issued: Issued,
        /// What is wrong.
        reason: Malformed,
    },
    /// Too short to carry a transaction id, or its id matches no outstanding request
    /// (a late reply to a timed-out request, a duplicate, or garbage).
    Unexpected,
}

/// Matches `bytes` with an outstanding request of `table` and checks it.
///
/// `truncated` says the datagram was longer than the receive buffer.
pub fn classify(
    table: &mut Outstanding,
    bytes: &[u8],
    truncated: bool,
    family: IpFamily,
) -> Outcome {
    let Some(header) = bytes.get(..8) else {
        return Outcome::Unexpected;
    };
    let action = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let tid = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let Some(issued) = table.take(tid) else {
        return Outcome::Unexpected;
    };
    let malformed = |reason| Outcome::Malformed { issued, reason };
    if truncated {
        return malformed(Malformed::WrongLength);
    }
    if action == 3 {
        return match Response::parse(bytes, family) {
            Ok(Response::Error(_)) => Outcome::Error { issued },
            _ => malformed(Malformed::Unparsable),
        };
    }
    if action != issued.kind.action() {
        return malformed(Malformed::WrongAction);
    }
    // Length rules that depend on what was asked, checked before the codec so the report can
    // say precisely what is wrong.
    let len = bytes.len();
    match issued.kind {
        Kind::Connect if len != 16 => return malformed(Malformed::WrongLength),
        Kind::Announce => {
            let entry = match family {
                IpFamily::V4 => 6,
                IpFamily::V6 => 18,
            };
            if len < 20 {
                return malformed(Malformed::WrongLength);
            }
            if !(len - 20).is_multiple_of(entry) {
                return malformed(Malformed::WrongEntrySize);
            }
        }
        Kind::Scrape => {
            if len < 8 || !(len - 8).is_multiple_of(12) {
                return malformed(Malformed::WrongLength);
            }
            if (len - 8) / 12 != usize::from(issued.scrape_hashes) {
                return malformed(Malformed::WrongRowCount);
            }
        }
        Kind::Connect => {}
    }
    match (issued.kind, Response::parse(bytes, family)) {
        (Kind::Connect, Ok(Response::Connect(r))) => Outcome::Connect {
            issued,
            connection_id: r.connection_id.0,
        },
        (Kind::Announce, Ok(Response::Announce(r))) => Outcome::Announce {
            issued,
            peers: r.peers.len() as u32,
        },
        (Kind::Scrape, Ok(Response::Scrape(_))) => Outcome::Scrape { issued },
        _ => malformed(Malformed::Unparsable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(kind: Kind, scrape_hashes: u8) -> Issued {
        Issued {
            kind,
            scrape_hashes,
            sent_ns: 100,
        }
    }

    fn reply(action: u32, tid: u32, body_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&action.to_be_bytes());
        v.extend_from_slice(&tid.to_be_bytes());
        v.extend(std::iter::repeat_n(0u8, body_len));
        v
    }

    /// `r` is a malformed-reply outcome for exactly `want`.
    #[track_caller]
    fn assert_malformed(r: Outcome, want: Malformed) {
        assert!(
            matches!(r, Outcome::Malformed { reason, .. } if reason == want),
            "{r:?}, wanted Malformed::{want:?}"
        );
    }

    #[test]
    fn table_issues_unique_ids_and_refuses_when_full() {
        let mut t = Outstanding::new(2);
        let a = t.issue(issued(Kind::Connect, 0)).unwrap();
        let b = t.issue(issued(Kind::Connect, 0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.issue(issued(Kind::Connect, 0)), None);
        assert_eq!(t.in_flight(), 2);
        assert!(t.take(a).is_some());
        assert_eq!(t.take(a), None, "a reply is only accepted once");
        let c = t.issue(issued(Kind::Connect, 0)).unwrap();
        assert_ne!(a, c, "a reused slot gets a new generation");
        assert_eq!(
            t.take(a),
            None,
            "a late reply to the old request is not matched"
        );
        assert!(t.take(c).is_some());
    }

    #[test]
    fn expire_frees_only_old_requests() {
        let mut t = Outstanding::new(4);
        let old = t
            .issue(Issued {
                sent_ns: 10,
                ..issued(Kind::Announce, 0)
            })
            .unwrap();
        let new = t
            .issue(Issued {
                sent_ns: 50,
                ..issued(Kind::Scrape, 1)
            })
            .unwrap();
        let mut expired = Vec::new();
        t.expire(20, |i| expired.push(i.kind));
        assert_eq!(expired, vec![Kind::Announce]);
        assert_eq!(t.take(old), None);
        assert!(t.take(new).is_some());
        assert_eq!(t.available(), 4);
    }

    #[test]
    fn wrong_transaction_id_is_caught() {
        let mut t = Outstanding::new(4);
        let tid = t.issue(issued(Kind::Connect, 0)).unwrap();
        let bad = reply(0, tid ^ 0x0001_0000, 8);
        assert_eq!(
            classify(&mut t, &bad, false, IpFamily::V4),
            Outcome::Unexpected
        );
        assert_eq!(t.in_flight(), 1, "the real request is still outstanding");
        let good = reply(0, tid, 8);
        assert!(matches!(
            classify(&mut t, &good, false, IpFamily::V4),
            Outcome::Connect { .. }
        ));
        assert_eq!(
            classify(&mut t, &[0, 0, 0], false, IpFamily::V4),
            Outcome::Unexpected
        );
    }

    #[test]
    fn wrong_length_is_caught() {
        let mut t = Outstanding::new(8);
        let tid = t.issue(issued(Kind::Connect, 0)).unwrap();
        let r = classify(&mut t, &reply(0, tid, 9), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongLength);

        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(1, tid, 8), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongLength);

        let tid = t.issue(issued(Kind::Scrape, 2)).unwrap();
        let r = classify(&mut t, &reply(2, tid, 24 + 5), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongLength);

        let tid = t.issue(issued(Kind::Scrape, 2)).unwrap();
        let r = classify(&mut t, &reply(2, tid, 12), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongRowCount);

        let tid = t.issue(issued(Kind::Scrape, 2)).unwrap();
        let r = classify(&mut t, &reply(2, tid, 24), false, IpFamily::V4);
        assert!(matches!(r, Outcome::Scrape { .. }), "{r:?}");

        let tid = t.issue(issued(Kind::Connect, 0)).unwrap();
        let r = classify(&mut t, &reply(0, tid, 8), true, IpFamily::V4);
        assert_malformed(r, Malformed::WrongLength);
    }

    #[test]
    fn wrong_entry_size_is_caught() {
        let mut t = Outstanding::new(8);
        // IPv4 entries (6 bytes) in a reply on an IPv6 socket.
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(1, tid, 12 + 6 * 2), false, IpFamily::V6);
        assert_malformed(r, Malformed::WrongEntrySize);
        // A partial IPv4 entry.
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(1, tid, 12 + 7), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongEntrySize);
        // Whole entries pass and are counted.
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(1, tid, 12 + 18 * 3), false, IpFamily::V6);
        assert!(matches!(r, Outcome::Announce { peers: 3, .. }), "{r:?}");
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(1, tid, 12 + 18 * 3), false, IpFamily::V4);
        assert!(matches!(r, Outcome::Announce { peers: 9, .. }), "{r:?}");
    }

    #[test]
    fn wrong_action_and_error_replies_are_told_apart() {
        let mut t = Outstanding::new(8);
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let r = classify(&mut t, &reply(2, tid, 12), false, IpFamily::V4);
        assert_malformed(r, Malformed::WrongAction);
        let tid = t.issue(issued(Kind::Announce, 0)).unwrap();
        let mut e = reply(3, tid, 0);
        e.extend_from_slice(b"invalid connection id");
        let r = classify(&mut t, &e, false, IpFamily::V4);
        assert!(
            matches!(
                r,
                Outcome::Error {
                    issued: Issued {
                        kind: Kind::Announce,
                        ..
                    }
                }
            ),
            "{r:?}"
        );
    }
}
