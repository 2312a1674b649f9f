//! fjord-bench against an in-process fjord: short runs must see only valid replies, and
//! fjord-bench's counts by type must equal what the server counted.

use std::net::SocketAddr;
use std::time::Duration;

use fjord_bench::config::{BenchConfig, LoadMode};
use fjord_bench::report::Report;
use fjord_server::counters::{Action, CountersSnapshot, IpFamily};

fn start(listen: &str) -> fjord_server::RunningServer {
    let addr: SocketAddr = listen.parse().unwrap();
    let mut config = fjord_server::Config::for_tests(vec![addr]);
    // fjord-bench sends as fast as fjord answers from a few loopback addresses: the per-source
    // rate limiter meters it, as it would any single source, so it is off for comparing counts.
    config.limits.enabled = false;
    fjord_server::start(config).expect("server starts")
}

fn config(target: SocketAddr) -> BenchConfig {
    let mut cfg = BenchConfig::quick(target);
    // Generous: the machine running the tests may be busy; a timeout would make the
    // comparison with the server's counts meaningless.
    cfg.timeout = Duration::from_secs(5);
    cfg
}

/// Every reply valid, nothing lost, and the bench's counts equal the server's.
fn assert_matches_server(report: &Report, server: &CountersSnapshot, ip: IpFamily) {
    assert_eq!(
        report.malformed_total, 0,
        "malformed replies: {:?}",
        report.malformed
    );
    assert_eq!(report.unexpected_replies, 0);
    assert_eq!(report.socket_errors, 0);
    let timeouts = report.timeouts.connect + report.timeouts.announce + report.timeouts.scrape;
    assert_eq!(timeouts, 0, "timeouts on loopback");
    assert!(report.responses.connect > 0, "{report:#?}");
    assert!(report.responses.announce > 0, "{report:#?}");
    assert!(report.responses.scrape > 0, "{report:#?}");

    let other = match ip {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    };
    let pairs = [
        (
            Action::Connect,
            report.sent.connect,
            report.responses.connect,
        ),
        (
            Action::Announce,
            report.sent.announce,
            report.responses.announce,
        ),
        (Action::Scrape, report.sent.scrape, report.responses.scrape),
    ];
    // The probe's connects come before the run and are not in its counts.
    let probe = u64::from(report.probe.expect("run() probes first").connects);
    for (action, sent, responses) in pairs {
        let extra = if action == Action::Connect { probe } else { 0 };
        assert_eq!(
            server.requests(action, ip),
            sent + extra,
            "{action:?} requests"
        );
        assert_eq!(
            server.responses(action, ip),
            responses + extra,
            "{action:?} responses"
        );
        assert_eq!(server.requests(action, other), 0);
    }
    let errors =
        report.error_replies.connect + report.error_replies.announce + report.error_replies.scrape;
    assert_eq!(server.responses(Action::Error, ip), errors, "error replies");
    assert_eq!(
        report.sent_total,
        report.responses_total + errors,
        "every request answered exactly once"
    );
}

#[test]
fn ipv4_request_limited_run_matches_server_counts() {
    let server = start("127.0.0.1:0");
    let mut cfg = config(server.local_addrs()[0]);
    cfg.requests = Some(2_000);
    cfg.duration = Some(Duration::from_secs(30)); // safety net only
    let report = fjord_bench::run(&cfg).unwrap();
    let counts = server.shutdown().unwrap();
    assert_eq!(report.sent_total, 2_000);
    assert_matches_server(&report, &counts, IpFamily::V4);
    assert!(
        report.peers_per_announce > 0.0,
        "peers returned: {report:#?}"
    );
    assert!(report.latency.count == report.responses_total);
    assert!(report.latency.p50_us <= report.latency.p99_us);
    assert!(report.latency.p99_us <= report.latency.max_us);
}

#[test]
fn two_threads_share_the_request_limit() {
    let server = start("127.0.0.1:0");
    let mut cfg = config(server.local_addrs()[0]);
    cfg.threads = 2;
    cfg.sockets_per_thread = 3;
    cfg.requests = Some(2_001);
    cfg.duration = Some(Duration::from_secs(30));
    let report = fjord_bench::run(&cfg).unwrap();
    let counts = server.shutdown().unwrap();
    assert_eq!(report.sent_total, 2_001);
    assert_eq!(report.sockets, 6);
    assert_matches_server(&report, &counts, IpFamily::V4);
}

#[test]
fn ipv6_request_limited_run_matches_server_counts() {
    let server = start("[::1]:0");
    let mut cfg = config(server.local_addrs()[0]);
    cfg.requests = Some(2_000);
    cfg.duration = Some(Duration::from_secs(30));
    let report = fjord_bench::run(&cfg).unwrap();
    let counts = server.shutdown().unwrap();
    assert_eq!(report.sent_total, 2_000);
    assert_matches_server(&report, &counts, IpFamily::V6);
}

#[test]
fn timed_run_refreshes_connection_ids_and_matches_server() {
    let server = start("127.0.0.1:0");
    let mut cfg = config(server.local_addrs()[0]);
    cfg.duration = Some(Duration::from_millis(1_000));
    cfg.reconnect_after = Duration::from_millis(200);
    // No connects in the mix: every connection id comes from the refresh logic.
    cfg.mix.connect = 0;
    cfg.batch = 8;
    let report = fjord_bench::run(&cfg).unwrap();
    let counts = server.shutdown().unwrap();
    assert_matches_server_without_mix_connects(&report, &counts);
    // 4 sockets, one id at start and a new one about every 200 ms.
    assert!(
        report.connection_ids >= 4 * 4,
        "ids obtained: {}",
        report.connection_ids
    );
    assert!(report.elapsed_seconds >= 0.9 && report.elapsed_seconds < 3.0);
}

fn assert_matches_server_without_mix_connects(report: &Report, counts: &CountersSnapshot) {
    assert_matches_server(report, counts, IpFamily::V4);
    assert_eq!(report.responses.connect, report.connection_ids);
}

#[test]
fn open_loop_holds_its_rate_and_matches_server() {
    let server = start("127.0.0.1:0");
    let mut cfg = config(server.local_addrs()[0]);
    // A rate well below what a debug-build server on a busy machine answers, so that no
    // request is skipped for want of a free in-flight slot.
    cfg.mode = LoadMode::Open { rate: 500.0 };
    cfg.in_flight = 64;
    cfg.duration = Some(Duration::from_millis(1_000));
    let report = fjord_bench::run(&cfg).unwrap();
    let counts = server.shutdown().unwrap();
    assert_matches_server(&report, &counts, IpFamily::V4);
    // 500/s for 1 s (initial connects included); scheduling on a loaded machine may lag.
    assert!(
        (400..=520).contains(&report.sent_total),
        "sent {} at a 500/s target",
        report.sent_total
    );
    assert_eq!(report.skipped, 0);
}

#[test]
fn binary_prints_json_that_matches_server() {
    let server = start("127.0.0.1:0");
    let target = server.local_addrs()[0].to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fjord-bench"))
        .args([
            &target, "-n", "600", "--peers", "500", "--swarms", "50", "--json", "-q",
        ])
        .args([
            "--timeout-ms",
            "5000",
            "--server-pid",
            &std::process::id().to_string(),
        ])
        .output()
        .unwrap();
    let counts = server.shutdown().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["sent_total"], 600);
    assert_eq!(json["malformed_total"], 0);
    let probe = json["probe"]["connects"].as_u64().unwrap();
    for (action, key, extra) in [
        (Action::Connect, "connect", probe),
        (Action::Announce, "announce", 0),
        (Action::Scrape, "scrape", 0),
    ] {
        assert_eq!(
            json["responses"][key].as_u64().unwrap() + extra,
            counts.responses(action, IpFamily::V4),
            "{key}"
        );
    }
    // The server runs inside this test process, so --server-pid measures it.
    assert!(json["server"]["cpu_seconds"].as_f64().unwrap() >= 0.0);
    assert!(json["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    for p in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(json["latency"][p].as_u64().is_some(), "{p}");
    }
}

#[test]
fn help_explains_every_option() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fjord-bench"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--duration",
        "--requests",
        "--threads",
        "--mode",
        "--rate",
        "--in-flight",
        "--peers",
        "--swarms",
        "--distribution",
        "--zipf-exponent",
        "--seeder-ratio",
        "--weight-connect",
        "--weight-announce",
        "--weight-scrape",
        "--num-want",
        "--scrape-max",
        "--events",
        "--server-pid",
        "--json",
        "--quiet",
        "--profile",
        "--reconnect-after",
        "--sources",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}
