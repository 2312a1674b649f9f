//! Configuration: a TOML file (every key optional, unknown keys rejected), embedded defaults, and
//! validation that names the offending key.
//!
//! The commented template printed by `fjord --print-config` is [`DEFAULT_CONFIG_TOML`]; a test
//! checks that it parses to exactly [`Config::default()`] and names every key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The commented default configuration, printed by `fjord --print-config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config.default.toml");

/// Largest `num_want` for IPv4 that keeps an announce reply in one packet (20 + 200·6 = 1,220 B).
pub const MAX_NUM_WANT_V4: i32 = 200;
/// Largest `num_want` for IPv6 that keeps an announce reply in one packet (20 + 66·18 = 1,208 B).
pub const MAX_NUM_WANT_V6: i32 = 66;
pub use fjord_protocol::MAX_SCRAPE_HASHES;

/// A configuration error: the dotted key and why its value is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML did not parse or named an unknown key.
    #[error("configuration: {0}")]
    Parse(String),
    /// A key has a value fjord refuses.
    #[error("configuration: invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `protocol.max_num_want_v4`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The whole configuration. `Default` is the embedded default configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// How log lines are written to stderr.
    pub log_format: LogFormat,
    /// Worker threads; 0 = one per available core.
    pub workers: usize,
    /// Sockets.
    pub network: NetworkConfig,
    /// Protocol behaviour.
    pub protocol: ProtocolConfig,
    /// Connection ids.
    pub connection_id: ConnectionIdConfig,
    /// Peer store limits and expiry.
    pub store: StoreSection,
    /// Info-hash access list.
    pub access_list: AccessListConfig,
    /// Per-source request rate limiter.
    pub limits: LimitsConfig,
    /// Store admission per source prefix.
    pub admission: AdmissionConfig,
    /// Load-adaptive announce interval.
    pub adaptive_interval: AdaptiveIntervalConfig,
    /// Prometheus exporter (`/metrics`, `/stats`, `/` and `/health` over HTTP).
    pub metrics: MetricsConfig,
    /// Statistics for the operator: the torrent catalogue and the largest swarms.
    pub stats: StatsConfig,
    /// Privilege dropping after the sockets are bound.
    pub privileges: PrivilegesConfig,
    /// The state directory: swarm snapshots and the generated connection-id key.
    pub state: StateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".into(),
            log_format: LogFormat::Text,
            workers: 0,
            network: NetworkConfig::default(),
            protocol: ProtocolConfig::default(),
            connection_id: ConnectionIdConfig::default(),
            store: StoreSection::default(),
            access_list: AccessListConfig::default(),
            limits: LimitsConfig::default(),
            admission: AdmissionConfig::default(),
            adaptive_interval: AdaptiveIntervalConfig::default(),
            metrics: MetricsConfig::default(),
            stats: StatsConfig::default(),
            privileges: PrivilegesConfig::default(),
            state: StateConfig::default(),
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, message, fields. Under systemd's journal
    /// (`JOURNAL_STREAM` names stderr) the time is left to the journal and the level becomes a
    /// syslog priority prefix (`<3>` error … `<7>` debug).
    #[default]
    Text,
    /// One JSON object per line (time, level, target, fields), for log shippers.
    Json,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// UDP addresses to listen on; each worker binds its own `SO_REUSEPORT` socket to each.
    pub listen: Vec<SocketAddr>,
    /// Requested `SO_RCVBUF` in bytes (capped by `net.core.rmem_max`).
    pub socket_recv_buffer: usize,
    /// Requested `SO_SNDBUF` in bytes (capped by `net.core.wmem_max`).
    pub socket_send_buffer: usize,
    /// Datagrams per `recvmmsg`/`sendmmsg` call.
    pub batch_size: usize,
}

/// The default listen addresses: `0.0.0.0:6969` and `[::]:6969`.
pub fn default_listen() -> Vec<SocketAddr> {
    vec![
        "0.0.0.0:6969".parse().unwrap(),
        "[::]:6969".parse().unwrap(),
    ]
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: default_listen(),
            socket_recv_buffer: 8 << 20,
            socket_send_buffer: 8 << 20,
            batch_size: 32,
        }
    }
}

/// `[protocol]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Announce interval sent to clients, seconds.
    pub announce_interval_secs: u32,
    /// Peers returned when the client sends a negative `num_want`.
    pub default_num_want: i32,
    /// Cap on peers returned to an IPv4 client (≤ 200).
    pub max_num_want_v4: i32,
    /// Cap on peers returned to an IPv6 client (≤ 66).
    pub max_num_want_v6: i32,
    /// Scrape rows answered; further hashes are ignored (≤ 74).
    pub max_scrape_hashes: usize,
    /// Interval sent in back-off replies (an announce reply with no peers), seconds.
    pub backoff_interval_secs: u32,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            announce_interval_secs: 1800,
            default_num_want: 50,
            max_num_want_v4: MAX_NUM_WANT_V4,
            max_num_want_v6: MAX_NUM_WANT_V6,
            max_scrape_hashes: MAX_SCRAPE_HASHES,
            backoff_interval_secs: 7200,
        }
    }
}

/// `[connection_id]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionIdConfig {
    /// 32 hex characters (a 128-bit SipHash key) shared by a fleet; empty = random at start.
    pub key: String,
    /// A key (32 hex characters) whose ids are still accepted, never issued: for rolling a new
    /// `key` across a fleet (docs/operations.md, "Rotating the connection-id key").
    pub previous_key: String,
    /// Extra seconds a connection id is accepted after its 120 s lifetime.
    pub grace_secs: u32,
}

impl Default for ConnectionIdConfig {
    fn default() -> Self {
        ConnectionIdConfig {
            key: String::new(),
            previous_key: String::new(),
            grace_secs: 30,
        }
    }
}

/// `[state]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for the swarm snapshot and the generated connection-id key (created if
    /// missing); `None` = nothing is kept across restarts.
    pub dir: Option<PathBuf>,
    /// With a `dir`: a snapshot every this many seconds as well as on stop (0 = only on stop).
    pub snapshot_interval_secs: u64,
}

/// Longest `state.snapshot_interval_secs`: a day.
pub const MAX_SNAPSHOT_INTERVAL_SECS: u64 = 86_400;

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: None,
            snapshot_interval_secs: 300,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Peers stored at most (both families together); announces beyond it are answered but not stored.
    pub max_peers: usize,
    /// Swarms (info hashes) stored at most.
    pub max_swarms: usize,
    /// A peer not heard from for this long is removed, seconds.
    pub peer_timeout_secs: u32,
    /// How often the maintenance thread runs one cleaning slice, milliseconds.
    pub clean_interval_ms: u64,
    /// Swarms examined per cleaning slice at least (keeps expiry incremental).
    pub clean_swarms_per_slice: usize,
    /// Longest time a clean cycle (a visit of every swarm) may take, seconds: slices grow as
    /// needed to keep it (`StoreConfig::clean_cycle_secs`).
    pub clean_cycle_secs: u32,
}

/// The store's own defaults ([`StoreConfig::default`](crate::fjord_store::StoreConfig)): one
/// set of limits for embedders and the `fjord` binary alike.
impl Default for StoreSection {
    fn default() -> Self {
        let store = crate::fjord_store::StoreConfig::default();
        StoreSection {
            max_peers: store.max_peers,
            max_swarms: store.max_swarms,
            peer_timeout_secs: store.peer_timeout_secs,
            clean_interval_ms: 1000,
            clean_swarms_per_slice: 4096,
            clean_cycle_secs: store.clean_cycle_secs,
        }
    }
}

/// Bytes the store measured per IPv4 peer (14.85 with ~10 peers per swarm, glibc malloc;
/// docs/benchmarks.md, "Memory per peer").
pub const BYTES_PER_IPV4_PEER: u64 = 15;
/// Bytes the store measured per IPv6 peer (34.8, same conditions).
pub const BYTES_PER_IPV6_PEER: u64 = 35;

impl StoreSection {
    /// The memory `max_peers` allows, as (all peers IPv4, all peers IPv6), in bytes, from the
    /// measured bytes per peer: what a full store costs.
    pub fn memory_allowed(&self) -> (u64, u64) {
        let peers = self.max_peers as u64;
        (peers * BYTES_PER_IPV4_PEER, peers * BYTES_PER_IPV6_PEER)
    }

    /// [`StoreSection::memory_allowed`] in words: `"750 MB as IPv4 peers, 1.75 GB as IPv6 peers"`.
    pub fn memory_allowed_text(&self) -> String {
        let (v4, v6) = self.memory_allowed();
        format!(
            "{} as IPv4 peers, {} as IPv6 peers",
            approx_bytes(v4),
            approx_bytes(v6)
        )
    }
}

/// A byte count in decimal units, three significant digits at most: `750 MB`, `1.75 GB`.
pub fn approx_bytes(bytes: u64) -> String {
    let (value, unit) = match bytes {
        b if b >= 1_000_000_000 => (b as f64 / 1e9, "GB"),
        b if b >= 1_000_000 => (b as f64 / 1e6, "MB"),
        b if b >= 1_000 => (b as f64 / 1e3, "kB"),
        b => (b as f64, "bytes"),
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {unit}")
}

/// Access-list mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessListMode {
    /// Every info hash is served.
    #[default]
    Off,
    /// Only listed info hashes are served.
    Allow,
    /// Listed info hashes are refused.
    Deny,
}

/// What an announce for an info hash the access list refuses gets (`access_list.denied_reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeniedReply {
    /// A short error reply (`info hash not allowed`).
    #[default]
    Error,
    /// A valid announce reply with no peers and `protocol.backoff_interval_secs`: clients
    /// wait that long instead of retrying.
    Backoff,
}

/// `[access_list]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessListConfig {
    /// `off`, `allow` or `deny`.
    pub mode: AccessListMode,
    /// File of hex info hashes, one a line, `#` comments. Required unless `mode = "off"`.
    pub path: Option<PathBuf>,
    /// How often the file's modification time is checked, milliseconds (0 = only on SIGHUP).
    /// A changed file is loaded once it has looked the same at two polls in a row.
    pub poll_interval_ms: u64,
    /// A reloaded allow list with fewer than `(1 - max_shrink_fraction)` of the entries in
    /// force is refused (the previous list stays); 1.0 accepts any shrink, to zero included.
    pub max_shrink_fraction: f64,
    /// `error` or `backoff`: what an announce for a refused info hash gets.
    pub denied_reply: DeniedReply,
}

impl Default for AccessListConfig {
    fn default() -> Self {
        AccessListConfig {
            mode: AccessListMode::Off,
            path: None,
            poll_interval_ms: 1000,
            max_shrink_fraction: 0.2,
            denied_reply: DeniedReply::Error,
        }
    }
}

/// `[limits]`: the per-source request rate limiter ([`crate::limiter`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Meter requests per source prefix.
    pub enabled: bool,
    /// IPv4 source prefix length metered as one source (1-32).
    pub prefix_v4: u8,
    /// IPv6 source prefix length metered as one source (1-128).
    pub prefix_v6: u8,
    /// Datagrams per second one prefix may send, summed over all workers.
    pub requests_per_sec: u32,
    /// Datagrams one prefix may send at once after being idle (≥ `requests_per_sec`).
    pub burst: u32,
    /// Token buckets of each worker's sketch (a power of two, ≥ 64; 8 bytes each).
    pub buckets: usize,
    /// An announce over the limit with a valid connection id gets a back-off reply (no
    /// peers, `protocol.backoff_interval_secs`) instead of silence.
    pub backoff: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            prefix_v4: 32,
            prefix_v6: 64,
            requests_per_sec: 1000,
            burst: 10_000,
            buckets: 65_536,
            backoff: false,
        }
    }
}

/// `[admission]`: peers stored per source prefix ([`crate::admission`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Cap the peers each source prefix may have stored.
    pub enabled: bool,
    /// IPv4 prefix length counted as one source (1-32).
    pub prefix_v4: u8,
    /// IPv6 prefix length counted as one source (1-128).
    pub prefix_v6: u8,
    /// Share of `store.max_peers` one prefix may hold (0 < share ≤ 1).
    pub max_prefix_share: f64,
    /// Store fill (peers or swarms over their limit) from which `pressure_prefix_share`
    /// applies instead.
    pub pressure_fill: f64,
    /// Share of `store.max_peers` beyond which a prefix gets no new peers or swarms once the
    /// store is `pressure_fill` full.
    pub pressure_prefix_share: f64,
    /// Peers one prefix may add to one swarm larger than this.
    pub max_peers_per_swarm: u32,
    /// Counters of each worker's per-prefix sketch (a power of two, ≥ 1024; 8 bytes each).
    pub sketch_cells: usize,
    /// Counters of each worker's per-(prefix, swarm) sketch (a power of two, ≥ 1024).
    pub swarm_sketch_cells: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            enabled: true,
            prefix_v4: 24,
            prefix_v6: 48,
            max_prefix_share: 0.01,
            pressure_fill: 0.8,
            pressure_prefix_share: 0.001,
            max_peers_per_swarm: 64,
            sketch_cells: 1 << 17,
            swarm_sketch_cells: 1 << 20,
        }
    }
}

/// `[adaptive_interval]`: the announce interval rises under sustained load
/// ([`crate::adaptive_interval`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveIntervalConfig {
    /// Datagrams per second the server handles (measured, e.g. with fjord-bench); 0 = off.
    pub capacity_requests_per_sec: u64,
    /// Load, as a fraction of the capacity, above which the interval rises.
    pub load_fraction: f64,
    /// Largest interval sent, seconds.
    pub max_interval_secs: u32,
    /// Seconds added (or taken back) per step.
    pub step_secs: u32,
    /// Seconds of load averaged per decision; at most one step per window.
    pub window_secs: u32,
}

impl Default for AdaptiveIntervalConfig {
    fn default() -> Self {
        AdaptiveIntervalConfig {
            capacity_requests_per_sec: 0,
            load_fraction: 0.8,
            max_interval_secs: 3600,
            step_secs: 600,
            window_secs: 300,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics.
    pub enabled: bool,
    /// HTTP address of the exporter.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: "127.0.0.1:9969".parse().unwrap(),
        }
    }
}

/// `[stats]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Catalogue of named torrents: an info hash a line, then a display name (the access
    /// list's format; it may be the access-list file). Reloaded like the access list.
    pub catalogue: Option<PathBuf>,
    /// Catalogued torrents exported as `fjord_torrent_*` series (and listed in `/stats`), in
    /// file order; the rest are counted but not sampled.
    pub max_torrent_series: usize,
    /// Swarms in each ranking of the largest swarms (by peers, by completed) in `/stats`.
    pub top_swarms: usize,
}

/// Most `stats.max_torrent_series` accepted.
pub const MAX_TORRENT_SERIES: usize = 100_000;

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            catalogue: None,
            max_torrent_series: 1000,
            top_swarms: 10,
        }
    }
}

/// `[privileges]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PrivilegesConfig {
    /// User to switch to after binding (empty = stay).
    pub user: String,
    /// Group to switch to after binding (empty = the user's primary group, or stay).
    pub group: String,
}

/// A 128-bit key from 32 hex characters.
pub(crate) fn parse_key(s: &str) -> Result<[u8; 16], String> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return Err(format!("expected 32 hex characters, got {}", b.len()));
    }
    let mut key = [0u8; 16];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or("not hexadecimal")?;
        let lo = hex_val(pair[1]).ok_or("not hexadecimal")?;
        key[i] = hi << 4 | lo;
    }
    Ok(key)
}

/// One hex digit.
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Loading, validation and the effective settings (`impl Config`).
#[path = "config_load.rs"]
mod load;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
