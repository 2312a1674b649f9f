//! Invariant checks shared by the fuzz targets and the tests.
//!
//! `fuzz/fuzz_targets/*.rs` include this file with `#[path = ...]`, and `tests/corpus.rs`
//! replays the committed fuzz corpus through the same functions, so a crash found by the
//! fuzzer and added to the corpus is a failing `cargo test`. The proptests call them too.
//! Each function panics (assert) when an invariant is broken.
#![allow(dead_code)]

use fjord_protocol::{
    Action, AnnounceOption, BufferTooSmall, IpFamily, PROTOCOL_ID, ParseLimits, Request,
    RequestError, Response, ResponseError,
};

/// The limits every check runs with: the default, and a small one so truncation is reached.
pub const LIMITS: [ParseLimits; 2] = [
    ParseLimits::DEFAULT,
    ParseLimits {
        max_scrape_hashes: 3,
    },
];

fn be_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
}

fn be_u64(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(data[at..at + 8].try_into().unwrap())
}

/// `Request::parse` never panics, and what it returns is consistent with the bytes.
pub fn parse_request(data: &[u8]) {
    for limits in LIMITS {
        match Request::parse(data, &limits) {
            Ok(request) => check_request(data, &request, &limits),
            Err(error) => check_request_error(data, &error),
        }
    }
}

fn check_request(data: &[u8], request: &Request<'_>, limits: &ParseLimits) {
    assert!(data.len() >= 16);
    assert_eq!(request.transaction_id().0, be_u32(data, 12));
    assert_eq!(request.action().to_wire(), be_u32(data, 8));
    let used = request.encoded_len();
    assert!(used <= data.len());
    match request {
        Request::Connect(_) => {
            assert_eq!(be_u64(data, 0), PROTOCOL_ID);
            assert_eq!(used, 16);
        }
        Request::Announce(announce) => {
            assert_eq!(used, data.len());
            assert_eq!(announce.connection_id.0, be_u64(data, 0));
            assert_eq!(announce.options.as_bytes(), &data[98..]);
            assert_eq!(announce.left.to_be_bytes(), data[64..72]);
            check_options(announce.options.as_bytes(), announce.options);
        }
        Request::Scrape(scrape) => {
            assert_eq!(scrape.connection_id.0, be_u64(data, 0));
            let body = data.len() - 16;
            assert_eq!(body % 20, 0, "a partial hash must be refused");
            let total = body / 20;
            assert!(total >= 1, "zero hashes must be refused");
            assert_eq!(
                scrape.info_hashes.len(),
                total.min(limits.max_scrape_hashes)
            );
            assert_eq!(scrape.truncated, total > limits.max_scrape_hashes);
            assert_eq!(used, 16 + 20 * scrape.info_hashes.len());
            for (i, hash) in scrape.info_hashes.iter().enumerate() {
                assert_eq!(&hash[..], &data[16 + 20 * i..36 + 20 * i]);
            }
        }
    }
}

/// Walks the BEP 41 options independently of the crate's iterator and compares.
fn check_options(bytes: &[u8], options: fjord_protocol::AnnounceOptions<'_>) {
    let items: Vec<_> = options.iter().collect();
    let mut at = 0;
    let mut expected_malformed = false;
    let mut expected_urls = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        match *item {
            Ok(AnnounceOption::EndOfOptions) => {
                assert_eq!(bytes[at], 0);
                assert!(last, "nothing after end of options");
            }
            Ok(AnnounceOption::Nop) => {
                assert_eq!(bytes[at], 1);
                at += 1;
            }
            Ok(AnnounceOption::UrlData(data)) => {
                assert_eq!(bytes[at], 2);
                assert_eq!(usize::from(bytes[at + 1]), data.len());
                assert_eq!(&bytes[at + 2..at + 2 + data.len()], data);
                expected_urls.push(data);
                at += 2 + data.len();
            }
            Ok(AnnounceOption::Unknown { kind, data }) => {
                assert!(kind > 2);
                assert_eq!(bytes[at], kind);
                assert_eq!(usize::from(bytes[at + 1]), data.len());
                assert_eq!(&bytes[at + 2..at + 2 + data.len()], data);
                at += 2 + data.len();
            }
            Err(error) => {
                assert!(last, "nothing after an error");
                assert_eq!(error.offset, at);
                assert!(bytes[at] > 1);
                // The length byte is missing or runs past the end.
                assert!(at + 1 >= bytes.len() || at + 2 + usize::from(bytes[at + 1]) > bytes.len());
                expected_malformed = true;
            }
        }
    }
    if !matches!(
        items.last(),
        Some(Ok(AnnounceOption::EndOfOptions)) | Some(Err(_))
    ) {
        assert_eq!(at, bytes.len(), "the iterator stopped before the end");
    }
    assert_eq!(options.is_malformed(), expected_malformed);
    assert!(options.url_data().eq(expected_urls));
}

fn check_request_error(data: &[u8], error: &RequestError) {
    assert!(matches!(
        error.label(),
        "short" | "bad_protocol_id" | "client_error" | "unknown_action" | "malformed"
    ));
    assert_eq!(
        error.reply_context().is_some(),
        matches!(error, RequestError::Malformed { .. })
    );
    if data.len() < 16 {
        assert_eq!(*error, RequestError::TooShort);
        return;
    }
    let action = be_u32(data, 8);
    match *error {
        RequestError::TooShort => panic!("TooShort for {} bytes", data.len()),
        RequestError::BadProtocolId => {
            assert_eq!(action, 0);
            assert_ne!(be_u64(data, 0), PROTOCOL_ID);
        }
        RequestError::ClientSentError => assert_eq!(action, 3),
        RequestError::UnknownAction { action: code } => {
            assert_eq!(code, action);
            assert!(code > 3);
        }
        RequestError::Malformed {
            connection_id,
            transaction_id,
            action: kind,
            reason,
        } => {
            assert_eq!(connection_id.0, be_u64(data, 0));
            assert_eq!(transaction_id.0, be_u32(data, 12));
            assert_eq!(kind.to_wire(), action);
            assert!(matches!(kind, Action::Announce | Action::Scrape));
            let context = error.reply_context().unwrap();
            assert_eq!(context.transaction_id, transaction_id);
            assert_eq!(context.connection_id, connection_id);
            assert_eq!(context.message, reason.message());
            assert!(!context.message.is_empty() && context.message.len() < 40);
            assert!(!context.message.starts_with('\0'));
            let body = data.len() - 16;
            match kind {
                Action::Announce => assert!(data.len() < 98),
                _ => assert!(body == 0 || !body.is_multiple_of(20)),
            }
        }
    }
}

/// `Response::parse` never panics and is exactly as strict as documented, for both families.
pub fn parse_response(data: &[u8]) {
    for family in [IpFamily::V4, IpFamily::V6] {
        let result = Response::parse(data, family);
        if data.len() < 8 {
            assert_eq!(result, Err(ResponseError::TooShort));
            continue;
        }
        let action = be_u32(data, 0);
        let len = data.len();
        let valid_len = match action {
            0 => len == 16,
            1 => len >= 20 && (len - 20).is_multiple_of(family.entry_len()),
            2 => (len - 8).is_multiple_of(12),
            3 => true,
            _ => {
                assert_eq!(result, Err(ResponseError::UnknownAction(action)));
                continue;
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                assert!(!valid_len, "refused a valid response: {error}");
                assert_eq!(
                    error,
                    ResponseError::BadLength {
                        action: Action::from_wire(action),
                        len
                    }
                );
                continue;
            }
        };
        assert!(valid_len, "accepted a response of a bad length");
        assert_eq!(response.encoded_len(), len);
        assert_eq!(response.transaction_id().0, be_u32(data, 4));
        match response {
            Response::Connect(connect) => assert_eq!(connect.connection_id.0, be_u64(data, 8)),
            Response::Announce(announce) => {
                assert_eq!(announce.header.interval, be_u32(data, 8));
                assert_eq!(announce.header.leechers, be_u32(data, 12));
                assert_eq!(announce.header.seeders, be_u32(data, 16));
                assert_eq!(announce.peers.family(), family);
                assert_eq!(announce.peers.len(), (len - 20) / family.entry_len());
                assert_eq!(announce.peers.iter().len(), announce.peers.len());
                for (i, peer) in announce.peers.iter().enumerate() {
                    let entry = &data[20 + i * family.entry_len()..][..family.entry_len()];
                    assert_eq!(peer.port().to_be_bytes(), entry[entry.len() - 2..]);
                    match peer {
                        std::net::SocketAddr::V4(v4) => assert_eq!(v4.ip().octets(), entry[..4]),
                        std::net::SocketAddr::V6(v6) => {
                            assert_eq!(v6.ip().octets(), entry[..16])
                        }
                    }
                }
            }
            Response::Scrape(scrape) => {
                assert_eq!(scrape.stats.len(), (len - 8) / 12);
                for (i, row) in scrape.iter().enumerate() {
                    assert_eq!(row.seeders, be_u32(data, 8 + 12 * i));
                    assert_eq!(row.completed, be_u32(data, 12 + 12 * i));
                    assert_eq!(row.leechers, be_u32(data, 16 + 12 * i));
                }
            }
            Response::Error(error) => assert_eq!(error.message, &data[8..]),
        }
    }
}

/// Re-encoding a parsed message gives back the bytes it was parsed from.
///
/// Responses: exactly the datagram. Requests: exactly the prefix the parser used, which is
/// the whole datagram except in two documented cases, asserted here: a connect request uses
/// its first 16 bytes (trailing bytes are ignored by design), and a truncated scrape uses the
/// header plus the hashes it kept (the dropped ones cannot be re-encoded). Re-parsing the
/// output gives an equal message (a re-parsed truncated scrape is no longer truncated).
pub fn roundtrip(data: &[u8]) {
    for limits in LIMITS {
        let Ok(request) = Request::parse(data, &limits) else {
            continue;
        };
        let mut out = vec![0u8; request.encoded_len()];
        let n = request.write(&mut out).unwrap();
        assert_eq!(n, request.encoded_len());
        assert_eq!(&out[..n], &data[..n], "re-encoding differs from the input");
        let expected_len = match request {
            Request::Connect(_) => 16,
            Request::Scrape(scrape) if scrape.truncated => 16 + 20 * limits.max_scrape_hashes,
            _ => data.len(),
        };
        assert_eq!(n, expected_len, "unexplained unconsumed bytes");
        let mut expected = request;
        if let Request::Scrape(scrape) = &mut expected {
            scrape.truncated = false;
        }
        assert_eq!(Request::parse(&out[..n], &limits), Ok(expected));
        assert_eq!(request.write(&mut out[..n - 1]), Err(BufferTooSmall));
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        let Ok(response) = Response::parse(data, family) else {
            continue;
        };
        let mut out = vec![0u8; data.len()];
        let n = response.write(&mut out).unwrap();
        assert_eq!(&out[..n], data, "re-encoding differs from the input");
        assert_eq!(Response::parse(&out[..n], family), Ok(response));
        assert_eq!(response.write(&mut out[..n - 1]), Err(BufferTooSmall));
    }
}
