//! Integration tests: the real server on loopback sockets (port 0, no sleeps to wait), and the
//! `fjord` binary's command line.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    PeerId, ScrapeRequest, TransactionId,
};
use fjord_server::config::{AccessListMode, DEFAULT_CONFIG_TOML};
use fjord_server::counters::{Action, DropReason, ErrorReason, IpFamily};
use fjord_server::{Config, start};

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
const TIMEOUT: Duration = Duration::from_secs(5);

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "fjord-server-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

impl Client {
    fn new(bind: &str, server: SocketAddr) -> Client {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client { sock, server }
    }

    fn request(&self, bytes: &[u8]) -> (Vec<u8>, SocketAddr) {
        self.sock.send_to(bytes, self.server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = self
            .sock
            .recv_from(&mut buf)
            .expect("reply within the timeout");
        (buf[..n].to_vec(), from)
    }

    fn connect(&self) -> u64 {
        let mut b = [0u8; 16];
        ConnectRequest {
            transaction_id: TransactionId(0x1234),
        }
        .write(&mut b)
        .unwrap();
        let (r, _) = self.request(&b);
        assert_eq!(r.len(), 16);
        assert_eq!((u32_at(&r, 0), u32_at(&r, 4)), (0, 0x1234));
        u64::from_be_bytes(r[8..16].try_into().unwrap())
    }

    fn announce_bytes(id: u64, hash: [u8; 20], port: u16, left: i64) -> Vec<u8> {
        let req = AnnounceRequest {
            connection_id: ConnectionId(id),
            transaction_id: TransactionId(0x77),
            info_hash: InfoHash(hash),
            peer_id: PeerId([b'x'; 20]),
            downloaded: 0,
            left,
            uploaded: 0,
            event: AnnounceEvent::Started,
            ip_address: 0,
            key: 0,
            num_want: -1,
            port,
            options: AnnounceOptions::new(&[]),
        };
        let mut b = vec![0u8; 98];
        req.write(&mut b).unwrap();
        b
    }

    fn announce(&self, hash: [u8; 20], port: u16, left: i64) -> Vec<u8> {
        let id = self.connect();
        self.request(&Self::announce_bytes(id, hash, port, left)).0
    }

    fn scrape(&self, hashes: &[[u8; 20]]) -> Vec<u8> {
        let id = self.connect();
        let req = ScrapeRequest {
            connection_id: ConnectionId(id),
            transaction_id: TransactionId(5),
            info_hashes: hashes,
            truncated: false,
        };
        let mut b = vec![0u8; 16 + 20 * hashes.len()];
        req.write(&mut b).unwrap();
        self.request(&b).0
    }

    /// Sends and asserts that no reply comes within `wait`.
    fn expect_silence(&self, bytes: &[u8], wait: Duration) {
        self.sock.send_to(bytes, self.server).unwrap();
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 2048];
        let r = self.sock.recv_from(&mut buf);
        self.sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert!(r.is_err(), "unexpected reply of {} bytes", r.unwrap().0);
    }
}

fn ipv6_loopback_available() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

/// Polls `f` until true or a deadline (not a sleep-to-wait: it returns as soon as it holds).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_clients_see_each_other_over_ipv4_and_ipv6() {
    let mut listen = vec!["127.0.0.1:0".parse().unwrap()];
    let v6 = ipv6_loopback_available();
    if v6 {
        listen.push("[::1]:0".parse().unwrap());
    }
    let mut config = Config::for_tests(listen);
    config.workers = 2;
    let server = start(config).unwrap();
    let addrs = server.local_addrs();
    assert!(addrs.iter().all(|a| a.port() != 0), "{addrs:?}");
    let hash = [0xab; 20];

    let a = Client::new("127.0.0.1:0", addrs[0]);
    let b = Client::new("127.0.0.1:0", addrs[0]);
    let r = a.announce(hash, 1111, 0);
    assert_eq!(r.len(), 20, "first peer sees nobody");
    let r = b.announce(hash, 2222, 10);
    assert_eq!(r.len(), 26);
    assert_eq!(
        (u32_at(&r, 12), u32_at(&r, 16)),
        (1, 1),
        "leechers, seeders"
    );
    assert_eq!(&r[20..], &[127, 0, 0, 1, 0x04, 0x57], "a at 127.0.0.1:1111");
    let r = a.announce(hash, 1111, 0);
    assert_eq!(&r[20..], &[127, 0, 0, 1, 0x08, 0xae], "b at 127.0.0.1:2222");
    let r = b.scrape(&[hash, [0; 20], hash]);
    assert_eq!(r.len(), 8 + 36);
    assert_eq!((u32_at(&r, 8), u32_at(&r, 16)), (1, 1));
    assert_eq!((u32_at(&r, 20), u32_at(&r, 32)), (0, 1));

    if v6 {
        let c = Client::new("[::1]:0", addrs[1]);
        let d = Client::new("[::1]:0", addrs[1]);
        assert_eq!(
            c.announce(hash, 3333, 5).len(),
            20,
            "IPv6 swarm is separate"
        );
        let r = d.announce(hash, 4444, 5);
        assert_eq!(r.len(), 20 + 18);
        let mut expect = [0u8; 18];
        expect[15] = 1;
        expect[16..].copy_from_slice(&3333u16.to_be_bytes());
        assert_eq!(&r[20..], &expect);
    }

    // Junk is not answered.
    a.expect_silence(&[0u8; 10], Duration::from_millis(100));
    a.expect_silence(
        &Client::announce_bytes(42, hash, 1, 0),
        Duration::from_millis(100),
    );

    let counts = server.shutdown().unwrap();
    assert_eq!(counts.requests(Action::Connect, IpFamily::V4), 4);
    assert_eq!(counts.responses(Action::Connect, IpFamily::V4), 4);
    assert_eq!(counts.responses(Action::Announce, IpFamily::V4), 3);
    assert_eq!(counts.responses(Action::Scrape, IpFamily::V4), 1);
    assert_eq!(counts.drops(DropReason::Short), 1);
    assert_eq!(counts.drops(DropReason::BadConnectionId), 1);
    if v6 {
        assert_eq!(counts.responses(Action::Announce, IpFamily::V6), 2);
    }
    assert_eq!(
        counts.tx_packets,
        counts.responses.iter().flatten().sum::<u64>()
    );
    assert_eq!(
        counts.rx_packets,
        counts.requests.iter().flatten().sum::<u64>() + 1
    );
    assert!(counts.recv_batch.count > 0 && counts.send_batch.count > 0);
    assert_eq!(
        counts.announce_peers.count,
        counts.responses.iter().map(|r| r[0] + r[1]).nth(1).unwrap()
    );
}

#[test]
fn counters_are_published_while_running() {
    let server = start(Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()])).unwrap();
    let c = Client::new("127.0.0.1:0", server.local_addrs()[0]);
    c.connect();
    eventually("published connect counter", || {
        server.counters().responses(Action::Connect, IpFamily::V4) == 1
    });
    assert!(server.counters().rx_bytes >= 16);
    server.shutdown().unwrap();
}

#[test]
fn so_reuseport_spreads_clients_over_workers() {
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    config.workers = 2;
    let server = start(config).unwrap();
    // 32 source ports: the kernel hashes the 4-tuple, so all landing on one worker has
    // probability 2^-31.
    for _ in 0..32 {
        Client::new("127.0.0.1:0", server.local_addrs()[0]).connect();
    }
    let per_worker = |s: &fjord_server::RunningServer| -> Vec<u64> {
        s.worker_counters()
            .iter()
            .map(|c| c.responses(Action::Connect, IpFamily::V4))
            .collect()
    };
    eventually("all counted", || {
        per_worker(&server).iter().sum::<u64>() == 32
    });
    let counts = per_worker(&server);
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    server.shutdown().unwrap();
}

#[test]
fn reply_leaves_from_the_address_the_request_was_sent_to() {
    let server = start(Config::for_tests(vec!["0.0.0.0:0".parse().unwrap()])).unwrap();
    let port = server.local_addrs()[0].port();
    for target in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    ] {
        let dst = SocketAddr::V4(SocketAddrV4::new(target, port));
        let c = Client::new("127.0.0.1:0", dst);
        let mut b = [0u8; 16];
        ConnectRequest {
            transaction_id: TransactionId(1),
        }
        .write(&mut b)
        .unwrap();
        let (r, from) = c.request(&b);
        assert_eq!(r.len(), 16);
        assert_eq!(from, dst, "reply source");
    }
    server.shutdown().unwrap();
    if ipv6_loopback_available() {
        let server = start(Config::for_tests(vec!["[::]:0".parse().unwrap()])).unwrap();
        let port = server.local_addrs()[0].port();
        let dst: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let c = Client::new("[::1]:0", dst);
        let mut b = [0u8; 16];
        ConnectRequest {
            transaction_id: TransactionId(1),
        }
        .write(&mut b)
        .unwrap();
        let (_, from) = c.request(&b);
        assert_eq!(from, dst);
        // IPV6_V6ONLY: an IPv4 client cannot reach the IPv6 socket.
        let v4 = Client::new("127.0.0.1:0", SocketAddr::from(([127, 0, 0, 1], port)));
        v4.expect_silence(&b, Duration::from_millis(100));
        server.shutdown().unwrap();
    }
}

#[test]
fn access_list_reloads_on_request_and_on_file_change() {
    let dir = TempDir::new("acl");
    let path = dir.path().join("allow.txt");
    std::fs::write(&path, format!("# allowed\n{}\n", "01".repeat(20))).unwrap();
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    config.access_list.mode = AccessListMode::Allow;
    config.access_list.path = Some(path.clone());
    config.access_list.poll_interval_ms = 10;
    let server = start(config).unwrap();
    let c = Client::new("127.0.0.1:0", server.local_addrs()[0]);
    assert_eq!(u32_at(&c.announce([1; 20], 1, 1), 0), 1);
    let r = c.announce([2; 20], 1, 1);
    assert_eq!(u32_at(&r, 0), 3, "denied: error reply");
    assert_eq!(u32_at(&r, 4), 0x77, "tid echoed");

    // The SIGHUP path: an explicit reload.
    std::fs::write(&path, format!("{}\n", "02".repeat(20))).unwrap();
    let generation = server.access_list_generation();
    server.reload_access_list().unwrap();
    assert!(server.access_list_generation() > generation);
    assert_eq!(u32_at(&c.announce([2; 20], 1, 1), 0), 1);
    assert_eq!(u32_at(&c.announce([1; 20], 1, 1), 0), 3);

    // A malformed file: refused with its line number, the previous list stays.
    std::fs::write(&path, format!("{}\nxyz\n", "03".repeat(20))).unwrap();
    let e = server.reload_access_list().unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    assert_eq!(server.access_list().failed_reloads(), 1);
    assert_eq!(server.access_list().current().len(), 1);
    assert_eq!(u32_at(&c.announce([2; 20], 1, 1), 0), 1);

    // The file-watch path (maintenance thread polls the mtime every 10 ms).
    let generation = server.access_list_generation();
    // Different length, so the change is seen even where mtime granularity is coarse.
    std::fs::write(&path, format!("{}\n{}\n", "04".repeat(20), "05".repeat(20))).unwrap();
    eventually("file change picked up", || {
        server.access_list_generation() > generation
    });
    assert_eq!(u32_at(&c.announce([4; 20], 1, 1), 0), 1);
    assert_eq!(u32_at(&c.announce([2; 20], 1, 1), 0), 3);
    let counts = server.shutdown().unwrap();
    assert_eq!(counts.errors_sent(ErrorReason::AccessDenied), 3);
}

#[test]
fn a_dead_worker_is_reported_and_shutdown_fails() {
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    config.workers = 2;
    let server = start(config).unwrap();
    assert_eq!(server.wait_failure(Duration::from_millis(10)), None);
    server.inject_worker_panic_for_tests(1);
    let msg = server.wait_failure(TIMEOUT).expect("failure reported");
    assert!(msg.contains("worker 1 panicked"), "{msg}");
    let e = server.shutdown().unwrap_err().to_string();
    assert!(e.contains("worker 1 panicked"), "{e}");
}

#[test]
fn explicitly_configured_unbindable_address_fails_start() {
    // 192.0.2.1 (TEST-NET-1) is not a local address.
    let e = start(Config::for_tests(vec!["192.0.2.1:0".parse().unwrap()])).unwrap_err();
    assert!(format!("{e:#}").contains("192.0.2.1"), "{e:#}");
    let mut bad = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    bad.protocol.max_num_want_v4 = 500;
    assert!(
        start(bad)
            .unwrap_err()
            .to_string()
            .contains("protocol.max_num_want_v4")
    );
}

// --- the binary -------------------------------------------------------------------------

#[test]
fn print_config_prints_the_defaults() {
    let out = Command::new(FJORD).arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, DEFAULT_CONFIG_TOML);
    assert_eq!(Config::from_toml_str(&text).unwrap(), Config::default());
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let dir = TempDir::new("badcfg");
    for (body, needle) in [
        ("workers = 2\nlisten_port = 5\n", "listen_port"),
        (
            "[protocol]\nmax_num_want_v6 = 100\n",
            "protocol.max_num_want_v6",
        ),
        ("[access_list]\nmode = \"allow\"\n", "access_list.path"),
    ] {
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, body).unwrap();
        let out = Command::new(FJORD).arg("-c").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{body}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{body}: {err}");
    }
    let out = Command::new(FJORD)
        .args(["--workers", "many"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(FJORD)
        .arg("-c")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its "listening" line.
fn spawn_fjord(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(FJORD)
        .args(args)
        // Never the fixed default metrics port: tests run concurrently.
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("fjord listening on udp ")
        .unwrap_or_else(|| panic!("{line:?}"));
    (Child(child), addr.parse().unwrap())
}

fn signal(child: &Child, sig: Signal) {
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "fjord did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn binary_serves_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = TempDir::new("bin");
    let list = dir.path().join("deny.txt");
    std::fs::write(&list, "").unwrap();
    // File polling off: only SIGHUP can reload the list.
    let config = dir.path().join("fjord.toml");
    std::fs::write(
        &config,
        format!(
            "[access_list]\nmode = \"deny\"\npath = {:?}\npoll_interval_ms = 0\n",
            list.to_str().unwrap()
        ),
    )
    .unwrap();
    let (mut child, addr) = spawn_fjord(&[
        "-c",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    let c = Client::new("127.0.0.1:0", addr);
    assert_eq!(u32_at(&c.announce([7; 20], 1, 1), 0), 1);
    std::fs::write(&list, format!("{}\n", "07".repeat(20))).unwrap();
    assert_eq!(
        u32_at(&c.announce([7; 20], 1, 1), 0),
        1,
        "no reload without SIGHUP"
    );
    signal(&child, Signal::SIGHUP);
    eventually("deny list in force after SIGHUP", || {
        u32_at(&c.announce([7; 20], 1, 1), 0) == 3
    });
    signal(&child, Signal::SIGTERM);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn binary_drops_privileges_when_run_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: privilege dropping cannot be exercised here");
        return;
    }
    let (child, addr) = spawn_fjord(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--user",
        "nobody",
    ]);
    let c = Client::new("127.0.0.1:0", addr);
    c.connect();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert!(uids.iter().all(|u| *u != "0"), "{uid_line}");
    let gid_line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(
        !gid_line.split_whitespace().skip(1).any(|g| g == "0"),
        "{gid_line}"
    );
    let _ = IpAddr::V4(Ipv4Addr::LOCALHOST);
}

#[test]
fn metrics_address_in_use_fails_the_start_before_serving() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    config.metrics.enabled = true;
    config.metrics.listen = taken.local_addr().unwrap();
    let err = start(config).expect_err("metrics address is taken");
    assert!(
        format!("{err:#}").contains("cannot serve metrics"),
        "{err:#}"
    );
}

#[test]
fn metrics_endpoint_serves_the_running_server_and_health_follows_workers() {
    let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(config).unwrap();
    let c = Client::new("127.0.0.1:0", server.local_addrs()[0]);
    assert_eq!(u32_at(&c.announce([9; 20], 1, 1), 0), 1);
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/health").starts_with("HTTP/1.1 200 OK"));
    eventually("announce visible in /metrics", || {
        get("/metrics").contains("fjord_requests_total{action=\"announce\",ip_version=\"4\"} 1")
    });
    assert!(get("/metrics").contains("fjord_torrents{ip_version=\"4\"} 1"));
    // A dead worker turns the health check red.
    server.inject_worker_panic_for_tests(0);
    assert!(server.wait_failure(TIMEOUT).is_some());
    assert!(get("/health").starts_with("HTTP/1.1 503"));
    assert!(server.shutdown().is_err());
}
