//! The cost of a Prometheus scrape: summing the workers' published counters and rendering the
//! exposition. This is the only work metrics add (workers publish their counters every 100 ms
//! whether metrics are served or not), so its time per scrape, divided by the scrape interval,
//! is the share of one core that metrics cost.
use criterion::{Criterion, criterion_group, criterion_main};
use fjord_server::counters::{Action, Counters, IpFamily};
use fjord_server::fjord_store::{self as fjord_store, FamilyStats, StoreStats};
use fjord_server::metrics::{Exposition, MetricsInput};
use std::hint::black_box;

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
    c.bench_function("metrics scrape (sum 8 workers + render)", |b| {
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
                access_list_entries: 10_000,
                access_list_reloads_ok: 3,
                access_list_reloads_failed: 0,
                access_list_last_reload_ok: true,
                workers: 8,
            });
            black_box(text.len())
        })
    });
}

criterion_group!(benches, scrape);
criterion_main!(benches);
