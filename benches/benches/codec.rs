//! ns per message for parse and write of every BEP 15 message (fjord-protocol).
//!
//! `cargo bench -p fjord-benches --bench codec`. Inputs are built once from a seeded RNG;
//! each iteration parses (or writes) one message into a reused buffer, so the figures are
//! the codec alone: no allocation, no syscalls.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, AnnounceResponseHeader, ConnectRequest,
    ConnectResponse, ConnectionId, ErrorResponse, InfoHash, IpFamily, ParseLimits, PeerId, Request,
    Response, ScrapeRequest, ScrapeStats, TransactionId, write_announce_response_v4,
    write_announce_response_v6, write_scrape_response,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const URL_OPTION: &[u8] = b"\x02\x12/announce?auth=abc";

struct Inputs {
    hashes: Vec<[u8; 20]>,
    v4_peers: Vec<SocketAddrV4>,
    v6_peers: Vec<SocketAddrV6>,
    stats: Vec<ScrapeStats>,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
}

impl Inputs {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(15);
        Inputs {
            hashes: (0..74).map(|_| rng.random()).collect(),
            v4_peers: (0..50)
                .map(|_| SocketAddrV4::new(Ipv4Addr::from(rng.random::<u32>()), rng.random()))
                .collect(),
            v6_peers: (0..50)
                .map(|_| {
                    SocketAddrV6::new(Ipv6Addr::from(rng.random::<u128>()), rng.random(), 0, 0)
                })
                .collect(),
            stats: (0..74)
                .map(|_| ScrapeStats {
                    seeders: rng.random_range(0..10_000),
                    completed: rng.random_range(0..100_000),
                    leechers: rng.random_range(0..10_000),
                })
                .collect(),
            info_hash: rng.random(),
            peer_id: rng.random(),
        }
    }

    fn announce<'a>(&self, options: &'a [u8]) -> Request<'a> {
        Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(0x1122_3344_5566_7788),
            transaction_id: TransactionId(7),
            info_hash: InfoHash(self.info_hash),
            peer_id: PeerId(self.peer_id),
            downloaded: 0,
            left: 100_000,
            uploaded: 0,
            event: AnnounceEvent::Started,
            ip_address: 0,
            key: 0xc229_f5c9,
            num_want: 200,
            port: 6881,
            options: AnnounceOptions::new(options),
        })
    }

    fn scrape(&self, n: usize) -> Request<'_> {
        Request::Scrape(ScrapeRequest {
            connection_id: ConnectionId(0x1122_3344_5566_7788),
            transaction_id: TransactionId(9),
            info_hashes: &self.hashes[..n],
            truncated: false,
        })
    }
}

fn header() -> AnnounceResponseHeader {
    AnnounceResponseHeader {
        transaction_id: TransactionId(7),
        interval: 1800,
        leechers: 40,
        seeders: 10,
    }
}

fn encode(write: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = write(&mut buf);
    buf.truncate(n);
    buf
}

fn requests(c: &mut Criterion) {
    let inputs = Inputs::new();
    let limits = ParseLimits::default();
    let connect = Request::Connect(ConnectRequest {
        transaction_id: TransactionId(1),
    });
    let cases: [(&str, Request<'_>); 5] = [
        ("connect", connect),
        ("announce_98B", inputs.announce(&[])),
        ("announce_118B_url_option", inputs.announce(URL_OPTION)),
        ("scrape_1", inputs.scrape(1)),
        ("scrape_74", inputs.scrape(74)),
    ];

    let mut group = c.benchmark_group("request_parse");
    group.throughput(Throughput::Elements(1));
    for (name, request) in &cases {
        let bytes = encode(|buf| request.write(buf).unwrap());
        assert_eq!(Request::parse(&bytes, &limits).unwrap(), *request);
        group.bench_function(*name, |b| {
            b.iter(|| Request::parse(black_box(&bytes), &limits))
        });
    }
    // Parse plus a walk of the BEP 41 options for the URL, as a server with an access key
    // in the announce URL would do.
    let bytes = encode(|buf| inputs.announce(URL_OPTION).write(buf).unwrap());
    group.bench_function("announce_118B_url_option+url_data", |b| {
        b.iter(|| match Request::parse(black_box(&bytes), &limits) {
            Ok(Request::Announce(a)) => a.options.url_data().map(<[u8]>::len).sum::<usize>(),
            _ => 0,
        })
    });
    group.finish();

    let mut group = c.benchmark_group("request_write");
    group.throughput(Throughput::Elements(1));
    let mut out = [0u8; 2048];
    for (name, request) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(request).write(&mut out).unwrap())
        });
    }
    group.finish();
}

fn responses(c: &mut Criterion) {
    let inputs = Inputs::new();
    let connect = ConnectResponse {
        transaction_id: TransactionId(1),
        connection_id: ConnectionId(0xfeed_f00d),
    };
    let error = ErrorResponse {
        transaction_id: TransactionId(3),
        message: b"unknown connection id",
    };
    let mut out = [0u8; 2048];

    let mut group = c.benchmark_group("response_write");
    group.throughput(Throughput::Elements(1));
    group.bench_function("connect", |b| {
        b.iter(|| black_box(&connect).write(&mut out).unwrap())
    });
    group.bench_function("announce_v4_50_peers", |b| {
        b.iter(|| {
            write_announce_response_v4(
                &mut out,
                black_box(&header()),
                black_box(&inputs.v4_peers).iter().copied(),
            )
            .unwrap()
        })
    });
    group.bench_function("announce_v6_50_peers", |b| {
        b.iter(|| {
            write_announce_response_v6(
                &mut out,
                black_box(&header()),
                black_box(&inputs.v6_peers).iter().copied(),
            )
            .unwrap()
        })
    });
    group.bench_function("scrape_74_rows", |b| {
        b.iter(|| {
            write_scrape_response(
                &mut out,
                TransactionId(9),
                black_box(&inputs.stats).iter().copied(),
            )
            .unwrap()
        })
    });
    group.bench_function("error", |b| {
        b.iter(|| black_box(&error).write(&mut out).unwrap())
    });
    group.finish();

    let connect_bytes = encode(|buf| connect.write(buf).unwrap());
    let v4_bytes = encode(|buf| {
        write_announce_response_v4(buf, &header(), inputs.v4_peers.iter().copied()).unwrap()
    });
    let v6_bytes = encode(|buf| {
        write_announce_response_v6(buf, &header(), inputs.v6_peers.iter().copied()).unwrap()
    });
    let scrape_bytes = encode(|buf| {
        write_scrape_response(buf, TransactionId(9), inputs.stats.iter().copied()).unwrap()
    });
    let error_bytes = encode(|buf| error.write(buf).unwrap());
    let cases = [
        ("connect", &connect_bytes, IpFamily::V4),
        ("announce_v4_50_peers", &v4_bytes, IpFamily::V4),
        ("announce_v6_50_peers", &v6_bytes, IpFamily::V6),
        ("scrape_74_rows", &scrape_bytes, IpFamily::V4),
        ("error", &error_bytes, IpFamily::V4),
    ];

    let mut group = c.benchmark_group("response_parse");
    group.throughput(Throughput::Elements(1));
    for (name, bytes, family) in cases {
        assert!(Response::parse(bytes, family).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| Response::parse(black_box(bytes), family))
        });
    }
    // Parsing is zero-copy; decoding every peer address is what a client does next.
    for (name, bytes, family) in [
        ("announce_v4_50_peers+iter", &v4_bytes, IpFamily::V4),
        ("announce_v6_50_peers+iter", &v6_bytes, IpFamily::V6),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| match Response::parse(black_box(bytes), family) {
                Ok(Response::Announce(a)) => a.peers.iter().for_each(|peer| {
                    black_box(peer);
                }),
                _ => unreachable!(),
            })
        });
    }
    group.finish();
}

criterion_group!(codec, requests, responses);
criterion_main!(codec);
