//! Handler tests: the access list, no amplification, scrapes without hashes, captured real-client
//! requests and random authenticated requests.

use super::*;

#[test]
fn access_list_allow_and_deny() {
    let c = Config::default();
    let mut h = handler_with(&c, list(AccessListMode::Allow, &[1]));
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.hash = [1; 20]);
    assert_eq!(u32_at(&r, 0), 1);
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| {
        a.hash = [2; 20];
        a.tid = 0xabcd;
    });
    assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (3, 0xabcd));
    assert_eq!(&r[8..], ACCESS_DENIED_MESSAGE.as_bytes());
    assert_eq!(h.store_stats_v4_peers(), 1, "denied announce not stored");
    assert_eq!(h.counters.errors_sent(ErrorReason::AccessDenied), 1);
    assert_eq!(h.counters.responses(Action::Error, IpFamily::V4), 1);

    let mut h = handler_with(&c, list(AccessListMode::Deny, &[1]));
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.hash = [1; 20]);
    assert_eq!(u32_at(&r, 0), 3);
    let r = announce(&mut h, v4([10, 0, 0, 1], 1), |a| a.hash = [2; 20]);
    assert_eq!(u32_at(&r, 0), 1);
    // Denied but unauthenticated: silence, not an error.
    let denied = Ann {
        hash: [1; 20],
        ..Ann::new(5, 1)
    };
    assert_eq!(call(&mut h, v4([10, 0, 0, 1], 1), &denied.bytes()), None);
}

/// No reply is ever larger than the request unless the connection id is valid: random and
/// mutated datagrams from an address that never connected.
#[test]
fn no_amplification_without_a_valid_connection_id() {
    let mut h = handler();
    // Populate a swarm so that a (wrongly) answered announce would be large.
    for i in 0..100u8 {
        announce(&mut h, v4([10, 9, 0, i], 1), |a| a.num_want = 0);
    }
    let attacker = v4([198, 51, 100, 7], 53);
    let templates = [
        connect_bytes(1),
        Ann {
            num_want: 200,
            ..Ann::new(0, 1)
        }
        .bytes(),
        scrape_bytes(0, 1, &[[1; 20]; 74]),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut answered = 0;
    for round in 0..30_000 {
        let mut bytes = if round % 4 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            templates[round % 3].clone()
        };
        if !bytes.is_empty() {
            // Random id (or a random tweak) and an action 0..=4.
            if bytes.len() >= 16 && round % 3 != 0 {
                bytes[..8].copy_from_slice(&next().to_be_bytes());
                bytes[8..12].copy_from_slice(&((next() % 5) as u32).to_be_bytes());
            }
            let i = (next() as usize) % bytes.len();
            bytes[i] ^= next() as u8 | 1;
            if round % 7 == 0 {
                bytes.truncate((next() as usize) % (bytes.len() + 1));
            }
        }
        if let Some(r) = call(&mut h, attacker, &bytes) {
            answered += 1;
            assert!(
                r.len() <= bytes.len(),
                "reply {} > request {}",
                r.len(),
                bytes.len()
            );
            assert_eq!(u32_at(&r, 0), 0, "only connect is answered unauthenticated");
        }
    }
    // Unmodified connects are answered; their replies are exactly 16 bytes.
    assert!(call(&mut h, attacker, &connect_bytes(5)).is_some());
    assert!(answered < 30_000);
    assert_eq!(h.counters.errors_sent.iter().sum::<u64>(), 0);
}

#[test]
fn scrape_without_hashes_gets_an_error_only_when_authenticated() {
    let mut h = handler();
    let src = v4([192, 0, 2, 1], 5000);
    let id = connect(&mut h, src);
    let mut empty = [0u8; 16];
    empty[..8].copy_from_slice(&id.to_be_bytes());
    empty[8..12].copy_from_slice(&2u32.to_be_bytes());
    empty[12..16].copy_from_slice(&9u32.to_be_bytes());
    let r = call(&mut h, src, &empty).expect("error reply");
    assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (3, 9));
    assert_eq!(&r[8..], b"scrape without info hashes");
    empty[0] ^= 0x80;
    assert_eq!(call(&mut h, src, &empty), None);
}

/// The captured real-client announces (libtorrent with a BEP 41 URL option, Transmission
/// without), with a connection id fjord issued patched in, are answered.
#[test]
fn captured_real_client_announces_are_answered() {
    let mut h = handler();
    for (captured, src) in [
        (
            &include_bytes!("../../protocol/testdata/libtorrent-announce-118.bin")[..],
            v4([10, 0, 0, 1], 6881),
        ),
        (
            &include_bytes!("../../protocol/testdata/transmission-announce-98.bin")[..],
            v4([10, 0, 0, 2], 51413),
        ),
    ] {
        let id = connect(&mut h, src);
        let mut req = captured.to_vec();
        req[..8].copy_from_slice(&id.to_be_bytes());
        let r = call(&mut h, src, &req).expect("answered");
        assert_eq!(u32_at(&r, 0), 1);
        assert_eq!(r[4..8], req[12..16], "transaction id echoed");
        // The unpatched capture (another tracker's id) is not answered.
        assert_eq!(call(&mut h, src, captured), None);
    }
}

/// Authenticated garbage (a valid connection id, then random bytes and lengths) never panics,
/// and every reply is a well-formed announce, scrape or short error echoing the transaction id.
#[test]
fn authenticated_random_requests_get_well_formed_replies() {
    let mut h = handler();
    let src = v4([192, 0, 2, 9], 4000);
    let id = connect(&mut h, src);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..5_000u32 {
        let len = 16 + (next() % 400) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        b[..8].copy_from_slice(&id.to_be_bytes());
        b[8..12].copy_from_slice(&(1 + round % 2).to_be_bytes());
        b[12..16].copy_from_slice(&round.to_be_bytes());
        let Some(r) = call(&mut h, src, &b) else {
            continue;
        };
        assert!(r.len() <= MAX_REPLY);
        assert_eq!(u32_at(&r, 4), round, "transaction id echoed");
        match u32_at(&r, 0) {
            1 => assert_eq!((r.len() - 20) % 6, 0),
            2 => assert_eq!((r.len() - 8) % 12, 0),
            3 => assert!(r.len() < 40 && r[8] != 0),
            a => panic!("action {a}"),
        }
    }
    assert!(h.counters.responses(Action::Announce, IpFamily::V4) > 1000);
    assert!(h.counters.responses(Action::Scrape, IpFamily::V4) > 100);
    assert!(h.counters.errors_sent(ErrorReason::Malformed) > 100);
}
