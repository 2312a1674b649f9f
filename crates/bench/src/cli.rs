//! The command line.
//!
//! Options whose default depends on `--profile` are `Option`s here and resolved in
//! [`Cli::to_config`]; their help text names both defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::capacity::SearchSettings;
use crate::config::{BenchConfig, LoadMode, Mix, PopulationConfig};
use crate::population::{EventModel, SwarmDistribution};
use crate::target::{AddrFamily, Target};
use crate::thresholds::{Thresholds, parse_fraction, parse_latency_us};

/// Load-test any BEP 15 (UDP) BitTorrent tracker, or find its capacity.
///
/// Simulates N peers over M swarms, sends connect / announce / scrape requests from many
/// sockets (several loopback source addresses against a 127.x target, so SO_REUSEPORT
/// spreads the load), refreshes connection ids before they expire, validates every reply and
/// reports responses/s, loss and latency, with a per-second series. `--mode capacity`
/// searches for the highest rate the tracker answers within --max-loss and --max-p99.
///
/// Exit status: 0 on success, 1 on errors, 2 if any reply was malformed, 3 if no valid
/// reply arrived (or nothing answered the first connects), 4 if a limit (--max-loss,
/// --max-p99, --max-p999, --min-rate) was broken or no rate passed a capacity search. The
/// reason is the last line on stderr.
#[derive(Debug, Parser, Clone, PartialEq)]
#[command(name = "fjord-bench", version = crate::report::VERSION, about, long_about)]
pub struct Cli {
    /// The tracker: `udp://HOST:PORT[/PATH]` as torrent files list it (the path and query are
    /// sent in every announce as BEP 41 URL data), or HOST:PORT. HOST is a name, an IPv4
    /// address or an IPv6 address in brackets (`udp://[2001:db8::1]:6969/announce`).
    pub target: String,

    /// Use the target name's IPv4 address.
    #[arg(short = '4', long, conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use the target name's IPv6 address.
    #[arg(short = '6', long)]
    pub ipv6: bool,

    /// Preset population and request mix. "fjord": Zipf swarms and a client-like mix (the
    /// defaults below). "aquatic": the defaults of aquatic_udp_load_test 0.9 (2,000,000 peers
    /// over 1,000,000 swarms with its exponential popularity curve, weights connect 50 /
    /// announce 50 / scrape 1, num_want 30, 1-10 hashes per scrape, 75% seeders, every
    /// announce "completed" or "started"), for like-for-like comparisons. Explicit options
    /// override the preset.
    #[arg(long, value_enum, default_value_t = Profile::Fjord)]
    pub profile: Profile,

    /// Run for this many seconds (sending stops, then outstanding replies are awaited);
    /// in capacity mode, the length of each step. Default 10 (capacity mode: 5) unless
    /// --requests is given.
    #[arg(long, short = 'd', value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Leave the requests sent in the first SECONDS out of the summary and the limits (they
    /// stay in the per-second series): caches, connection ids and socket buffers settle
    /// first. Default: 2 s, at most a fifth of --duration (capacity mode: 1 s per step, at
    /// most a fifth); 0 with --requests alone.
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,

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

    /// Bind the sockets to these source addresses instead of choosing automatically (socket
    /// i uses address i mod N; repeat the option or separate by commas). Against a remote
    /// tracker, several addresses spread the load over its receive queues and SO_REUSEPORT
    /// sockets.
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    pub bind: Vec<IpAddr>,

    /// Pacing. "closed": send whenever a reply frees an in-flight slot (the most it answers
    /// with --in-flight outstanding). "open": send at --rate regardless of replies (latency
    /// at a given load). "capacity": open-loop steps from --start-rate up (bisecting at the
    /// end) to the highest rate answered within --max-loss and --max-p99: the capacity.
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

    /// Print the final report as JSON on stdout instead of a table (with the version,
    /// command line, settings, seed and per-second series, so it is reproducible).
    #[arg(long)]
    pub json: bool,

    /// Write the per-second series as CSV to FILE (capacity mode: every step's seconds,
    /// with the step and its rate in the first columns).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Capacity mode: write the capacity curve (one row per step) as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub curve_csv: Option<PathBuf>,

    /// Draw the run to FILE.svg or FILE.png: throughput and latency percentiles over time;
    /// in capacity mode the capacity curve, latency against rate and the search over time.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Fail (exit 4) if more than this fraction of requests got no reply in time: `1%` or
    /// `0.01`. Capacity mode: a step's limit [default there: 1%].
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub max_loss: Option<f64>,

    /// Fail (exit 4) if the 99th-percentile latency exceeds this: `500us`, `5ms`, `1s` (a
    /// bare number is ms). Capacity mode: a step's limit [default there: 10ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_latency_us)]
    pub max_p99: Option<u64>,

    /// Fail (exit 4) if the 99.9th-percentile latency exceeds this (as --max-p99).
    #[arg(long, value_name = "DURATION", value_parser = parse_latency_us)]
    pub max_p999: Option<u64>,

    /// Fail (exit 4) if fewer valid replies per second arrived (capacity mode: if the
    /// capacity found is lower).
    #[arg(long, value_name = "PER_SECOND")]
    pub min_rate: Option<f64>,

    /// Capacity mode: rate of the first step, requests/s.
    #[arg(long, default_value_t = 10_000.0, value_name = "PER_SECOND")]
    pub start_rate: f64,

    /// Capacity mode: factor between steps until a failing rate is found (then bisection).
    #[arg(long, default_value_t = 2.0)]
    pub ramp_factor: f64,

    /// Capacity mode: stop when the lowest failing rate is within this fraction above the
    /// highest passing one.
    #[arg(long, default_value_t = 0.05, value_parser = parse_fraction)]
    pub resolution: f64,

    /// Capacity mode: most steps.
    #[arg(long, default_value_t = 16)]
    pub max_steps: usize,

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
    /// Open-loop steps searching for the capacity.
    Capacity,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// One run.
    Run(BenchConfig),
    /// A capacity search: `base` with a new rate per step.
    Capacity {
        /// The settings every step shares.
        base: BenchConfig,
        /// How the search proceeds.
        search: SearchSettings,
    },
}

/// Where results go besides stdout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    /// JSON instead of a table on stdout.
    pub json: bool,
    /// Per-second series CSV.
    pub csv: Option<PathBuf>,
    /// Capacity curve CSV.
    pub curve_csv: Option<PathBuf>,
    /// Picture.
    pub plot: Option<PathBuf>,
}

/// A resolved command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// What to run.
    pub plan: Plan,
    /// Limits for the exit status (a single run's; in capacity mode `min_rate` applies to
    /// the capacity, the others define each step's pass).
    pub thresholds: Thresholds,
    /// Outputs.
    pub outputs: Outputs,
}

/// The default limits of a capacity step.
pub const CAPACITY_DEFAULT_LIMITS: Thresholds = Thresholds {
    max_loss: Some(0.01),
    max_p99_us: Some(10_000),
    max_p999_us: None,
    min_rate: None,
};

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
    /// Resolves everything: the plan, the limits and the outputs.
    pub fn to_invocation(&self) -> anyhow::Result<Invocation> {
        let given = Thresholds {
            max_loss: self.max_loss,
            max_p99_us: self.max_p99,
            max_p999_us: self.max_p999,
            min_rate: self.min_rate,
        };
        if let Some(plot) = &self.plot {
            crate::plot::Format::of(plot)?;
        }
        let capacity = self.mode == Mode::Capacity;
        anyhow::ensure!(
            capacity || self.curve_csv.is_none(),
            "--curve-csv needs --mode capacity"
        );
        let (plan, thresholds) = if capacity {
            anyhow::ensure!(
                self.requests.is_none(),
                "--requests does not go with --mode capacity (each step lasts --duration)"
            );
            anyhow::ensure!(
                self.rate.is_none(),
                "--rate does not go with --mode capacity (see --start-rate)"
            );
            let base = self.to_config()?;
            let limits = given.or(CAPACITY_DEFAULT_LIMITS);
            let search = SearchSettings {
                start_rate: self.start_rate,
                ramp_factor: self.ramp_factor,
                resolution: self.resolution,
                max_steps: self.max_steps,
                lowest_rate: self.start_rate.min(100.0),
                limits,
                step_seconds: base.duration.map_or(0.0, |d| d.as_secs_f64()),
                step_warmup_seconds: base.warmup.as_secs_f64(),
            };
            search.validate()?;
            (Plan::Capacity { base, search }, limits)
        } else {
            (Plan::Run(self.to_config()?), given)
        };
        Ok(Invocation {
            plan,
            thresholds,
            outputs: Outputs {
                json: self.json,
                csv: self.csv.clone(),
                curve_csv: self.curve_csv.clone(),
                plot: self.plot.clone(),
            },
        })
    }

    /// Resolves the target and the profile defaults into the configuration of one run (in
    /// capacity mode: of each step, in closed loop until the search sets a rate).
    pub fn to_config(&self) -> anyhow::Result<BenchConfig> {
        let parsed = Target::parse(&self.target)?;
        let family = match (self.ipv4, self.ipv6, self.bind.first()) {
            (true, _, _) => Some(AddrFamily::V4),
            (_, true, _) => Some(AddrFamily::V6),
            (_, _, Some(ip)) => Some(AddrFamily::of(*ip)),
            _ => None,
        };
        let target = parsed.resolve(family)?;
        let capacity = self.mode == Mode::Capacity;
        let aq = self.profile == Profile::Aquatic;
        let pick = |v: Option<u32>, fjord: u32, aquatic: u32| {
            v.unwrap_or(if aq { aquatic } else { fjord })
        };
        let mode = match (self.mode, self.rate) {
            (Mode::Closed | Mode::Capacity, None) => LoadMode::Closed,
            (Mode::Closed, Some(_)) => anyhow::bail!("--rate needs --mode open"),
            (Mode::Capacity, Some(_)) => anyhow::bail!("--rate does not go with --mode capacity"),
            (Mode::Open, Some(rate)) => LoadMode::Open { rate },
            (Mode::Open, None) => anyhow::bail!("--mode open needs --rate"),
        };
        let duration = match (self.duration, self.requests) {
            (Some(d), _) => {
                anyhow::ensure!(d > 0.0 && d.is_finite(), "--duration must be positive");
                Some(Duration::from_secs_f64(d))
            }
            (None, Some(_)) => None,
            (None, None) if capacity => Some(Duration::from_secs(5)),
            (None, None) => Some(Duration::from_secs(10)),
        };
        let warmup = match (self.warmup, duration) {
            (Some(w), _) => {
                anyhow::ensure!(w >= 0.0 && w.is_finite(), "--warmup must be 0 or more");
                Duration::from_secs_f64(w)
            }
            (None, Some(d)) => {
                let default = Duration::from_secs(if capacity { 1 } else { 2 });
                default.min(d / 5)
            }
            (None, None) => Duration::ZERO,
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
            target_url: parsed.url(),
            announce_options: parsed.announce_options(),
            path: parsed.path,
            threads: self.threads,
            sockets_per_thread: self.sockets_per_thread,
            sources: self.sources,
            bind: self.bind.clone(),
            mode,
            in_flight: self.in_flight,
            duration,
            requests: self.requests,
            warmup,
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
#[path = "cli_tests.rs"]
mod tests;
