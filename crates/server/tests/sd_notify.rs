//! `Type=notify` (deploy/systemd/fjord.service): the `fjord` binary sends READY=1 to the
//! datagram socket named by `NOTIFY_SOCKET` once its UDP sockets are bound and /metrics is
//! served, STOPPING=1 when SIGTERM arrives, and nothing when its start fails. The socket here
//! is a fake service manager the test binds itself.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

mod support;
use support::{TempDir, http_get, signal, spawn_fjord, wait_exit};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The next notification, as text (blocking, bounded by the socket's read timeout).
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification before the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn fake_service_manager(dir: &TempDir) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    (sock, path)
}

#[test]
fn binary_notifies_ready_once_serving_and_stopping_on_sigterm() {
    let dir = TempDir::new("notify");
    let (sock, path) = fake_service_manager(&dir);
    let mut fjord = spawn_fjord(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ],
        &[("NOTIFY_SOCKET", path.as_os_str())],
    );
    let ready = next_notification(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // At READY=1 both sockets serve: a connect is answered and /health is green.
    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut connect = [0u8; 16];
    connect[..8].copy_from_slice(&0x41727101980u64.to_be_bytes());
    connect[12..].copy_from_slice(&7u32.to_be_bytes());
    client.send_to(&connect, fjord.udp).expect("send connect");
    let mut reply = [0u8; 64];
    assert_eq!(client.recv(&mut reply).expect("connect reply"), 16);
    let metrics = fjord.metrics.expect("metrics on");
    assert_eq!(http_get(metrics, "/health").map(|(s, _)| s), Some(200));

    signal(&fjord.child, nix::sys::signal::Signal::SIGTERM);
    let stopping = next_notification(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = wait_exit(&mut fjord.child, TIMEOUT);
    assert!(status.success(), "{status:?}");
}

#[test]
fn binary_does_not_notify_ready_when_the_start_fails() {
    let dir = TempDir::new("notify-fail");
    let (sock, path) = fake_service_manager(&dir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let taken = taken.local_addr().expect("address").to_string();
    let mut child = support::KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", &taken])
            .env("NOTIFY_SOCKET", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn fjord"),
    );
    let status = wait_exit(&mut child, TIMEOUT);
    assert_eq!(status.code(), Some(1), "metrics address taken: start fails");
    // The process is gone, so anything it sent is already queued: nothing may be.
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!(
            "a failed start sent a notification: {:?}",
            other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        ),
    }
}
