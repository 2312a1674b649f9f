//! The command line.
//!
//! Options whose default depends on `--profile` are `Option`s here and resolved in
//! [`Cli::to_config`]; their help text names both defaults.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::{BenchConfig, LoadMode, Mix, PopulationConfig};
use crate::population::{EventModel, SwarmDistribution};

/// Load-test any BEP 15 (UDP) BitTorrent tracker.
///
/// Simulates N peers over M swarms, sends connect / announce / scrape requests from many
/// sockets (several loopback source addresses against a 127.x target, so SO_REUSEPORT
/// spreads the load), refreshes connection ids before they expire, validates every reply and
/// reports responses/s, loss and latency. Exit status: 0 on success, 1 on errors, 2 if any
/// reply was malformed, 3 if no valid reply arrived at all.
#[derive(Debug, Parser, Clone, PartialEq)]
#[command(name = "fjord-bench", version, about, long_about)]
pub struct Cli {
    /// Tracker address, HOST:PORT (IPv4 or IPv6, e.g. `127.0.0.1:6969` or `[::1]:6969`).
    pub target: String,

    /// Preset population and request mix. "fjord": Zipf swarms and a client-like mix (the
    /// defaults below). "aquatic": the defaults of aquatic_udp_load_test 0.9 (2,000,000 peers
    /// over 1,000,000 swarms with its exponential popularity curve, weights connect 50 /
    /// announce 50 / scrape 1, num_want 30, 1-10 hashes per scrape, 75% seeders, every
    /// announce "completed" or "started"), for like-for-like comparisons. Explicit options
    /// override the preset.
    #[arg(long, value_enum, default_value_t = Profile::Fjord)]
    pub profile: Profile,

    /// Run for this many seconds (sending stops, then outstanding replies are awaited).
    /// Default 10 unless --requests is given.
    #[arg(long, short = 'd', value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Stop after sending this many requests in total (connects included). With --duration
    /// too, whichever limit is reached first ends the run.
    #[arg(long, short = 'n', value_name = "COUNT")]
    pub requests: Option<u64>,

    /// Load-generating threads.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,

    /// UDP sockets per thread; each has its own source port and connection id.
    #[arg(long, default_value_t = 4)]
    pub sockets_per_thread: usize,

    /// Distinct loopback source addresses (127.0.0.1 to 127.0.0.N) when the target is on
    /// 127.0.0.0/8; ignored otherwise (IPv6 loopback has only ::1, remote targets use the
    /// unspecified address). Use 1 where only 127.0.0.1 is configured (e.g. macOS).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,

    /// Bind every socket to this source address instead of choosing automatically.
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// Pacing. "closed": send whenever a reply frees an in-flight slot (measures capacity).
    /// "open": send at --rate regardless of replies (measures latency below saturation).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,

    /// Open loop: requests per second over all threads (required with --mode open).
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,

    /// Most requests outstanding per socket. In open loop, requests due while every slot is
    /// taken are skipped and reported.
    #[arg(long, default_value_t = 128)]
    pub in_flight: usize,

    /// A request unanswered after this many milliseconds counts as a timeout (lost).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub timeout_ms: u64,

    /// Fetch a new connection id on a socket when its id is this many seconds old
    /// (clients may use an id for 60 s; trackers accept it for 120 s). Must stay below 120.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub reconnect_after: f64,

    /// Simulated peers [default: 100000; aquatic profile: 2000000].
    #[arg(long)]
    pub peers: Option<u32>,

    /// Swarms (info hashes) [default: 10000; aquatic profile: 1000000].
    #[arg(long)]
    pub swarms: Option<u32>,

    /// Swarm popularity: "zipf" (rank k has weight 1/k^s, see --zipf-exponent), "aquatic"
    /// (aquatic_udp_load_test's curve M/N + exp(6.5 - 500 i/M)), "uniform"
    /// [default: zipf; aquatic profile: aquatic].
    #[arg(long, value_enum)]
    pub distribution: Option<DistributionArg>,

    /// Zipf exponent s for --distribution zipf (0 = uniform; ~1 is typical of public
    /// trackers).
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub zipf_exponent: f64,

    /// Fraction of peers that seed (announce left = 0) [default: 0.5; aquatic profile: 0.75].
    #[arg(long)]
    pub seeder_ratio: Option<f64>,

    /// Relative weight of connect requests (besides the connects that refresh ids)
    /// [default: 1; aquatic profile: 50].
    #[arg(long)]
    pub weight_connect: Option<u32>,

    /// Relative weight of announce requests [default: 20; aquatic profile: 50].
    #[arg(long)]
    pub weight_announce: Option<u32>,

    /// Relative weight of scrape requests [default: 2; aquatic profile: 1].
    #[arg(long)]
    pub weight_scrape: Option<u32>,

    /// num_want of announces (-1 = tracker default) [default: 50; aquatic profile: 30].
    #[arg(long, allow_negative_numbers = true)]
    pub num_want: Option<i32>,

    /// Fewest info hashes per scrape [default: 1].
    #[arg(long)]
    pub scrape_min: Option<u8>,

    /// Most info hashes per scrape, up to 74 [default: 4; aquatic profile: 10].
    #[arg(long)]
    pub scrape_max: Option<u8>,

    /// Announce events. "lifecycle": a peer's first announce is "started", later ones
    /// regular, a leecher sends "completed" with --p-complete and a peer "stopped" (with
    /// num_want 0) with --p-stop, then rejoins with "started" (as a seeder with the probability
    /// that keeps the seeder fraction at --seeder-ratio). "aquatic": every announce is
    /// "completed" (left 0) with the seeder ratio, else "started" (left 50)
    /// [default: lifecycle; aquatic profile: aquatic].
    #[arg(long, value_enum)]
    pub events: Option<EventsArg>,

    /// Lifecycle events: chance per regular announce that a leecher completes.
    #[arg(long, default_value_t = 0.01)]
    pub p_complete: f64,

    /// Lifecycle events: chance per regular announce that a peer stops.
    #[arg(long, default_value_t = 0.01)]
    pub p_stop: f64,

    /// Seed of all random choices (swarms, info hashes, peer ids, request order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Datagrams per sendmmsg/recvmmsg call (1-64).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,

    /// Use one send/recv syscall per datagram instead of sendmmsg/recvmmsg.
    #[arg(long)]
    pub no_mmsg: bool,

    /// SO_RCVBUF per socket in bytes (0 = OS default; capped by net.core.rmem_max).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub recv_buffer: usize,

    /// Busy-poll instead of sleeping while waiting for replies: each thread then uses a
    /// whole core, which gets more throughput on a machine shared with other work (as
    /// aquatic_udp_load_test does) at the price of CPU efficiency.
    #[arg(long)]
    pub spin: bool,

    /// Also report this process's CPU seconds during the run and peak RSS (from /proc),
    /// responses per server CPU second and bytes per peer (peak RSS / peers announced).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// fjord-bench's own defaults.
    Fjord,
    /// aquatic_udp_load_test 0.9's defaults.
    Aquatic,
}

/// Pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// As fast as the tracker answers, bounded in-flight per socket.
    Closed,
    /// A fixed rate.
    Open,
}

/// Swarm popularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    /// Zipf with --zipf-exponent.
    Zipf,
    /// aquatic_udp_load_test's curve.
    Aquatic,
    /// Uniform.
    Uniform,
}

/// Announce events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventsArg {
    /// started / regular / completed / stopped per peer.
    Lifecycle,
    /// completed or started per announce.
    Aquatic,
}

impl Cli {
    /// Resolves the target and the profile defaults into a configuration.
    pub fn to_config(&self) -> anyhow::Result<BenchConfig> {
        let target: SocketAddr = match self.target.parse() {
            Ok(a) => a,
            Err(_) => self
                .target
                .to_socket_addrs()
                .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", self.target))?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{} resolves to no address", self.target))?,
        };
        let aq = self.profile == Profile::Aquatic;
        let pick = |v: Option<u32>, fjord: u32, aquatic: u32| {
            v.unwrap_or(if aq { aquatic } else { fjord })
        };
        let mode = match (self.mode, self.rate) {
            (Mode::Closed, None) => LoadMode::Closed,
            (Mode::Closed, Some(_)) => anyhow::bail!("--rate needs --mode open"),
            (Mode::Open, Some(rate)) => LoadMode::Open { rate },
            (Mode::Open, None) => anyhow::bail!("--mode open needs --rate"),
        };
        let duration = match (self.duration, self.requests) {
            (Some(d), _) => {
                anyhow::ensure!(d > 0.0 && d.is_finite(), "--duration must be positive");
                Some(Duration::from_secs_f64(d))
            }
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        };
        anyhow::ensure!(
            self.reconnect_after > 0.0 && self.reconnect_after.is_finite(),
            "--reconnect-after must be positive"
        );
        let distribution = match self.distribution.unwrap_or(if aq {
            DistributionArg::Aquatic
        } else {
            DistributionArg::Zipf
        }) {
            DistributionArg::Zipf => SwarmDistribution::Zipf(self.zipf_exponent),
            DistributionArg::Aquatic => SwarmDistribution::Aquatic,
            DistributionArg::Uniform => SwarmDistribution::Uniform,
        };
        let events = match self.events.unwrap_or(if aq {
            EventsArg::Aquatic
        } else {
            EventsArg::Lifecycle
        }) {
            EventsArg::Lifecycle => EventModel::Lifecycle {
                p_complete: self.p_complete,
                p_stop: self.p_stop,
            },
            EventsArg::Aquatic => EventModel::Aquatic,
        };
        let cfg = BenchConfig {
            target,
            threads: self.threads,
            sockets_per_thread: self.sockets_per_thread,
            sources: self.sources,
            bind: self.bind,
            mode,
            in_flight: self.in_flight,
            duration,
            requests: self.requests,
            timeout: Duration::from_millis(self.timeout_ms),
            reconnect_after: Duration::from_secs_f64(self.reconnect_after),
            mix: Mix {
                connect: pick(self.weight_connect, 1, 50),
                announce: pick(self.weight_announce, 20, 50),
                scrape: pick(self.weight_scrape, 2, 1),
            },
            population: PopulationConfig {
                peers: pick(self.peers, 100_000, 2_000_000),
                swarms: pick(self.swarms, 10_000, 1_000_000),
                distribution,
                seeder_ratio: self.seeder_ratio.unwrap_or(if aq { 0.75 } else { 0.5 }),
                events,
                num_want: self.num_want.unwrap_or(if aq { 30 } else { 50 }),
                scrape_min: self.scrape_min.unwrap_or(1),
                scrape_max: self.scrape_max.unwrap_or(if aq { 10 } else { 4 }),
                seed: self.seed,
            },
            batch: self.batch,
            use_mmsg: !self.no_mmsg,
            recv_buffer: self.recv_buffer,
            spin: self.spin,
            server_pid: self.server_pid,
            progress: !self.quiet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fjord-bench").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_has_help() {
        for arg in Cli::command().get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }

    #[test]
    fn defaults_resolve() {
        let c = parse(&["127.0.0.1:6969"]).unwrap().to_config().unwrap();
        assert_eq!(c.target, "127.0.0.1:6969".parse().unwrap());
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert_eq!(c.mode, LoadMode::Closed);
        assert_eq!(c.population.distribution, SwarmDistribution::Zipf(1.0));
        assert_eq!(
            c.mix,
            Mix {
                connect: 1,
                announce: 20,
                scrape: 2
            }
        );
        assert_eq!(c.population.peers, 100_000);
        assert!(c.use_mmsg && c.progress);
    }

    #[test]
    fn aquatic_profile_and_overrides() {
        let c = parse(&[
            "[::1]:3000",
            "--profile",
            "aquatic",
            "--num-want",
            "-1",
            "--peers",
            "10",
        ])
        .unwrap()
        .to_config()
        .unwrap();
        assert!(c.target.is_ipv6());
        assert_eq!(c.population.distribution, SwarmDistribution::Aquatic);
        assert_eq!(c.population.events, EventModel::Aquatic);
        assert_eq!(
            c.mix,
            Mix {
                connect: 50,
                announce: 50,
                scrape: 1
            }
        );
        assert_eq!(c.population.swarms, 1_000_000);
        assert_eq!(c.population.peers, 10, "explicit option beats the preset");
        assert_eq!(c.population.num_want, -1);
        assert_eq!(c.population.seeder_ratio, 0.75);
        assert_eq!(c.population.scrape_max, 10);
    }

    #[test]
    fn limits_and_modes() {
        let c = parse(&["127.0.0.1:1", "-n", "2000"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!((c.requests, c.duration), (Some(2000), None));
        let c = parse(&[
            "127.0.0.1:1",
            "--mode",
            "open",
            "--rate",
            "5000",
            "-d",
            "2.5",
            "-q",
            "--json",
        ])
        .unwrap();
        assert!(c.json && c.quiet);
        let c = c.to_config().unwrap();
        assert_eq!(c.mode, LoadMode::Open { rate: 5000.0 });
        assert_eq!(c.duration, Some(Duration::from_millis(2500)));
        assert!(!c.progress);
        assert!(
            parse(&["127.0.0.1:1", "--mode", "open"])
                .unwrap()
                .to_config()
                .is_err()
        );
        assert!(
            parse(&["127.0.0.1:1", "--rate", "5"])
                .unwrap()
                .to_config()
                .is_err()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&[]).is_err(), "target is required");
        assert!(parse(&["127.0.0.1:1", "--sources", "0"]).is_err());
        assert!(parse(&["127.0.0.1:1", "--mode", "sideways"]).is_err());
        let bad = |args: &[&str]| parse(args).unwrap().to_config().is_err();
        assert!(bad(&["127.0.0.1:1", "--seeder-ratio", "1.5"]));
        assert!(bad(&["127.0.0.1:1", "--scrape-max", "75"]));
        assert!(bad(&[
            "127.0.0.1:1",
            "--scrape-min",
            "5",
            "--scrape-max",
            "4"
        ]));
        assert!(bad(&["127.0.0.1:1", "--reconnect-after", "120"]));
        assert!(bad(&[
            "127.0.0.1:1",
            "--weight-connect",
            "0",
            "--weight-announce",
            "0",
            "--weight-scrape",
            "0"
        ]));
        assert!(bad(&["127.0.0.1:1", "--bind", "::1"]));
        assert!(bad(&["127.0.0.1:1", "--batch", "65"]));
        assert!(bad(&["127.0.0.1:1", "-d", "0"]));
    }
}
