//! Properties of the peer-id decoder (`fjord_protocol::client::identify`): it never panics,
//! garbage is `Client::Other`, and an answer marked `fixed_prefix` depends on the first eight
//! bytes only (what lets the server cache it).

use fjord_protocol::client::{Client, identify};
use proptest::prelude::*;

/// First bytes no layout starts with: an id beginning with one of these is always `Other`.
fn not_a_layout_start() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("a layout's first byte", |b| {
        !matches!(
            b,
            b'-' | b'T' | b'A' | b'M' | b'e' | b'a' | b'O' | b'Q' | b'R' | b'S' | b'U'
        )
    })
}

/// Prefixes of real clients, and ones that look like them.
const PREFIXES: &[&[u8]] = &[
    b"-LT2080-",
    b"-TR3000-",
    b"-qB4630-",
    b"-UT355W-",
    b"-UT3550",
    b"-DE211s-",
    b"-BT7a5S-",
    b"TIX0289-",
    b"A2-1-35-",
    b"M7-2-2--",
    b"-ZZ1234-",
    b"T03I-----",
    b"exbc\x01\x02",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn any_bytes_decode_without_panicking(id: [u8; 20]) {
        let i = identify(&id);
        prop_assert!(Client::ALL.contains(&i.client));
        if i.client == Client::Other {
            prop_assert!(i.version.is_none() || !i.fixed_prefix);
        }
    }

    #[test]
    fn garbage_is_other(first in not_a_layout_start(), rest: [u8; 19]) {
        let mut id = [0u8; 20];
        id[0] = first;
        id[1..].copy_from_slice(&rest);
        let i = identify(&id);
        prop_assert_eq!(i.client, Client::Other);
        prop_assert_eq!(i.version, None);
        prop_assert!(!i.fixed_prefix);
    }

    #[test]
    fn a_fixed_prefix_answer_ignores_the_random_part(
        which in 0..PREFIXES.len(), head: [u8; 20], tail_a: [u8; 12], tail_b: [u8; 12],
        use_real in any::<bool>(),
    ) {
        // Either a real prefix or arbitrary first bytes, then two different random parts.
        let mut a = head;
        if use_real {
            let p = PREFIXES[which];
            a[..p.len()].copy_from_slice(p);
        }
        let mut b = a;
        a[8..].copy_from_slice(&tail_a);
        b[8..].copy_from_slice(&tail_b);
        let (ia, ib) = (identify(&a), identify(&b));
        if ia.fixed_prefix {
            prop_assert_eq!(ia, ib);
        }
    }

    #[test]
    fn a_known_azureus_code_with_any_version_characters_is_safe(
        code in prop::sample::select(vec![*b"qB", *b"TR", *b"LT", *b"UT", *b"BC", *b"WW"]),
        version: [u8; 5], rest: [u8; 12],
    ) {
        let mut id = [0u8; 20];
        id[0] = b'-';
        id[1..3].copy_from_slice(&code);
        id[3..8].copy_from_slice(&version);
        id[8..].copy_from_slice(&rest);
        let i = identify(&id);
        if i.client == Client::Other {
            prop_assert_eq!(i.version, None);
        }
        if let Some(v) = i.version {
            prop_assert!(v.to_string().len() <= 7, "{}", v);
        }
    }
}

/// Every real prefix, whole (Shadow style and aria2 run past byte 8), then the same first eight
/// bytes with other bytes after them: an answer marked `fixed_prefix` must not change.
#[test]
fn fixed_prefixes_of_real_ids_ignore_the_bytes_after_eight() {
    for prefix in PREFIXES
        .iter()
        .chain([&&b"A2-1-35-0-"[..], &&b"S58B-----"[..]])
    {
        for (fill_a, fill_b) in [(b'Z', b'q'), (b'-', b'\0'), (b'0', b'-')] {
            let mut a = [fill_a; 20];
            a[..prefix.len()].copy_from_slice(prefix);
            let mut b = [fill_b; 20];
            b[..8].copy_from_slice(&a[..8]);
            let (ia, ib) = (identify(&a), identify(&b));
            if ia.fixed_prefix {
                assert_eq!(
                    ia,
                    ib,
                    "{:?} vs {:?}",
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b)
                );
            }
        }
    }
}

/// A million uniformly random ids (a fixed xorshift seed, so the run is reproducible): every
/// one is `Other`. A false positive needs `-` plus a known code plus valid version characters
/// (or `TIX`, `A2-`, `M` + digits, …), far below one in a million.
#[test]
fn a_million_random_ids_are_all_other() {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut named = 0;
    for _ in 0..1_000_000 {
        let mut id = [0u8; 20];
        for chunk in id.chunks_mut(8) {
            let w = next().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        if identify(&id).client != Client::Other {
            named += 1;
        }
    }
    assert_eq!(named, 0);
}
