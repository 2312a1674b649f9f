//! Statistics for the operator: catalogued torrents, the largest swarms, the client mix, and
//! the JSON of `GET /stats` that the status page (`GET /`) renders.
//!
//! Who does what:
//! - the **workers** only count announces by client software ([`crate::clients`]: one table
//!   lookup and one increment per announce) with their other counters;
//! - the **maintenance thread** owns a [`StatsCollector`]: each expiry slice goes through
//!   [`StatsCollector::clean`], which ranks the swarms the slice visits
//!   ([`crate::top_swarms`]) and then samples every catalogued torrent with two
//!   `PeerStore::scrape_one` lookups (IPv4 and IPv6), and publishes both into the
//!   [`StatsHub`];
//! - the **HTTP threads** read the hub (a short lock, cold path) to render `/metrics` and
//!   `/stats`.
//!
//! Nothing here is on the packet path, and nothing walks the store on its own.

use std::collections::HashMap;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use serde::Serialize;

use crate::access_list::ListFileError;
use crate::catalogue::{CatalogueSource, hex};
use crate::config::StatsConfig;
use crate::counters::{Action, Counters, IpFamily};
use crate::fjord_store::{self, CleanReport, PeerStore, StoreStats};
use crate::top_swarms::{SwarmEntry, TopPair, TopWindow};
use fjord_protocol::client::Client;

/// One catalogued torrent as last sampled, IPv4 and IPv6 swarms summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentSample {
    /// Display name (safe for labels and HTML, see [`crate::catalogue`]).
    pub name: Arc<str>,
    /// Info hash.
    pub info_hash: [u8; 20],
    /// Seeders now.
    pub seeders: u64,
    /// Leechers now.
    pub leechers: u64,
    /// Downloads completed since fjord started, as the swarms counted them; kept when a
    /// swarm empties, is freed and is created again.
    pub completed: u64,
}

/// One published ranking pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopView {
    /// Largest by seeders + leechers.
    pub by_peers: Vec<SwarmEntry>,
    /// Largest by completed downloads.
    pub by_completed: Vec<SwarmEntry>,
}

impl From<&TopPair> for TopView {
    fn from(p: &TopPair) -> Self {
        TopView {
            by_peers: p.by_peers.ranked(),
            by_completed: p.by_completed.ranked(),
        }
    }
}

/// The rankings of the last complete clean cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleTop {
    /// Clean cycles completed when it was published (this cycle's number).
    pub cycle: u64,
    /// The cycle's length in seconds.
    pub cycle_secs: Option<u32>,
    /// The rankings.
    pub top: TopView,
}

/// What the maintenance thread publishes after every slice.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Catalogued torrents (the first `stats.max_torrent_series`), in catalogue order.
    pub torrents: Arc<Vec<TorrentSample>>,
    /// The largest swarms of the last complete cycle (none before the first completes).
    pub last_cycle: Option<CycleTop>,
    /// The rankings of the cycle in progress, so far.
    pub in_progress: TopView,
    /// Slices done since start.
    pub slices: u64,
}

/// Shared between the maintenance thread (writing) and the HTTP threads (reading).
#[derive(Debug)]
pub struct StatsHub {
    /// The catalogue in force and its file.
    pub catalogue: CatalogueSource,
    /// `stats.*`.
    pub config: StatsConfig,
    published: parking_lot::Mutex<Published>,
}

impl StatsHub {
    /// Loads the catalogue (an error here should stop the start).
    pub fn new(config: &StatsConfig) -> Result<Self, ListFileError> {
        Ok(StatsHub {
            catalogue: CatalogueSource::new(config.catalogue.clone())?,
            config: config.clone(),
            published: parking_lot::Mutex::new(Published::default()),
        })
    }

    /// A copy of what was last published (small: the rankings and an `Arc` of the samples).
    pub fn published(&self) -> Published {
        self.published.lock().clone()
    }
}

/// Completions of one catalogued torrent, kept across its swarms being freed.
#[derive(Debug, Clone, Copy, Default)]
struct CompletedTrack {
    /// Completions of swarms that were freed since.
    base: u64,
    /// The last sample of each family's swarm.
    last: [u32; 2],
}

impl CompletedTrack {
    fn observe(&mut self, now: [u32; 2]) -> u64 {
        for (last, now) in self.last.iter_mut().zip(now) {
            if now < *last {
                // The swarm was freed (it emptied) and created again: its count restarted.
                self.base += u64::from(*last);
            }
            *last = now;
        }
        self.base + self.last.iter().map(|&c| u64::from(c)).sum::<u64>()
    }
}

/// The maintenance thread's statistics state (see the module docs).
#[derive(Debug)]
pub struct StatsCollector {
    hub: Arc<StatsHub>,
    top: TopWindow,
    completed: HashMap<[u8; 20], CompletedTrack, ahash::RandomState>,
    catalogue_generation: u64,
}

impl StatsCollector {
    /// A collector publishing into `hub`.
    pub fn new(hub: Arc<StatsHub>) -> Self {
        StatsCollector {
            top: TopWindow::new(hub.config.top_swarms),
            completed: HashMap::default(),
            catalogue_generation: hub.catalogue.file().generation(),
            hub,
        }
    }

    /// The hub it publishes into.
    pub fn hub(&self) -> &Arc<StatsHub> {
        &self.hub
    }

    /// One expiry slice ([`PeerStore::clean_observed`]) whose swarms are ranked, then one
    /// sample of the catalogued torrents; both are published. Returns the slice's report.
    pub fn clean(&mut self, store: &PeerStore, now_secs: u32, min_swarms: usize) -> CleanReport {
        self.top.start_slice();
        let top = &mut self.top;
        let report = store.clean_observed(now_secs, min_swarms, |s| top.observe(s));
        let done = self.top.end_slice(report.cycle_complete);
        let torrents = Arc::new(self.sample(store));
        let cycles = store.clean_stats().cycles;
        let mut p = self.hub.published.lock();
        if let Some(pair) = done {
            p.last_cycle = Some(CycleTop {
                cycle: cycles,
                cycle_secs: report.cycle_secs,
                top: TopView::from(&pair),
            });
        }
        p.in_progress = TopView::from(&self.top.window);
        p.torrents = torrents;
        p.slices += 1;
        report
    }

    /// Samples the first `max_torrent_series` catalogued torrents.
    fn sample(&mut self, store: &PeerStore) -> Vec<TorrentSample> {
        let catalogue = self.hub.catalogue.current();
        let max = self.hub.config.max_torrent_series;
        let entries = catalogue.entries().iter().take(max);
        let generation = self.hub.catalogue.file().generation();
        if generation != self.catalogue_generation {
            // Forget the torrents no longer sampled.
            let kept: std::collections::HashSet<&[u8; 20]> =
                entries.clone().map(|e| &e.info_hash).collect();
            self.completed.retain(|h, _| kept.contains(h));
            self.catalogue_generation = generation;
        }
        entries
            .map(|e| {
                let v4 = store.scrape_one::<SocketAddrV4>(&e.info_hash);
                let v6 = store.scrape_one::<SocketAddrV6>(&e.info_hash);
                let completed = self
                    .completed
                    .entry(e.info_hash)
                    .or_default()
                    .observe([v4.completed, v6.completed]);
                TorrentSample {
                    name: Arc::clone(&e.name),
                    info_hash: e.info_hash,
                    seeders: u64::from(v4.seeders) + u64::from(v6.seeders),
                    leechers: u64::from(v4.leechers) + u64::from(v6.leechers),
                    completed,
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON of `GET /stats` (schema in docs/operations.md, "Statistics").

/// Everything one `/stats` answer shows, gathered by the caller.
#[derive(Debug)]
pub struct StatsInput<'a> {
    /// The workers' counters summed.
    pub counters: &'a Counters,
    /// The store's counts.
    pub store: StoreStats,
    /// What the maintenance thread last published.
    pub published: &'a Published,
    /// The hub (catalogue state, settings).
    pub hub: &'a StatsHub,
    /// Seconds since the server started.
    pub uptime_secs: u32,
    /// The announce interval sent to clients.
    pub announce_interval_secs: u32,
    /// Clean cycles completed.
    pub clean_cycles: u64,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    fjord_version: &'static str,
    uptime_secs: u32,
    announce_interval_secs: u32,
    totals: Totals,
    clients: Vec<ClientJson>,
    top_swarms: TopSwarmsJson<'a>,
    catalogue: CatalogueJson<'a>,
}

#[derive(Serialize)]
struct ByAction {
    connect: u64,
    announce: u64,
    scrape: u64,
}

#[derive(Serialize)]
struct ByFamily {
    ipv4: u64,
    ipv6: u64,
}

#[derive(Serialize)]
struct Totals {
    requests: ByAction,
    error_replies: u64,
    dropped: u64,
    rx_packets: u64,
    tx_packets: u64,
    torrents: ByFamily,
    peers: ByFamily,
    seeders: u64,
    leechers: u64,
    completed: u64,
    started: u64,
}

#[derive(Serialize)]
struct VersionJson {
    version: String,
    announces: u64,
    started: u64,
}

#[derive(Serialize)]
struct CountJson {
    announces: u64,
    started: u64,
}

#[derive(Serialize)]
struct ClientJson {
    client: &'static str,
    name: &'static str,
    announces: u64,
    started: u64,
    versions: Vec<VersionJson>,
    other_versions: CountJson,
}

#[derive(Serialize)]
struct SwarmJson<'a> {
    info_hash: String,
    ip_version: u8,
    name: Option<&'a str>,
    seeders: u32,
    leechers: u32,
    peers: u64,
    completed: u32,
}

#[derive(Serialize)]
struct RankingJson<'a> {
    by_peers: Vec<SwarmJson<'a>>,
    by_completed: Vec<SwarmJson<'a>>,
}

#[derive(Serialize)]
struct LastCycleJson<'a> {
    cycle: u64,
    cycle_secs: Option<u32>,
    #[serde(flatten)]
    ranking: RankingJson<'a>,
}

#[derive(Serialize)]
struct TopSwarmsJson<'a> {
    size: usize,
    clean_cycles: u64,
    last_cycle: Option<LastCycleJson<'a>>,
    in_progress: RankingJson<'a>,
}

#[derive(Serialize)]
struct TorrentJson<'a> {
    name: &'a str,
    info_hash: String,
    seeders: u64,
    leechers: u64,
    completed: u64,
}

#[derive(Serialize)]
struct CatalogueJson<'a> {
    path: Option<String>,
    entries: usize,
    exported: usize,
    max_torrent_series: usize,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload_ok: bool,
    torrents: Vec<TorrentJson<'a>>,
}

fn ranking<'a>(view: &TopView, name_of: &impl Fn(&[u8; 20]) -> Option<&'a str>) -> RankingJson<'a> {
    let list = |v: &[SwarmEntry]| {
        v.iter()
            .map(|e| SwarmJson {
                info_hash: hex(&e.info_hash),
                ip_version: match e.family {
                    fjord_store::IpFamily::V4 => 4,
                    fjord_store::IpFamily::V6 => 6,
                },
                name: name_of(&e.info_hash),
                seeders: e.seeders,
                leechers: e.leechers,
                peers: e.peers(),
                completed: e.completed,
            })
            .collect()
    };
    RankingJson {
        by_peers: list(&view.by_peers),
        by_completed: list(&view.by_completed),
    }
}

fn clients(counters: &Counters) -> Vec<ClientJson> {
    let per_client = counters.clients.per_client();
    let per_version = counters.clients.per_version();
    let mut out: Vec<ClientJson> = Client::ALL
        .iter()
        .zip(per_client)
        .filter(|(_, n)| n.announces > 0)
        .map(|(&c, n)| {
            let versions: Vec<VersionJson> = per_version
                .iter()
                .filter(|(vc, _, _)| *vc == c)
                .map(|(_, v, n)| VersionJson {
                    version: v.to_string(),
                    announces: n.announces,
                    started: n.started,
                })
                .collect();
            let (va, vs) = versions
                .iter()
                .fold((0, 0), |(a, s), v| (a + v.announces, s + v.started));
            ClientJson {
                client: c.label(),
                name: c.name(),
                announces: n.announces,
                started: n.started,
                versions,
                other_versions: CountJson {
                    announces: n.announces - va,
                    started: n.started - vs,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| b.announces.cmp(&a.announces).then(a.client.cmp(b.client)));
    out
}

/// Renders the `/stats` JSON.
pub fn stats_json(input: &StatsInput<'_>) -> String {
    let StatsInput {
        counters,
        store,
        published,
        hub,
        uptime_secs,
        announce_interval_secs,
        clean_cycles,
    } = input;
    let both = |a: Action| counters.requests(a, IpFamily::V4) + counters.requests(a, IpFamily::V6);
    let catalogue = hub.catalogue.current();
    let name_of = |h: &[u8; 20]| catalogue.name_of(h).map(|n| &**n);
    let per_client = counters.clients.per_client();
    let json = StatsJson {
        fjord_version: env!("CARGO_PKG_VERSION"),
        uptime_secs: *uptime_secs,
        announce_interval_secs: *announce_interval_secs,
        totals: Totals {
            requests: ByAction {
                connect: both(Action::Connect),
                announce: both(Action::Announce),
                scrape: both(Action::Scrape),
            },
            error_replies: counters.responses(Action::Error, IpFamily::V4)
                + counters.responses(Action::Error, IpFamily::V6),
            dropped: counters.total_drops(),
            rx_packets: counters.rx_packets,
            tx_packets: counters.tx_packets,
            torrents: ByFamily {
                ipv4: store.v4.swarms,
                ipv6: store.v6.swarms,
            },
            peers: ByFamily {
                ipv4: store.v4.seeders + store.v4.leechers,
                ipv6: store.v6.seeders + store.v6.leechers,
            },
            seeders: store.v4.seeders + store.v6.seeders,
            leechers: store.v4.leechers + store.v6.leechers,
            completed: store.v4.completed + store.v6.completed,
            started: per_client.iter().map(|c| c.started).sum(),
        },
        clients: clients(counters),
        top_swarms: TopSwarmsJson {
            size: hub.config.top_swarms,
            clean_cycles: *clean_cycles,
            last_cycle: published.last_cycle.as_ref().map(|c| LastCycleJson {
                cycle: c.cycle,
                cycle_secs: c.cycle_secs,
                ranking: ranking(&c.top, &name_of),
            }),
            in_progress: ranking(&published.in_progress, &name_of),
        },
        catalogue: CatalogueJson {
            path: hub.catalogue.file().path().map(|p| p.display().to_string()),
            entries: catalogue.len(),
            exported: published.torrents.len(),
            max_torrent_series: hub.config.max_torrent_series,
            reloads_ok: hub.catalogue.file().generation(),
            reloads_failed: hub.catalogue.file().failed_reloads(),
            last_reload_ok: !hub.catalogue.file().last_reload_failed(),
            torrents: published
                .torrents
                .iter()
                .map(|t| TorrentJson {
                    name: &t.name,
                    info_hash: hex(&t.info_hash),
                    seeders: t.seeders,
                    leechers: t.leechers,
                    completed: t.completed,
                })
                .collect(),
        },
    };
    serde_json::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fjord_store::{AnnounceEvent, StoreConfig};

    fn store_with(hash: [u8; 20], seeders: u16, leechers: u16, now: u32) -> PeerStore {
        let store = PeerStore::new(StoreConfig::default());
        let mut out = Vec::new();
        for i in 0..seeders + leechers {
            let peer = SocketAddrV4::new([10, 0, (i >> 8) as u8, i as u8].into(), 6881);
            let left = if i < seeders { 0 } else { 100 };
            store.announce(
                &hash,
                peer,
                left,
                AnnounceEvent::Started,
                0,
                now,
                1,
                &mut out,
            );
        }
        store
    }

    fn hub(catalogue: &std::path::Path, top: usize) -> Arc<StatsHub> {
        Arc::new(
            StatsHub::new(&StatsConfig {
                catalogue: Some(catalogue.to_owned()),
                max_torrent_series: 1000,
                top_swarms: top,
            })
            .unwrap(),
        )
    }

    #[test]
    fn completed_survives_a_swarm_being_freed() {
        let mut t = CompletedTrack::default();
        assert_eq!(t.observe([3, 0]), 3);
        assert_eq!(t.observe([4, 1]), 5);
        // The IPv4 swarm emptied and came back with one new download.
        assert_eq!(t.observe([1, 1]), 6);
    }

    #[test]
    fn a_slice_ranks_swarms_and_samples_the_catalogue() {
        let dir = crate::test_util::TempDir::new("stats");
        let path = dir.path().join("catalogue.txt");
        std::fs::write(&path, format!("{} Big one\n", hex(&[7; 20]))).unwrap();
        let hub = hub(&path, 3);
        let store = store_with([7; 20], 2, 3, 10);
        let mut out = Vec::new();
        let small = SocketAddrV4::new([10, 9, 9, 9].into(), 6881);
        store.announce(
            &[8; 20],
            small,
            0,
            AnnounceEvent::Completed,
            0,
            10,
            1,
            &mut out,
        );
        let mut c = StatsCollector::new(Arc::clone(&hub));
        let report = c.clean(&store, 11, 4096);
        assert!(report.cycle_complete, "{report:?}");
        let p = hub.published();
        let last = p.last_cycle.clone().expect("a complete cycle");
        let peers: Vec<u64> = last.top.by_peers.iter().map(SwarmEntry::peers).collect();
        assert_eq!(peers, [5, 1]);
        assert_eq!(last.top.by_completed.len(), 1);
        assert_eq!(last.top.by_completed[0].info_hash, [8; 20]);
        assert_eq!(p.torrents.len(), 1);
        assert_eq!(&*p.torrents[0].name, "Big one");
        assert_eq!((p.torrents[0].seeders, p.torrents[0].leechers), (2, 3));

        let counters = Counters::default();
        let json = stats_json(&StatsInput {
            counters: &counters,
            store: store.stats(),
            published: &p,
            hub: &hub,
            uptime_secs: 5,
            announce_interval_secs: 1800,
            clean_cycles: 1,
        });
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["announce_interval_secs"], 1800);
        assert_eq!(v["totals"]["seeders"], 3);
        assert_eq!(
            v["top_swarms"]["last_cycle"]["by_peers"][0]["name"],
            "Big one"
        );
        assert_eq!(v["top_swarms"]["last_cycle"]["by_peers"][0]["peers"], 5);
        assert_eq!(
            v["top_swarms"]["last_cycle"]["by_completed"][0]["completed"],
            1
        );
        assert_eq!(v["catalogue"]["torrents"][0]["leechers"], 3);
        assert_eq!(v["catalogue"]["entries"], 1);
    }
}
