//! The metrics endpoint end to end: fjord serves `/metrics`, a real Prometheus server (Debian
//! package `prometheus`) on loopback scrapes it, and the values sent through fjord are read back
//! through Prometheus' HTTP query API. Without Prometheus the test is skipped, except in CI
//! (`CI` set), where a missing Prometheus is a failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    IpFamily, PeerId, Request, Response, TransactionId,
};
use fjord_server::{Config, start};

const DEADLINE: Duration = Duration::from_secs(60);

struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback TCP port that was free a moment ago (a separate process cannot be handed port 0).
fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe socket");
    l.local_addr().expect("probe address").port()
}

fn http_get(addr: SocketAddr, path_and_query: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Starts Prometheus scraping `target` every second; returns once it answers `/-/ready`.
fn start_prometheus(target: SocketAddr) -> Option<Prometheus> {
    let version = Command::new("prometheus").arg("--version").output();
    if version.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed (Debian package prometheus); CI must install it"
        );
        eprintln!("prometheus not installed: test skipped");
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "fjord-prometheus-{}-{}",
        std::process::id(),
        target.port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs:\n  - job_name: fjord\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        ),
    )
    .expect("write prometheus.yml");
    // The port can be taken between probing and binding: retry a few times.
    for _ in 0..5 {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: port taken or bad config; try another port
            }
            if let Some((200, _)) = http_get(addr, "/-/ready") {
                return Some(Prometheus { child, dir, addr });
            }
            std::thread::sleep(Duration::from_millis(100)); // polling interval, not a wait-for
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("prometheus did not become ready");
}

/// Instant query; returns the single sample's value if there is one.
fn query(prom: &Prometheus, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(prom.addr, &format!("/api/v1/query?query={encoded}"))?;
    assert_eq!(status, 200, "query {promql}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
    let result = v["data"]["result"].as_array()?;
    let sample = result.first()?;
    sample["value"][1].as_str()?.parse().ok()
}

fn round_trip(sock: &UdpSocket, server: SocketAddr, req: &Request<'_>, buf: &mut [u8]) -> usize {
    let mut out = [0u8; 256];
    let n = req.write(&mut out).expect("write request");
    sock.send_to(&out[..n], server).expect("send");
    let (len, _) = sock.recv_from(buf).expect("reply");
    len
}

#[test]
fn prometheus_scrapes_what_fjord_counted() {
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().expect("addr")]);
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
    let server = start(config).expect("start fjord");
    let metrics_addr = server.metrics_addr().expect("metrics endpoint");
    let udp = server.local_addrs()[0];

    let Some(prom) = start_prometheus(metrics_addr) else {
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
    ];
    let until = Instant::now() + DEADLINE;
    loop {
        let last = want
            .iter()
            .map(|(q, _)| query(&prom, q))
            .collect::<Vec<_>>();
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
