//! fjord-bench against a deliberately broken tracker: every kind of bad reply must be caught
//! and counted under its own heading, end to end through the sockets and the engine.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjord_bench::config::BenchConfig;

/// Answers connects correctly; announces with a partial peer entry (20 + 7 bytes) preceded
/// by a copy carrying a wrong transaction id; scrapes with one row too many.
fn broken_tracker(socket: UdpSocket, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if len < 16 {
            continue;
        }
        let action = u32::from_be_bytes(buf[8..12].try_into().unwrap());
        let tid = &buf[12..16];
        let mut reply = Vec::new();
        reply.extend_from_slice(&action.to_be_bytes());
        reply.extend_from_slice(tid);
        match action {
            0 => reply.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes()),
            1 => {
                reply.extend_from_slice(&[0u8; 12]);
                reply.extend_from_slice(&[1u8; 7]);
                let mut forged = reply.clone();
                forged[4] ^= 0x80;
                socket.send_to(&forged, from).unwrap();
            }
            2 => {
                let hashes = (len - 16) / 20;
                reply.extend(std::iter::repeat_n(0u8, 12 * (hashes + 1)));
            }
            _ => continue,
        }
        socket.send_to(&reply, from).unwrap();
    }
}

#[test]
fn every_kind_of_bad_reply_is_counted() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tracker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || broken_tracker(socket, stop))
    };
    let mut cfg = BenchConfig::quick(target);
    cfg.requests = Some(400);
    cfg.duration = Some(Duration::from_secs(30));
    cfg.timeout = Duration::from_secs(5);
    let report = fjord_bench::run(&cfg).unwrap();
    stop.store(true, Ordering::Relaxed);
    tracker.join().unwrap();

    assert_eq!(report.sent_total, 400);
    assert!(
        report.sent.announce > 0 && report.sent.scrape > 0,
        "{report:#?}"
    );
    assert_eq!(
        report.responses.connect, report.sent.connect,
        "connects are fine"
    );
    assert_eq!(report.responses.announce, 0);
    assert_eq!(report.responses.scrape, 0);
    assert_eq!(report.malformed["wrong_entry_size"], report.sent.announce);
    assert_eq!(report.malformed["wrong_row_count"], report.sent.scrape);
    assert_eq!(
        report.malformed_total,
        report.sent.announce + report.sent.scrape
    );
    assert_eq!(
        report.unexpected_replies, report.sent.announce,
        "forged transaction ids"
    );
    assert_eq!(
        report.timeouts.announce + report.timeouts.scrape + report.timeouts.connect,
        0
    );
}
