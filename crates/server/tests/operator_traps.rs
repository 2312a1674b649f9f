//! Regressions for the traps a new operator hit (issue 11), through the library and the
//! `fjord` binary: a second fjord on a held port, `--user` as that user already, version,
//! access-list flags and messages, journald and JSON logs.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fjord_server::{Config, start};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");
const TIMEOUT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fjord-traps-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `fjord` whose stderr goes to a file; killed on drop.
struct Fjord {
    child: std::process::Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Fjord {
    /// Starts the binary (`tweak` adjusts the command) with stderr to `dir/stderr`, and reads
    /// its "listening" line.
    fn start(dir: &Path, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Fjord {
        let stderr = dir.join("stderr");
        let mut cmd = Command::new(FJORD);
        cmd.args(args)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        tweak(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("fjord listening on udp ")
            .unwrap_or_else(|| panic!("{line:?}: {}", read(&stderr)))
            .parse()
            .unwrap();
        Fjord {
            child,
            addr,
            stderr,
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM, then waits for the exit; returns the status and everything logged.
    fn stop(mut self) -> (ExitStatus, String) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "fjord did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, read(&self.stderr))
    }

    /// A connect answered: the tracker serves.
    fn serves(&self) {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = [0u8; 16];
        req[..8].copy_from_slice(&0x41727101980u64.to_be_bytes());
        c.send_to(&req, self.addr).unwrap();
        let mut buf = [0u8; 32];
        assert_eq!(c.recv(&mut buf).unwrap(), 16);
    }
}

impl Drop for Fjord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Runs the binary to completion (it is expected to refuse to start).
fn run(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(FJORD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_server_in_this_process_on_a_held_port_is_refused() {
    let first = start(Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()])).unwrap();
    let held = first.local_addrs()[0];
    let e = start(Config::for_tests(vec![held])).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&format!("UDP {held} is already in use")), "{e}");
    first.shutdown().unwrap();
}

#[test]
fn a_second_fjord_binary_on_the_same_port_exits_with_a_clear_error() {
    let dir = TempDir::new("second");
    let first = Fjord::start(
        &dir.0,
        &["--listen", "127.0.0.1:0", "--workers", "2"],
        |_| {},
    );
    let held = first.addr.to_string();
    let (status, stderr) = run(&["--listen", &held, "--no-metrics"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("UDP {held} is already in use by another socket")),
        "{stderr}"
    );
    first.serves();
    let (status, _) = first.stop();
    assert!(status.success());
}

/// `--user` naming the user (and group) the process already runs as is a no-op, not EPERM.
/// As root, fjord is started as `nobody` with `--user nobody` (systemd's `User=nobody`).
#[test]
fn user_flag_naming_the_current_user_is_a_no_op() {
    let dir = TempDir::new("user");
    let serves_as = |user: &str, tweak: &dyn Fn(&mut Command)| {
        let args = ["--listen", "127.0.0.1:0", "--workers", "1", "--user", user];
        let f = Fjord::start(&dir.0, &args, tweak);
        f.serves();
        let (status, log) = f.stop();
        assert!(status.success(), "{log}");
        assert!(
            log.contains("already running as the configured user"),
            "{log}"
        );
    };
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    serves_as(&me.name, &|_| {});
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: cannot start fjord as nobody here");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    serves_as("nobody", &|cmd| {
        use std::os::unix::process::CommandExt;
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    });
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(FJORD).arg("--version").output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    let want = format!("fjord {} ({commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(line, want);
}

#[test]
fn an_access_list_without_a_mode_is_refused_naming_the_key() {
    let (status, stderr) = run(&["--access-list", "/etc/fjord/list.txt", "--no-metrics"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`access_list.mode`"), "{stderr}");
    assert!(stderr.contains("--access-list-mode"), "{stderr}");
}

#[test]
fn a_missing_access_list_file_states_its_cause_once() {
    let (status, stderr) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--no-metrics",
        "--access-list",
        "/nonexistent/fjord-list.txt",
        "--access-list-mode",
        "allow",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/fjord-list.txt"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

/// Under systemd's journal: no timestamps (the journal adds its own) and a syslog priority
/// prefix per line. SIGHUP with the list off says so instead of "reloaded".
#[test]
fn journal_logs_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("journal");
    // The file Fjord::start sends stderr to (truncated, same inode).
    let stderr = dir.0.join("stderr");
    std::fs::File::create(&stderr).unwrap();
    let meta = std::fs::metadata(&stderr).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let f = Fjord::start(
        &dir.0,
        &["--listen", "127.0.0.1:0", "--workers", "1"],
        |cmd| {
            cmd.env("JOURNAL_STREAM", &stream).env_remove("RUST_LOG");
        },
    );
    f.signal(Signal::SIGHUP);
    let (status, log) = f.stop();
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let prio = line.strip_prefix('<').and_then(|l| l.split_once('>'));
        assert!(
            matches!(prio, Some((p, _)) if ["3", "4", "6", "7"].contains(&p)),
            "no priority prefix: {line}"
        );
        assert!(
            !line.contains("Z  INFO") && !line.contains(" INFO "),
            "{line}"
        );
        let digits = line
            .chars()
            .skip(3)
            .take(4)
            .filter(char::is_ascii_digit)
            .count();
        assert!(digits < 4, "a timestamp: {line}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("<6>")
            && l.contains(&format!("fjord {}", fjord_server::logging::VERSION))),
        "{log}"
    );
    assert!(
        log.contains("the access list is off; nothing to reload"),
        "{log}"
    );
    assert!(!log.contains("reloaded"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = TempDir::new("json");
    let f = Fjord::start(
        &dir.0,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-format",
            "json",
        ],
        |cmd| {
            cmd.env_remove("JOURNAL_STREAM").env_remove("RUST_LOG");
        },
    );
    let (status, log) = f.stop();
    assert!(status.success(), "{log}");
    let mut started = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        let message = v["fields"]["message"].as_str().unwrap_or("");
        started |= message.contains("started: udp 127.0.0.1:");
    }
    assert!(started, "{log}");
}
