//! The capacity search against a tracker limited to a known rate finds that rate.
//!
//! Alone in its test binary so that no other test competes for the two cores while the
//! limit is measured.

mod common;

use std::time::Duration;

/// The test tracker answers at most this many requests per second.
const LIMIT: f64 = 2_000.0;

/// Tolerance. A 2 s step at (1 + x) · LIMIT loses 2x · LIMIT − 0.1 · LIMIT requests (the
/// bucket holds 100 ms of tokens) of the ≈ 1.7 · (1 + x) · LIMIT it measures, which stays
/// under the 2 % loss limit up to x ≈ 0.068; the search stops when the failing rate is within
/// 10 % of the passing one. So the capacity lies within [0.9, 1.07] × LIMIT; the test allows
/// [0.85, 1.1] for stalls of the generator on a busy machine.
const TOLERANCE: (f64, f64) = (0.85, 1.10);

#[test]
fn capacity_search_finds_the_rate_a_tracker_is_limited_to() {
    let tracker = common::spawn("127.0.0.1:0", Some(LIMIT), None);
    let dir = common::scratch_dir("capacity");
    let (json, curve, series, plot) = (
        dir.join("c.json"),
        dir.join("curve.csv"),
        dir.join("series.csv"),
        dir.join("c.svg"),
    );
    let target = format!("udp://{}/announce", tracker.addr);
    let (code, stdout, last, took) = common::bench(&[
        &target,
        "--mode",
        "capacity",
        "--start-rate",
        "600",
        "--resolution",
        "10%",
        "--max-loss",
        "2%",
        "--max-p99",
        "200ms",
        "--min-rate",
        "1000",
        "-d",
        "2",
        "--warmup",
        "0.3",
        "--timeout-ms",
        "300",
        "--peers",
        "1000",
        "--swarms",
        "100",
        "--json",
        "-q",
        "--curve-csv",
        curve.to_str().unwrap(),
        "--csv",
        series.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    std::fs::write(&json, &stdout).unwrap();
    assert_eq!(code, Some(0), "{last}\n{stdout}");
    assert!(last.starts_with("fjord-bench: capacity: "), "{last}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["mode"], "capacity");
    assert_eq!(report["end"], "resolved", "{}", report["conclusion"]);
    let capacity = report["capacity"]["rate"].as_f64().unwrap();
    assert!(
        (TOLERANCE.0 * LIMIT..=TOLERANCE.1 * LIMIT).contains(&capacity),
        "capacity {capacity} for a tracker limited to {LIMIT}/s: {}",
        report["conclusion"]
    );
    let failing = report["capacity"]["lowest_failing_rate"].as_f64().unwrap();
    assert!(failing > capacity && (failing - capacity) / capacity <= 0.10 + 1e-9);
    // The curve: offered rate rises, answered follows it up to the limit and no further.
    let steps = report["steps"].as_array().unwrap();
    assert!(
        steps.len() >= 4 && steps.len() <= 16,
        "{} steps",
        steps.len()
    );
    for s in steps {
        let (rate, replies) = (
            s["rate"].as_f64().unwrap(),
            s["replies_per_second"].as_f64().unwrap(),
        );
        assert!(
            replies <= LIMIT * 1.1,
            "{replies} replies/s from a {LIMIT}/s tracker"
        );
        if s["passed"] == true {
            assert!(
                replies >= rate * 0.9,
                "passing step at {rate}: {replies} replies/s"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(&curve).unwrap().lines().count(),
        steps.len() + 1
    );
    let series = std::fs::read_to_string(&series).unwrap();
    assert!(series.starts_with("step,rate,second,"));
    assert!(series.lines().count() > steps.len());
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Capacity curve"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    // Every step's announces went to the tracker; the search took a bounded time.
    assert!(
        tracker
            .seen
            .announces
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(took < Duration::from_secs(45), "{took:?}");
}
