//! Tracker → client messages: connect, announce, scrape and error responses.
//!
//! Parsing is strict, as strict as the pickiest real client (libtorrent rejects an announce
//! response whose length is not 20 + k·entry size; Transmission requires a connect response
//! of exactly 16 bytes), so that `fjord-bench` catches a server that would be rejected.

use core::iter::FusedIterator;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::codec::{Reader, Writer};
use crate::{Action, BufferTooSmall, ConnectionId, TransactionId};

/// Length of a connect response (exactly).
pub const CONNECT_RESPONSE_LEN: usize = 16;
/// Length of the announce response header; peer entries follow it.
pub const ANNOUNCE_RESPONSE_HEADER_LEN: usize = 20;
/// Length of the scrape response header; 12-byte rows follow it.
pub const SCRAPE_RESPONSE_HEADER_LEN: usize = 8;
/// Length of the error response header; the message follows it.
pub const ERROR_RESPONSE_HEADER_LEN: usize = 8;
/// Size of an IPv4 peer entry (address + port).
pub const IPV4_PEER_LEN: usize = 6;
/// Size of an IPv6 peer entry (address + port).
pub const IPV6_PEER_LEN: usize = 18;
/// Size of a scrape response row.
pub const SCRAPE_ROW_LEN: usize = 12;

/// A connect response: `action 0 · transaction id · connection id` (exactly 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectResponse {
    /// Echoed from the request.
    pub transaction_id: TransactionId,
    /// The id the client must send with its announces and scrapes.
    pub connection_id: ConnectionId,
}

impl ConnectResponse {
    /// Writes the 16-byte response and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u32(Action::Connect.to_wire())?;
        w.u32(self.transaction_id.0)?;
        w.u64(self.connection_id.0)?;
        Ok(w.finish())
    }
}

/// The fixed part of an announce response.
///
/// Wire order is `interval · leechers · seeders`: leechers come *before* seeders here, while
/// a scrape row has seeders first (see [`ScrapeStats`]). The field names, not their order,
/// are what this crate maps to the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AnnounceResponseHeader {
    /// Echoed from the request.
    pub transaction_id: TransactionId,
    /// Seconds until the next announce (libtorrent clamps it to ≥ 300 s by default).
    pub interval: u32,
    /// Peers with `left != 0` in the swarm.
    pub leechers: u32,
    /// Peers with `left == 0` in the swarm.
    pub seeders: u32,
}

impl AnnounceResponseHeader {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.array(self.to_bytes())
    }

    fn to_bytes(self) -> [u8; ANNOUNCE_RESPONSE_HEADER_LEN] {
        let words = [
            Action::Announce.to_wire(),
            self.transaction_id.0,
            self.interval,
            self.leechers,
            self.seeders,
        ];
        let mut out = [0; ANNOUNCE_RESPONSE_HEADER_LEN];
        for (dst, word) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

fn v4_entry(peer: &SocketAddrV4) -> [u8; IPV4_PEER_LEN] {
    let [a, b, c, d] = peer.ip().octets();
    let [p0, p1] = peer.port().to_be_bytes();
    [a, b, c, d, p0, p1]
}

fn v6_entry(peer: &SocketAddrV6) -> [u8; IPV6_PEER_LEN] {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        a8,
        a9,
        a10,
        a11,
        a12,
        a13,
        a14,
        a15,
    ] = peer.ip().octets();
    let [p0, p1] = peer.port().to_be_bytes();
    [
        a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, p0, p1,
    ]
}

/// Writes an announce response with 6-byte IPv4 peer entries and returns its length.
///
/// Send it only to an IPv4 client (including an IPv4-mapped source on a dual-stack
/// socket): a client cannot detect the entry size and will misread 18-byte entries as three
/// 6-byte ones. Every peer the iterator yields is written; cap the count beforehand
/// (opentracker: 200 IPv4 peers = 1,220 bytes), or get [`BufferTooSmall`].
pub fn write_announce_response_v4(
    out: &mut [u8],
    header: &AnnounceResponseHeader,
    peers: impl IntoIterator<Item = SocketAddrV4>,
) -> Result<usize, BufferTooSmall> {
    write_announce_response(out, header, peers)
}

/// Writes an announce response with 18-byte IPv6 peer entries and returns its length.
///
/// Same caveats as [`write_announce_response_v4`] (opentracker caps IPv6 at 66 peers =
/// 1,208 bytes). Flow info and scope id are not sent.
pub fn write_announce_response_v6(
    out: &mut [u8],
    header: &AnnounceResponseHeader,
    peers: impl IntoIterator<Item = SocketAddrV6>,
) -> Result<usize, BufferTooSmall> {
    write_announce_response(out, header, peers)
}

fn write_announce_response<P: PeerEntry>(
    out: &mut [u8],
    header: &AnnounceResponseHeader,
    peers: impl IntoIterator<Item = P>,
) -> Result<usize, BufferTooSmall> {
    let mut w = AnnounceResponseWriter::new(out)?;
    for peer in peers {
        if !w.push(&peer) {
            return Err(BufferTooSmall);
        }
    }
    Ok(w.finish(header))
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for core::net::SocketAddrV4 {}
    impl Sealed for core::net::SocketAddrV6 {}
}

/// A peer address as an announce response's entry: [`SocketAddrV4`] (6 bytes) or
/// [`SocketAddrV6`] (18 bytes). Sealed.
pub trait PeerEntry: sealed::Sealed {
    /// Bytes of one entry.
    const LEN: usize;
    /// Writes the entry into `out`, which is exactly [`PeerEntry::LEN`] bytes long.
    fn write_entry(&self, out: &mut [u8]);
}

impl PeerEntry for SocketAddrV4 {
    const LEN: usize = IPV4_PEER_LEN;
    #[inline]
    fn write_entry(&self, out: &mut [u8]) {
        out.copy_from_slice(&v4_entry(self));
    }
}

impl PeerEntry for SocketAddrV6 {
    const LEN: usize = IPV6_PEER_LEN;
    #[inline]
    fn write_entry(&self, out: &mut [u8]) {
        out.copy_from_slice(&v6_entry(self));
    }
}

/// An announce response written in place, for a caller that learns the peers one at a time
/// and the swarm's counts last (the tracker's store hands out peers while it updates the
/// swarm): the entries go in behind room left for the header, and [`finish`] writes the header.
/// One family per response (`P`), as BEP 15 requires.
///
/// [`finish`]: AnnounceResponseWriter::finish
pub struct AnnounceResponseWriter<'a, P> {
    header: &'a mut [u8; ANNOUNCE_RESPONSE_HEADER_LEN],
    entries: &'a mut [u8],
    len: usize,
    peers: usize,
    family: core::marker::PhantomData<fn(&P)>,
}

impl<'a, P: PeerEntry> AnnounceResponseWriter<'a, P> {
    /// A writer into `out`; [`BufferTooSmall`] if `out` cannot hold the header.
    pub fn new(out: &'a mut [u8]) -> Result<Self, BufferTooSmall> {
        let (header, entries) = out.split_first_chunk_mut().ok_or(BufferTooSmall)?;
        Ok(Self {
            header,
            entries,
            len: 0,
            peers: 0,
            family: core::marker::PhantomData,
        })
    }

    /// Appends `peer`'s entry; false (and nothing written) if it does not fit.
    #[inline]
    pub fn push(&mut self, peer: &P) -> bool {
        let end = self.len + P::LEN;
        match self.entries.get_mut(self.len..end) {
            Some(entry) => {
                peer.write_entry(entry);
                self.len = end;
                self.peers += 1;
                true
            }
            None => false,
        }
    }

    /// Entries written so far.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Writes the header and returns the response's length.
    pub fn finish(self, header: &AnnounceResponseHeader) -> usize {
        *self.header = header.to_bytes();
        ANNOUNCE_RESPONSE_HEADER_LEN + self.len
    }
}

/// An address family: IPv4 or IPv6. It decides the peer entry size of an announce response,
/// which the packet does not say (the client knows it from the family of the socket it used),
/// and fjord counts every request by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4: 6-byte peer entries.
    V4,
    /// IPv6: 18-byte peer entries.
    V6,
}

impl IpFamily {
    /// Both families, in index order (`family as usize`).
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of `ip`; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv4, as BEP 15
    /// clients on a dual-stack socket expect.
    pub const fn of(ip: &std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(_) => IpFamily::V4,
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(_) => IpFamily::V4,
                None => IpFamily::V6,
            },
        }
    }

    /// The size of one peer entry.
    pub const fn entry_len(self) -> usize {
        match self {
            IpFamily::V4 => IPV4_PEER_LEN,
            IpFamily::V6 => IPV6_PEER_LEN,
        }
    }
}

/// The peer entries of a parsed announce response, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnouncePeers<'a> {
    /// 6-byte entries: IPv4 address, port.
    V4(&'a [[u8; IPV4_PEER_LEN]]),
    /// 18-byte entries: IPv6 address, port.
    V6(&'a [[u8; IPV6_PEER_LEN]]),
}

impl<'a> AnnouncePeers<'a> {
    /// Number of peers.
    pub fn len(&self) -> usize {
        match self {
            AnnouncePeers::V4(peers) => peers.len(),
            AnnouncePeers::V6(peers) => peers.len(),
        }
    }

    /// True if there are no peers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The family these entries were parsed as.
    pub fn family(&self) -> IpFamily {
        match self {
            AnnouncePeers::V4(_) => IpFamily::V4,
            AnnouncePeers::V6(_) => IpFamily::V6,
        }
    }

    /// The peers in wire order.
    pub fn iter(&self) -> AnnouncePeersIter<'a> {
        match *self {
            AnnouncePeers::V4(peers) => AnnouncePeersIter::V4(peers.iter()),
            AnnouncePeers::V6(peers) => AnnouncePeersIter::V6(peers.iter()),
        }
    }
}

/// Iterator returned by [`AnnouncePeers::iter`].
#[derive(Clone, Debug)]
pub enum AnnouncePeersIter<'a> {
    /// Over IPv4 entries.
    V4(core::slice::Iter<'a, [u8; IPV4_PEER_LEN]>),
    /// Over IPv6 entries.
    V6(core::slice::Iter<'a, [u8; IPV6_PEER_LEN]>),
}

impl Iterator for AnnouncePeersIter<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            AnnouncePeersIter::V4(entries) => entries.next().map(|&[a, b, c, d, p0, p1]| {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(a, b, c, d),
                    u16::from_be_bytes([p0, p1]),
                ))
            }),
            AnnouncePeersIter::V6(entries) => entries.next().map(|&[ip @ .., p0, p1]| {
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes([p0, p1]),
                    0,
                    0,
                ))
            }),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            AnnouncePeersIter::V4(entries) => entries.size_hint(),
            AnnouncePeersIter::V6(entries) => entries.size_hint(),
        }
    }
}

impl ExactSizeIterator for AnnouncePeersIter<'_> {}
impl FusedIterator for AnnouncePeersIter<'_> {}

/// A parsed announce response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnnounceResponse<'a> {
    /// Transaction id, interval, leechers, seeders.
    pub header: AnnounceResponseHeader,
    /// The peer entries.
    pub peers: AnnouncePeers<'a>,
}

impl AnnounceResponse<'_> {
    /// Length on the wire.
    pub fn encoded_len(&self) -> usize {
        let entries = match self.peers {
            AnnouncePeers::V4(peers) => peers.len().saturating_mul(IPV4_PEER_LEN),
            AnnouncePeers::V6(peers) => peers.len().saturating_mul(IPV6_PEER_LEN),
        };
        ANNOUNCE_RESPONSE_HEADER_LEN.saturating_add(entries)
    }

    /// Writes the response (entries copied verbatim) and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        self.header.write(&mut w)?;
        match self.peers {
            AnnouncePeers::V4(peers) => peers.iter().try_for_each(|entry| w.array(*entry))?,
            AnnouncePeers::V6(peers) => peers.iter().try_for_each(|entry| w.array(*entry))?,
        }
        Ok(w.finish())
    }
}

/// One scrape response row.
///
/// Wire order is `seeders · completed · leechers` — not the announce header's
/// `leechers · seeders` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ScrapeStats {
    /// Peers with `left == 0`.
    pub seeders: u32,
    /// Number of `completed` events seen (downloads finished).
    pub completed: u32,
    /// Peers with `left != 0`.
    pub leechers: u32,
}

impl ScrapeStats {
    /// Decodes one 12-byte row.
    pub const fn from_wire(row: &[u8; SCRAPE_ROW_LEN]) -> Self {
        let [s0, s1, s2, s3, c0, c1, c2, c3, l0, l1, l2, l3] = *row;
        ScrapeStats {
            seeders: u32::from_be_bytes([s0, s1, s2, s3]),
            completed: u32::from_be_bytes([c0, c1, c2, c3]),
            leechers: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }

    /// Encodes one 12-byte row.
    pub const fn to_wire(&self) -> [u8; SCRAPE_ROW_LEN] {
        let [s0, s1, s2, s3] = self.seeders.to_be_bytes();
        let [c0, c1, c2, c3] = self.completed.to_be_bytes();
        let [l0, l1, l2, l3] = self.leechers.to_be_bytes();
        [s0, s1, s2, s3, c0, c1, c2, c3, l0, l1, l2, l3]
    }
}

/// Writes a scrape response, one row per item in order, and returns its length.
///
/// A tracker must answer one row per requested hash, in request order, duplicates
/// included, with zeros for unknown hashes; this function writes whatever it is given.
pub fn write_scrape_response(
    out: &mut [u8],
    transaction_id: TransactionId,
    stats: impl IntoIterator<Item = ScrapeStats>,
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(out);
    w.u32(Action::Scrape.to_wire())?;
    w.u32(transaction_id.0)?;
    for row in stats {
        w.array(row.to_wire())?;
    }
    Ok(w.finish())
}

/// A parsed scrape response; rows borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeResponse<'a> {
    /// Echoed from the request.
    pub transaction_id: TransactionId,
    /// Raw 12-byte rows (seeders, completed, leechers).
    pub stats: &'a [[u8; SCRAPE_ROW_LEN]],
}

impl<'a> ScrapeResponse<'a> {
    /// The rows, decoded, in wire order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = ScrapeStats> + use<'a> {
        self.stats.iter().map(ScrapeStats::from_wire)
    }

    /// Length on the wire.
    pub fn encoded_len(&self) -> usize {
        SCRAPE_RESPONSE_HEADER_LEN.saturating_add(self.stats.len().saturating_mul(SCRAPE_ROW_LEN))
    }

    /// Writes the response (rows copied verbatim) and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u32(Action::Scrape.to_wire())?;
        w.u32(self.transaction_id.0)?;
        self.stats.iter().try_for_each(|row| w.array(*row))?;
        Ok(w.finish())
    }
}

/// An error response: `action 3 · transaction id · message`.
///
/// BEP 15 defines no terminator and no encoding for the message: it runs to the end of the
/// packet. libtorrent ignores a message starting with a NUL byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorResponse<'a> {
    /// Echoed from the request.
    pub transaction_id: TransactionId,
    /// The message bytes (usually short ASCII).
    pub message: &'a [u8],
}

impl ErrorResponse<'_> {
    /// Length on the wire.
    pub fn encoded_len(&self) -> usize {
        ERROR_RESPONSE_HEADER_LEN.saturating_add(self.message.len())
    }

    /// Writes the response and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u32(Action::Error.to_wire())?;
        w.u32(self.transaction_id.0)?;
        w.bytes(self.message)?;
        Ok(w.finish())
    }
}

/// Any tracker → client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Response<'a> {
    /// Action 0.
    Connect(ConnectResponse),
    /// Action 1.
    Announce(AnnounceResponse<'a>),
    /// Action 2.
    Scrape(ScrapeResponse<'a>),
    /// Action 3.
    Error(ErrorResponse<'a>),
}

impl<'a> Response<'a> {
    /// Parses one datagram strictly: connect exactly 16 bytes, announce 20 + k·entry size of
    /// `family`, scrape 8 + 12·k, error ≥ 8. Never panics, never allocates.
    ///
    /// An IPv6 announce response with 3·j entries also parses as IPv4 (18 = 3·6), so `family`
    /// must be the family of the socket the request went out on.
    pub fn parse(bytes: &'a [u8], family: IpFamily) -> Result<Self, ResponseError> {
        let mut r = Reader::new(bytes);
        let (Some(action), Some(transaction_id)) = (r.u32(), r.u32()) else {
            return Err(ResponseError::TooShort);
        };
        let transaction_id = TransactionId(transaction_id);
        let action = Action::from_wire(action);
        let bad_length = ResponseError::BadLength {
            action,
            len: bytes.len(),
        };
        match action {
            Action::Connect => {
                let connection_id = r.u64().ok_or(bad_length)?;
                if r.remaining() != 0 {
                    return Err(bad_length);
                }
                Ok(Response::Connect(ConnectResponse {
                    transaction_id,
                    connection_id: ConnectionId(connection_id),
                }))
            }
            Action::Announce => {
                let (Some(interval), Some(leechers), Some(seeders)) = (r.u32(), r.u32(), r.u32())
                else {
                    return Err(bad_length);
                };
                let entries = r.rest();
                let peers = match family {
                    IpFamily::V4 => match entries.as_chunks() {
                        (peers, []) => AnnouncePeers::V4(peers),
                        _ => return Err(bad_length),
                    },
                    IpFamily::V6 => match entries.as_chunks() {
                        (peers, []) => AnnouncePeers::V6(peers),
                        _ => return Err(bad_length),
                    },
                };
                Ok(Response::Announce(AnnounceResponse {
                    header: AnnounceResponseHeader {
                        transaction_id,
                        interval,
                        leechers,
                        seeders,
                    },
                    peers,
                }))
            }
            Action::Scrape => match r.rest().as_chunks() {
                (stats, []) => Ok(Response::Scrape(ScrapeResponse {
                    transaction_id,
                    stats,
                })),
                _ => Err(bad_length),
            },
            Action::Error => Ok(Response::Error(ErrorResponse {
                transaction_id,
                message: r.rest(),
            })),
            Action::Unknown(code) => Err(ResponseError::UnknownAction(code)),
        }
    }

    /// Writes the response and returns its length; parsing the output with the same family
    /// gives back an equal value.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            Response::Connect(response) => response.write(out),
            Response::Announce(response) => response.write(out),
            Response::Scrape(response) => response.write(out),
            Response::Error(response) => response.write(out),
        }
    }

    /// Length of what [`write`](Self::write) produces.
    pub fn encoded_len(&self) -> usize {
        match self {
            Response::Connect(_) => CONNECT_RESPONSE_LEN,
            Response::Announce(response) => response.encoded_len(),
            Response::Scrape(response) => response.encoded_len(),
            Response::Error(response) => response.encoded_len(),
        }
    }

    /// The echoed transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Response::Connect(response) => response.transaction_id,
            Response::Announce(response) => response.header.transaction_id,
            Response::Scrape(response) => response.transaction_id,
            Response::Error(response) => response.transaction_id,
        }
    }
}

/// Why a response was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ResponseError {
    /// Fewer than 8 bytes (no room for action and transaction id).
    #[error("response shorter than 8 bytes")]
    TooShort,
    /// An action code no tracker sends.
    #[error("unknown action {0} in response")]
    UnknownAction(u32),
    /// A known action with a length real clients reject.
    #[error("{action:?} response has an invalid length of {len} bytes")]
    BadLength {
        /// The action.
        action: Action,
        /// The datagram's length.
        len: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::IpFamily;
    use std::net::IpAddr;

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let of = |s: &str| IpFamily::of(&s.parse::<IpAddr>().unwrap());
        assert_eq!(of("192.0.2.1"), IpFamily::V4);
        assert_eq!(of("::ffff:192.0.2.1"), IpFamily::V4);
        assert_eq!(of("2001:db8::1"), IpFamily::V6);
        assert_eq!(of("::1"), IpFamily::V6);
        for (i, f) in IpFamily::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }
}
