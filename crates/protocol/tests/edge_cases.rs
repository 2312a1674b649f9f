//! The edge cases listed in shared/protocol-notes.md, one named test each.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use fjord_protocol::*;

const CID: u64 = 0x1122_3344_5566_7788;
const LIMITS: ParseLimits = ParseLimits::DEFAULT;

fn header(first: u64, action: u32, tid: u32) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&first.to_be_bytes());
    packet.extend_from_slice(&action.to_be_bytes());
    packet.extend_from_slice(&tid.to_be_bytes());
    packet
}

/// A valid 98-byte announce with the given options appended.
fn announce_with(left: i64, event: u32, options: &[u8]) -> Vec<u8> {
    let mut p = header(CID, 1, 42);
    p.extend_from_slice(&[0xaa; 20]); // info hash
    p.extend_from_slice(b"-XX0000-000000000000"); // peer id
    p.extend_from_slice(&5i64.to_be_bytes()); // downloaded
    p.extend_from_slice(&left.to_be_bytes());
    p.extend_from_slice(&7i64.to_be_bytes()); // uploaded
    p.extend_from_slice(&event.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // ip
    p.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // key
    p.extend_from_slice(&(-1i32).to_be_bytes()); // num_want
    p.extend_from_slice(&6881u16.to_be_bytes());
    assert_eq!(p.len(), 98);
    p.extend_from_slice(options);
    p
}

fn scrape_with(hashes: usize, extra: usize) -> Vec<u8> {
    let mut p = header(CID, 2, 9);
    for i in 0..hashes {
        p.extend_from_slice(&[i as u8; 20]);
    }
    p.extend(std::iter::repeat_n(0xee, extra));
    p
}

fn parse_announce(p: &[u8]) -> AnnounceRequest<'_> {
    match Request::parse(p, &LIMITS) {
        Ok(Request::Announce(a)) => a,
        other => panic!("expected an announce, got {other:?}"),
    }
}

fn parse_scrape<'a>(p: &'a [u8], limits: &ParseLimits) -> ScrapeRequest<'a> {
    match Request::parse(p, limits) {
        Ok(Request::Scrape(s)) => s,
        other => panic!("expected a scrape, got {other:?}"),
    }
}

fn malformed(action: Action, reason: MalformedReason, tid: u32) -> RequestError {
    RequestError::Malformed {
        connection_id: ConnectionId(CID),
        transaction_id: TransactionId(tid),
        action,
        reason,
    }
}

#[test]
fn short_packet_is_dropped() {
    let connect = header(PROTOCOL_ID, 0, 1);
    for len in 0..16 {
        let err = Request::parse(&connect[..len], &LIMITS).unwrap_err();
        assert_eq!(err, RequestError::TooShort);
        assert_eq!(err.reply_context(), None);
        assert_eq!(err.label(), "short");
    }
    assert!(Request::parse(&connect, &LIMITS).is_ok());
}

#[test]
fn connect_with_trailing_bytes_is_accepted() {
    let mut p = header(PROTOCOL_ID, 0, 0x0102_0304);
    p.extend_from_slice(b"padding");
    let request = Request::parse(&p, &LIMITS).unwrap();
    assert_eq!(
        request,
        Request::Connect(ConnectRequest {
            transaction_id: TransactionId(0x0102_0304)
        })
    );
    assert_eq!(request.encoded_len(), 16);
}

#[test]
fn wrong_protocol_id_is_dropped() {
    let err = Request::parse(&header(PROTOCOL_ID ^ 1, 0, 1), &LIMITS).unwrap_err();
    assert_eq!(err, RequestError::BadProtocolId);
    assert_eq!(err.reply_context(), None);
    assert_eq!(err.label(), "bad_protocol_id");
}

#[test]
fn unknown_action_is_dropped() {
    for action in [4, 5, 0x100, u32::MAX] {
        let err = Request::parse(&header(CID, action, 1), &LIMITS).unwrap_err();
        assert_eq!(err, RequestError::UnknownAction { action });
        assert_eq!(err.reply_context(), None);
        assert_eq!(err.label(), "unknown_action");
    }
}

#[test]
fn error_action_from_a_client_is_dropped() {
    let mut p = header(CID, 3, 1);
    p.extend_from_slice(b"some error text");
    let err = Request::parse(&p, &LIMITS).unwrap_err();
    assert_eq!(err, RequestError::ClientSentError);
    assert_eq!(
        err.reply_context(),
        None,
        "never answer an error with an error"
    );
    assert_eq!(err.label(), "client_error");
}

#[test]
fn announce_shorter_than_98_bytes_is_malformed_with_reply_context() {
    let full = announce_with(0, 0, &[]);
    for len in 16..98 {
        let err = Request::parse(&full[..len], &LIMITS).unwrap_err();
        assert_eq!(
            err,
            malformed(Action::Announce, MalformedReason::AnnounceTooShort, 42)
        );
        assert_eq!(err.label(), "malformed");
        let context = err.reply_context().unwrap();
        assert_eq!(context.connection_id, ConnectionId(CID));
        assert_eq!(context.transaction_id, TransactionId(42));
        assert_eq!(context.message, "announce too short");
        assert_eq!(context.response().message, b"announce too short");
    }
    assert!(Request::parse(&full, &LIMITS).is_ok());
}

#[test]
fn malformed_reason_messages_are_short_and_not_nul_led() {
    for reason in [
        MalformedReason::AnnounceTooShort,
        MalformedReason::ScrapeNoInfoHashes,
        MalformedReason::ScrapeTrailingBytes,
    ] {
        let message = reason.message();
        assert!(!message.is_empty() && message.len() < 40, "{message}");
        assert!(!message.starts_with('\0'));
        assert!(message.is_ascii());
        assert_eq!(reason.to_string(), message);
    }
}

#[test]
fn options_with_bad_length_still_parse() {
    // URL data claiming 200 bytes with 3 present.
    let p = announce_with(0, 2, b"\x02\xc8abc");
    let a = parse_announce(&p);
    assert_eq!(a.event, AnnounceEvent::Started);
    assert!(a.options.is_malformed());
    let items: Vec<_> = a.options.iter().collect();
    assert_eq!(items, [Err(MalformedOptions { offset: 0 })]);
    assert_eq!(a.options.url_data().count(), 0);

    // A good option, a no-op, then a type byte without its length byte.
    let p = announce_with(0, 0, b"\x02\x01a\x01\x07");
    let a = parse_announce(&p);
    let items: Vec<_> = a.options.iter().collect();
    assert_eq!(
        items,
        [
            Ok(AnnounceOption::UrlData(b"a")),
            Ok(AnnounceOption::Nop),
            Err(MalformedOptions { offset: 4 }),
        ]
    );
    assert!(a.options.is_malformed());
    assert!(
        a.options.url_data().eq([&b"a"[..]]),
        "options before the error are kept"
    );
}

#[test]
fn several_url_data_options_concatenate() {
    let p = announce_with(
        0,
        0,
        b"\x02\x09/announce\x01\x01\x02\x05?a=bc\x02\x00\x02\x04&d=e",
    );
    let a = parse_announce(&p);
    assert!(!a.options.is_malformed());
    let url: Vec<u8> = a.options.url_data().flatten().copied().collect();
    assert_eq!(url, b"/announce?a=bc&d=e");
    assert_eq!(
        a.options.url_data().count(),
        4,
        "an empty option is still an option"
    );
}

#[test]
fn unknown_options_are_skipped_and_end_of_options_stops() {
    let p = announce_with(0, 0, b"\x05\x02xy\x02\x01/\x00\x02\xffgarbage after end");
    let a = parse_announce(&p);
    let items: Vec<_> = a.options.iter().collect();
    assert_eq!(
        items,
        [
            Ok(AnnounceOption::Unknown {
                kind: 5,
                data: b"xy"
            }),
            Ok(AnnounceOption::UrlData(b"/")),
            Ok(AnnounceOption::EndOfOptions),
        ]
    );
    assert!(
        !a.options.is_malformed(),
        "bytes after end-of-options are ignored"
    );
    // ...but kept verbatim, so the announce re-encodes to the same bytes.
    let mut out = vec![0u8; p.len()];
    assert_eq!(Request::Announce(a).write(&mut out), Ok(p.len()));
    assert_eq!(out, p);
}

#[test]
fn scrape_is_truncated_at_the_limit() {
    let p = scrape_with(74, 0);
    let s = parse_scrape(&p, &LIMITS);
    assert_eq!(s.info_hashes.len(), 74);
    assert!(!s.truncated);

    let p = scrape_with(75, 0);
    let s = parse_scrape(&p, &LIMITS);
    assert_eq!(s.info_hashes.len(), 74);
    assert!(s.truncated);
    assert_eq!(
        s.info_hashes[73], [73u8; 20],
        "the first 74 are kept, in order"
    );

    let small = ParseLimits {
        max_scrape_hashes: 2,
    };
    let s = parse_scrape(&p, &small);
    assert_eq!(s.info_hashes, [[0u8; 20], [1u8; 20]]);
    assert!(s.truncated);
    assert_eq!(s.encoded_len(), 16 + 40);
}

#[test]
fn scrape_keeps_duplicates_in_request_order() {
    let mut p = header(CID, 2, 9);
    for hash in [[1u8; 20], [2; 20], [1; 20], [1; 20]] {
        p.extend_from_slice(&hash);
    }
    let s = parse_scrape(&p, &LIMITS);
    assert_eq!(s.info_hashes, [[1u8; 20], [2; 20], [1; 20], [1; 20]]);
    assert!(s.iter().eq([1u8, 2, 1, 1].map(|b| InfoHash([b; 20]))));
}

#[test]
fn scrape_with_trailing_partial_hash_is_malformed() {
    for (hashes, extra) in [(1, 1), (1, 19), (0, 5), (80, 3)] {
        let p = scrape_with(hashes, extra);
        let err = Request::parse(&p, &LIMITS).unwrap_err();
        assert_eq!(
            err,
            malformed(Action::Scrape, MalformedReason::ScrapeTrailingBytes, 9)
        );
        assert!(err.reply_context().is_some());
    }
}

#[test]
fn scrape_with_zero_hashes_is_malformed() {
    let err = Request::parse(&scrape_with(0, 0), &LIMITS).unwrap_err();
    assert_eq!(
        err,
        malformed(Action::Scrape, MalformedReason::ScrapeNoInfoHashes, 9)
    );
    assert_eq!(
        err.reply_context().unwrap().message,
        MalformedReason::ScrapeNoInfoHashes.message()
    );
}

#[test]
fn huge_and_negative_left_are_reported_as_sent() {
    for left in [i64::MAX, i64::MIN, -1, 0] {
        let p = announce_with(left, 0, &[]);
        assert_eq!(parse_announce(&p).left, left);
    }
}

#[test]
fn unknown_event_is_kept() {
    let p = announce_with(0, 9, &[]);
    assert_eq!(parse_announce(&p).event, AnnounceEvent::Unknown(9));
    let p = announce_with(0, u32::MAX, &[]);
    let a = parse_announce(&p);
    assert_eq!(a.event, AnnounceEvent::Unknown(u32::MAX));
    let mut out = [0u8; 98];
    Request::Announce(a).write(&mut out).unwrap();
    assert_eq!(out[..], p[..], "an unknown event re-encodes unchanged");
}

#[test]
fn announce_fields_are_at_their_offsets() {
    let p = announce_with(-1, 3, &[]);
    let a = parse_announce(&p);
    assert_eq!(a.connection_id, ConnectionId(CID));
    assert_eq!(a.transaction_id, TransactionId(42));
    assert_eq!(a.info_hash, InfoHash([0xaa; 20]));
    assert_eq!(a.peer_id, PeerId(*b"-XX0000-000000000000"));
    assert_eq!((a.downloaded, a.left, a.uploaded), (5, -1, 7));
    assert_eq!(a.event, AnnounceEvent::Stopped);
    assert_eq!(a.key, 0xdead_beef);
    assert_eq!(a.num_want, -1);
    assert_eq!(a.port, 6881);
}

#[test]
fn writers_report_buffer_too_small() {
    let mut small = [0u8; 15];
    let connect = Request::Connect(ConnectRequest {
        transaction_id: TransactionId(1),
    });
    assert_eq!(connect.write(&mut small), Err(BufferTooSmall));
    let mut exact = [0u8; 16];
    assert_eq!(connect.write(&mut exact), Ok(16));
    assert_eq!(exact[..8], PROTOCOL_ID.to_be_bytes());

    let header = AnnounceResponseHeader::default();
    let peers = [SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1); 3];
    let mut out = [0u8; 37];
    assert_eq!(
        write_announce_response_v4(&mut out, &header, peers),
        Err(BufferTooSmall)
    );
    let mut out = [0u8; 38];
    assert_eq!(write_announce_response_v4(&mut out, &header, peers), Ok(38));
}

#[test]
fn announce_response_header_is_leechers_then_seeders() {
    let header = AnnounceResponseHeader {
        transaction_id: TransactionId(0x0a0b_0c0d),
        interval: 1800,
        leechers: 5,
        seeders: 6,
    };
    let mut out = [0u8; 64];
    let n = write_announce_response_v4(
        &mut out,
        &header,
        [SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 0x1ae1)],
    )
    .unwrap();
    assert_eq!(
        out[..n],
        [
            0, 0, 0, 1, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0x07, 0x08, 0, 0, 0, 5, 0, 0, 0, 6, 10, 1, 2,
            3, 0x1a, 0xe1
        ]
    );
}

#[test]
fn scrape_row_is_seeders_completed_leechers() {
    let stats = ScrapeStats {
        seeders: 1,
        completed: 2,
        leechers: 3,
    };
    let mut out = [0u8; 32];
    let n = write_scrape_response(&mut out, TransactionId(4), [stats]).unwrap();
    assert_eq!(
        out[..n],
        [0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    );
    match Response::parse(&out[..n], IpFamily::V4).unwrap() {
        Response::Scrape(s) => assert!(s.iter().eq([stats])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_announce_response_uses_18_byte_entries() {
    let peer = SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 51413, 0, 0);
    let mut out = [0u8; 64];
    let n = write_announce_response_v6(&mut out, &AnnounceResponseHeader::default(), [peer; 2])
        .unwrap();
    assert_eq!(n, 20 + 36);
    match Response::parse(&out[..n], IpFamily::V6).unwrap() {
        Response::Announce(a) => {
            assert_eq!(a.peers.len(), 2);
            assert!(a.peers.iter().eq([SocketAddr::V6(peer); 2]));
        }
        other => panic!("{other:?}"),
    }
    // The unpleasant part: the same bytes are a valid IPv4 reply with 6 garbage peers.
    match Response::parse(&out[..n], IpFamily::V4).unwrap() {
        Response::Announce(a) => assert_eq!(a.peers.len(), 6),
        other => panic!("{other:?}"),
    }
}

#[test]
fn response_parsing_is_strict_about_lengths() {
    let mut connect = [0u8; 17];
    ConnectResponse {
        transaction_id: TransactionId(1),
        connection_id: ConnectionId(2),
    }
    .write(&mut connect)
    .unwrap();
    assert!(Response::parse(&connect[..16], IpFamily::V4).is_ok());
    for len in [8, 15, 17] {
        assert_eq!(
            Response::parse(&connect[..len], IpFamily::V4),
            Err(ResponseError::BadLength {
                action: Action::Connect,
                len
            })
        );
    }
    assert_eq!(
        Response::parse(&connect[..7], IpFamily::V4),
        Err(ResponseError::TooShort)
    );

    let mut announce = [0u8; 20 + 18 + 1];
    announce[3] = 1;
    for (len, v4, v6) in [
        (19, false, false),
        (20, true, true),
        (26, true, false),
        (38, true, true),
        (39, false, false),
    ] {
        assert_eq!(
            Response::parse(&announce[..len], IpFamily::V4).is_ok(),
            v4,
            "v4 {len}"
        );
        assert_eq!(
            Response::parse(&announce[..len], IpFamily::V6).is_ok(),
            v6,
            "v6 {len}"
        );
    }

    let mut scrape = [0u8; 21];
    scrape[3] = 2;
    for (len, ok) in [(8, true), (19, false), (20, true), (21, false)] {
        assert_eq!(
            Response::parse(&scrape[..len], IpFamily::V4).is_ok(),
            ok,
            "scrape {len}"
        );
    }

    let mut error = *b"\0\0\0\x03\0\0\0\x05oops";
    match Response::parse(&error, IpFamily::V4).unwrap() {
        Response::Error(e) => {
            assert_eq!(e.transaction_id, TransactionId(5));
            assert_eq!(e.message, b"oops");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        Response::parse(&error[..8], IpFamily::V4).is_ok(),
        "empty message"
    );
    error[3] = 4;
    assert_eq!(
        Response::parse(&error, IpFamily::V4),
        Err(ResponseError::UnknownAction(4))
    );
}

#[test]
fn announce_written_in_place_keeps_to_its_buffer_and_puts_the_header_last() {
    let peers: Vec<SocketAddrV4> = (1..=4)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 6881))
        .collect();
    let header = AnnounceResponseHeader {
        transaction_id: TransactionId(7),
        interval: 1800,
        leechers: 3,
        seeders: 1,
    };
    // Room for the header and three entries, one byte short of a fourth.
    let mut out = [0xAAu8; 20 + 3 * 6 + 5];
    let mut w = AnnounceResponseWriter::new(&mut out).unwrap();
    let pushed: Vec<bool> = peers.iter().map(|p| w.push(p)).collect();
    assert_eq!(pushed, [true, true, true, false]);
    assert_eq!(w.peers(), 3);
    let n = w.finish(&header);
    assert_eq!(n, 20 + 18);
    assert_eq!(out[n..], [0xAA; 5], "a refused entry wrote nothing");
    let mut expected = [0u8; 64];
    let m = write_announce_response_v4(&mut expected, &header, peers[..3].iter().copied()).unwrap();
    assert_eq!(out[..n], expected[..m]);
    match Response::parse(&out[..n], IpFamily::V4).unwrap() {
        Response::Announce(a) => {
            assert_eq!((a.header.seeders, a.header.leechers), (1, 3));
            assert!(
                a.peers
                    .iter()
                    .eq(peers[..3].iter().map(|&p| SocketAddr::V4(p)))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(AnnounceResponseWriter::<SocketAddrV6>::new(&mut [0u8; 19]).is_err());
}
