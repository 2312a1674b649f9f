//! A single-source announce flood for `benches/flood.sh`: one source address, several sockets,
//! each gets one connection id and then sends valid announces (random info hashes and ports,
//! 98 bytes) as fast as it can, or at `--rate` in total, never waiting for a reply (replies are
//! read and discarded). Unlike fjord-bench it does not slow down when the tracker stops
//! answering: it is the attacker of issue 15, not a client. Loopback or your own network only.
//!
//! ```sh
//! target/release/examples/flood 127.0.0.1:6969 127.0.0.2 4 10 [rate]
//! ```
//! Arguments: tracker, source address, sockets, seconds, total datagrams per second (0 or
//! absent: as fast as possible). Prints the datagrams sent and the replies read.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    PeerId, TransactionId,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: flood TRACKER SOURCE_IP SOCKETS SECONDS [RATE]";
    let target: SocketAddr = args.next().expect(usage).parse().expect("tracker address");
    let source: std::net::IpAddr = args.next().expect(usage).parse().expect("source address");
    let sockets: u32 = args.next().expect(usage).parse().expect("sockets");
    let seconds: f64 = args.next().expect(usage).parse().expect("seconds");
    let rate: f64 = args.next().map_or(0.0, |r| r.parse().expect("rate"));
    let per_socket = rate / f64::from(sockets);
    let threads: Vec<_> = (0..sockets)
        .map(|k| {
            std::thread::spawn(move || {
                let sock = UdpSocket::bind((source, 0)).expect("bind the source address");
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 2048];
                let mut req = [0u8; 16];
                ConnectRequest {
                    transaction_id: TransactionId(k),
                }
                .write(&mut req)
                .unwrap();
                sock.send_to(&req, target).unwrap();
                let n = sock.recv(&mut buf).expect("a connect reply");
                assert_eq!(n, 16, "a connect reply");
                let id = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                sock.set_nonblocking(true).unwrap();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(k);
                let (mut sent, mut replies) = (0u64, 0u64);
                let mut out = [0u8; 98];
                let start = Instant::now();
                loop {
                    let elapsed = start.elapsed().as_secs_f64();
                    if elapsed >= seconds {
                        break;
                    }
                    if per_socket > 0.0 && sent as f64 >= per_socket * elapsed {
                        std::hint::spin_loop();
                        continue;
                    }
                    for _ in 0..32 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let mut hash = [0u8; 20];
                        hash[..8].copy_from_slice(&x.to_le_bytes());
                        AnnounceRequest {
                            connection_id: ConnectionId(id),
                            transaction_id: TransactionId(x as u32),
                            info_hash: InfoHash(hash),
                            peer_id: PeerId(*b"-qB4630-floodfloodfl"),
                            downloaded: 0,
                            left: 0,
                            uploaded: 0,
                            event: AnnounceEvent::Started,
                            ip_address: 0,
                            key: 0,
                            num_want: 50,
                            port: (x >> 48) as u16 | 1,
                            options: AnnounceOptions::new(&[]),
                        }
                        .write(&mut out)
                        .unwrap();
                        if sock.send_to(&out, target).is_ok() {
                            sent += 1;
                        }
                    }
                    while sock.recv(&mut buf).is_ok() {
                        replies += 1;
                    }
                }
                (sent, replies)
            })
        })
        .collect();
    let (mut sent, mut replies) = (0, 0);
    for t in threads {
        let (s, r) = t.join().unwrap();
        sent += s;
        replies += r;
    }
    println!(
        "{sent} {replies} {:.0} {:.0}",
        sent as f64 / seconds,
        replies as f64 / seconds
    );
}
