//! The metrics endpoint end to end: fjord serves `/metrics`, a real Prometheus server (Debian
//! package `prometheus`) on loopback scrapes it, and the values sent through fjord are read back
//! through Prometheus' HTTP query API. Without Prometheus the test is skipped, except in CI
//! (`CI` set), where a missing Prometheus is a failure.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    IpFamily, PeerId, Request, Response, TransactionId,
};
use fjord_server::{Config, start};

mod support;
use support::{Prometheus, TempDir};

const DEADLINE: Duration = Duration::from_secs(60);
/// A catalogue name with the characters the text format escapes.
const TORRENT_NAME: &str = r#"Prometheus "quoted" \ torrent"#;

fn round_trip(sock: &UdpSocket, server: SocketAddr, req: &Request<'_>, buf: &mut [u8]) -> usize {
    let mut out = [0u8; 256];
    let n = req.write(&mut out).expect("write request");
    sock.send_to(&out[..n], server).expect("send");
    let (len, _) = sock.recv_from(buf).expect("reply");
    len
}

#[test]
fn prometheus_scrapes_what_fjord_counted() {
    // The first swarm is catalogued under a name that needs escaping in the exposition.
    let dir = TempDir::new("prometheus-catalogue");
    let catalogue = dir.path().join("catalogue.txt");
    std::fs::write(&catalogue, format!("{} {TORRENT_NAME}\n", "00".repeat(20)))
        .expect("write catalogue");
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().expect("addr")]);
    config.stats.catalogue = Some(catalogue);
    config.store.clean_interval_ms = 200;
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
    let server = start(config).expect("start fjord");
    let metrics_addr = server.metrics_addr().expect("metrics endpoint");
    let udp = server.local_addrs()[0];

    let Some(prom) = Prometheus::start(metrics_addr, None) else {
        return;
    };

    // Traffic: one connect, ANNOUNCES announces over as many swarms, one seeder each.
    const ANNOUNCES: u32 = 17;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let n = round_trip(
        &sock,
        udp,
        &Request::Connect(ConnectRequest {
            transaction_id: TransactionId(1),
        }),
        &mut buf,
    );
    let connection_id = match Response::parse(&buf[..n], IpFamily::V4) {
        Ok(Response::Connect(c)) => c.connection_id,
        other => panic!("connect reply: {other:?}"),
    };
    for i in 0..ANNOUNCES {
        let mut info_hash = [0u8; 20];
        info_hash[..4].copy_from_slice(&i.to_be_bytes());
        let req = Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(connection_id.0),
            transaction_id: TransactionId(100 + i),
            info_hash: InfoHash(info_hash),
            peer_id: PeerId([7; 20]),
            downloaded: 0,
            left: 0,
            uploaded: 0,
            event: AnnounceEvent::Started,
            ip_address: 0,
            key: 1,
            num_want: 10,
            port: 6881,
            options: AnnounceOptions::new(&[]),
        });
        let n = round_trip(&sock, udp, &req, &mut buf);
        assert!(matches!(
            Response::parse(&buf[..n], IpFamily::V4),
            Ok(Response::Announce(_))
        ));
    }

    // Prometheus scrapes every second; fjord publishes counters every 100 ms. Poll the query
    // API until the scraped values reach what was sent (bounded).
    let want = [
        (
            "fjord_requests_total{action=\"announce\",ip_version=\"4\"}",
            f64::from(ANNOUNCES),
        ),
        (
            "fjord_responses_total{action=\"connect\",ip_version=\"4\"}",
            1.0,
        ),
        ("fjord_torrents{ip_version=\"4\"}", f64::from(ANNOUNCES)),
        (
            "fjord_peers{ip_version=\"4\",role=\"seeder\"}",
            f64::from(ANNOUNCES),
        ),
        ("up{job=\"fjord\"}", 1.0),
        // Peer id [7; 20] names no client.
        (
            "fjord_client_announces_total{client=\"other\"}",
            f64::from(ANNOUNCES),
        ),
        (
            "fjord_client_started_total{client=\"other\"}",
            f64::from(ANNOUNCES),
        ),
        ("fjord_client_announces_total{client=\"qbittorrent\"}", 0.0),
        ("fjord_catalogue_entries", 1.0),
    ];
    let torrent = format!(
        "fjord_torrent_seeders{{torrent=\"{}\"}}",
        TORRENT_NAME.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let want: Vec<(&str, f64)> = want.into_iter().chain([(torrent.as_str(), 1.0)]).collect();
    let until = Instant::now() + DEADLINE;
    loop {
        let last = want.iter().map(|(q, _)| prom.query(q)).collect::<Vec<_>>();
        if want.iter().zip(&last).all(|((_, w), got)| *got == Some(*w)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "Prometheus never saw the expected values: wanted {want:?}, last got {last:?}"
        );
        std::thread::sleep(Duration::from_millis(250)); // polling interval
    }
    server.shutdown().expect("clean shutdown");
}
