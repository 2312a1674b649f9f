//! Unit tests of `report.rs`.

use super::*;
use crate::validate::{Issued, Kind};

fn issued(kind: Kind, sent_ns: u64) -> Issued {
    Issued::new(kind, 0, sent_ns)
}

fn cfg() -> BenchConfig {
    BenchConfig::quick("127.0.0.1:6969".parse().unwrap())
}

#[test]
fn report_adds_up_and_leaves_the_warm_up_out() {
    let ms = 1_000_000;
    let mut a = ThreadStats::new(500 * ms);
    // 2 connects and 10 announces in the warm-up, 19 requests after it.
    for k in 0..12 {
        let kind = if k < 2 { Kind::Connect } else { Kind::Announce };
        a.sent(kind, 100 * ms);
        a.response(&issued(kind, 100 * ms), 101 * ms);
    }
    for k in 0..19u64 {
        let kind = [Kind::Connect, Kind::Announce, Kind::Scrape][(k % 3) as usize];
        let at = 600 * ms + k * 100 * ms; // 0.6 s … 2.4 s
        a.sent(kind, at);
        match k {
            0 => a.timeout(&issued(kind, at)),
            1 => a.malformed(&issued(kind, at), Malformed::WrongLength),
            _ => a.response(&issued(kind, at), at + (k + 1) * 10_000),
        }
    }
    a.peers_received(&issued(Kind::Announce, 700 * ms), 7);
    // A late reply matching nothing, in the drain after sending ended.
    a.unexpected(3_200 * ms);
    let timing = Timing {
        warmup: 0.5,
        sending_end: 2.5,
        last_activity: 2.6,
    };
    let r = Report::build(&a, &cfg(), timing, 0.5, None);
    assert_eq!(r.measured_seconds, 2.0);
    assert_eq!(r.sent_total, 19);
    assert_eq!(r.sent_per_second_total, 9.5);
    assert_eq!(r.responses_total, 17);
    assert_eq!(r.malformed_total, 1);
    assert_eq!(r.malformed["wrong_length"], 1);
    assert!((r.loss - 1.0 / 19.0).abs() < 1e-12);
    assert_eq!(r.latency.count, 17);
    assert_eq!(r.responses.announce, 5);
    assert_eq!(r.peers_per_announce, 1.4);
    // Three rows (0-1, 1-2, 2-2.5 s), the first in the warm-up, the last half a second.
    assert_eq!(r.series.len(), 3);
    assert!(r.series[0].warmup && !r.series[1].warmup);
    assert_eq!(r.series[2].seconds, 0.5);
    assert_eq!(r.unexpected_replies, 1);
    assert_eq!(r.series[0].replies_per_second_total, 12.0 + 2.0);
    assert_eq!(r.series[1].replies_per_second_total, 10.0);
    assert_eq!(r.series[2].replies_per_second_total, 5.0 / 0.5);
    let csv = r.series_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], SERIES_CSV_HEADER);
    assert_eq!(
        lines[1].split(',').count(),
        SERIES_CSV_HEADER.split(',').count()
    );
    assert!(lines[1].starts_with("0,1,true,"), "{}", lines[1]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["settings"]["population"]["seed"], 1);
    assert_eq!(json["settings"]["population"]["peers"], 1000);
    assert_eq!(json["tool"]["name"], "fjord-bench");
    assert_eq!(json["series"].as_array().unwrap().len(), 3);
    let table = r.to_table();
    assert!(
        table.contains("announce") && table.contains("warm-up"),
        "{table}"
    );
}
