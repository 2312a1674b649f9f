//! The status page (`GET /`) in a real browser: headless Chromium (Debian package `chromium`)
//! loads it from a running fjord that has served known traffic, runs its script, and every
//! number and name the page shows (each carries `data-stat="<path in the JSON>"`) must equal
//! `/stats` at the same path. Also checked: the page shows every client, catalogued torrent
//! and ranked swarm of `/stats`, draws one bar per client, renders a catalogue name with HTML
//! in it as text, refreshes by itself, and `/stats` itself says what the traffic did.
//!
//! Without Chromium the test is skipped, except in CI (`CI` set), where it fails.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    IpFamily, PeerId, Request, Response, TransactionId,
};
use fjord_server::{Config, start};

mod support;
use support::{KillOnDrop, TempDir, http_get};

const DEADLINE: Duration = Duration::from_secs(60);
/// A catalogue name with markup in it: the page must show it as text.
const TRICKY_NAME: &str = "Dagsrevyen <i>&</i> \"sport\"";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `chromium` (Debian) or `chromium-browser`, or `$CHROMIUM`.
fn chromium() -> Option<String> {
    let candidates = std::env::var("CHROMIUM")
        .into_iter()
        .chain(["chromium".to_string(), "chromium-browser".to_string()]);
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(c);
        }
    }
    None
}

/// Runs headless Chromium on `url` with a virtual-time budget and returns the DOM it ended
/// with (bounded to 90 s of real time; the profile lives in a temporary directory).
fn dump_dom(browser: &str, url: &str, budget_ms: u32) -> String {
    let profile = TempDir::new("chromium-profile");
    let out_dir = TempDir::new("chromium-out");
    let out_path = out_dir.path().join("dom.html");
    let err_path = out_dir.path().join("stderr.txt");
    let mut child = KillOnDrop(
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("dom file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("spawn chromium"),
    );
    let until = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait for chromium") {
            break s;
        }
        assert!(
            Instant::now() < until,
            "chromium did not finish within 90 s: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50)); // polling interval
    };
    let dom = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}): {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    dom
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The DOM without its `<script>` elements (their source mentions `data-stat` too).
fn without_scripts(dom: &str) -> String {
    let mut out = String::new();
    let mut rest = dom;
    while let Some(i) = rest.find("<script") {
        out.push_str(&rest[..i]);
        rest = rest[i..]
            .split_once("</script>")
            .map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// Every `data-stat="path"` element's text content (the page puts text straight inside).
fn shown_stats(dom: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = dom;
    while let Some(i) = rest.find("data-stat=\"") {
        rest = &rest[i + 11..];
        let Some(end) = rest.find('"') else { break };
        let path = rest[..end].to_string();
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let text_start = &rest[open_end + 1..];
        let text = &text_start[..text_start.find('<').unwrap_or(text_start.len())];
        out.insert(path, unescape(text));
        rest = text_start;
    }
    out
}

/// The JSON value at a dotted path (`clients.0.name`).
fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn as_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic with known results.

struct Peer {
    sock: UdpSocket,
    server: SocketAddr,
    connection_id: u64,
    tid: u32,
}

impl Peer {
    fn new(server: SocketAddr) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut p = Peer {
            sock,
            server,
            connection_id: 0,
            tid: 1,
        };
        let reply = p.round_trip(&Request::Connect(ConnectRequest {
            transaction_id: TransactionId(1),
        }));
        match Response::parse(&reply, IpFamily::V4) {
            Ok(Response::Connect(c)) => p.connection_id = c.connection_id.0,
            other => panic!("connect reply: {other:?}"),
        }
        p
    }

    fn round_trip(&mut self, req: &Request<'_>) -> Vec<u8> {
        let mut out = [0u8; 256];
        let n = req.write(&mut out).expect("write request");
        self.sock.send_to(&out[..n], self.server).expect("send");
        let mut buf = [0u8; 2048];
        let (len, _) = self.sock.recv_from(&mut buf).expect("reply");
        buf[..len].to_vec()
    }

    fn announce(
        &mut self,
        hash: [u8; 20],
        peer_id: [u8; 20],
        left: i64,
        event: AnnounceEvent,
        port: u16,
    ) {
        self.tid += 1;
        let reply = self.round_trip(&Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(self.connection_id),
            transaction_id: TransactionId(self.tid),
            info_hash: InfoHash(hash),
            peer_id: PeerId(peer_id),
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip_address: 0,
            key: 1,
            num_want: 10,
            port,
            options: AnnounceOptions::new(&[]),
        }));
        assert!(
            matches!(
                Response::parse(&reply, IpFamily::V4),
                Ok(Response::Announce(_))
            ),
            "announce reply {reply:02x?}"
        );
    }
}

impl Peer {
    /// `count` peers of one client (`prefix`), on ports `base_port..`.
    fn announce_many(
        &mut self,
        hash: [u8; 20],
        prefix: &[u8; 8],
        count: u8,
        left: i64,
        event: AnnounceEvent,
        base_port: u16,
    ) {
        for i in 0..count {
            self.announce(hash, pid(prefix, i), left, event, base_port + u16::from(i));
        }
    }
}

fn pid(prefix: &[u8; 8], n: u8) -> [u8; 20] {
    let mut id = [b'x'; 20];
    id[..8].copy_from_slice(prefix);
    id[19] = n;
    id
}

#[test]
fn the_status_page_shows_what_stats_says() {
    let Some(browser) = chromium() else {
        assert!(
            !in_ci(),
            "CI is set and chromium is not installed (Debian package chromium); CI must install it"
        );
        eprintln!("SKIPPED (not in CI): chromium is not installed (Debian package chromium)");
        return;
    };
    let dir = TempDir::new("status-page");
    let catalogue = dir.path().join("catalogue.txt");
    let (news, skam, other) = ([0xa1; 20], [0xb2; 20], [0xc3; 20]);
    std::fs::write(
        &catalogue,
        format!(
            "# torrents with names\n{} {TRICKY_NAME}\n{} Skam\n",
            hex(&news),
            hex(&skam)
        ),
    )
    .expect("write catalogue");
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().expect("addr")]);
    config.workers = 2;
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.clean_interval_ms = 100;
    config.stats.catalogue = Some(catalogue);
    let server = start(config).expect("start fjord");
    let http = server.metrics_addr().expect("metrics endpoint");
    let udp = server.local_addrs()[0];

    // news: 3 qBittorrent seeders (one finished its download here), 2 Transmission leechers;
    // skam: 1 libtorrent leecher; other (not catalogued): 4 µTorrent peers; one garbage id.
    let mut p = Peer::new(udp);
    p.announce_many(news, b"-qB4630-", 3, 0, AnnounceEvent::Started, 7000);
    p.announce(news, pid(b"-qB4630-", 9), 100, AnnounceEvent::Started, 7009);
    p.announce(news, pid(b"-qB4630-", 9), 0, AnnounceEvent::Completed, 7009);
    p.announce_many(news, b"-TR3000-", 2, 500, AnnounceEvent::Started, 7100);
    p.announce(skam, pid(b"-LT2080-", 0), 500, AnnounceEvent::Started, 7200);
    p.announce_many(other, b"-UT355W-", 4, 1, AnnounceEvent::None, 7300);
    p.announce(other, [0xee; 20], 1, AnnounceEvent::Started, 7400);
    const ANNOUNCES: u64 = 3 + 2 + 2 + 1 + 4 + 1;

    // Wait until /stats has it all: counters published, a clean cycle ranked the swarms after
    // the traffic, the catalogue sampled.
    let fetch = || -> serde_json::Value {
        let (status, body) = http_get(http, "/stats").expect("GET /stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    };
    let until = Instant::now() + DEADLINE;
    let stats = loop {
        let s = fetch();
        let ready = s["totals"]["requests"]["announce"] == ANNOUNCES
            && s["top_swarms"]["last_cycle"]["by_peers"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
            && s["top_swarms"]["last_cycle"]["by_peers"][0]["peers"] == 6
            && s["top_swarms"]["last_cycle"]["by_peers"][1]["peers"] == 5
            && s["catalogue"]["torrents"][0]["seeders"] == 4
            && s["catalogue"]["torrents"][0]["leechers"] == 2;
        if ready {
            break s;
        }
        assert!(
            Instant::now() < until,
            "/stats never showed the traffic: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100)); // polling interval
    };

    // What the traffic did, as /stats says it.
    let clients: Vec<(String, u64, u64)> = stats["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| {
            (
                as_text(&c["client"]),
                c["announces"].as_u64().unwrap(),
                c["started"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        clients,
        [
            ("qbittorrent".to_string(), 5, 4),
            ("utorrent".to_string(), 4, 0),
            ("transmission".to_string(), 2, 2),
            ("libtorrent".to_string(), 1, 1),
            ("other".to_string(), 1, 1),
        ]
    );
    assert_eq!(stats["clients"][0]["versions"][0]["version"], "4.6");
    let torrents = &stats["catalogue"]["torrents"];
    assert_eq!(torrents[0]["name"], TRICKY_NAME);
    assert_eq!(torrents[0]["completed"], 1);
    assert_eq!(torrents[1]["name"], "Skam");
    let top = &stats["top_swarms"]["last_cycle"];
    assert_eq!(top["by_peers"][0]["name"], TRICKY_NAME);
    assert_eq!(top["by_peers"][0]["peers"], 6);
    assert_eq!(top["by_peers"][1]["info_hash"], hex(&other));
    assert_eq!(top["by_peers"][1]["name"], serde_json::Value::Null);
    assert_eq!(top["by_completed"].as_array().map(Vec::len), Some(1));

    // The page, after its script ran (12 s of virtual time: at least two refreshes).
    let dom = without_scripts(&dump_dom(&browser, &format!("http://{http}/"), 12_000));
    let after = fetch();
    let shown = shown_stats(&dom);
    assert!(shown.len() > 30, "the page shows only {shown:?}:\n{dom}");

    // Every value the page shows is /stats' value at that path (the traffic stopped, so the
    // JSON is the same before and after the page loaded; only the uptime moves).
    for (path, text) in &shown {
        if path == "uptime_secs" || path == "announce_interval_secs" {
            continue; // formatted as durations; checked below
        }
        let want = as_text(at(&stats, path));
        assert_eq!(
            text.replace(',', ""),
            want,
            "the page shows {text:?} at {path}, /stats has {want:?}"
        );
        assert_eq!(as_text(at(&after, path)), want, "/stats moved at {path}");
    }
    // And it shows every client, torrent and ranked swarm /stats lists.
    let mut expected = vec![
        "totals.requests.announce".to_string(),
        "totals.started".to_string(),
        "totals.completed".to_string(),
        "totals.seeders".to_string(),
        "totals.leechers".to_string(),
    ];
    for (i, _) in clients.iter().enumerate() {
        expected.push(format!("clients.{i}.name"));
        expected.push(format!("clients.{i}.announces"));
    }
    for i in 0..2 {
        for k in ["name", "seeders", "leechers", "completed"] {
            expected.push(format!("catalogue.torrents.{i}.{k}"));
        }
    }
    for list in ["by_peers", "by_completed"] {
        for (i, swarm) in top[list].as_array().expect("ranking").iter().enumerate() {
            let label = if swarm["name"].is_null() {
                "info_hash"
            } else {
                "name"
            };
            for k in [label, "seeders", "leechers", "completed"] {
                expected.push(format!("top_swarms.last_cycle.{list}.{i}.{k}"));
            }
        }
    }
    for path in &expected {
        assert!(
            shown.contains_key(path),
            "the page does not show {path}:\n{dom}"
        );
    }
    // One bar per client, the largest full width.
    assert_eq!(dom.matches("class=\"bar\"").count(), clients.len(), "{dom}");
    assert!(
        dom.contains("data-client=\"qbittorrent\" data-width=\"100.0\""),
        "{dom}"
    );
    // The name with markup is text, not markup.
    assert!(
        dom.contains("Dagsrevyen &lt;i&gt;&amp;&lt;/i&gt; \"sport\""),
        "{dom}"
    );
    // The announce interval and the uptime, formatted.
    assert!(dom.contains("data-value=\"1800\">30m<"), "{dom}");
    let uptime: u64 = dom
        .split("id=\"uptime\"")
        .nth(1)
        .and_then(|s| s.split("data-value=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("uptime shown");
    assert!(uptime <= after["uptime_secs"].as_u64().unwrap(), "{uptime}");
    // It refreshed on its own.
    let renders: u32 = dom
        .split("data-renders=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("data-renders");
    assert!(renders >= 2, "the page rendered {renders} time(s) in 12 s");
    server.shutdown().expect("clean shutdown");
}

fn hex(b: &[u8; 20]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
