//! Helpers shared by the integration tests that run processes: a temporary directory, a
//! minimal HTTP GET, the `fjord` binary as a child, and a real Prometheus server (Debian
//! package `prometheus`) on loopback. Each test binary uses a subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A file of the repository, by its path from the repository root.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub mod client;

// The unit tests' temporary directory, shared rather than written again.
#[path = "../../src/test_util.rs"]
mod test_util;
pub use test_util::TempDir;

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `fjord` binary started with `args`, and the addresses it printed on stdout.
pub struct FjordProcess {
    pub child: KillOnDrop,
    pub udp: SocketAddr,
    /// `None` when metrics are off.
    pub metrics: Option<SocketAddr>,
    /// The rest of stdout (kept open so that fjord never writes into a closed pipe).
    pub stdout: BufReader<ChildStdout>,
}

/// Starts `fjord` (the binary under test) with `args` plus `env`, and reads its
/// "listening" and "metrics" lines (blocking reads of a pipe: no sleeping). `args` must listen
/// on exactly one address.
pub fn spawn_fjord(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> FjordProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = KillOnDrop(cmd.spawn().expect("spawn fjord"));
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout piped"));
    let udp = read_listening_line(&mut stdout);
    let mut line = String::new();
    let metrics = if args.contains(&"--no-metrics") {
        None
    } else {
        line.clear();
        stdout.read_line(&mut line).expect("read fjord's stdout");
        let a = line
            .trim()
            .strip_prefix("fjord metrics on http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected metrics line from fjord: {line:?}"));
        Some(a.parse().expect("metrics address"))
    };
    FjordProcess {
        child,
        udp,
        metrics,
        stdout,
    }
}

/// Reads fjord's next stdout line, which must be `fjord listening on udp ADDR`; the address.
/// fjord prints one such line per listen address, in order, before the metrics line.
pub fn read_listening_line(stdout: &mut BufReader<ChildStdout>) -> SocketAddr {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read fjord's stdout");
    line.trim()
        .strip_prefix("fjord listening on udp ")
        .unwrap_or_else(|| panic!("unexpected line from fjord: {line:?}"))
        .parse()
        .expect("udp address")
}

/// Sends `sig` to the child.
pub fn signal(child: &KillOnDrop, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("kill(2) of our own child");
}

/// Waits (polling, bounded by `deadline`) for the child to exit.
pub fn wait_exit(child: &mut KillOnDrop, deadline: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < until, "process did not exit");
        std::thread::sleep(Duration::from_millis(10)); // polling interval
    }
}

/// A loopback TCP port that was free a moment ago (a separate process cannot be handed port 0).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe socket");
    l.local_addr().expect("probe address").port()
}

/// `GET path_and_query`; the status and the body, or `None` if the connection failed.
/// HTTP/1.0, so that the body is never chunked (it ends when the server closes).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback, killed and its data removed when dropped.
pub struct Prometheus {
    child: KillOnDrop,
    dir: TempDir,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second as job "fjord" (evaluating the rules
    /// in `rule_file`, if given, every second); returns once it answers `/-/ready`. Without
    /// Prometheus installed it returns `None` (test skipped), except in CI (`CI` set), where
    /// that is a failure.
    pub fn start(target: SocketAddr, rule_file: Option<&Path>) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "prometheus is not installed (Debian package prometheus); CI must install it"
            );
            eprintln!("prometheus not installed: test skipped");
            return None;
        }
        let dir = TempDir::new(&format!("prometheus-{}", target.port()));
        let config = dir.path().join("prometheus.yml");
        let rules = rule_file
            .map(|p| format!("rule_files: [{:?}]\n", p.display().to_string()))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 {rules}\
                 scrape_configs:\n  - job_name: fjord\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .expect("write prometheus.yml");
        // The port can be taken between probing and binding: retry a few times.
        for _ in 0..5 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut child = KillOnDrop(
                Command::new("prometheus")
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn prometheus"),
            );
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.0.try_wait() {
                    break; // exited: port taken or bad config; try another port
                }
                if let Some((200, _)) = http_get(addr, "/-/ready") {
                    return Some(Prometheus { child, dir, addr });
                }
                std::thread::sleep(Duration::from_millis(100)); // polling interval, not a wait-for
            }
        }
        panic!("prometheus did not become ready");
    }

    /// Instant query through the HTTP API: the `data.result` array. Panics on any error
    /// (a PromQL parse error is HTTP 400 with `errorType: bad_data`).
    pub fn query_result(&self, promql: &str) -> Vec<serde_json::Value> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .unwrap_or_else(|| panic!("query {promql}: no answer from Prometheus"));
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        assert_eq!(v["status"], "success", "query {promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Instant query; the first sample's value if there is one.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let result = self.query_result(promql);
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// `GET path` on the API; the parsed JSON body (panics unless 200).
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) =
            http_get(self.addr, path).unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("API JSON")
    }
}
