//! Prometheus metrics: what `/metrics` exports (the HTTP endpoint is [`crate::http`]).
//!
//! Cost on the hot path: none beyond what the workers already do. Workers count into plain
//! `u64`s they own ([`crate::counters`]) and copy them into a shared slot every 100 ms. Only
//! when Prometheus scrapes does this module sum those slots, read the store's counts and the
//! access list's state, set them on a `metrics` recorder (`metrics-exporter-prometheus`, kept
//! local to this endpoint rather than installed globally, so several servers can run in one
//! process) and render the text exposition format.
//!
//! The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, `process_start_time_seconds`, …) come from the `metrics-process` crate,
//! read from `/proc/self` at each scrape, so the usual Prometheus dashboards and alerts work
//! unchanged. Its CPU counter has whole-second resolution.
//!
//! The three histograms (datagrams per receive and send batch, peers per announce reply) are kept
//! by the workers as fixed buckets; the `metrics` facade can only record single observations, so
//! those are rendered here directly in the same exposition format.

use std::fmt::Write as _;

use metrics::{Label, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::counters::{Counters, Metric};
use crate::fjord_store::{CleanStats, StoreStats};
use crate::snapshot_file::SnapshotError;
use crate::state::SnapshotCounts;
use crate::stats::TorrentSample;

pub use crate::http::MetricsEndpoint;

/// Everything one scrape exports, gathered by the caller.
#[derive(Debug, Clone)]
pub struct MetricsInput {
    /// The workers' counters summed (as last published, at most ~100 ms old).
    pub counters: Counters,
    /// The store's counts.
    pub store: StoreStats,
    /// How the store's clean cycle keeps up.
    pub clean: CleanStats,
    /// `store.max_peers` and `store.max_swarms`.
    pub store_limits: (u64, u64),
    /// The access list (entries: 0 when the list is off).
    pub access_list: ListFileStatus,
    /// The torrent catalogue (entries: 0 without one).
    pub catalogue: ListFileStatus,
    /// The catalogued torrents as last sampled (the first `stats.max_torrent_series`).
    pub torrents: std::sync::Arc<Vec<TorrentSample>>,
    /// Worker threads serving UDP.
    pub workers: u64,
    /// Snapshots written and loaded (all zero without `state.dir`).
    pub snapshots: SnapshotCounts,
    /// The announce interval in force and the configured one, seconds.
    pub announce_interval: (u32, u32),
    /// Access-list reloads refused, by reason (`shrink`, `unstable`).
    pub access_list_refused: [(&'static str, u64); 2],
}

/// The state of a reloaded list file (access list, catalogue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFileStatus {
    /// Info hashes in the list in force.
    pub entries: u64,
    /// Successful loads since start (the initial load included).
    pub reloads_ok: u64,
    /// Failed reloads since start (the previous list stayed in force).
    pub reloads_failed: u64,
    /// Whether the most recent load succeeded (the file on disk is in force).
    pub last_reload_ok: bool,
}

/// Renders [`MetricsInput`] in the Prometheus text format through a `metrics` recorder.
pub struct Exposition {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition").finish_non_exhaustive()
    }
}

/// `HELP` text of every metric, by name.
const HELP: &[(&str, &str)] = &[
    (
        "fjord_requests_total",
        "Requests parsed, by action and IP version.",
    ),
    (
        "fjord_responses_total",
        "Replies sent, by action (error = error replies) and IP version.",
    ),
    (
        "fjord_dropped_total",
        "Datagrams answered with silence or replies not sent, by reason.",
    ),
    (
        "fjord_errors_sent_total",
        "Error replies sent to authenticated requests, by reason.",
    ),
    (
        "fjord_peers_rejected_total",
        "Announcing peers the store did not keep, by reason.",
    ),
    (
        "fjord_backoff_replies_total",
        "Back-off replies (announce replies with no peers and a long interval), by reason.",
    ),
    (
        "fjord_kernel_drops_total",
        "Datagrams the kernel dropped for a full socket receive buffer, by IP version.",
    ),
    (
        "fjord_announce_interval_seconds",
        "Announce interval sent to clients now (raised under sustained load).",
    ),
    (
        "fjord_announce_interval_base_seconds",
        "Announce interval configured (protocol.announce_interval_secs).",
    ),
    (
        "fjord_access_list_refused_total",
        "Access-list reloads refused although the file was readable, by reason.",
    ),
    (
        "fjord_unknown_peer_stops_total",
        "Stopped events from peers that were not stored (harmless).",
    ),
    (
        "fjord_completed_total",
        "Completed events counted by the swarms (downloads finished).",
    ),
    (
        "fjord_completed_events_total",
        "Announces with event completed (repeats included).",
    ),
    (
        "fjord_client_announces_total",
        "Announces answered, by client software (from the peer id).",
    ),
    (
        "fjord_client_started_total",
        "Announces with event started (downloads beginning), by client software.",
    ),
    ("fjord_rx_packets_total", "Datagrams received."),
    ("fjord_rx_bytes_total", "UDP payload bytes received."),
    ("fjord_tx_packets_total", "Datagrams sent."),
    ("fjord_tx_bytes_total", "UDP payload bytes sent."),
    (
        "fjord_rx_errors_total",
        "Receive errors other than would-block and interrupts.",
    ),
    (
        "fjord_torrents",
        "Swarms (torrents) in the store, by IP version.",
    ),
    (
        "fjord_peers",
        "Peers in the store, by IP version and role (seeder or leecher).",
    ),
    (
        "fjord_access_list_entries",
        "Info hashes in the access list in force.",
    ),
    (
        "fjord_access_list_reloads_total",
        "Access-list loads, by result (ok or error).",
    ),
    (
        "fjord_access_list_last_reload_successful",
        "1 if the most recent access-list load succeeded, 0 if the file on disk was refused.",
    ),
    (
        "fjord_store_max_peers",
        "Peers the store keeps at most (store.max_peers).",
    ),
    (
        "fjord_store_max_swarms",
        "Swarms the store keeps at most (store.max_swarms).",
    ),
    (
        "fjord_store_clean_cycle_seconds",
        "Length of the last complete expiry cycle (a visit of every swarm).",
    ),
    (
        "fjord_store_clean_cycle_limit_seconds",
        "Bound on an expiry cycle's length (store.clean_cycle_secs).",
    ),
    ("fjord_store_clean_cycles_total", "Expiry cycles completed."),
    (
        "fjord_catalogue_entries",
        "Torrents in the catalogue in force.",
    ),
    (
        "fjord_catalogue_reloads_total",
        "Catalogue loads, by result (ok or error).",
    ),
    (
        "fjord_catalogue_last_reload_successful",
        "1 if the most recent catalogue load succeeded, 0 if the file on disk was refused.",
    ),
    (
        "fjord_torrent_seeders",
        "Seeders of a catalogued torrent (IPv4 and IPv6 swarms).",
    ),
    (
        "fjord_torrent_leechers",
        "Leechers of a catalogued torrent (IPv4 and IPv6 swarms).",
    ),
    (
        "fjord_torrent_completed",
        "Downloads of a catalogued torrent completed since fjord started.",
    ),
    (
        "fjord_snapshot_writes_total",
        "Snapshots of the swarms written to state.dir, by result (ok or error).",
    ),
    (
        "fjord_snapshot_write_duration_seconds",
        "Time the last successful snapshot took to walk the store and write (fsyncs included).",
    ),
    ("fjord_snapshot_bytes", "Size of the last snapshot written."),
    (
        "fjord_snapshot_peers",
        "Peers in the last snapshot written.",
    ),
    (
        "fjord_snapshot_last_write_timestamp_seconds",
        "Unix time of the last successful snapshot (0 = none since start).",
    ),
    (
        "fjord_snapshot_restored_peers",
        "Peers restored from the snapshot at start.",
    ),
    (
        "fjord_snapshot_load_failures_total",
        "Snapshot files refused at start (set aside, not trusted), by reason.",
    ),
    ("fjord_workers", "UDP worker threads."),
    ("fjord_build_info", "Always 1; the version is a label."),
    (
        "fjord_recv_batch_datagrams",
        "Datagrams per receive call (recvmmsg batch size).",
    ),
    (
        "fjord_send_batch_datagrams",
        "Datagrams per send call (sendmmsg batch size).",
    ),
    (
        "fjord_announce_response_peers",
        "Peers handed out per announce reply.",
    ),
];

/// The process metrics `metrics-process` exports on Linux (documented there and in
/// docs/operations.md; the first four are what the dashboards and alerts use).
pub const PROCESS_METRICS: &[&str] = &[
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_threads",
];

fn help(name: &str) -> &'static str {
    HELP.iter()
        .find(|(n, _)| *n == name)
        .map_or("fjord metric.", |(_, h)| h)
}

fn owned_labels(labels: &[(&'static str, &'static str)]) -> Vec<Label> {
    labels.iter().map(|&(k, v)| Label::new(k, v)).collect()
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    /// A fresh recorder with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || {
            process.describe();
            for (name, text) in HELP {
                let unit = name.ends_with("_bytes_total").then_some(Unit::Bytes);
                if name.ends_with("_total") {
                    match unit {
                        Some(u) => metrics::describe_counter!(*name, u, *text),
                        None => metrics::describe_counter!(*name, *text),
                    }
                } else if !is_histogram(name) && !is_torrent_gauge(name) {
                    metrics::describe_gauge!(*name, *text);
                }
            }
        });
        Exposition {
            recorder,
            handle,
            process,
        }
    }

    /// Sets every value from `input` and renders the text exposition format.
    pub fn render(&self, input: &MetricsInput) -> String {
        let MetricsInput {
            counters,
            store,
            clean,
            store_limits,
            access_list,
            catalogue,
            torrents,
            workers,
            snapshots,
            announce_interval,
            access_list_refused,
        } = input;
        metrics::with_local_recorder(&self.recorder, || {
            self.process.collect();
            counters.visit(|m| {
                if let Metric::Counter(name, labels, value) = m {
                    metrics::counter!(name, owned_labels(labels)).absolute(value);
                }
            });
            metrics::counter!("fjord_completed_total")
                .absolute(store.v4.completed + store.v6.completed);
            for (v, fam) in [("4", &store.v4), ("6", &store.v6)] {
                metrics::gauge!("fjord_torrents", "ip_version" => v).set(fam.swarms as f64);
                metrics::gauge!("fjord_peers", "ip_version" => v, "role" => "seeder")
                    .set(fam.seeders as f64);
                metrics::gauge!("fjord_peers", "ip_version" => v, "role" => "leecher")
                    .set(fam.leechers as f64);
            }
            metrics::gauge!("fjord_store_max_peers").set(store_limits.0 as f64);
            metrics::gauge!("fjord_store_max_swarms").set(store_limits.1 as f64);
            if let Some(secs) = clean.last_cycle_secs {
                metrics::gauge!("fjord_store_clean_cycle_seconds").set(f64::from(secs));
            }
            metrics::gauge!("fjord_store_clean_cycle_limit_seconds")
                .set(f64::from(clean.cycle_limit_secs));
            metrics::counter!("fjord_store_clean_cycles_total").absolute(clean.cycles);
            for (prefix, file) in [
                ("fjord_access_list", access_list),
                ("fjord_catalogue", catalogue),
            ] {
                metrics::gauge!(format!("{prefix}_entries")).set(file.entries as f64);
                metrics::counter!(format!("{prefix}_reloads_total"), "result" => "ok")
                    .absolute(file.reloads_ok);
                metrics::counter!(format!("{prefix}_reloads_total"), "result" => "error")
                    .absolute(file.reloads_failed);
                metrics::gauge!(format!("{prefix}_last_reload_successful"))
                    .set(f64::from(u8::from(file.last_reload_ok)));
            }
            metrics::counter!("fjord_snapshot_writes_total", "result" => "ok")
                .absolute(snapshots.writes_ok);
            metrics::counter!("fjord_snapshot_writes_total", "result" => "error")
                .absolute(snapshots.writes_failed);
            metrics::gauge!("fjord_snapshot_write_duration_seconds")
                .set(snapshots.last_duration_secs);
            metrics::gauge!("fjord_snapshot_bytes").set(snapshots.last_bytes as f64);
            metrics::gauge!("fjord_snapshot_peers").set(snapshots.last_peers as f64);
            metrics::gauge!("fjord_snapshot_last_write_timestamp_seconds")
                .set(snapshots.last_unix as f64);
            metrics::gauge!("fjord_snapshot_restored_peers").set(snapshots.restored_peers as f64);
            for (reason, n) in SnapshotError::REASONS.iter().zip(snapshots.load_failures) {
                metrics::counter!("fjord_snapshot_load_failures_total", "reason" => *reason)
                    .absolute(n);
            }
            metrics::gauge!("fjord_workers").set(*workers as f64);
            metrics::gauge!("fjord_announce_interval_seconds").set(f64::from(announce_interval.0));
            metrics::gauge!("fjord_announce_interval_base_seconds")
                .set(f64::from(announce_interval.1));
            for (reason, n) in access_list_refused {
                metrics::counter!("fjord_access_list_refused_total", "reason" => *reason)
                    .absolute(*n);
            }
            metrics::gauge!("fjord_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        });
        let mut out = self.handle.render();
        counters.visit(|m| {
            if let Metric::Histogram(name, buckets, sum, count) = m {
                render_histogram(&mut out, name, buckets, sum, count);
            }
        });
        render_torrents(&mut out, torrents);
        out
    }
}

/// The per-torrent gauges: one series per catalogued torrent, labelled with its name. Written
/// here rather than through the recorder, so that a torrent leaving the catalogue leaves the
/// exposition at once (a recorder keeps every series it was ever given).
type TorrentValue = fn(&TorrentSample) -> u64;
const TORRENT_GAUGES: [(&str, TorrentValue); 3] = [
    ("fjord_torrent_seeders", |t| t.seeders),
    ("fjord_torrent_leechers", |t| t.leechers),
    ("fjord_torrent_completed", |t| t.completed),
];

fn is_torrent_gauge(name: &str) -> bool {
    TORRENT_GAUGES.iter().any(|(n, _)| *n == name)
}

/// A label value in the text format: `\\`, `\"` and newlines escaped.
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn render_torrents(out: &mut String, torrents: &[TorrentSample]) {
    if torrents.is_empty() {
        return;
    }
    for (name, value) in TORRENT_GAUGES {
        let _ = writeln!(out, "# HELP {name} {}", help(name));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for t in torrents {
            out.push_str(name);
            out.push_str("{torrent=\"");
            escape_label_value(&t.name, out);
            let _ = writeln!(out, "\"}} {}", value(t));
        }
        out.push('\n');
    }
}

fn is_histogram(name: &str) -> bool {
    matches!(
        name,
        "fjord_recv_batch_datagrams"
            | "fjord_send_batch_datagrams"
            | "fjord_announce_response_peers"
    )
}

/// Appends one histogram in the text format (`buckets` are cumulative `(le, count)` pairs,
/// the last one `u64::MAX` for `+Inf`).
fn render_histogram(out: &mut String, name: &str, buckets: &[(u64, u64)], sum: u64, count: u64) {
    let _ = writeln!(out, "# HELP {name} {}", help(name));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for &(le, c) in buckets {
        if le == u64::MAX {
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {c}");
        } else {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {c}");
        }
    }
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{Action, DropReason, IpFamily};
    use crate::fjord_store::FamilyStats;
    use std::io::{self, Write};

    fn input() -> MetricsInput {
        let mut counters = Counters::default();
        counters.requests[Action::Announce.to_wire() as usize][IpFamily::V6 as usize] = 7;
        counters.drops[DropReason::BadConnectionId as usize] = 3;
        counters.recv_batch.record(5);
        counters.announce_peers.record(50);
        MetricsInput {
            counters,
            store: StoreStats {
                v4: FamilyStats {
                    swarms: 2,
                    seeders: 3,
                    leechers: 4,
                    completed: 5,
                },
                v6: FamilyStats {
                    swarms: 1,
                    seeders: 0,
                    leechers: 1,
                    completed: 1,
                },
            },
            clean: CleanStats {
                last_cycle_secs: Some(240),
                cycles: 3,
                cycle_limit_secs: 300,
            },
            store_limits: (1_000, 100),
            access_list: ListFileStatus {
                entries: 9,
                reloads_ok: 2,
                reloads_failed: 1,
                last_reload_ok: false,
            },
            catalogue: ListFileStatus {
                entries: 2,
                reloads_ok: 1,
                reloads_failed: 0,
                last_reload_ok: true,
            },
            torrents: std::sync::Arc::new(vec![
                TorrentSample {
                    name: "Dagsrevyen".into(),
                    info_hash: [1; 20],
                    seeders: 12,
                    leechers: 3,
                    completed: 40,
                },
                TorrentSample {
                    name: "say \"hi\" \\ there".into(),
                    info_hash: [2; 20],
                    seeders: 0,
                    leechers: 1,
                    completed: 0,
                },
            ]),
            workers: 2,
            snapshots: SnapshotCounts {
                writes_ok: 4,
                writes_failed: 1,
                last_duration_secs: 0.5,
                last_bytes: 1234,
                last_peers: 77,
                last_unix: 1_800_000_000,
                restored_peers: 70,
                load_failures: [0, 0, 0, 0, 2, 0, 0],
            },
            announce_interval: (2400, 1800),
            access_list_refused: [("shrink", 4), ("unstable", 0)],
        }
    }

    #[test]
    fn exposition_carries_the_values_under_the_documented_names() {
        let text = Exposition::new().render(&input());
        for line in [
            "fjord_requests_total{action=\"announce\",ip_version=\"6\"} 7",
            "fjord_dropped_total{reason=\"bad_connection_id\"} 3",
            "fjord_torrents{ip_version=\"4\"} 2",
            "fjord_store_clean_cycle_seconds 240",
            "fjord_store_clean_cycle_limit_seconds 300",
            "fjord_store_clean_cycles_total 3",
            "fjord_store_max_peers 1000",
            "fjord_store_max_swarms 100",
            "fjord_peers{ip_version=\"4\",role=\"leecher\"} 4",
            "fjord_completed_total 6",
            "fjord_access_list_entries 9",
            "fjord_access_list_reloads_total{result=\"error\"} 1",
            "fjord_access_list_last_reload_successful 0",
            "fjord_recv_batch_datagrams_bucket{le=\"8\"} 1",
            "fjord_announce_response_peers_sum 50",
            "fjord_workers 2",
            "fjord_peers_rejected_total{reason=\"store_full\"} 0",
            "fjord_unknown_peer_stops_total 0",
            "fjord_catalogue_entries 2",
            "fjord_catalogue_reloads_total{result=\"ok\"} 1",
            "fjord_torrent_seeders{torrent=\"Dagsrevyen\"} 12",
            "fjord_torrent_completed{torrent=\"Dagsrevyen\"} 40",
            "fjord_torrent_leechers{torrent=\"say \\\"hi\\\" \\\\ there\"} 1",
            "fjord_client_announces_total{client=\"qbittorrent\"} 0",
            "fjord_client_started_total{client=\"other\"} 0",
            "fjord_snapshot_writes_total{result=\"ok\"} 4",
            "fjord_snapshot_writes_total{result=\"error\"} 1",
            "fjord_snapshot_write_duration_seconds 0.5",
            "fjord_snapshot_bytes 1234",
            "fjord_snapshot_peers 77",
            "fjord_snapshot_last_write_timestamp_seconds 1800000000",
            "fjord_snapshot_restored_peers 70",
            "fjord_snapshot_load_failures_total{reason=\"checksum\"} 2",
            "fjord_snapshot_load_failures_total{reason=\"truncated\"} 0",
            "fjord_announce_interval_seconds 2400",
            "fjord_announce_interval_base_seconds 1800",
            "fjord_access_list_refused_total{reason=\"shrink\"} 4",
            "fjord_dropped_total{reason=\"rate_limited\"} 0",
            "fjord_peers_rejected_total{reason=\"prefix_limit\"} 0",
            "fjord_backoff_replies_total{reason=\"access_denied\"} 0",
            "fjord_kernel_drops_total{ip_version=\"6\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.contains(&format!(
            "fjord_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        // Every documented metric appears, and nothing undocumented does.
        let documented = HELP
            .iter()
            .map(|(n, _)| *n)
            .chain(PROCESS_METRICS.iter().copied());
        for name in documented {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} not exported"
            );
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or("");
            assert!(
                HELP.iter().any(|(n, _)| *n == name) || PROCESS_METRICS.contains(&name),
                "{name} undocumented"
            );
        }
    }

    /// `promtool check metrics` (Debian package `prometheus`) lints the exposition: names,
    /// units, `_total` suffixes, HELP and TYPE lines. Missing promtool fails in CI.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::process::{Command, Stdio};
        let text = Exposition::new().render(&input());
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
                eprintln!("promtool not installed (Debian package prometheus): check skipped");
                return;
            }
            Err(e) => panic!("cannot run promtool (Debian package prometheus): {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics: {report}\n{text}"
        );
    }
}
