//! The canned-reply floor: a UDP server on fjord's I/O path (mio, fjord-udp's recvmmsg/sendmmsg
//! batches, one socket) that answers every BEP 15 request with a fixed, well-formed reply and
//! no tracker logic: a connect reply with a fixed connection id, an announce reply with
//! `PEERS` fixed IPv4 peers (or as many as asked, if fewer), a scrape reply of zero rows for
//! each hash, each echoing the transaction id. Nothing can answer faster through the same
//! system calls on this machine, so a tracker's responses per CPU second against the floor's
//! say how close its own logic comes to the limit (`benches/compare.sh`).
//!
//! `cargo run -p fjord-benches --release --example floor -- ADDR [PEERS]` (PEERS default 30,
//! aquatic_udp_load_test's default peers wanted). Prints `floor listening on udp ADDR` once
//! bound; runs until killed.

use std::io;
use std::net::SocketAddr;

use fjord_udp::{RecvBatch, SendBatch, SocketOptions};
use mio::{Events, Interest, Poll, Token};

const BATCH: usize = 32;

/// The reply to one request, written into `out`; `None` for anything that is not a request.
fn reply(req: &[u8], peers: usize, out: &mut [u8]) -> Option<usize> {
    let action = u32::from_be_bytes(req.get(8..12)?.try_into().ok()?);
    let tid = req.get(12..16)?;
    match action {
        0 if req.len() >= 16 => {
            out[..4].copy_from_slice(&0u32.to_be_bytes());
            out[4..8].copy_from_slice(tid);
            out[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
            Some(16)
        }
        1 if req.len() >= 98 => {
            let want = i32::from_be_bytes(req[92..96].try_into().ok()?);
            let n = if want < 0 {
                peers
            } else {
                peers.min(want as usize)
            };
            out[..4].copy_from_slice(&1u32.to_be_bytes());
            out[4..8].copy_from_slice(tid);
            out[8..12].copy_from_slice(&1800u32.to_be_bytes());
            out[12..16].copy_from_slice(&(n as u32).to_be_bytes());
            out[16..20].copy_from_slice(&1u32.to_be_bytes());
            for (k, e) in out[20..20 + 6 * n].chunks_exact_mut(6).enumerate() {
                e[..4].copy_from_slice(&[10, 0, (k >> 8) as u8, k as u8]);
                e[4..].copy_from_slice(&6881u16.to_be_bytes());
            }
            Some(20 + 6 * n)
        }
        2 if req.len() >= 36 => {
            let hashes = ((req.len() - 16) / 20).min(74);
            out[..4].copy_from_slice(&2u32.to_be_bytes());
            out[4..8].copy_from_slice(tid);
            out[8..8 + 12 * hashes].fill(0);
            Some(8 + 12 * hashes)
        }
        _ => None,
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| "127.0.0.1:16970".parse().unwrap());
    let peers: usize = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .min(200);
    let opts = SocketOptions {
        recv_buffer: Some(8 << 20),
        send_buffer: Some(8 << 20),
        ..SocketOptions::default()
    };
    let bound = fjord_udp::bind(addr, &opts)?;
    let mut socket = mio::net::UdpSocket::from_std(bound.socket);
    println!("floor listening on udp {}", socket.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let (mut rx, mut tx) = (RecvBatch::new(BATCH, 2048), SendBatch::new(BATCH, 1280));
    loop {
        poll.poll(&mut events, None)?;
        loop {
            let n = match rx.recv(&socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for j in 0..n {
                let d = rx.get(j);
                let Some(buf) = tx.next_buf() else { break };
                if let Some(len) = reply(d.data, peers, buf) {
                    tx.push(len, d.src, d.dst);
                }
            }
            if !tx.is_empty() {
                tx.send(&socket, |_, _| {});
            }
        }
    }
}
