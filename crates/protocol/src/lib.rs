//! Sans-IO codec for the BEP 15 UDP BitTorrent tracker protocol.
//!
//! `fjord-protocol` turns datagrams into typed messages and typed messages into bytes. It
//! never touches a socket, a clock or a random number generator, and neither parsing nor
//! writing allocates: parsed messages borrow the datagram ([`ScrapeRequest::info_hashes`],
//! [`AnnounceOptions`], [`AnnouncePeers`] are views into it), and writers fill a buffer the
//! caller owns and return how many bytes they used, or [`BufferTooSmall`].
//!
//! Parsing network bytes never panics (fuzzed and property-tested). All integers are
//! big-endian; the layouts are in the docs of each message type.
//!
//! # Server side
//! [`Request::parse`] either returns a [`Request`] or a [`RequestError`]. The error says what
//! to do: only [`RequestError::reply_context`] returning `Some` allows an error reply, and
//! even then only after the connection id has been validated for the source address (never
//! answer unauthenticated garbage or an error with an error: reflection and error loops).
//!
//! # Client side (load generators, tests)
//! [`Request::write`] writes requests; [`Response::parse`] checks replies as strictly as the
//! pickiest real client does.
//!
//! # Unpleasant parts of the protocol
//! - The peer entry size of an announce response (6 bytes for IPv4, 18 for IPv6) is not in
//!   the packet and cannot be detected (18 is a multiple of 6): it follows the address family
//!   of the socket. Never mix families in one reply; parse with the right [`IpFamily`].
//! - The announce response header is `interval · leechers · seeders`, but a scrape row is
//!   `seeders · completed · leechers`. This crate maps named fields, so callers never deal
//!   with the order, but anyone reading hex dumps should know.
//! - BEP 41 options after byte 98 of an announce may be malformed; the announce is still
//!   valid ([`AnnounceOptions::is_malformed`]).
//! - `left` can be `i64::MAX` or negative, events can be unknown codes, ports can be 0: they
//!   are reported as sent, and the server decides.
//!
//! # Example
//! A client writes an announce (with a BEP 41 URL-data option), the tracker parses it and
//! answers with two IPv4 peers, and the client parses the answer.
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use fjord_protocol::*;
//!
//! // Client: an announce with the option `0x02, len, "/announce?auth=abc"`.
//! let mut options = vec![0x02, 18];
//! options.extend_from_slice(b"/announce?auth=abc");
//! let announce = Request::Announce(AnnounceRequest {
//!     connection_id: ConnectionId(0x1122_3344_5566_7788),
//!     transaction_id: TransactionId(7),
//!     info_hash: InfoHash([0xab; 20]),
//!     peer_id: PeerId(*b"-LT2080-IFHTjbbnqKnV"),
//!     downloaded: 0,
//!     left: 100_000,
//!     uploaded: 0,
//!     event: AnnounceEvent::Started,
//!     ip_address: 0,
//!     key: 0xc229_f5c9,
//!     num_want: 200,
//!     port: 6881,
//!     options: AnnounceOptions::new(&options),
//! });
//! let mut datagram = [0u8; 1500];
//! let len = announce.write(&mut datagram)?;
//! assert_eq!(len, 118);
//!
//! // Tracker: parse without copying.
//! let Request::Announce(request) = Request::parse(&datagram[..len], &ParseLimits::default())?
//! else {
//!     panic!("not an announce");
//! };
//! assert_eq!(request.event, AnnounceEvent::Started);
//! assert_eq!(request.port, 6881);
//! assert!(request.options.url_data().eq([&b"/announce?auth=abc"[..]]));
//! // ... validate request.connection_id, update the swarm, pick peers ...
//! let header = AnnounceResponseHeader {
//!     transaction_id: request.transaction_id,
//!     interval: 1800,
//!     leechers: 3,
//!     seeders: 1,
//! };
//! let peers = [
//!     SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 6881),
//!     SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 51413),
//! ];
//! let mut reply = [0u8; 1500];
//! let reply_len = write_announce_response_v4(&mut reply, &header, peers)?;
//! assert_eq!(reply_len, 20 + 2 * 6);
//!
//! // Client: strict parse of the reply, with the family of its socket.
//! let Response::Announce(answer) = Response::parse(&reply[..reply_len], IpFamily::V4)?
//! else {
//!     panic!("not an announce response");
//! };
//! assert_eq!(answer.header, header);
//! assert!(answer.peers.iter().eq(peers.map(Into::into)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod client;
mod codec;
mod common;
mod request;
mod response;

pub use common::{
    Action, AnnounceEvent, BufferTooSmall, ConnectionId, InfoHash, PROTOCOL_ID, PeerId,
    TransactionId,
};
pub use request::{
    ANNOUNCE_REQUEST_LEN, AnnounceOption, AnnounceOptions, AnnounceOptionsIter, AnnounceRequest,
    CONNECT_REQUEST_LEN, ConnectRequest, ErrorReplyContext, MAX_SCRAPE_HASHES, MalformedOptions,
    MalformedReason, ParseLimits, Request, RequestError, SCRAPE_REQUEST_HEADER_LEN, ScrapeRequest,
};
pub use response::{
    ANNOUNCE_RESPONSE_HEADER_LEN, AnnouncePeers, AnnouncePeersIter, AnnounceResponse,
    AnnounceResponseHeader, AnnounceResponseWriter, CONNECT_RESPONSE_LEN, ConnectResponse,
    ERROR_RESPONSE_HEADER_LEN, ErrorResponse, IPV4_PEER_LEN, IPV6_PEER_LEN, IpFamily, PeerEntry,
    Response, ResponseError, SCRAPE_RESPONSE_HEADER_LEN, SCRAPE_ROW_LEN, ScrapeResponse,
    ScrapeStats, write_announce_response_v4, write_announce_response_v6, write_scrape_response,
};
