//! The first contact: before any load, a few connect requests from one socket find out
//! whether a BEP 15 tracker answers at the target at all, and say plainly what is wrong if
//! not. An ICMP port unreachable comes back within a round trip, so "nothing listens" is
//! known at once; silence is only known when the timeout has passed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fjord_protocol::{ConnectRequest, IpFamily, Request, TransactionId};

use crate::config::BenchConfig;
use crate::engine;
use crate::validate::{Issued, Kind, Outcome, Outstanding};

/// Connect requests sent at most, spread over the timeout.
pub const PROBE_ATTEMPTS: u32 = 3;

/// Why the tracker could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel reported ICMP port unreachable (ECONNREFUSED).
    #[error(
        "nothing listens on {url} ({addr}): the connect request was answered with ICMP port unreachable"
    )]
    NothingListens {
        /// The target as given.
        url: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// No reply within the timeout.
    #[error(
        "no reply from {url} ({addr}) to {attempts} connect requests within {waited_ms} ms: is a tracker running there and UDP port {} open in the firewalls between? (raise --timeout-ms for a distant tracker)",
        addr.port()
    )]
    NoReply {
        /// The target as given.
        url: String,
        /// Its address.
        addr: SocketAddr,
        /// Connects sent.
        attempts: u32,
        /// How long we waited.
        waited_ms: u128,
    },
    /// Host or network unreachable, or another socket error.
    #[error("{url} ({addr}) cannot be reached: {source}")]
    Unreachable {
        /// The target as given.
        url: String,
        /// Its address.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// An error reply to the connect.
    #[error("{url} ({addr}) answered the connect request with an error reply")]
    ErrorReply {
        /// The target as given.
        url: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// Something that is not a BEP 15 connect response.
    #[error(
        "{url} ({addr}) answered the connect request with a malformed reply ({reason}): is it a BEP 15 tracker?"
    )]
    Malformed {
        /// The target as given.
        url: String,
        /// Its address.
        addr: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
}

/// What the probe found when the tracker answered.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ProbeReply {
    /// Connect requests it sent (the tracker counts them too).
    pub connects: u32,
    /// Round trip of the answered connect, µs.
    pub round_trip_us: u64,
}

/// Sends up to [`PROBE_ATTEMPTS`] connects spread over `cfg.timeout` from the run's first
/// source address, and returns when one is answered, or with the reason none was.
pub fn probe(cfg: &BenchConfig) -> Result<ProbeReply, ProbeError> {
    let url = cfg.target_url.clone();
    let addr = cfg.target;
    let unreachable = |source: io::Error| ProbeError::Unreachable {
        url: url.clone(),
        addr,
        source,
    };
    let classify_io = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeError::NothingListens {
            url: url.clone(),
            addr,
        },
        _ => unreachable(e),
    };
    let socket = engine::open_socket(cfg, 0).map_err(unreachable)?;
    socket.set_nonblocking(false).map_err(unreachable)?;
    let family = if addr.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    };
    let mut table = Outstanding::new(PROBE_ATTEMPTS as usize);
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let spacing = cfg.timeout / PROBE_ATTEMPTS;
    let mut attempts = 0;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ProbeError::NoReply {
                url,
                addr,
                attempts,
                waited_ms: cfg.timeout.as_millis(),
            });
        }
        let next_send = start + spacing * attempts;
        if attempts < PROBE_ATTEMPTS && now >= next_send {
            let issued = Issued::new(
                Kind::Connect,
                0,
                now.duration_since(start).as_nanos() as u64,
            );
            let tid = table.issue(issued).expect("one slot per attempt");
            let mut datagram = [0u8; 16];
            let len = Request::Connect(ConnectRequest {
                transaction_id: TransactionId(tid),
            })
            .write(&mut datagram)
            .expect("a connect fits 16 bytes");
            socket.send(&datagram[..len]).map_err(classify_io)?;
            attempts += 1;
        }
        let wake = if attempts < PROBE_ATTEMPTS {
            deadline.min(start + spacing * attempts)
        } else {
            deadline
        };
        let wait = wake.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue;
        }
        socket.set_read_timeout(Some(wait)).map_err(unreachable)?;
        match socket.recv(&mut buf) {
            Ok(len) => {
                let truncated = len >= buf.len();
                match crate::validate::classify(&mut table, &buf[..len], truncated, family) {
                    Outcome::Connect { issued, .. } => {
                        let round_trip = start.elapsed() - Duration::from_nanos(issued.sent_ns);
                        return Ok(ProbeReply {
                            connects: attempts,
                            round_trip_us: round_trip.as_micros() as u64,
                        });
                    }
                    Outcome::Error { .. } => return Err(ProbeError::ErrorReply { url, addr }),
                    Outcome::Malformed { reason, .. } => {
                        return Err(ProbeError::Malformed {
                            url,
                            addr,
                            reason: reason.name(),
                        });
                    }
                    // A stray datagram: keep waiting.
                    Outcome::Announce { .. } | Outcome::Scrape { .. } | Outcome::Unexpected => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(classify_io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn cfg(target: SocketAddr, timeout_ms: u64) -> BenchConfig {
        let mut c = BenchConfig::quick(target);
        c.timeout = Duration::from_millis(timeout_ms);
        c
    }

    fn closed_port() -> SocketAddr {
        // Bound and dropped: nothing listens there any more (port 0 picks a free one).
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }

    #[test]
    fn a_closed_port_is_reported_at_once() {
        let target = closed_port();
        let start = Instant::now();
        let err = probe(&cfg(target, 5_000)).unwrap_err();
        assert!(matches!(err, ProbeError::NothingListens { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("nothing listens on udp://127.0.0.1:")
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn silence_is_reported_after_the_timeout() {
        // Bound but never read: the datagrams are queued, nobody answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let err = probe(&cfg(silent.local_addr().unwrap(), 300)).unwrap_err();
        let waited = start.elapsed();
        assert!(
            matches!(err, ProbeError::NoReply { attempts: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("no reply from udp://127.0.0.1:")
        );
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        // All three connects arrived.
        let mut buf = [0u8; 64];
        silent.set_nonblocking(true).unwrap();
        let mut n = 0;
        while silent.recv(&mut buf).is_ok() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn a_tracker_that_answers_passes_and_one_that_errors_is_named() {
        let tracker = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = tracker.local_addr().unwrap();
        let answer = |error: bool| {
            let mut buf = [0u8; 64];
            let (len, from) = tracker.recv_from(&mut buf).unwrap();
            assert_eq!(len, 16);
            let mut reply = Vec::new();
            reply.extend_from_slice(&(if error { 3u32 } else { 0 }).to_be_bytes());
            reply.extend_from_slice(&buf[12..16]);
            reply.extend_from_slice(if error { b"go away!" } else { &[7u8; 8] });
            tracker.send_to(&reply, from).unwrap();
        };
        let t = std::thread::scope(|s| {
            let h = s.spawn(|| probe(&cfg(target, 5_000)));
            answer(false);
            h.join().unwrap()
        });
        let reply = t.unwrap();
        assert_eq!(reply.connects, 1);
        assert!(reply.round_trip_us < 5_000_000);
        let t = std::thread::scope(|s| {
            let h = s.spawn(|| probe(&cfg(target, 5_000)));
            answer(true);
            h.join().unwrap()
        });
        assert!(matches!(t, Err(ProbeError::ErrorReply { .. })), "{t:?}");
    }
}
