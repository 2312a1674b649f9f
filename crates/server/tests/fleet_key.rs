//! Several nodes behind one address (docs/operations.md): nodes given the same key through
//! `FJORD_CONNECTION_ID_KEY` (how the systemd unit's environment file and the Kubernetes Secret
//! pass it) accept each other's connection ids; a node without it does not; a bad value is a
//! configuration error that names the variable.

use std::ffi::OsStr;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::spawn_fjord;

const KEY: &str = "00112233445566778899aabbccddeeff";

fn node(key: Option<&str>) -> support::FjordProcess {
    let args = ["--listen", "127.0.0.1:0", "--no-metrics", "--workers", "1"];
    match key {
        Some(k) => spawn_fjord(&args, &[("FJORD_CONNECTION_ID_KEY", OsStr::new(k))]),
        None => spawn_fjord(&args, &[]),
    }
}

fn connect(client: &UdpSocket, to: SocketAddr) -> [u8; 8] {
    let mut req = [0u8; 16];
    req[..8].copy_from_slice(&0x41727101980u64.to_be_bytes());
    req[12..].copy_from_slice(&1u32.to_be_bytes());
    client.send_to(&req, to).expect("send connect");
    let mut reply = [0u8; 64];
    let n = client.recv(&mut reply).expect("connect reply");
    assert_eq!(n, 16);
    let mut id = [0u8; 8];
    id.copy_from_slice(&reply[8..16]);
    id
}

/// Sends an announce with `id`; whether an announce reply (action 1) came back in time.
fn announce_answered(client: &UdpSocket, to: SocketAddr, id: [u8; 8]) -> bool {
    let mut req = [0u8; 98];
    req[..8].copy_from_slice(&id);
    req[8..12].copy_from_slice(&1u32.to_be_bytes());
    req[12..16].copy_from_slice(&2u32.to_be_bytes());
    req[16..36].copy_from_slice(&[7; 20]);
    req[36..56].copy_from_slice(&[9; 20]);
    req[92..96].copy_from_slice(&(-1i32).to_be_bytes());
    req[96..98].copy_from_slice(&6881u16.to_be_bytes());
    client.send_to(&req, to).expect("send announce");
    let mut reply = [0u8; 2048];
    match client.recv(&mut reply) {
        Ok(n) => n >= 20 && reply[..4] == 1u32.to_be_bytes(),
        Err(_) => false,
    }
}

#[test]
fn nodes_sharing_the_key_from_the_environment_accept_each_others_ids() {
    let a = node(Some(KEY));
    let b = node(Some(KEY));
    let stranger = node(None);
    let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let id = connect(&client, a.udp);
    assert!(announce_answered(&client, b.udp, id), "b refused a's id");
    // Silence is the only answer to a foreign id; a short wait is enough to see none.
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        !announce_answered(&client, stranger.udp, id),
        "a node with a random key accepted a's id"
    );
}

#[test]
fn an_invalid_key_in_the_environment_is_a_configuration_error_naming_it() {
    let mut child = support::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["--listen", "127.0.0.1:0", "--no-metrics"])
            .env("FJORD_CONNECTION_ID_KEY", "not-hex")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fjord"),
    );
    // Bounded: a fjord that ignored the variable would start serving instead of exiting.
    let status = support::wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().expect("stderr piped"), &mut err)
        .expect("read stderr");
    assert!(err.contains("FJORD_CONNECTION_ID_KEY"), "{err}");
    assert!(err.contains("connection_id.key"), "{err}");
    assert!(!err.contains("not-hex"), "the secret is echoed: {err}");
}
