//! A minimal BEP 15 client over a real UDP socket, for the integration tests: requests built
//! with fjord-protocol, replies read with a timeout.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    PeerId, ScrapeRequest, TransactionId,
};

/// A big-endian u32 at `i` of a reply.
pub fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// A connect request with transaction id `tid`.
pub fn connect_bytes(tid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    ConnectRequest {
        transaction_id: TransactionId(tid),
    }
    .write(&mut b)
    .expect("16 bytes");
    b
}

/// An announce (event started, 98 bytes plus `options`) with connection id `id`.
pub fn announce_bytes(
    id: u64,
    tid: u32,
    info_hash: [u8; 20],
    port: u16,
    left: i64,
    options: &[u8],
) -> Vec<u8> {
    let req = AnnounceRequest {
        connection_id: ConnectionId(id),
        transaction_id: TransactionId(tid),
        info_hash: InfoHash(info_hash),
        peer_id: PeerId(*b"-qB4630-fjordtest000"),
        downloaded: 0,
        left,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip_address: 0,
        key: 7,
        num_want: 50,
        port,
        options: AnnounceOptions::new(options),
    };
    let mut b = vec![0u8; 98 + options.len()];
    let n = req.write(&mut b).expect("announce fits");
    b.truncate(n);
    b
}

/// A scrape of `hashes` with connection id `id`.
pub fn scrape_bytes(id: u64, tid: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let req = ScrapeRequest {
        connection_id: ConnectionId(id),
        transaction_id: TransactionId(tid),
        info_hashes: hashes,
        truncated: false,
    };
    let mut b = vec![0u8; 16 + 20 * hashes.len()];
    let n = req.write(&mut b).expect("scrape fits");
    b.truncate(n);
    b
}

/// One client socket talking to one tracker address.
pub struct TrackerClient {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl TrackerClient {
    /// A socket bound to `bind` (e.g. `127.3.0.1:0` for a distinct loopback source), replies
    /// awaited for `timeout`.
    pub fn new(bind: &str, server: SocketAddr, timeout: Duration) -> TrackerClient {
        let sock = UdpSocket::bind(bind).expect("bind a client socket");
        sock.set_read_timeout(Some(timeout)).expect("timeout");
        TrackerClient { sock, server }
    }

    /// Sends `bytes` and returns the next reply, or `None` if none came within the timeout.
    pub fn request(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(bytes, self.server).expect("send");
        let mut buf = [0u8; 2048];
        self.sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    /// A connection id (panics without a 16-byte connect reply).
    pub fn connect(&self) -> u64 {
        let r = self
            .request(&connect_bytes(0x1234))
            .expect("connect answered");
        assert_eq!((r.len(), u32_at(&r, 0), u32_at(&r, 4)), (16, 0, 0x1234));
        u64::from_be_bytes(r[8..16].try_into().expect("8 bytes"))
    }
}
