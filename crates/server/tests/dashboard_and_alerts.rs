//! The shipped dashboard and alert rules against the real thing: the `fjord` binary, a real
//! Prometheus (Debian package `prometheus`) scraping it every second and evaluating
//! deploy/prometheus/fjord-alerts.yml, and traffic from fjord-bench.
//!
//! Three phases:
//! 1. idle: FjordNoRequests must fire;
//! 2. bad traffic (datagrams with a wrong protocol id, announces with forged connection ids)
//!    and malformed access-list and catalogue files: FjordDropRateHigh must fire for both drop
//!    reasons, FjordAccessListReloadFailing and FjordCatalogueReloadFailing must fire;
//! 3. good traffic (fjord-bench, whose peers announce with a mix of client peer ids, to swarms
//!    two of which are catalogued) and fixed files: every PromQL expression of
//!    deploy/grafana/fjord-dashboard.json must parse and return at least one series with a
//!    number (the client and catalogued-torrent panels included), every alert rule must be
//!    healthy and its expression must evaluate, and the file alerts must clear.
//!
//! The rules are loaded with every `for:` set to 0s so that alert states show within seconds;
//! everything else is the shipped file. Without Prometheus the test is skipped, except in CI.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fjord_bench::config::{BenchConfig, LoadMode};

mod support;
use support::{Prometheus, TempDir, repo_file, signal, spawn_fjord, wait_exit};

/// Every phase must reach its state within this long.
const PHASE_DEADLINE: Duration = Duration::from_secs(90);
/// What `$__rate_interval` stands for (Grafana derives it from the scrape interval).
const RATE_INTERVAL: &str = "1m";

/// Every `expr` of every panel (rows' nested panels included), with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_file("deploy/grafana/fjord-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
    }
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                expr.to_string(),
            ));
        }
    }
    assert!(
        out.len() > 20,
        "the dashboard has only {} queries",
        out.len()
    );
    out
}

/// Grafana's variables as an "All" selection and a concrete interval.
fn substitute_variables(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", ".*")
        .replace("$instance", ".*");
    assert!(!e.contains('$'), "unknown variable left in {e}");
    e
}

/// The alert names the shipped rule file defines.
fn shipped_alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_string())
        .collect()
}

/// The shipped rules with every `for:` duration set to 0s.
fn rules_without_for(rules: &str) -> String {
    rules
        .lines()
        .map(|l| {
            let trimmed = l.trim_start();
            if trimmed.starts_with("for:") {
                format!("{}for: 0s", &l[..l.len() - trimmed.len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `check` until it returns `Ok`, or fails with the last `Err` at the deadline.
fn eventually(phase: &str, mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + PHASE_DEADLINE;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= until => panic!("{phase}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)), // polling interval
        }
    }
}

/// The label sets of the firing instances of `alert`.
fn firing(prom: &Prometheus, alert: &str) -> Vec<serde_json::Value> {
    prom.query_result(&format!(
        "ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"}}"
    ))
    .into_iter()
    .map(|s| s["metric"].clone())
    .collect()
}

/// Sends datagrams fjord must drop, for one pacing interval: a connect with a wrong protocol id
/// (`bad_protocol_id`) and an announce with a forged connection id (`bad_connection_id`).
fn send_bad_traffic(sock: &UdpSocket, target: std::net::SocketAddr) {
    let mut bad_protocol = [0u8; 16];
    bad_protocol[..8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    let mut forged_announce = [0u8; 98];
    forged_announce[..8].copy_from_slice(&0x0bad_0bad_0bad_0badu64.to_be_bytes());
    forged_announce[8..12].copy_from_slice(&1u32.to_be_bytes());
    for _ in 0..20 {
        sock.send_to(&bad_protocol, target).expect("send");
        sock.send_to(&forged_announce, target).expect("send");
    }
}

#[test]
fn every_dashboard_and_alert_query_works_against_a_live_fjord() {
    let queries = dashboard_queries();
    let rules_text =
        std::fs::read_to_string(repo_file("deploy/prometheus/fjord-alerts.yml")).expect("rules");
    let alert_names = shipped_alert_names(&rules_text);
    assert!(alert_names.len() >= 7, "{alert_names:?}");

    let dir = TempDir::new("dashboard");
    let rules = dir.path().join("fjord-alerts.yml");
    std::fs::write(&rules, rules_without_for(&rules_text)).expect("write rules");
    let access_list = dir.path().join("deny.txt");
    std::fs::write(&access_list, "# nothing denied\n").expect("write access list");
    // Two of the swarms fjord-bench announces to (its population's seed is 1), by name.
    let catalogue = dir.path().join("catalogue.txt");
    let bench = BenchConfig::quick("127.0.0.1:1".parse().expect("addr"));
    let catalogue_text: String = (0..2)
        .map(|i| {
            let h = fjord_bench::population::info_hash(bench.population.seed, i);
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex} fjord-bench swarm {i}\n")
        })
        .collect();
    std::fs::write(&catalogue, &catalogue_text).expect("write catalogue");
    let config = dir.path().join("fjord.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nsocket_recv_buffer = 1048576\nsocket_send_buffer = 1048576\n\
             [access_list]\nmode = \"deny\"\npath = {:?}\npoll_interval_ms = 100\n\
             [stats]\ncatalogue = {:?}\n\
             [state]\ndir = {:?}\nsnapshot_interval_secs = 1\n",
            access_list.display().to_string(),
            catalogue.display().to_string(),
            dir.path().join("state").display().to_string()
        ),
    )
    .expect("write config");
    let mut fjord = spawn_fjord(
        &[
            "-c",
            config.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ],
        &[],
    );
    let Some(prom) = Prometheus::start(fjord.metrics.expect("metrics on"), Some(&rules)) else {
        return;
    };

    // Every shipped rule is loaded (a rule file Prometheus refuses would stop it starting).
    eventually("rules loaded", || {
        let v = prom.api("/api/v1/rules");
        let loaded: Vec<&str> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter_map(|r| r["name"].as_str())
            .collect();
        if alert_names.iter().all(|n| loaded.contains(&n.as_str())) {
            Ok(())
        } else {
            Err(format!("loaded {loaded:?}, shipped {alert_names:?}"))
        }
    });

    // Phase 1: fjord is up and idle.
    eventually("idle: FjordNoRequests fires", || {
        let f = firing(&prom, "FjordNoRequests");
        (f.len() == 1).then_some(()).ok_or(format!("{f:?}"))
    });

    // Phase 2: only bad traffic, and a malformed access list and catalogue.
    std::fs::write(&access_list, "not an info hash\n").expect("break the access list");
    std::fs::write(&catalogue, format!("{catalogue_text}no hash here\n")).expect("break it");
    let bad = UdpSocket::bind("127.0.0.1:0").expect("bad-traffic socket");
    eventually("bad traffic: drop and access-list alerts fire", || {
        send_bad_traffic(&bad, fjord.udp);
        let reasons: Vec<String> = firing(&prom, "FjordDropRateHigh")
            .iter()
            .filter_map(|m| m["reason"].as_str().map(String::from))
            .collect();
        let acl = firing(&prom, "FjordAccessListReloadFailing");
        let cat = firing(&prom, "FjordCatalogueReloadFailing");
        if reasons.iter().any(|r| r == "bad_protocol_id")
            && reasons.iter().any(|r| r == "bad_connection_id")
            && acl.len() == 1
            && cat.len() == 1
        {
            Ok(())
        } else {
            Err(format!(
                "FjordDropRateHigh firing for {reasons:?}, FjordAccessListReloadFailing {acl:?}, \
                 FjordCatalogueReloadFailing {cat:?}"
            ))
        }
    });

    // Phase 3: good traffic from fjord-bench, the access list and the catalogue fixed.
    std::fs::write(&access_list, "# fixed\n").expect("fix the access list");
    std::fs::write(&catalogue, &catalogue_text).expect("fix the catalogue");
    let stop = Arc::new(AtomicBool::new(false));
    let mut bench = BenchConfig::quick(fjord.udp);
    bench.mode = LoadMode::Open { rate: 3000.0 };
    bench.duration = Some(PHASE_DEADLINE * 2);
    let bench_thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || fjord_bench::run_until(&bench, stop))
    };
    let mut empty: Vec<String> = Vec::new();
    eventually("traffic: every dashboard query returns data", || {
        empty.clear();
        for (title, expr) in &queries {
            let result = prom.query_result(&substitute_variables(expr));
            let has_number = result.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| !v.is_nan())
            });
            if !has_number {
                empty.push(format!("{title}: {expr} -> {result:?}"));
            }
        }
        for alert in [
            "FjordAccessListReloadFailing",
            "FjordCatalogueReloadFailing",
        ] {
            let f = firing(&prom, alert);
            if !f.is_empty() {
                empty.push(format!("{alert} still firing: {f:?}"));
            }
        }
        // The traffic named real clients, and a catalogued swarm has peers.
        for (what, q) in [
            (
                "qBittorrent announces",
                "sum(fjord_client_announces_total{client=\"qbittorrent\"})",
            ),
            (
                "catalogued peers",
                "sum(fjord_torrent_seeders) + sum(fjord_torrent_leechers)",
            ),
        ] {
            if !prom.query(q).is_some_and(|v| v > 0.0) {
                empty.push(format!("no {what}: {q}"));
            }
        }
        if empty.is_empty() {
            Ok(())
        } else {
            Err(format!("no data:\n{}", empty.join("\n")))
        }
    });

    // Every rule healthy, and every alert expression evaluates through the query API.
    let v = prom.api("/api/v1/rules");
    let mut evaluated = 0;
    for group in v["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().unwrap_or("?");
            assert_eq!(rule["health"], "ok", "{name}: {rule}");
            assert!(
                rule["lastError"].as_str().unwrap_or("").is_empty(),
                "{name}: {rule}"
            );
            let expr = rule["query"].as_str().expect("rule query");
            prom.query_result(expr); // panics on a parse or evaluation error
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, alert_names.len());

    stop.store(true, Ordering::Relaxed);
    let report = bench_thread
        .join()
        .expect("fjord-bench thread")
        .expect("fjord-bench run");
    assert!(report.responses_total > 0, "fjord-bench got no replies");
    assert_eq!(
        report.malformed_total, 0,
        "fjord-bench saw malformed replies"
    );
    signal(&fjord.child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut fjord.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}
