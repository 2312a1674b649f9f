//! Real BitTorrent clients against the `fjord` binary.
//!
//! - `libtorrent_seeder_to_leecher_via_fjord`: a libtorrent seeder and leecher (Debian's
//!   `python3-libtorrent`, driven by `real_clients/lt_swarm.py`) whose only peer source is fjord;
//!   the leecher must download and verify a few hundred KB, then scrape fjord.
//! - `transmission_announces_to_fjord`: `transmission-daemon` announces a torrent to fjord while
//!   a fake seeder (a raw BEP 15 announce sent from this test) is in the swarm; Transmission's
//!   tracker status must show the announce succeeded with one peer and the scrape counts, and
//!   fjord's own scrape must see Transmission arrive as a leecher and leave on `stopped`.
//!
//! Both tests also read fjord's statistics while the clients are in the swarm: the client
//! counters must name libtorrent and Transmission (`/stats` and `/metrics`), and the
//! libtorrent torrent, catalogued under a name once its info hash is known, must show the
//! leecher's download as completed 1 in `/stats` and, for the IPv4 swarm, in a real Prometheus
//! server (Debian package `prometheus`) scraping fjord, read back through its query API.
//!
//! Both need system packages (see `real_clients/README.md`). With `CI=true` a missing client is a
//! failure; otherwise the test prints a note and passes. Only loopback addresses are used, every
//! wait is bounded, and every process and temporary directory is cleaned up on drop.
//!
//! `FJORD_REAL_CLIENTS_TRACKER=python` runs the same tests against the Python logging tracker in
//! `crates/protocol/testdata/captured/capture_tracker.py --swarm` instead of fjord, to tell a
//! client-side problem from a fjord bug.

use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
/// Debian's Python: the `libtorrent` module is installed for it, not for other Pythons on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// fjord's configuration for these tests (`-c`); `--listen`, `--metrics-listen 127.0.0.1:0`
/// and `--workers` are flags. The catalogue (`{catalogue}`) is polled every 100 ms, and the
/// maintenance thread samples it every 200 ms.
const FJORD_CONFIG: &str = "log_level = \"warn\"\n\n[store]\nclean_interval_ms = 200\n\n\
                            [access_list]\npoll_interval_ms = 100\n\n[stats]\ncatalogue = {catalogue}\n";

mod support;

// ---------------------------------------------------------------------------------------------
// Skipping outside CI, failing in CI.

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns `true` (the caller returns early) when `what` is missing outside CI; panics in CI.
fn missing_client(what: &str) -> bool {
    let msg = format!(
        "{what} is not available; install the Debian packages python3-libtorrent, \
         transmission-cli and transmission-daemon (see crates/server/tests/real_clients/README.md)"
    );
    if in_ci() {
        panic!("CI=true and {msg}");
    }
    eprintln!("SKIPPED (not in CI): {msg}");
    true
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Processes and temporary directories cleaned up on drop.

/// A child process in its own process group, killed with its whole group on drop.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::spawn_with_stdin(name, cmd.stdin(Stdio::null()))
    }

    /// [`Proc::spawn`] keeping the stdin the caller gave `cmd` (e.g. a pipe).
    fn spawn_with_stdin(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
    }

    /// `true` once the process has exited (and is reaped); never panics (used by `drop`).
    fn try_wait_quiet(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Once reaped, the id may be reused by a stranger: never signal it then.
        if self.try_wait_quiet() {
            return;
        }
        // Kill the whole group (helpers may have children); std has no killpg, `kill` does.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "fjord-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    let _ = fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn log_file(dir: &Path, name: &str) -> (PathBuf, fs::File) {
    let path = dir.join(name);
    let file = fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    (path, file)
}

// ---------------------------------------------------------------------------------------------
// Free loopback ports (a separate process cannot be given port 0).

/// A UDP port free on `ip` now, never handed out before by this process (fjord binds with
/// `SO_REUSEPORT`, so two trackers given the same port would both start and share packets).
fn free_udp_port(ip: IpAddr) -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..50 {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind UDP {ip}:0: {e}"));
        let port = sock.local_addr().expect("local_addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh UDP port on {ip} after 50 tries");
}

/// A port free for both TCP and UDP on 127.0.0.1 (a BitTorrent client listens on both).
fn free_tcp_udp_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind((LOOPBACK, 0)).expect("bind a TCP socket on 127.0.0.1:0");
        let port = tcp.local_addr().expect("local_addr").port();
        if UdpSocket::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 after 50 tries");
}

// ---------------------------------------------------------------------------------------------
// A minimal BEP 15 client, to probe readiness and to play a fake peer.

struct TrackerClient {
    sock: UdpSocket,
    connection_id: Option<u64>,
    next_tid: u32,
}

#[derive(Debug)]
struct AnnounceReply {
    interval: u32,
    leechers: u32,
    seeders: u32,
    peers: Vec<SocketAddrV4>,
}

/// One scrape row, in wire order.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct ScrapeRow {
    seeders: u32,
    completed: u32,
    leechers: u32,
}

impl TrackerClient {
    fn new(tracker: SocketAddr) -> TrackerClient {
        let sock = UdpSocket::bind((tracker.ip(), 0)).expect("bind client socket");
        sock.connect(tracker).expect("connect client socket");
        TrackerClient {
            sock,
            connection_id: None,
            next_tid: 0x5eed_0000,
        }
    }

    /// Sends `req` (whose bytes 12..16 are the transaction id) and returns the first reply that
    /// echoes the transaction id, trying `tries` times with `timeout` each.
    fn exchange(&mut self, req: &[u8], tries: u32, timeout: Duration) -> io::Result<Vec<u8>> {
        self.sock.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 2048];
        let mut last = io::Error::new(io::ErrorKind::TimedOut, "no reply");
        for _ in 0..tries {
            self.sock.send(req)?;
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                match self.sock.recv(&mut buf) {
                    Ok(n) if n >= 8 && buf[4..8] == req[12..16] => return Ok(buf[..n].to_vec()),
                    Ok(_) => continue, // a stale reply
                    // ECONNREFUSED: nothing listens yet (ICMP port unreachable on loopback).
                    Err(e) => {
                        last = e;
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn tid(&mut self) -> u32 {
        self.next_tid = self.next_tid.wrapping_add(1);
        self.next_tid
    }

    fn connect(&mut self, tries: u32, timeout: Duration) -> io::Result<u64> {
        let tid = self.tid();
        let mut req = Vec::with_capacity(16);
        req.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        let reply = self.exchange(&req, tries, timeout)?;
        if reply.len() != 16 || reply[0..4] != [0, 0, 0, 0] {
            return Err(io::Error::other(format!(
                "bad connect reply ({} bytes): {reply:02x?}",
                reply.len()
            )));
        }
        let id = u64::from_be_bytes(reply[8..16].try_into().expect("8 bytes"));
        self.connection_id = Some(id);
        Ok(id)
    }

    fn connection_id(&mut self) -> u64 {
        match self.connection_id {
            Some(id) => id,
            None => self
                .connect(5, Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("BEP 15 connect to the tracker failed: {e}")),
        }
    }

    /// Announces `port` for `info_hash`; `left == 0` makes this peer a seeder.
    fn announce(
        &mut self,
        info_hash: [u8; 20],
        peer_id: [u8; 20],
        left: i64,
        event: u32,
        port: u16,
    ) -> AnnounceReply {
        let conn = self.connection_id();
        let tid = self.tid();
        let mut req = Vec::with_capacity(98);
        req.extend_from_slice(&conn.to_be_bytes());
        req.extend_from_slice(&1u32.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        req.extend_from_slice(&info_hash);
        req.extend_from_slice(&peer_id);
        req.extend_from_slice(&0i64.to_be_bytes()); // downloaded
        req.extend_from_slice(&left.to_be_bytes());
        req.extend_from_slice(&0i64.to_be_bytes()); // uploaded
        req.extend_from_slice(&event.to_be_bytes());
        req.extend_from_slice(&0u32.to_be_bytes()); // IP: use the source
        req.extend_from_slice(&0x00c0_ffeeu32.to_be_bytes()); // key
        req.extend_from_slice(&(-1i32).to_be_bytes()); // num_want: default
        req.extend_from_slice(&port.to_be_bytes());
        let reply = self
            .exchange(&req, 5, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("announce to the tracker got no reply: {e}"));
        assert!(
            reply.len() >= 20
                && reply[0..4] == [0, 0, 0, 1]
                && (reply.len() - 20).is_multiple_of(6),
            "bad announce reply ({} bytes): {reply:02x?}",
            reply.len()
        );
        let word = |i: usize| u32::from_be_bytes(reply[i..i + 4].try_into().expect("4 bytes"));
        let peers = reply[20..]
            .chunks_exact(6)
            .map(|c| {
                SocketAddrV4::new(
                    Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                    u16::from_be_bytes([c[4], c[5]]),
                )
            })
            .collect();
        AnnounceReply {
            interval: word(8),
            leechers: word(12),
            seeders: word(16),
            peers,
        }
    }

    fn scrape(&mut self, info_hash: [u8; 20]) -> ScrapeRow {
        let conn = self.connection_id();
        let tid = self.tid();
        let mut req = Vec::with_capacity(36);
        req.extend_from_slice(&conn.to_be_bytes());
        req.extend_from_slice(&2u32.to_be_bytes());
        req.extend_from_slice(&tid.to_be_bytes());
        req.extend_from_slice(&info_hash);
        let reply = self
            .exchange(&req, 5, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("scrape of the tracker got no reply: {e}"));
        assert!(
            reply.len() == 20 && reply[0..4] == [0, 0, 0, 2],
            "bad scrape reply ({} bytes): {reply:02x?}",
            reply.len()
        );
        let word = |i: usize| u32::from_be_bytes(reply[i..i + 4].try_into().expect("4 bytes"));
        ScrapeRow {
            seeders: word(8),
            completed: word(12),
            leechers: word(16),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tracker under test.

struct Tracker {
    addr: SocketAddr,
    /// fjord's metrics endpoint (`/stats`, `/metrics`); `None` for the Python tracker.
    metrics: Option<SocketAddr>,
    /// fjord's catalogue file.
    catalogue: PathBuf,
    log: PathBuf,
    proc: Proc,
}

impl Tracker {
    /// Starts fjord (or the Python tracker, see the module docs) on a free port of the loopback
    /// address `ip` and waits until it answers a BEP 15 connect.
    fn start(dir: &Path, ip: IpAddr) -> Tracker {
        let python = std::env::var("FJORD_REAL_CLIENTS_TRACKER").is_ok_and(|v| v == "python");
        let mut last_log = String::new();
        for attempt in 1..=5 {
            let port = free_udp_port(ip);
            let addr = SocketAddr::from((ip, port));
            let (log, file) = log_file(dir, &format!("tracker-{attempt}.log"));
            let stderr = file.try_clone().expect("clone log file");
            let mut cmd = if python {
                let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../protocol/testdata/captured/capture_tracker.py");
                let mut cmd = Command::new(DEBIAN_PYTHON);
                cmd.arg(script)
                    .arg("--swarm")
                    .arg("--bind")
                    .arg(ip.to_string())
                    .arg("--port")
                    .arg(port.to_string());
                cmd.arg("--out").arg(dir.join("tracker-capture"));
                cmd.args(["--seconds", "300"]);
                cmd
            } else {
                // No metrics exporter: its fixed default port would collide between the trackers
                // these tests (and others) run at the same time.
                let config = dir.join("fjord.toml");
                let catalogue = format!("{:?}", dir.join("catalogue.txt").display().to_string());
                fs::write(&config, FJORD_CONFIG.replace("{catalogue}", &catalogue))
                    .expect("write fjord.toml");
                fs::write(dir.join("catalogue.txt"), "# filled in by the test\n")
                    .expect("write catalogue.txt");
                let mut cmd = Command::new(FJORD);
                cmd.arg("-c")
                    .arg(&config)
                    .arg("--listen")
                    .arg(addr.to_string())
                    .args(["--metrics-listen", "127.0.0.1:0", "--workers", "1"]);
                cmd
            };
            cmd.stdout(file).stderr(stderr);
            let mut proc = Proc::spawn("tracker", &mut cmd);
            match wait_ready(addr, &mut proc, Duration::from_secs(10)) {
                Ok(()) => {
                    let metrics = (!python).then(|| metrics_addr(&log, &mut proc));
                    return Tracker {
                        addr,
                        metrics,
                        catalogue: dir.join("catalogue.txt"),
                        log,
                        proc,
                    };
                }
                Err(why) => {
                    let running = proc.try_wait().is_none();
                    drop(proc);
                    last_log = read_lossy(&log);
                    // Only an exit (e.g. the port was taken meanwhile) is worth another port.
                    assert!(
                        !running,
                        "the tracker ({cmd:?}) runs but does not answer: {why}; log:\n{last_log}"
                    );
                    eprintln!("tracker attempt {attempt} ({cmd:?}): {why}; log:\n{last_log}");
                }
            }
        }
        panic!("the tracker did not start in 5 attempts; last log:\n{last_log}");
    }

    /// The tracker's output so far, for failure messages.
    fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// fjord's `/stats` (panics for the Python tracker, which has none).
    fn stats(&self) -> serde_json::Value {
        let addr = self.metrics.expect("fjord's metrics endpoint");
        let (status, body) = support::http_get(addr, "/stats").expect("GET /stats");
        assert_eq!(status, 200, "/stats: {body}");
        serde_json::from_str(&body).expect("/stats JSON")
    }

    /// Polls `/stats` until `check` accepts it (bounded); returns it.
    fn stats_until(
        &mut self,
        what: &str,
        mut check: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.stats();
            if check(&s) {
                return s;
            }
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "fjord's /stats did not show {what} within 30 s: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100)); // polling interval
        }
    }

    /// Writes the catalogue and waits until fjord has loaded it.
    fn catalogue(&mut self, text: &str, entries: usize) {
        fs::write(&self.catalogue, text).expect("write catalogue");
        self.stats_until("the catalogue loaded", |s| {
            s["catalogue"]["entries"] == entries && s["catalogue"]["last_reload_ok"] == true
        });
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_wait() {
            panic!("the tracker exited ({status}); log:\n{}", self.log());
        }
    }
}

/// fjord's "fjord metrics on http://ADDR/metrics" line from its log (printed right after the
/// sockets are bound, so it may trail the first connect reply by a moment).
fn metrics_addr(log: &Path, proc: &mut Proc) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = read_lossy(log);
        if let Some(addr) = text.lines().find_map(|l| {
            l.strip_prefix("fjord metrics on http://")
                .and_then(|r| r.strip_suffix("/metrics"))
                .and_then(|a| a.parse().ok())
        }) {
            return addr;
        }
        assert!(
            proc.try_wait().is_none() && Instant::now() < deadline,
            "fjord printed no metrics address: {text}"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling interval
    }
}

/// Polls `addr` with BEP 15 connect requests until one is answered, the process exits, or
/// `limit` passes.
fn wait_ready(addr: SocketAddr, proc: &mut Proc, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut client = TrackerClient::new(addr);
    loop {
        if let Some(status) = proc.try_wait() {
            return Err(format!("exited before answering ({status})"));
        }
        match client.connect(1, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no connect reply within {limit:?}: {e}"));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Nothing bound yet: the refusal comes back at once, so pace the retries.
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for running client tools.

fn run_bounded(what: &str, cmd: &mut Command, limit: Duration, dir: &Path) -> Output {
    let (out_path, out) = log_file(dir, "cmd.out");
    let (err_path, err) = log_file(dir, "cmd.err");
    cmd.stdout(out).stderr(err);
    let mut proc = Proc::spawn(what, cmd);
    let status = proc
        .wait_timeout(limit)
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}: {cmd:?}"));
    Output {
        status,
        stdout: fs::read(out_path).unwrap_or_default(),
        stderr: fs::read(err_path).unwrap_or_default(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_hex20(hex: &str) -> Option<[u8; 20]> {
    let hex = hex.trim();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Deterministic pseudo-random bytes (xorshift64*), so the payload is not trivially compressible.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------------
// libtorrent

#[test]
fn libtorrent_seeder_to_leecher_via_fjord() {
    libtorrent_swarm(IpAddr::V4(LOOPBACK));
}

/// The same swarm over IPv6: fjord on `[::1]` must hand out 18-byte peer entries.
#[test]
fn libtorrent_seeder_to_leecher_via_fjord_ipv6() {
    if let Err(e) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        // Not a missing client: the machine has no IPv6 loopback (some containers).
        eprintln!("SKIPPED: cannot bind [::1] ({e}); the IPv6 swarm needs an IPv6 loopback");
        return;
    }
    libtorrent_swarm(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

fn libtorrent_swarm(ip: IpAddr) {
    let has_lt = Path::new(DEBIAN_PYTHON).is_file()
        && Command::new(DEBIAN_PYTHON)
            .args(["-c", "import libtorrent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !has_lt && missing_client("python3-libtorrent (import libtorrent in /usr/bin/python3)") {
        return;
    }
    let dir = TempDir::new("lt");
    let mut tracker = Tracker::start(dir.path(), ip);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_clients/lt_swarm.py");
    let started = Instant::now();
    // --hold: the sessions stay in the swarm after the download until stdin closes, so that
    // fjord's statistics can be read while the swarm exists.
    let (out_path, out_file) = log_file(dir.path(), "lt_swarm.out");
    let (err_path, err_file) = log_file(dir.path(), "lt_swarm.err");
    let mut swarm = Proc::spawn_with_stdin(
        "lt_swarm.py",
        Command::new(DEBIAN_PYTHON)
            .arg(&script)
            .arg(tracker.addr.to_string())
            .args(["45", "--hold"])
            .stdin(Stdio::piped())
            .stdout(out_file)
            .stderr(err_file),
    );
    let report = |tracker: &Tracker, status: &str| {
        format!(
            "lt_swarm.py {status} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}--- tracker log ---\n{}",
            started.elapsed(),
            read_lossy(&out_path),
            read_lossy(&err_path),
            tracker.log()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(55);
    while !read_lossy(&out_path).contains("\nHOLDING") {
        if let Some(status) = swarm.try_wait() {
            panic!(
                "libtorrent swarm failed: {}",
                report(&tracker, &format!("exited {status}"))
            );
        }
        assert!(
            Instant::now() < deadline,
            "libtorrent swarm did not finish: {}",
            report(&tracker, "still running")
        );
        std::thread::sleep(Duration::from_millis(50)); // polling interval
    }
    if tracker.metrics.is_some() {
        let stdout = read_lossy(&out_path);
        let info_hash = stdout
            .lines()
            .find_map(|l| l.strip_prefix("torrent ")?.split(':').next())
            .unwrap_or_else(|| panic!("no torrent line: {}", report(&tracker, "holding")))
            .to_string();
        libtorrent_statistics(&mut tracker, &info_hash, ip);
    }
    // Closing stdin lets the script leave the swarm and exit.
    drop(swarm.child.stdin.take());
    let status = swarm
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("lt_swarm.py did not exit: {}", report(&tracker, "held")));
    let stdout = read_lossy(&out_path);
    let report = report(&tracker, &format!("exited {status}"));
    tracker.assert_alive();
    assert!(status.success(), "libtorrent swarm failed: {report}");
    let ok = stdout
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("no OK line: {report}"));
    // "OK leecher downloaded N bytes via the tracker; scrape S seeders L leechers"
    let words: Vec<&str> = ok.split_whitespace().collect();
    let seeders: u32 = words
        .iter()
        .position(|w| *w == "seeders")
        .and_then(|i| words[i - 1].parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the scrape counts: {report}"));
    assert!(
        seeders >= 1,
        "fjord's scrape (through libtorrent) counted no seeder although a seeder announced left=0: {report}"
    );
    eprintln!(
        "{stdout}libtorrent test ({ip}) took {:?}",
        started.elapsed()
    );
}

/// While the libtorrent seeder and leecher are in the swarm: the client counters name
/// libtorrent, and the torrent, catalogued now, shows the download completed once — in
/// `/stats` and (IPv4) through a real Prometheus server's query API.
fn libtorrent_statistics(tracker: &mut Tracker, info_hash: &str, ip: IpAddr) {
    let name = format!(
        "fjord real-clients test over IPv{}",
        if ip.is_ipv4() { 4 } else { 6 }
    );
    tracker.catalogue(&format!("{info_hash} {name}\n"), 1);
    let stats = tracker.stats_until("the catalogued torrent completed once", |s| {
        let t = &s["catalogue"]["torrents"][0];
        t["name"] == name.as_str() && t["completed"] == 1 && t["seeders"] == 2
    });
    let t = &stats["catalogue"]["torrents"][0];
    assert_eq!(
        (&t["info_hash"], &t["leechers"]),
        (
            &serde_json::Value::from(info_hash),
            &serde_json::Value::from(0)
        ),
        "{stats:#}"
    );
    // Two sessions announced `started` with libtorrent's own peer id (-LT2080- for 2.0.8).
    let clients = stats["clients"].as_array().expect("clients");
    let lt = clients
        .iter()
        .find(|c| c["client"] == "libtorrent")
        .unwrap_or_else(|| panic!("no libtorrent in the client counters: {stats:#}"));
    assert!(
        lt["started"].as_u64() >= Some(2) && lt["announces"].as_u64() >= Some(3),
        "libtorrent's announces (seeder started, leecher started and completed): {lt:#}"
    );
    assert!(
        lt["versions"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "libtorrent 2.x: {lt:#}"
    );
    assert_eq!(clients.len(), 1, "only libtorrent announced: {stats:#}");
    let ranked = &stats["top_swarms"]["in_progress"]["by_completed"][0];
    assert_eq!(ranked["name"], name.as_str(), "{stats:#}");
    if ip.is_ipv6() {
        return;
    }
    let metrics = tracker.metrics.expect("fjord's metrics endpoint");
    let Some(prom) = support::Prometheus::start(metrics, None) else {
        return; // not installed, outside CI
    };
    let query = format!("fjord_torrent_completed{{torrent=\"{name}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let completed = prom.query(&query);
        let announces = prom.query("fjord_client_announces_total{client=\"libtorrent\"}");
        if completed == Some(1.0) && announces.is_some_and(|a| a >= 3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never read {query} = 1 (got {completed:?}) and libtorrent's announces \
             (got {announces:?})"
        );
        std::thread::sleep(Duration::from_millis(250)); // polling interval
    }
}

// ---------------------------------------------------------------------------------------------
// Transmission

/// A `transmission-daemon` in the foreground with its own config dir, killed on drop.
struct Transmission {
    rpc: String,
    peer_port: u16,
    log: PathBuf,
    dir: PathBuf,
    proc: Proc,
}

impl Transmission {
    fn start(dir: &Path) -> Transmission {
        let config = dir.join("config");
        let download = dir.join("download");
        fs::create_dir_all(&config).expect("create config dir");
        fs::create_dir_all(&download).expect("create download dir");
        let rpc_port = free_tcp_udp_port();
        let peer_port = free_tcp_udp_port();
        let settings = format!(
            r#"{{
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "peer-port": {peer_port}, "peer-port-random-on-start": false,
  "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
  "rpc-enabled": true, "rpc-bind-address": "127.0.0.1", "rpc-port": {rpc_port},
  "rpc-authentication-required": false, "rpc-whitelist-enabled": false,
  "rpc-host-whitelist-enabled": false, "download-dir": "{download}",
  "incomplete-dir-enabled": false, "watch-dir-enabled": false, "blocklist-enabled": false,
  "message-level": 3
}}"#,
            download = download.display()
        );
        fs::write(config.join("settings.json"), settings).expect("write settings.json");
        let log = dir.join("transmission.log");
        let (_, out) = log_file(dir, "transmission.out");
        let err = out.try_clone().expect("clone");
        let proc = Proc::spawn(
            "transmission-daemon",
            Command::new("transmission-daemon")
                .arg("-f")
                .arg("-g")
                .arg(&config)
                .arg("-e")
                .arg(&log)
                .stdout(out)
                .stderr(err),
        );
        let mut t = Transmission {
            rpc: format!("127.0.0.1:{rpc_port}"),
            peer_port,
            log,
            dir: dir.to_owned(),
            proc,
        };
        // Ready when the RPC answers (bounded).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = t.proc.try_wait() {
                panic!(
                    "transmission-daemon exited ({status}):\n{}\n{}",
                    read_lossy(&dir.join("transmission.out")),
                    read_lossy(&t.log)
                );
            }
            let out = t.remote(&["-l"]);
            if out.status.success() {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "transmission-daemon RPC on {} not ready within 15 s: {}",
                t.rpc,
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn remote(&self, args: &[&str]) -> Output {
        let dir = self.dir.join("remote");
        fs::create_dir_all(&dir).expect("create dir");
        run_bounded(
            "transmission-remote",
            Command::new("transmission-remote")
                .arg(&self.rpc)
                .args(args),
            Duration::from_secs(10),
            &dir,
        )
    }

    fn tracker_info(&self) -> String {
        text(&self.remote(&["-t", "1", "-it"]).stdout)
    }

    fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

/// The number after `prefix` in `s`, e.g. `number_after("Got a list of 1 peers", "Got a list of ")`.
fn number_after(s: &str, prefix: &str) -> Option<u32> {
    let rest = &s[s.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn transmission_announces_to_fjord() {
    for tool in [
        "transmission-daemon",
        "transmission-remote",
        "transmission-create",
        "transmission-show",
    ] {
        if on_path(tool).is_none() && missing_client(tool) {
            return;
        }
    }
    let started = Instant::now();
    let dir = TempDir::new("tr");
    let mut tracker = Tracker::start(dir.path(), IpAddr::V4(LOOPBACK));

    // A torrent of 200 KB announcing only to fjord.
    let payload = dir.path().join("payload.bin");
    fs::write(&payload, pseudo_random(200 * 1024, 0x00f1_07d0)).expect("write payload");
    let torrent = dir.path().join("payload.torrent");
    let url = format!("udp://{}/announce", tracker.addr);
    let out = run_bounded(
        "transmission-create",
        Command::new("transmission-create")
            .arg("-o")
            .arg(&torrent)
            .args(["-t", &url, "-s", "16"])
            .arg(&payload),
        Duration::from_secs(20),
        dir.path(),
    );
    assert!(
        out.status.success(),
        "transmission-create failed: {}",
        text(&out.stderr)
    );
    let out = run_bounded(
        "transmission-show",
        Command::new("transmission-show").arg(&torrent),
        Duration::from_secs(10),
        dir.path(),
    );
    let show = text(&out.stdout);
    let info_hash = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("Hash:"))
        .and_then(parse_hex20)
        .unwrap_or_else(|| panic!("no info hash in transmission-show output:\n{show}"));

    // A fake seeder (nobody listens on its port; Transmission only has to hear of it).
    let fake_port = free_tcp_udp_port();
    let mut fake = TrackerClient::new(tracker.addr);
    let reply = fake.announce(info_hash, *b"-FJ0001-fakeseeder01", 0, 2, fake_port);
    assert!(
        reply.seeders <= 1 && reply.leechers == 0 && reply.peers.is_empty(),
        "the fake seeder, alone in a new swarm, got {reply:?}"
    );
    assert!(reply.interval > 0, "announce interval 0: {reply:?}");

    let transmission = Transmission::start(dir.path());
    let torrent_arg = torrent.to_string_lossy().into_owned();
    let out = transmission.remote(&["-a", &torrent_arg]);
    assert!(
        out.status.success(),
        "transmission-remote -a failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Transmission's view: announce succeeded with the fake seeder in the list, scrape counts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (peers, scrape) = loop {
        let info = transmission.tracker_info();
        let peers = number_after(&info, "Got a list of ");
        let scrape = number_after(&info, "Tracker had ").and_then(|s| {
            let l = number_after(&info, " seeders and ")?;
            Some((s, l))
        });
        if let (Some(p), Some(s)) = (peers, scrape) {
            break (p, s);
        }
        if info.contains("Got an error") || info.contains("Announce error") {
            tracker.assert_alive();
            panic!(
                "Transmission reports a tracker error:\n{info}\n--- transmission log ---\n{}\n--- tracker log ---\n{}",
                transmission.log(),
                tracker.log()
            );
        }
        if Instant::now() >= deadline {
            tracker.assert_alive();
            panic!(
                "Transmission did not report a successful announce and scrape within 30 s:\n{info}\n\
                 --- transmission log ---\n{}\n--- tracker log ---\n{}",
                transmission.log(),
                tracker.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let info = transmission.tracker_info();
    assert_eq!(
        peers, 1,
        "Transmission got {peers} peers from fjord, expected exactly the fake seeder:\n{info}"
    );
    // Transmission schedules its first scrape and its `started` announce independently, so its
    // scrape may count itself (1 leecher) or not yet (0).
    assert!(
        scrape.0 == 1 && scrape.1 <= 1,
        "Transmission's scrape of fjord: expected 1 seeder (the fake one) and at most 1 leecher \
         (Transmission itself), got {scrape:?}:\n{info}"
    );

    // fjord's own view: the fake seeder sees Transmission as a leecher on its peer port.
    let row = fake.scrape(info_hash);
    assert_eq!(
        (row.seeders, row.leechers),
        (1, 1),
        "fjord's scrape after Transmission's announce: {row:?}"
    );
    let reply = fake.announce(info_hash, *b"-FJ0001-fakeseeder01", 0, 0, fake_port);
    let expected = SocketAddrV4::new(LOOPBACK, transmission.peer_port);
    assert!(
        reply.peers.contains(&expected),
        "the fake seeder should get Transmission ({expected}, its announced peer port) from fjord: {reply:?}"
    );

    if tracker.metrics.is_some() {
        transmission_statistics(&mut tracker);
    }

    // Stopping the torrent sends `stopped`: fjord must drop Transmission from the swarm.
    let out = transmission.remote(&["-t", "1", "-S"]);
    assert!(out.status.success(), "transmission-remote -S failed");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = fake.scrape(info_hash);
        if (row.seeders, row.leechers) == (1, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fjord still counts Transmission 15 s after its `stopped` announce: {row:?}\n{}",
            transmission.tracker_info()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tracker.assert_alive();
    eprintln!(
        "Transmission saw {peers} peer(s) and scrape {scrape:?} from fjord; test took {:?}\n{info}",
        started.elapsed()
    );
}

/// fjord counted Transmission's `started` announce under `transmission` (from its peer id,
/// `-TR3000-` for 3.00), and the test's fake seeder (`-FJ0001-`) under `other`, in `/stats`
/// and in `/metrics`.
fn transmission_statistics(tracker: &mut Tracker) {
    // Counters are published every 100 ms: wait for both clients' announces.
    let stats = tracker.stats_until("Transmission and the fake seeder counted", |s| {
        s["clients"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["client"] == "transmission" && c["started"] == 1)
                && cs
                    .iter()
                    .any(|c| c["client"] == "other" && c["announces"] == 2)
        })
    });
    let clients = stats["clients"].as_array().expect("clients");
    let by = |label: &str| {
        clients
            .iter()
            .find(|c| c["client"] == label)
            .unwrap_or_else(|| panic!("no {label} in the client counters: {stats:#}"))
    };
    let tr = by("transmission");
    assert!(
        tr["versions"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())),
        "Transmission's version from its peer id: {tr:#}"
    );
    assert_eq!(
        by("other")["announces"],
        2,
        "the fake seeder announced twice: {stats:#}"
    );
    assert_eq!(clients.len(), 2, "{stats:#}");
    let metrics = tracker.metrics.expect("fjord's metrics endpoint");
    let (_, text) = support::http_get(metrics, "/metrics").expect("GET /metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("fjord_client_started_total{client=\"transmission\"}"))
        .unwrap_or_else(|| panic!("no Transmission series in /metrics:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
}
