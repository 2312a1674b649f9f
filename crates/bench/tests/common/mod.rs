//! A tiny BEP 15 tracker for the tests: valid replies (no peers), optionally at most N
//! requests per second (a token bucket; the rest are dropped, as an overloaded tracker's
//! socket buffer drops them), and counts of what it saw, including the BEP 41 URL data.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjord_protocol::{ParseLimits, Request};

/// What the tracker saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Replies sent.
    pub answered: AtomicU64,
    /// Dropped by the rate limit.
    pub dropped: AtomicU64,
    /// Announces received.
    pub announces: AtomicU64,
    /// Announces whose URL data equalled the expected path.
    pub announces_with_path: AtomicU64,
}

/// A running test tracker; stops when dropped.
pub struct TestTracker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counts.
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TestTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a tracker on `bind` (port 0) answering at most `limit_per_second` requests per
/// second by arrival time (token bucket holding 100 ms of tokens), or all with `None`. Announces whose
/// URL data equals `path` are counted in [`Seen::announces_with_path`].
pub fn spawn(bind: &str, limit_per_second: Option<f64>, path: Option<&str>) -> TestTracker {
    let socket = UdpSocket::bind(bind).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let path = path.map(|p| p.as_bytes().to_vec());
    let thread = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || serve(&socket, limit_per_second, path.as_deref(), &seen, &stop))
    };
    TestTracker {
        addr,
        seen,
        stop,
        thread: Some(thread),
    }
}

/// Receives one datagram with its kernel arrival time (seconds, CLOCK_REALTIME), so that
/// the rate limit judges when packets arrived, not when this thread got to them: a stall of
/// the test tracker's thread on a busy machine then drops nothing.
fn recv_stamped(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr, f64)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .ok()?;
    let at = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => {
            Some(ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9)
        }
        _ => None,
    })?;
    let from = msg.address?;
    let from = match from.family()? {
        nix::sys::socket::AddressFamily::Inet => SocketAddr::V4((*from.as_sockaddr_in()?).into()),
        nix::sys::socket::AddressFamily::Inet6 => SocketAddr::V6((*from.as_sockaddr_in6()?).into()),
        _ => return None,
    };
    Some((msg.bytes, from, at))
}

fn serve(
    socket: &UdpSocket,
    limit: Option<f64>,
    path: Option<&[u8]>,
    seen: &Seen,
    stop: &AtomicBool,
) {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .unwrap();
    // 100 ms of tokens: a burst from the generator catching up after a short stall passes.
    let burst = limit.map_or(0.0, |n| (n * 0.1).max(1.0));
    let mut tokens = burst;
    let mut last: Option<f64> = None;
    let mut buf = [0u8; 2048];
    let mut reply = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        let Some((len, from, arrived)) = recv_stamped(socket, &mut buf) else {
            continue;
        };
        seen.received.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = limit {
            let elapsed = last.map_or(0.0, |l| (arrived - l).max(0.0));
            tokens = (tokens + elapsed * n).min(burst);
            last = Some(arrived);
            if tokens < 1.0 {
                seen.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            tokens -= 1.0;
        }
        let Some(data) = buf.get(..len) else { continue };
        let Ok(request) = Request::parse(data, &ParseLimits::default()) else {
            continue;
        };
        reply.clear();
        match request {
            Request::Connect(c) => {
                reply.extend_from_slice(&0u32.to_be_bytes());
                reply.extend_from_slice(&c.transaction_id.0.to_be_bytes());
                reply.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
            }
            Request::Announce(a) => {
                seen.announces.fetch_add(1, Ordering::Relaxed);
                if path.is_some_and(|p| {
                    a.options
                        .url_data()
                        .flatten()
                        .copied()
                        .eq(p.iter().copied())
                }) {
                    seen.announces_with_path.fetch_add(1, Ordering::Relaxed);
                }
                reply.extend_from_slice(&1u32.to_be_bytes());
                reply.extend_from_slice(&a.transaction_id.0.to_be_bytes());
                reply.extend_from_slice(&[0, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            Request::Scrape(s) => {
                reply.extend_from_slice(&2u32.to_be_bytes());
                reply.extend_from_slice(&s.transaction_id.0.to_be_bytes());
                reply.extend(std::iter::repeat_n(0u8, 12 * s.info_hashes.len()));
            }
        }
        if socket.send_to(&reply, from).is_ok() {
            seen.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The fjord-bench binary with `args`, its exit code, stdout, and stderr's last line.
pub fn bench(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fjord-bench"))
        .args(args)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or("").to_string();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        last,
        took,
    )
}

/// A fresh empty directory under the target's temporary directory.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
