//! fjord-bench as an operator meets it: targets written as torrent files write them, a plain
//! early error when nothing answers, limits that flip the exit status with the reason on
//! the last line, one series row per second, reports that name their settings, pictures.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use fjord_bench::config::BenchConfig;

fn start_fjord(listen: &str) -> fjord_server::RunningServer {
    let addr: SocketAddr = listen.parse().unwrap();
    let mut config = fjord_server::Config::for_tests(vec![addr]);
    // fjord-bench's peers come from one loopback address: the per-source limits would meter it
    // as one flooding source (tests/against_fjord.rs likewise).
    config.limits.enabled = false;
    config.admission.enabled = false;
    fjord_server::start(config).expect("server starts")
}

const SMALL: [&str; 4] = ["--peers", "500", "--swarms", "50"];

fn args<'a>(target: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![target, "-q"];
    v.extend_from_slice(&SMALL);
    v.extend_from_slice(rest);
    v
}

#[test]
fn a_closed_port_says_nothing_listens_within_a_second() {
    // Bound and dropped at once: nothing listens on that port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("udp://127.0.0.1:{port}/announce");
    let (code, stdout, last, took) = common::bench(&args(&target, &["-d", "10"]));
    assert_eq!(code, Some(3), "{last}");
    assert_eq!(
        last,
        format!(
            "fjord-bench: nothing listens on {target} (127.0.0.1:{port}): the connect request was answered with ICMP port unreachable"
        )
    );
    assert!(stdout.is_empty(), "no report: {stdout}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn silence_says_no_reply_after_the_timeout() {
    // Bound, never read: the connects arrive and nobody answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let (code, _, last, took) = common::bench(&[&target, "-q", "--timeout-ms", "300"]);
    assert_eq!(code, Some(3), "{last}");
    assert!(
        last.starts_with(&format!("fjord-bench: no reply from udp://{target} ({target}) to 3 connect requests within 300 ms")),
        "{last}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn limits_flip_the_exit_status_and_name_the_reason_last() {
    let server = start_fjord("127.0.0.1:0");
    let target = server.local_addrs()[0].to_string();
    let run = |limits: &[&str]| {
        let mut a = args(&target, &["-d", "1", "--warmup", "0.2"]);
        a.extend_from_slice(limits);
        common::bench(&a)
    };
    let (code, stdout, last, _) = run(&["--max-loss", "5%", "--max-p99", "2s", "--min-rate", "10"]);
    assert_eq!(code, Some(0), "{last}\n{stdout}");
    assert!(
        last.starts_with("fjord-bench: passed: loss 0.00 % <= 5.00 %, p99 "),
        "{last}"
    );
    let (code, _, last, _) = run(&["--max-p99", "1us"]);
    assert_eq!(code, Some(4), "{last}");
    assert!(
        last.starts_with("fjord-bench: FAILED: p99 ") && last.ends_with("> --max-p99 1 µs"),
        "{last}"
    );
    let (code, _, last, _) = run(&["--min-rate", "1e12"]);
    assert_eq!(code, Some(4), "{last}");
    assert!(
        last.contains("replies/s < --min-rate 1000000000000"),
        "{last}"
    );
    let (code, _, last, _) = run(&[]);
    assert_eq!(code, Some(0), "{last}");
    assert!(last.starts_with("fjord-bench: done: "), "{last}");
    server.shutdown().unwrap();

    // Loss: a tracker answering at most 500/s, offered 2000/s.
    let tracker = common::spawn("127.0.0.1:0", Some(500.0), None);
    let target = tracker.addr.to_string();
    let a = args(
        &target,
        &[
            "--mode",
            "open",
            "--rate",
            "2000",
            "-d",
            "1",
            "--warmup",
            "0.2",
            "--timeout-ms",
            "300",
            "--max-loss",
            "5%",
        ],
    );
    let (code, _, last, _) = common::bench(&a);
    assert_eq!(code, Some(4), "{last}");
    assert!(
        last.starts_with("fjord-bench: FAILED: loss ") && last.ends_with("> --max-loss 5.00 %"),
        "{last}"
    );
    assert!(tracker.seen.dropped.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_series_has_one_row_per_second_and_the_summary_leaves_the_warm_up_out() {
    let server = start_fjord("127.0.0.1:0");
    let mut cfg = BenchConfig::quick(server.local_addrs()[0]);
    cfg.timeout = Duration::from_secs(5);
    cfg.duration = Some(Duration::from_millis(2_500));
    cfg.warmup = Duration::from_secs(1);
    let report = fjord_bench::run(&cfg).unwrap();
    server.shutdown().unwrap();
    let rows = &report.series;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(
        rows.iter()
            .map(|r| (r.second, r.warmup))
            .collect::<Vec<_>>(),
        [(0, true), (1, false), (2, false)]
    );
    assert_eq!((rows[0].seconds, rows[1].seconds), (1.0, 1.0));
    assert!((rows[2].seconds - 0.5).abs() < 0.05, "{}", rows[2].seconds);
    assert!(rows.iter().all(|r| r.replies_per_second_total > 0.0));
    // The measured rows add up to the summary: 1.5 s after a 1 s warm-up.
    assert_eq!(report.warmup_seconds, 1.0);
    assert!(
        (report.measured_seconds - 1.5).abs() < 0.05,
        "{}",
        report.measured_seconds
    );
    let measured_sent: f64 = rows[1..]
        .iter()
        .map(|r| r.sent_per_second * r.seconds)
        .sum();
    assert_eq!(measured_sent.round() as u64, report.sent_total);
    let measured_replies: f64 = rows[1..]
        .iter()
        .map(|r| r.replies_per_second_total * r.seconds)
        .sum();
    assert_eq!(measured_replies.round() as u64, report.responses_total);
    let all_sent: f64 = rows.iter().map(|r| r.sent_per_second * r.seconds).sum();
    assert!(all_sent.round() as u64 > report.sent_total);
}

#[test]
fn csv_json_and_pictures_of_a_run() {
    let server = start_fjord("127.0.0.1:0");
    let target = server.local_addrs()[0].to_string();
    let dir = common::scratch_dir("outputs");
    let (csv, svg, png) = (dir.join("s.csv"), dir.join("r.svg"), dir.join("r.png"));
    let mut a = args(
        &target,
        &["-d", "2", "--warmup", "0.5", "--seed", "7", "--json"],
    );
    a.extend_from_slice(&[
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let (code, stdout, last, _) = common::bench(&a);
    assert_eq!(code, Some(0), "{last}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Reproducible on its own: version, command, target, population and seed.
    assert_eq!(json["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(!json["tool"]["commit"].as_str().unwrap().is_empty());
    assert_eq!(json["command"][1], target.as_str());
    assert_eq!(json["target"], format!("udp://{target}"));
    assert_eq!(json["target_address"], target.as_str());
    assert_eq!(json["settings"]["population"]["seed"], 7);
    assert_eq!(json["settings"]["population"]["peers"], 500);
    assert_eq!(json["settings"]["warmup_seconds"], 0.5);
    assert_eq!(json["series"].as_array().unwrap().len(), 2);
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with(fjord_bench::report::SERIES_CSV_HEADER));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Throughput per second") && svg.contains("p99")
    );
    // PNG, drawn by plotters itself with the embedded font.
    let (code, _, last, _) = common::bench(&args(
        &target,
        &["-d", "1", "--plot", png.to_str().unwrap()],
    ));
    server.shutdown().unwrap();
    assert_eq!(code, Some(0), "{last}");
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "{} bytes", png.len());
    // A bad picture name is refused before any load is sent.
    let (code, _, last, took) = common::bench(&args(&target, &["--plot", "x.jpg"]));
    assert_eq!(code, Some(1));
    assert!(last.contains("must end in .svg or .png"), "{last}");
    assert!(took < Duration::from_secs(2));
}

#[test]
fn the_url_path_reaches_the_tracker_as_bep41_url_data() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let path = "/announce?passkey=0123456789abcdef";
        let tracker = common::spawn(bind, None, Some(path));
        let target = format!("udp://{}{path}", tracker.addr);
        let (code, _, last, _) = common::bench(&args(&target, &["-n", "300"]));
        assert_eq!(code, Some(0), "{bind}: {last}");
        let (announces, with_path) = (
            tracker.seen.announces.load(Ordering::Relaxed),
            tracker.seen.announces_with_path.load(Ordering::Relaxed),
        );
        assert!(announces > 100, "{bind}: {announces} announces");
        assert_eq!(
            with_path, announces,
            "{bind}: every announce carries the path"
        );
    }
    // Without a path, no URL data.
    let tracker = common::spawn("127.0.0.1:0", None, Some(""));
    let target = format!("udp://{}", tracker.addr);
    let (code, _, last, _) = common::bench(&args(&target, &["-n", "200"]));
    assert_eq!(code, Some(0), "{last}");
    assert!(tracker.seen.announces.load(Ordering::Relaxed) > 0);
    assert_eq!(
        tracker.seen.announces_with_path.load(Ordering::Relaxed),
        tracker.seen.announces.load(Ordering::Relaxed),
        "empty URL data"
    );
}

#[test]
fn host_names_resolve_and_bad_targets_are_named() {
    let tracker = common::spawn("127.0.0.1:0", None, None);
    let target = format!("udp://localhost:{}/announce", tracker.addr.port());
    let (code, _, last, _) = common::bench(&args(&target, &["-4", "-n", "100"]));
    assert_eq!(code, Some(0), "{last}");
    assert!(tracker.seen.announces.load(Ordering::Relaxed) > 0);
    for (bad, says) in [
        (
            "http://127.0.0.1:80/announce",
            "http:// trackers are not supported",
        ),
        ("udp://127.0.0.1/announce", "no port"),
        ("::1:6969", "needs brackets"),
    ] {
        let (code, _, last, _) = common::bench(&[bad]);
        assert_eq!(code, Some(1), "{bad}");
        assert!(last.contains(says), "{bad}: {last}");
    }
    // A usage error exits 1 too (clap's own 2 would read as "malformed reply").
    let (code, _, last, _) = common::bench(&["127.0.0.1:1", "--mode", "sideways"]);
    assert_eq!(code, Some(1), "{last}");
}
