//! The cost of a Prometheus scrape: summing the workers' published counters and rendering the
//! exposition. This is the only work metrics add (workers publish their counters every 100 ms
//! whether metrics are served or not), so its time per scrape, divided by the scrape interval,
//! is the share of one core that metrics cost. The counters carry client tallies with a few
//! hundred prefixes per worker, and the catalogue exports its default maximum of 1,000
//! torrents (3,000 series).
use criterion::{Criterion, criterion_group, criterion_main};
use fjord_server::counters::{Action, Counters, IpFamily};
use fjord_server::fjord_store::{self as fjord_store, FamilyStats, StoreStats};
use fjord_server::metrics::{Exposition, ListFileStatus, MetricsInput};
use fjord_server::stats::TorrentSample;
use std::hint::black_box;
use std::sync::Arc;

fn busy_counters(seed: u64) -> Counters {
    let mut c = Counters::default();
    for a in [Action::Connect, Action::Announce, Action::Scrape] {
        for v in IpFamily::ALL {
            let i = a.to_wire() as usize;
            c.requests[i][v as usize] = seed * 1_000_003 + u64::from(a.to_wire());
            c.responses[i][v as usize] = seed * 999_983 + v as u64;
        }
    }
    for i in 0..1_000 {
        c.recv_batch.record(i % 40);
        c.send_batch.record(i % 33);
        c.announce_peers.record(i % 210);
    }
    // A few hundred distinct prefixes per worker (versions of the common clients).
    for (k, (p, _)) in fjord_bench::population::CLIENT_MIX.iter().enumerate() {
        for minor in b'0'..=b'9' {
            for build in b'0'..=b'3' {
                let mut id = [0u8; 20];
                id[..8].copy_from_slice(&p[..]);
                id[5] = minor;
                id[6] = build;
                for n in 0..(seed as usize + k) {
                    c.clients.count(&id, n % 10 == 0);
                }
            }
        }
    }
    c
}

fn scrape(c: &mut Criterion) {
    // Eight workers' slots, as on an 8-core host.
    let slots: Vec<Counters> = (1..=8).map(busy_counters).collect();
    let exposition = Exposition::new();
    let fam = FamilyStats {
        swarms: 1_000_000,
        seeders: 4_000_000,
        leechers: 6_000_000,
        completed: 123_456,
    };
    // A full default catalogue: 1,000 torrents exported.
    let torrents: Arc<Vec<TorrentSample>> = Arc::new(
        (0..1_000u32)
            .map(|i| TorrentSample {
                name: format!("Programme {i} \"special\" edition").into(),
                info_hash: [i as u8; 20],
                seeders: u64::from(i) * 3,
                leechers: u64::from(i),
                completed: u64::from(i) * 10,
            })
            .collect(),
    );
    let list = |entries| ListFileStatus {
        entries,
        reloads_ok: 3,
        reloads_failed: 0,
        last_reload_ok: true,
    };
    for (label, torrents) in [
        (
            "metrics scrape (sum 8 workers + render)",
            Arc::new(Vec::new()),
        ),
        (
            "metrics scrape (sum 8 workers + render, 1,000 catalogued torrents)",
            Arc::clone(&torrents),
        ),
    ] {
        c.bench_function(label, |b| {
            b.iter(|| {
                let mut counters = Counters::default();
                for s in &slots {
                    counters.merge(s);
                }
                let text = exposition.render(&MetricsInput {
                    counters,
                    store: StoreStats { v4: fam, v6: fam },
                    clean: fjord_store::CleanStats {
                        last_cycle_secs: Some(240),
                        cycles: 100,
                        cycle_limit_secs: 300,
                    },
                    store_limits: (50_000_000, 10_000_000),
                    access_list: list(10_000),
                    catalogue: list(torrents.len() as u64),
                    torrents: Arc::clone(&torrents),
                    workers: 8,
                    snapshots: Default::default(),
                    announce_interval: (1800, 1800),
                    access_list_refused: [("shrink", 0), ("unstable", 0)],
                });
                black_box(text.len())
            })
        });
    }
}

criterion_group!(benches, scrape);
criterion_main!(benches);
