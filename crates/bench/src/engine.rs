//! The load generator: worker threads, their sockets, pacing and connection-id upkeep.
//!
//! Each worker thread owns `sockets_per_thread` connected UDP sockets and the simulated peers
//! assigned to them (peer `p` always uses socket `p mod sockets`, so it always announces from
//! the same source address, as a real client does). A socket keeps its own connection id,
//! refreshed every `reconnect_after` (60 s by default: BEP 15 lets a client use an id for one
//! minute, and ids are bound to the source address), and its own table of outstanding
//! requests, bounded by `in_flight`.
//!
//! The thread sends in batches (sendmmsg, through fjord-udp), waits in `epoll` (mio) for
//! replies or its next deadline, and drains readable sockets in batches (recvmmsg). Nothing is
//! allocated per request: the send and receive batches, the outstanding tables and the scrape
//! scratch space are allocated when the thread starts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use fjord_protocol::{
    AnnounceEvent, AnnounceOptions, AnnounceRequest, ConnectRequest, ConnectionId, InfoHash,
    IpFamily, PeerId, Request, ScrapeRequest, TransactionId,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use fjord_protocol::MAX_SCRAPE_HASHES;
use fjord_udp::{Backend, RecvBatch, SendBatch, SocketOptions};

use crate::config::MAX_BATCH;
use crate::config::{BenchConfig, LoadMode};
use crate::population::{self, EventModel, PeerState, SwarmSampler};
use crate::stats::{LiveCounters, ThreadStats};
use crate::validate::{self, Issued, Kind, Outcome, Outstanding};

/// Largest request: a scrape of 74 hashes is 16 + 74 · 20 = 1496 bytes.
const SEND_BUF: usize = 1500;
/// Receive buffer per datagram; longer replies are reported as malformed (truncated).
const RECV_BUF: usize = 4096;
/// Longest sleep in epoll between events, and the shortest interval between timeout scans.
const EXPIRE_EVERY_NS: u64 = 5_000_000;
/// Timeout scans walk every slot; with large in-flight tables (capacity mode) they run every
/// timeout / this, so a request is declared lost at most 5 % of the timeout late.
const EXPIRE_SCANS_PER_TIMEOUT: u64 = 20;
/// How often live counters are published for the progress line.
const PUBLISH_EVERY_NS: u64 = 50_000_000;
/// After an error reply, a socket fetches a new connection id at most this often.
const ERROR_RECONNECT_NS: u64 = 1_000_000_000;

/// What a worker hands back when it is done.
pub struct WorkerResult {
    /// Its counts.
    pub stats: ThreadStats,
    /// Time of its last send or reply, ns since the run started.
    pub last_activity_ns: u64,
    /// When it stopped sending (deadline, request limit or stop flag), ns since the start.
    pub sending_end_ns: u64,
}

/// State shared (read-only, apart from the stop flag) by all workers.
pub struct Shared {
    /// Configuration.
    pub cfg: BenchConfig,
    /// Swarm popularity.
    pub sampler: SwarmSampler,
    /// Start of the run, set when every worker has built its peers; all times are ns since
    /// this instant.
    pub start: OnceLock<Instant>,
    /// Workers and the caller meet here once set up (`threads + 1` parties).
    pub ready: Barrier,
    /// Set to stop sending early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

/// The source address socket number `global_index` binds to.
pub fn source_address(cfg: &BenchConfig, global_index: usize) -> IpAddr {
    if !cfg.bind.is_empty() {
        return cfg.bind[global_index % cfg.bind.len()];
    }
    match cfg.target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            // 127.0.0.1 ..= 127.0.0.N: distinct source addresses let SO_REUSEPORT spread
            // the load over the tracker's sockets.
            let n = (global_index % usize::from(cfg.sources)) as u8;
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n))
        }
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        // Only ::1 exists on IPv6 loopback; one address, many ports.
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Opens socket number `global_index`: bound to its source address, connected to the target,
/// non-blocking.
pub fn open_socket(cfg: &BenchConfig, global_index: usize) -> io::Result<UdpSocket> {
    let source = source_address(cfg, global_index);
    let opts = SocketOptions {
        // Best effort: the kernel caps it at net.core.rmem_max.
        recv_buffer: (cfg.recv_buffer > 0).then_some(cfg.recv_buffer),
        ..SocketOptions::default()
    };
    let socket = fjord_udp::bind(SocketAddr::new(source, 0), &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {source}: {e}")))?
        .socket;
    socket.connect(cfg.target)?;
    Ok(socket)
}

struct Sock {
    udp: UdpSocket,
    conn: Option<u64>,
    conn_at_ns: u64,
    /// A connect from this socket is in flight that will provide a fresh id.
    refreshing: bool,
    /// An error reply suggested the id is no longer accepted.
    refresh_needed: bool,
    table: Outstanding,
    peers: Vec<PeerState>,
    first_peer: u32,
    stride: u32,
}

/// Per-thread scratch space, allocated once.
struct Buffers {
    send: SendBatch,
    /// Transaction id of each datagram queued in `send`, in push order.
    send_tids: [u32; MAX_BATCH],
    recv: RecvBatch,
    scrape: [[u8; 20]; MAX_SCRAPE_HASHES],
}

struct Worker<'a> {
    shared: &'a Shared,
    start: Instant,
    cfg: &'a BenchConfig,
    family: IpFamily,
    rng: SmallRng,
    socks: Vec<Sock>,
    bufs: Buffers,
    stats: ThreadStats,
    sent_total: u64,
    quota: Option<u64>,
    last_activity_ns: u64,
    sending_end_ns: u64,
}

/// Runs worker thread `index` over its already opened `sockets` until its limits are reached
/// and every outstanding request is answered or timed out.
pub fn run_worker(
    shared: &Shared,
    index: usize,
    sockets: Vec<UdpSocket>,
    live: &LiveCounters,
) -> io::Result<WorkerResult> {
    let cfg = &shared.cfg;
    let threads = cfg.threads as u64;
    let mut rng = SmallRng::seed_from_u64(population::mix64(
        cfg.population.seed ^ (index as u64).wrapping_mul(0x1000_0001),
    ));
    let total_sockets = (cfg.threads * cfg.sockets_per_thread) as u32;
    let socks = sockets
        .into_iter()
        .enumerate()
        .map(|(i, udp)| {
            let first = (index * cfg.sockets_per_thread + i) as u32;
            Sock {
                udp,
                conn: None,
                conn_at_ns: 0,
                refreshing: false,
                refresh_needed: false,
                table: Outstanding::new(cfg.in_flight),
                peers: population::peers_for_socket(
                    &mut rng,
                    first,
                    total_sockets,
                    cfg.population.peers,
                    &shared.sampler,
                    cfg.population.seeder_ratio,
                ),
                first_peer: first,
                stride: total_sockets,
            }
        })
        .collect();
    let quota = cfg
        .requests
        .map(|n| n / threads + u64::from((index as u64) < n % threads));
    // Building millions of peers takes a while: the clock starts when everyone is ready.
    shared.ready.wait();
    let start = *shared.start.get_or_init(Instant::now);
    let mut w = Worker {
        shared,
        start,
        cfg,
        family: if cfg.target.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        },
        rng,
        socks,
        bufs: {
            let backend = if cfg.use_mmsg {
                Backend::best()
            } else {
                Backend::Portable
            };
            Buffers {
                send: SendBatch::with_backend(cfg.batch, SEND_BUF, backend),
                send_tids: [0; MAX_BATCH],
                recv: RecvBatch::with_backend(cfg.batch, RECV_BUF, backend),
                scrape: [[0u8; 20]; MAX_SCRAPE_HASHES],
            }
        },
        stats: ThreadStats::new(cfg.warmup.as_nanos() as u64),
        sent_total: 0,
        quota,
        last_activity_ns: 0,
        sending_end_ns: 0,
    };
    w.run(index, live)?;
    w.stats.peers_announced = w
        .socks
        .iter()
        .map(|s| s.peers.iter().filter(|p| p.announced).count() as u64)
        .sum();
    w.stats.publish(live);
    Ok(WorkerResult {
        stats: w.stats,
        last_activity_ns: w.last_activity_ns,
        sending_end_ns: w.sending_end_ns,
    })
}

impl Worker<'_> {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn quota_left(&self) -> usize {
        match self.quota {
            Some(q) => q.saturating_sub(self.sent_total).min(usize::MAX as u64) as usize,
            None => usize::MAX,
        }
    }

    fn run(&mut self, index: usize, live: &LiveCounters) -> io::Result<()> {
        let mut poll = Poll::new()?;
        for (i, s) in self.socks.iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&s.udp.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        let mut events = Events::with_capacity(self.socks.len().max(8));
        let deadline_ns = self.cfg.duration.map(|d| d.as_nanos() as u64);
        let timeout_ns = self.cfg.timeout.as_nanos() as u64;
        let expire_every_ns = (timeout_ns / EXPIRE_SCANS_PER_TIMEOUT).max(EXPIRE_EVERY_NS);
        let rate = match self.cfg.mode {
            LoadMode::Closed => None,
            LoadMode::Open { rate } => Some(rate / self.cfg.threads as f64),
        };
        let mut tokens_issued = 0u64;
        let mut round_robin = index;
        let mut done = false;
        let mut last_expire = 0u64;
        let mut last_publish = 0u64;
        loop {
            let now = self.now_ns();
            if !done
                && (self.shared.stop.load(Ordering::Relaxed)
                    || deadline_ns.is_some_and(|d| now >= d)
                    || self.quota_left() == 0)
            {
                done = true;
                // A deadline passed while waiting ends sending at the deadline itself.
                self.sending_end_ns = match deadline_ns {
                    Some(d) if now >= d => d,
                    _ => now,
                };
            }
            if done || now - last_expire >= expire_every_ns {
                last_expire = now;
                self.expire(now.saturating_sub(timeout_ns));
            }
            let mut wait = Duration::from_nanos(EXPIRE_EVERY_NS);
            if !done {
                match rate {
                    None => {
                        for i in 0..self.socks.len() {
                            let budget = self.socks[i].table.available();
                            self.send_on(i, budget, now);
                        }
                    }
                    Some(rate) => {
                        let due = (now as f64 / 1e9 * rate) as u64;
                        let owed = due.saturating_sub(tokens_issued);
                        let (sent, full) = self.send_open_loop(owed, &mut round_robin, now);
                        if full {
                            // Every slot busy: the tracker is slower than the target rate.
                            self.stats.skipped(owed - sent, now);
                            tokens_issued += owed;
                        } else {
                            // Requests not sent for want of a connection id are carried.
                            tokens_issued += sent;
                        }
                        let next_ns = ((tokens_issued + 1) as f64 / rate * 1e9) as u64;
                        wait = wait.min(Duration::from_nanos(next_ns.saturating_sub(now)));
                    }
                }
                if let Some(d) = deadline_ns {
                    wait = wait.min(Duration::from_nanos(d.saturating_sub(now)));
                }
            } else if self.socks.iter().all(|s| s.table.in_flight() == 0) {
                break;
            }
            if self.cfg.spin {
                wait = Duration::ZERO;
            }
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.drain(event.token().0);
            }
            let now = self.now_ns();
            if now - last_publish >= PUBLISH_EVERY_NS {
                last_publish = now;
                self.stats.publish(live);
            }
        }
        Ok(())
    }

    /// Open loop: spreads `owed` requests over the sockets. Returns how many were sent and
    /// whether sending stopped because every in-flight slot was taken.
    fn send_open_loop(&mut self, owed: u64, round_robin: &mut usize, now: u64) -> (u64, bool) {
        let n = self.socks.len();
        let mut left = owed.min(self.quota_left() as u64);
        let mut sent = 0u64;
        let mut capacity_limited = false;
        for k in 0..n {
            if left == 0 {
                break;
            }
            let i = (*round_robin + k) % n;
            let share = left.div_ceil((n - k) as u64) as usize;
            let available = self.socks[i].table.available();
            if available < share {
                capacity_limited = true;
            }
            let s = self.send_on(i, share.min(available), now) as u64;
            sent += s;
            left -= s.min(left);
        }
        *round_robin = (*round_robin + 1) % n;
        (sent, left > 0 && capacity_limited)
    }

    /// Sends up to `budget` requests on socket `i`, in batches. Returns how many went out.
    fn send_on(&mut self, i: usize, budget: usize, now: u64) -> usize {
        let mut budget = budget.min(self.quota_left());
        let mut total = 0;
        while budget > 0 {
            let want = budget.min(self.cfg.batch);
            let built = self.build_batch(i, want, now);
            if built == 0 {
                break;
            }
            let sock = &mut self.socks[i];
            let bufs = &mut self.bufs;
            let stats = &mut self.stats;
            // Give back the slots of what did not go out.
            let report = bufs.send.send(&sock.udp, |k, why| {
                if let Some(issued) = sock.table.take(bufs.send_tids[k]) {
                    stats.unsent(&issued);
                    if issued.kind == Kind::Connect {
                        sock.refreshing = false;
                    }
                }
                if let fjord_udp::Unsent::Error(_) = why {
                    stats.socket_error(now);
                }
            });
            let sent = report.sent;
            if report.would_block > 0 {
                self.stats.send_blocked(report.would_block as u64, now);
            }
            self.sent_total += sent as u64;
            self.last_activity_ns = now;
            total += sent;
            budget -= built;
            if report.would_block > 0 {
                break;
            }
        }
        total
    }

    /// Writes up to `want` requests for socket `i` into the send buffers and returns how
    /// many. A socket without a connection id only sends the connect that fetches one.
    fn build_batch(&mut self, i: usize, want: usize, now: u64) -> usize {
        let cfg = self.cfg;
        let reconnect_ns = cfg.reconnect_after.as_nanos() as u64;
        let mut k = 0;
        let sock = &mut self.socks[i];
        let needs_id = match sock.conn {
            None => true,
            Some(_) => {
                now.saturating_sub(sock.conn_at_ns) >= reconnect_ns
                    || (sock.refresh_needed
                        && now.saturating_sub(sock.conn_at_ns) >= ERROR_RECONNECT_NS)
            }
        };
        if needs_id && !sock.refreshing && want > 0 {
            let issued = Issued {
                kind: Kind::Connect,
                scrape_hashes: 0,
                sent_ns: now,
            };
            if let Some(tid) = sock.table.issue(issued) {
                let len = Request::Connect(ConnectRequest {
                    transaction_id: TransactionId(tid),
                })
                .write(self.bufs.send.next_buf().expect("the batch has room"))
                .expect("connect fits");
                sock.refreshing = true;
                self.bufs.send.push_connected(len);
                self.bufs.send_tids[k] = tid;
                self.stats.sent(Kind::Connect, now);
                k += 1;
            }
        }
        let Some(conn) = sock.conn else {
            return k;
        };
        let mix = cfg.mix;
        let total_weight = mix.connect + mix.announce + mix.scrape;
        let pop = &cfg.population;
        while k < want {
            let r = self.rng.random_range(0..total_weight);
            let kind = if r < mix.connect {
                Kind::Connect
            } else if r < mix.connect + mix.announce {
                Kind::Announce
            } else {
                Kind::Scrape
            };
            let scrape_hashes = if kind == Kind::Scrape {
                self.rng.random_range(pop.scrape_min..=pop.scrape_max)
            } else {
                0
            };
            let Some(tid) = sock.table.issue(Issued {
                kind,
                scrape_hashes,
                sent_ns: now,
            }) else {
                break;
            };
            let transaction_id = TransactionId(tid);
            let connection_id = ConnectionId(conn);
            let buf = self.bufs.send.next_buf().expect("the batch has room");
            let written = match kind {
                Kind::Connect => Request::Connect(ConnectRequest { transaction_id }).write(buf),
                Kind::Announce => {
                    let slot = self.rng.random_range(0..sock.peers.len());
                    let peer = &mut sock.peers[slot];
                    let (event, left) =
                        peer.next_announce(&mut self.rng, pop.events, pop.seeder_ratio);
                    let global = sock.first_peer + sock.stride * slot as u32;
                    let num_want = match (pop.events, event) {
                        // Real clients ask for no peers when they leave.
                        (EventModel::Lifecycle { .. }, AnnounceEvent::Stopped) => 0,
                        _ => pop.num_want,
                    };
                    Request::Announce(AnnounceRequest {
                        connection_id,
                        transaction_id,
                        info_hash: InfoHash(population::info_hash(pop.seed, peer.swarm)),
                        peer_id: PeerId(population::peer_id(pop.seed, global)),
                        downloaded: 0,
                        left,
                        uploaded: 0,
                        event,
                        ip_address: 0,
                        key: population::mix64(pop.seed ^ u64::from(global)) as u32,
                        num_want,
                        port: peer.port,
                        options: AnnounceOptions::new(&cfg.announce_options),
                    })
                    .write(buf)
                }
                Kind::Scrape => {
                    let n = usize::from(scrape_hashes);
                    for h in &mut self.bufs.scrape[..n] {
                        *h = population::info_hash(
                            pop.seed,
                            self.shared.sampler.sample(&mut self.rng),
                        );
                    }
                    Request::Scrape(ScrapeRequest {
                        connection_id,
                        transaction_id,
                        info_hashes: &self.bufs.scrape[..n],
                        truncated: false,
                    })
                    .write(buf)
                }
            };
            let len = written.expect("requests fit the send buffer");
            self.bufs.send.push_connected(len);
            self.bufs.send_tids[k] = tid;
            self.stats.sent(kind, now);
            k += 1;
        }
        k
    }

    fn expire(&mut self, deadline_ns: u64) {
        let stats = &mut self.stats;
        for sock in &mut self.socks {
            let mut connect_expired = false;
            sock.table.expire(deadline_ns, |issued| {
                stats.timeout(&issued);
                connect_expired |= issued.kind == Kind::Connect;
            });
            if connect_expired {
                sock.refreshing = false;
            }
        }
    }

    /// Reads everything waiting on socket `i` and accounts for it.
    fn drain(&mut self, i: usize) {
        let batch = self.cfg.batch;
        loop {
            let sock = &mut self.socks[i];
            let bufs = &mut self.bufs;
            let n = match bufs.recv.recv(&sock.udp) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // An ICMP error (e.g. port unreachable) queued on the socket.
                    let now = self.now_ns();
                    self.stats.socket_error(now);
                    continue;
                }
            };
            let now = self.start.elapsed().as_nanos() as u64;
            for d in bufs.recv.iter() {
                let outcome = validate::classify(&mut sock.table, d.data, d.truncated, self.family);
                account(&mut self.stats, sock, outcome, now);
            }
            if n > 0 {
                self.last_activity_ns = now;
            }
            // A short batch emptied the queue; a datagram arriving later raises a new
            // readiness edge.
            if n < batch {
                break;
            }
        }
    }
}

fn account(stats: &mut ThreadStats, sock: &mut Sock, outcome: Outcome, now: u64) {
    match outcome {
        Outcome::Connect {
            issued,
            connection_id,
        } => {
            stats.response(&issued, now);
            stats.connection_ids += 1;
            sock.conn = Some(connection_id);
            sock.conn_at_ns = issued.sent_ns;
            sock.refreshing = false;
            sock.refresh_needed = false;
        }
        Outcome::Announce { issued, peers } => {
            stats.response(&issued, now);
            stats.peers_received(&issued, peers);
        }
        Outcome::Scrape { issued } => stats.response(&issued, now),
        Outcome::Error { issued } => {
            stats.error_reply(&issued);
            if issued.kind == Kind::Connect {
                sock.refreshing = false;
            } else {
                sock.refresh_needed = true;
            }
        }
        Outcome::Malformed { issued, reason } => {
            stats.malformed(&issued, reason);
            if issued.kind == Kind::Connect {
                sock.refreshing = false;
            }
        }
        Outcome::Unexpected => stats.unexpected(now),
    }
}
