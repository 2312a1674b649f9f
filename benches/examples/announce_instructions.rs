//! Instructions per announce through `RequestHandler::handle`, for callgrind: run it under
//! `valgrind --tool=callgrind --toggle-collect='*measured_announces*'` and divide the
//! collected instructions by the announces handled. It uses only API that predates the client
//! counters, so the same file builds against older trees for a before/after comparison
//! (docs/benchmarks.md, "Statistics cost").
//!
//! ```sh
//! cargo build --release -p fjord-benches --example announce_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*measured_announces*' \
//!     target/release/examples/announce_instructions mix 200000
//! ```
//!
//! `FJORD_CONFIG=path.toml` runs the handler with that configuration instead of the defaults.
//!
//! Peer ids: `mix` (a mix of real clients' prefixes, as fjord-bench sends), `one` (every peer
//! `-qB4630-`), `garbage` (random bytes: every announce takes the decoder's slow path), `flood`
//! (`mix`, but every measured announce from one source: with a small `limits.burst` all but the
//! first few are dropped by the rate limiter).
//! 1,000 swarms of 50 peers are announced first (not measured); then `N` re-announces of those
//! peers (event none, 50 peers wanted) are measured.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    PeerId, Request, TransactionId,
};
use fjord_server::Config;
use fjord_server::access_list::{AccessList, AccessListSource};
use fjord_server::connection_id::ConnectionIdValidator;
use fjord_server::fjord_store::PeerStore;
use fjord_server::handler::{HandlerSettings, MAX_REPLY, RequestHandler, Shared};
use fjord_server::server::{Now, StoreClock};

const SWARMS: u32 = 1_000;
const PEERS_PER_SWARM: u32 = 50;
const PREFIXES: [&[u8; 8]; 16] = [
    b"-qB4630-",
    b"-qB4630-",
    b"-qB4630-",
    b"-qB5010-",
    b"-UT355W-",
    b"-UT355W-",
    b"-TR3000-",
    b"-TR4060-",
    b"-LT2080-",
    b"-BT7a5S-",
    b"-DE211s-",
    b"-BC0206-",
    b"-lt0D80-",
    b"TIX0289-",
    b"A2-1-35-",
    b"-FB0100-",
];

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn peer_id(kind: &str, peer: u32) -> [u8; 20] {
    let r = mix(u64::from(peer) + 1);
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(&r.to_le_bytes());
    id[8..16].copy_from_slice(&mix(r).to_le_bytes());
    id[16..].copy_from_slice(&mix(r ^ 1).to_le_bytes()[..4]);
    match kind {
        "mix" | "flood" => id[..8].copy_from_slice(PREFIXES[(r % 16) as usize]),
        "one" => id[..8].copy_from_slice(b"-qB4630-"),
        _ => {}
    }
    id
}

fn announce(cid: u64, swarm: u32, peer: u32, kind: &str, event: AnnounceEvent) -> Vec<u8> {
    let mut hash = [0u8; 20];
    hash[..8].copy_from_slice(&mix(u64::from(swarm)).to_be_bytes());
    let req = Request::Announce(AnnounceRequest {
        connection_id: ConnectionId(cid),
        transaction_id: TransactionId(peer),
        info_hash: InfoHash(hash),
        peer_id: PeerId(peer_id(kind, peer)),
        downloaded: 0,
        left: if peer.is_multiple_of(2) { 0 } else { 1000 },
        uploaded: 0,
        event,
        ip_address: 0,
        key: 1,
        num_want: 50,
        port: 6881,
        options: AnnounceOptions::new(&[]),
    });
    let mut out = vec![0u8; 128];
    let n = req.write(&mut out).expect("write announce");
    out.truncate(n);
    out
}

fn source(peer: u32) -> SocketAddr {
    SocketAddr::from((
        [10, (peer >> 16) as u8, (peer >> 8) as u8, peer as u8],
        6881,
    ))
}

#[inline(never)]
fn measured_announces(
    h: &mut RequestHandler,
    now: Now,
    requests: &[(SocketAddr, Vec<u8>)],
    out: &mut [u8],
) -> usize {
    let mut bytes = 0;
    for (src, req) in requests {
        bytes += h.handle(now, *src, req, out).unwrap_or(0);
    }
    bytes
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "mix".into());
    let n: usize = args.next().map_or(200_000, |s| s.parse().expect("N"));
    // FJORD_CONFIG: a configuration file (e.g. benches/load-test.toml: the per-source limiter
    // and store admission off), to compare configurations of one build.
    let config = match std::env::var_os("FJORD_CONFIG") {
        Some(path) => Config::from_file(std::path::Path::new(&path)).expect("FJORD_CONFIG"),
        None => Config::default(),
    };
    let shared = Arc::new(Shared {
        store: Arc::new(PeerStore::new(config.store_config())),
        validator: ConnectionIdValidator::new([7; 16], 30),
        access: Arc::new(AccessListSource::fixed(AccessList::off())),
        settings: HandlerSettings::from_config(&config),
        clock: StoreClock::new(),
    });
    let mut h = RequestHandler::new(shared, 42);
    let now = Now::at(1_800_000_000);
    let mut out = vec![0u8; MAX_REPLY];
    // One connection id per source address.
    let peers = SWARMS * PEERS_PER_SWARM;
    let mut cids = Vec::with_capacity(peers as usize);
    for p in 0..peers {
        let mut req = [0u8; 16];
        let c = Request::Connect(ConnectRequest {
            transaction_id: TransactionId(p),
        });
        c.write(&mut req).expect("connect");
        let len = h
            .handle(now, source(p), &req, &mut out)
            .expect("connect reply");
        assert_eq!(len, 16);
        cids.push(u64::from_be_bytes(out[8..16].try_into().expect("8 bytes")));
    }
    let swarm_of = |p: u32| p % SWARMS;
    // Populate: every peer starts (not measured).
    for p in 0..peers {
        let req = announce(
            cids[p as usize],
            swarm_of(p),
            p,
            &kind,
            AnnounceEvent::Started,
        );
        h.handle(now, source(p), &req, &mut out)
            .expect("announce reply");
    }
    // The measured re-announces, built beforehand.
    // `flood`: every measured announce comes from peer 0 (one source over its rate, with a
    // small `limits.burst` in FJORD_CONFIG: what a dropped datagram costs).
    let flood = kind == "flood";
    let requests: Vec<(SocketAddr, Vec<u8>)> = (0..n)
        .map(|i| {
            let p = if flood {
                0
            } else {
                (mix(i as u64) % u64::from(peers)) as u32
            };
            let req = announce(cids[p as usize], swarm_of(p), p, &kind, AnnounceEvent::None);
            (source(p), req)
        })
        .collect();
    let bytes = measured_announces(&mut h, now, &requests, &mut out);
    println!(
        "{kind}: {n} announces measured, {} reply bytes",
        black_box(bytes)
    );
}
