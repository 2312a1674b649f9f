//! Property tests: write → parse round-trips for every message type, and parsing arbitrary
//! bytes never panics and satisfies the same invariants as the fuzz targets.

mod checks;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use fjord_protocol::*;
use proptest::prelude::*;

fn announce_event() -> impl Strategy<Value = AnnounceEvent> {
    any::<u32>().prop_map(AnnounceEvent::from_wire)
}

proptest! {
    #[test]
    fn connect_request_round_trips(tid: u32) {
        let request = Request::Connect(ConnectRequest { transaction_id: TransactionId(tid) });
        let mut out = [0u8; 16];
        prop_assert_eq!(request.write(&mut out), Ok(16));
        prop_assert_eq!(Request::parse(&out, &ParseLimits::default()), Ok(request));
    }

    #[test]
    fn announce_request_round_trips(
        cid: u64, tid: u32, info_hash: [u8; 20], peer_id: [u8; 20],
        downloaded: i64, left: i64, uploaded: i64, event in announce_event(),
        ip_address: u32, key: u32, num_want: i32, port: u16,
        options in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let request = Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(cid),
            transaction_id: TransactionId(tid),
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
            downloaded, left, uploaded, event, ip_address, key, num_want, port,
            options: AnnounceOptions::new(&options),
        });
        let mut out = [0u8; 98 + 300];
        let n = request.write(&mut out).unwrap();
        prop_assert_eq!(n, 98 + options.len());
        prop_assert_eq!(n, request.encoded_len());
        prop_assert_eq!(Request::parse(&out[..n], &ParseLimits::default()), Ok(request));
        checks::parse_request(&out[..n]);
        checks::roundtrip(&out[..n]);
    }

    #[test]
    fn announce_with_well_formed_options_round_trips_the_url(
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
        nops in 0usize..3,
    ) {
        let mut options = vec![1u8; nops];
        for piece in &pieces {
            options.push(2);
            options.push(piece.len() as u8);
            options.extend_from_slice(piece);
        }
        let request = Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(1), transaction_id: TransactionId(2),
            info_hash: InfoHash([3; 20]), peer_id: PeerId([4; 20]),
            downloaded: 0, left: 0, uploaded: 0, event: AnnounceEvent::None,
            ip_address: 0, key: 0, num_want: -1, port: 1,
            options: AnnounceOptions::new(&options),
        });
        let mut out = [0u8; 512];
        let n = request.write(&mut out).unwrap();
        let Ok(Request::Announce(parsed)) = Request::parse(&out[..n], &ParseLimits::default()) else {
            panic!("announce did not parse");
        };
        prop_assert!(!parsed.options.is_malformed());
        prop_assert!(parsed.options.url_data().eq(pieces.iter().map(Vec::as_slice)));
        prop_assert_eq!(parsed.options.iter().filter(|o| *o == Ok(AnnounceOption::Nop)).count(), nops);
    }

    #[test]
    fn scrape_request_round_trips(
        cid: u64, tid: u32,
        hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..=74),
    ) {
        let request = Request::Scrape(ScrapeRequest {
            connection_id: ConnectionId(cid),
            transaction_id: TransactionId(tid),
            info_hashes: &hashes,
            truncated: false,
        });
        let mut out = [0u8; 16 + 20 * 74];
        let n = request.write(&mut out).unwrap();
        prop_assert_eq!(n, 16 + 20 * hashes.len());
        prop_assert_eq!(Request::parse(&out[..n], &ParseLimits::default()), Ok(request));
    }

    #[test]
    fn scrape_request_over_the_limit_is_truncated(
        hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..40),
        limit in 1usize..40,
    ) {
        let request = ScrapeRequest {
            connection_id: ConnectionId(1), transaction_id: TransactionId(2),
            info_hashes: &hashes, truncated: false,
        };
        let mut out = [0u8; 16 + 20 * 40];
        let n = request.write(&mut out).unwrap();
        let limits = ParseLimits { max_scrape_hashes: limit };
        let Ok(Request::Scrape(parsed)) = Request::parse(&out[..n], &limits) else {
            panic!("scrape did not parse");
        };
        prop_assert_eq!(parsed.truncated, hashes.len() > limit);
        prop_assert_eq!(parsed.info_hashes, &hashes[..hashes.len().min(limit)]);
    }

    #[test]
    fn connect_response_round_trips(tid: u32, cid: u64) {
        let response = Response::Connect(ConnectResponse {
            transaction_id: TransactionId(tid), connection_id: ConnectionId(cid),
        });
        let mut out = [0u8; 16];
        prop_assert_eq!(response.write(&mut out), Ok(16));
        prop_assert_eq!(Response::parse(&out, IpFamily::V4), Ok(response));
        prop_assert_eq!(Response::parse(&out, IpFamily::V6), Ok(response));
    }

    #[test]
    fn announce_response_v4_round_trips(
        tid: u32, interval: u32, leechers: u32, seeders: u32,
        peers in proptest::collection::vec(any::<([u8; 4], u16)>(), 0..200),
    ) {
        let header = AnnounceResponseHeader { transaction_id: TransactionId(tid), interval, leechers, seeders };
        let peers: Vec<SocketAddrV4> = peers.into_iter().map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port)).collect();
        let mut out = [0u8; 20 + 6 * 200];
        let n = write_announce_response_v4(&mut out, &header, peers.iter().copied()).unwrap();
        prop_assert_eq!(n, 20 + 6 * peers.len());
        let Ok(Response::Announce(parsed)) = Response::parse(&out[..n], IpFamily::V4) else {
            panic!("did not parse");
        };
        prop_assert_eq!(parsed.header, header);
        prop_assert!(parsed.peers.iter().eq(peers.iter().map(|&p| SocketAddr::V4(p))));
        checks::roundtrip(&out[..n]);
    }

    #[test]
    fn announce_response_v6_round_trips(
        tid: u32, interval: u32, leechers: u32, seeders: u32,
        peers in proptest::collection::vec(any::<([u8; 16], u16)>(), 0..66),
    ) {
        let header = AnnounceResponseHeader { transaction_id: TransactionId(tid), interval, leechers, seeders };
        let peers: Vec<SocketAddrV6> = peers.into_iter().map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)).collect();
        let mut out = [0u8; 20 + 18 * 66];
        let n = write_announce_response_v6(&mut out, &header, peers.iter().copied()).unwrap();
        prop_assert_eq!(n, 20 + 18 * peers.len());
        let Ok(Response::Announce(parsed)) = Response::parse(&out[..n], IpFamily::V6) else {
            panic!("did not parse");
        };
        prop_assert_eq!(parsed.header, header);
        prop_assert!(parsed.peers.iter().eq(peers.iter().map(|&p| SocketAddr::V6(p))));
        checks::roundtrip(&out[..n]);
    }

    #[test]
    fn scrape_response_round_trips(
        tid: u32,
        rows in proptest::collection::vec(any::<(u32, u32, u32)>(), 0..80),
    ) {
        let stats: Vec<ScrapeStats> = rows.into_iter().map(|(seeders, completed, leechers)| ScrapeStats { seeders, completed, leechers }).collect();
        let mut out = [0u8; 8 + 12 * 80];
        let n = write_scrape_response(&mut out, TransactionId(tid), stats.iter().copied()).unwrap();
        prop_assert_eq!(n, 8 + 12 * stats.len());
        let Ok(Response::Scrape(parsed)) = Response::parse(&out[..n], IpFamily::V4) else {
            panic!("did not parse");
        };
        prop_assert_eq!(parsed.transaction_id, TransactionId(tid));
        prop_assert!(parsed.iter().eq(stats.iter().copied()));
        checks::roundtrip(&out[..n]);
    }

    #[test]
    fn error_response_round_trips(tid: u32, message in proptest::collection::vec(any::<u8>(), 0..200)) {
        let response = Response::Error(ErrorResponse { transaction_id: TransactionId(tid), message: &message });
        let mut out = [0u8; 8 + 200];
        let n = response.write(&mut out).unwrap();
        prop_assert_eq!(n, 8 + message.len());
        prop_assert_eq!(Response::parse(&out[..n], IpFamily::V4), Ok(response));
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Request::parse(&data, &ParseLimits::default());
        let _ = Response::parse(&data, IpFamily::V4);
        let _ = Response::parse(&data, IpFamily::V6);
        checks::parse_request(&data);
        checks::parse_response(&data);
        checks::roundtrip(&data);
    }

    /// Random bytes rarely hit a valid header; this puts a plausible one in front.
    #[test]
    fn parsing_plausible_headers_never_panics(
        first in prop_oneof![Just(PROTOCOL_ID), any::<u64>()],
        action in prop_oneof![0u32..5, any::<u32>()],
        tid: u32,
        tail in proptest::collection::vec(any::<u8>(), 0..2032),
    ) {
        let mut request = Vec::with_capacity(16 + tail.len());
        request.extend_from_slice(&first.to_be_bytes());
        request.extend_from_slice(&action.to_be_bytes());
        request.extend_from_slice(&tid.to_be_bytes());
        request.extend_from_slice(&tail);
        checks::parse_request(&request);
        checks::roundtrip(&request);

        let mut response = Vec::with_capacity(8 + tail.len());
        response.extend_from_slice(&action.to_be_bytes());
        response.extend_from_slice(&tid.to_be_bytes());
        response.extend_from_slice(&tail);
        checks::parse_response(&response);
        checks::roundtrip(&response);
    }
}
