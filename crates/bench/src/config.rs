//! A fully resolved load-test configuration (what the CLI produces and tests build directly).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fjord_protocol::MAX_SCRAPE_HASHES;

use crate::population::{EventModel, SwarmDistribution};

/// Most datagrams one sendmmsg/recvmmsg moves (`--batch`).
pub const MAX_BATCH: usize = 64;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadMode {
    /// Send a new request whenever a reply (or timeout) frees an in-flight slot.
    Closed,
    /// Send at a fixed total rate (requests per second) regardless of replies.
    Open {
        /// Requests per second over all threads.
        rate: f64,
    },
}

/// Relative weights of the request kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of connect requests.
    pub connect: u32,
    /// Weight of announce requests.
    pub announce: u32,
    /// Weight of scrape requests.
    pub scrape: u32,
}

/// The simulated population.
#[derive(Clone, Debug, PartialEq)]
pub struct PopulationConfig {
    /// Number of simulated peers.
    pub peers: u32,
    /// Number of swarms (info hashes).
    pub swarms: u32,
    /// Popularity of swarms.
    pub distribution: SwarmDistribution,
    /// Fraction of peers that seed.
    pub seeder_ratio: f64,
    /// Events announces carry.
    pub events: EventModel,
    /// num_want of announces (-1 = tracker default); stopped announces send 0 in the
    /// lifecycle model.
    pub num_want: i32,
    /// Fewest info hashes per scrape.
    pub scrape_min: u8,
    /// Most info hashes per scrape.
    pub scrape_max: u8,
    /// Seed of every random choice (info hashes, peer ids, swarms, request order).
    pub seed: u64,
}

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// The tracker's address.
    pub target: SocketAddr,
    /// The tracker as the user wrote it, canonical (`udp://host:port/path`), for reports.
    pub target_url: String,
    /// Path and query of a `udp://` target, sent as BEP 41 URL data.
    pub path: Option<String>,
    /// The BEP 41 option bytes every announce carries (from `path`; empty without one).
    pub announce_options: Vec<u8>,
    /// Load-generating threads.
    pub threads: usize,
    /// UDP sockets per thread (each has its own connection id).
    pub sockets_per_thread: usize,
    /// Distinct loopback source addresses (127.0.0.1 ..) used against a 127.x target.
    pub sources: u8,
    /// Source addresses to bind instead of the automatic choice (socket `i` binds
    /// `bind[i % len]`); empty for the automatic choice.
    pub bind: Vec<IpAddr>,
    /// Pacing.
    pub mode: LoadMode,
    /// Most requests outstanding per socket.
    pub in_flight: usize,
    /// Stop sending after this long (whichever limit comes first).
    pub duration: Option<Duration>,
    /// Stop sending after this many requests in total (connects included).
    pub requests: Option<u64>,
    /// Requests sent in this first part of the run are left out of the summary (they stay
    /// in the per-second series).
    pub warmup: Duration,
    /// A request unanswered for this long counts as a timeout.
    pub timeout: Duration,
    /// Fetch a new connection id when the current one is this old.
    pub reconnect_after: Duration,
    /// Request mix.
    pub mix: Mix,
    /// Population.
    pub population: PopulationConfig,
    /// Datagrams per send / receive call (1..=64).
    pub batch: usize,
    /// Use sendmmsg/recvmmsg (Linux) instead of one syscall per datagram.
    pub use_mmsg: bool,
    /// SO_RCVBUF to ask for (0 = OS default).
    pub recv_buffer: usize,
    /// Busy-poll the sockets instead of sleeping in epoll between events.
    pub spin: bool,
    /// Server process to measure CPU time and memory of.
    pub server_pid: Option<u32>,
    /// Print a progress line every second on stderr.
    pub progress: bool,
}

impl BenchConfig {
    /// A small closed-loop configuration against `target` (no warm-up), suitable for tests.
    pub fn quick(target: SocketAddr) -> Self {
        Self {
            target,
            target_url: format!("udp://{target}"),
            path: None,
            announce_options: Vec::new(),
            threads: 1,
            sockets_per_thread: 4,
            sources: 4,
            bind: Vec::new(),
            mode: LoadMode::Closed,
            in_flight: 8,
            duration: Some(Duration::from_secs(5)),
            requests: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
            reconnect_after: Duration::from_secs(60),
            mix: Mix {
                connect: 1,
                announce: 10,
                scrape: 1,
            },
            population: PopulationConfig {
                peers: 1000,
                swarms: 100,
                distribution: SwarmDistribution::Zipf(1.0),
                seeder_ratio: 0.5,
                events: EventModel::Lifecycle {
                    p_complete: 0.01,
                    p_stop: 0.01,
                },
                num_want: 50,
                scrape_min: 1,
                scrape_max: 10,
                seed: 1,
            },
            batch: 32,
            use_mmsg: true,
            recv_buffer: 0,
            spin: false,
            server_pid: None,
            progress: false,
        }
    }

    /// Checks the combination of settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(self.threads >= 1, "--threads must be at least 1");
        ensure!(
            self.sockets_per_thread >= 1,
            "--sockets-per-thread must be at least 1"
        );
        ensure!(
            (1..=65_536).contains(&self.in_flight),
            "--in-flight must be 1..=65536"
        );
        ensure!(
            (1..=MAX_BATCH).contains(&self.batch),
            "--batch must be 1..={MAX_BATCH}"
        );
        ensure!(self.sources >= 1, "--sources must be at least 1");
        ensure!(
            self.duration.is_some() || self.requests.is_some(),
            "give --duration or --requests"
        );
        ensure!(
            self.mix.connect + self.mix.announce + self.mix.scrape > 0,
            "at least one request weight must be positive"
        );
        let p = &self.population;
        ensure!(
            p.peers >= 1 && p.swarms >= 1,
            "--peers and --swarms must be positive"
        );
        ensure!(
            (0.0..=1.0).contains(&p.seeder_ratio),
            "--seeder-ratio must be within 0..=1"
        );
        ensure!(
            (1..=MAX_SCRAPE_HASHES).contains(&usize::from(p.scrape_max)) && p.scrape_min >= 1,
            "scrape sizes must be within 1..={MAX_SCRAPE_HASHES}"
        );
        ensure!(
            p.scrape_min <= p.scrape_max,
            "--scrape-min must not exceed --scrape-max"
        );
        if let EventModel::Lifecycle { p_complete, p_stop } = p.events {
            ensure!(
                (0.0..=1.0).contains(&p_complete)
                    && (0.0..=1.0).contains(&p_stop)
                    && p_complete + p_stop <= 1.0,
                "--p-complete and --p-stop must be probabilities summing to at most 1"
            );
        }
        if let LoadMode::Open { rate } = self.mode {
            ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
        }
        for bind in &self.bind {
            ensure!(
                bind.is_ipv4() == self.target.is_ipv4(),
                "--bind {bind} is not of the target's address family ({})",
                self.target
            );
        }
        if let Some(d) = self.duration {
            ensure!(
                self.warmup < d,
                "--warmup ({:?}) must be shorter than --duration ({d:?})",
                self.warmup
            );
        }
        ensure!(
            self.timeout > Duration::ZERO,
            "--timeout-ms must be positive"
        );
        ensure!(
            self.reconnect_after < Duration::from_secs(120),
            "--reconnect-after must stay below the 2-minute connection id lifetime"
        );
        Ok(())
    }
}
