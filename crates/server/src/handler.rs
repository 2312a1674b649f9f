//! The sans-IO request handler: bytes, source address and time in; reply bytes out.
//!
//! [`RequestHandler::handle`] decides every protocol behaviour of fjord; the worker only moves
//! datagrams between sockets and this function, or its batch form
//! [`RequestHandler::handle_batch`], which answers the same way but in stages (parse and check
//! every datagram, then prefetch the swarms of the batch's announces, then serve them), so that
//! the store's cache misses of a batch overlap. One handler per worker: it owns that worker's
//! counters, RNG, rate limiter, admission sketches and cached access list; the store, the
//! connection-id key and the access-list source are shared ([`Shared`]).
//!
//! Rules, in order:
//! 0. Rate: a datagram from a source prefix over its rate ([`crate::limiter`]) is dropped before
//!    it is parsed (counted `rate_limited`), or, with `limits.backoff`, an announce with a valid
//!    connection id gets a back-off reply (no peers, a long interval; 20 bytes).
//! 1. Parse. Short, wrong protocol id, unknown action, client-sent error: silence (counted).
//! 2. Connect: reply 16 bytes (never larger than the 16-byte request).
//! 3. Anything else needs a valid connection id for the source IP; otherwise silence. Only
//!    after that may a reply be larger than the request, or be an error.
//! 4. Malformed with a valid id: a short error reply echoing the transaction id.
//! 5. Announce: access list (denied: short error reply, or a back-off reply), then the store,
//!    then store admission ([`crate::admission`]: a prefix at its cap gets no new peer or
//!    swarm, and is still answered); the `ip` field is ignored, the peer is (source IP,
//!    announced port), the entry size follows the packet's family, `num_want` is capped per
//!    family, the interval is the one in force ([`crate::adaptive_interval`]).
//! 6. Scrape: one row per requested hash, in order, duplicates kept, cut to the configured max.

use crate::fjord_store;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use crate::fjord_store::{PeerSink, PeerStatus, PeerStore, Pinned, SwarmCounts, SwarmKey};
use fjord_protocol::{
    AnnounceEvent, AnnounceRequest, AnnounceResponseHeader, AnnounceResponseWriter,
    ConnectResponse, ConnectionId, ErrorResponse, ParseLimits, PeerEntry, Request, RequestError,
    ScrapeRequest, ScrapeStats, TransactionId, write_announce_response_v4, write_scrape_response,
};

use crate::access_list::{AccessListCache, AccessListSource};
use crate::adaptive_interval::AnnounceInterval;
use crate::admission::{Admission, Refusal, Stored, peer_lifetime_secs};
use crate::config::{AdmissionConfig, Config, DeniedReply, LimitsConfig};
use crate::connection_id::ConnectionIdValidator;
use crate::counters::{Action, BackoffReason, Counters, DropReason, ErrorReason, IpFamily};
use crate::limiter::RateLimiter;
use crate::worker::{Now, StoreClock};

/// Room for one reply: the largest is 1,220 bytes (200 IPv4 peers).
pub const MAX_REPLY: usize = 1280;

/// Error message for an announce refused by the access list.
pub const ACCESS_DENIED_MESSAGE: &str = "info hash not allowed";

/// Protocol settings the handler needs (from [`Config`]).
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// Announce interval configured (`protocol.announce_interval_secs`), seconds.
    pub announce_interval: u32,
    /// The interval in force, sent to clients (raised under load by the maintenance thread).
    pub interval: AnnounceInterval,
    /// Interval of back-off replies, seconds.
    pub backoff_interval: u32,
    /// What an announce for a refused info hash gets.
    pub denied_reply: DeniedReply,
    /// The rate limiter's settings (each handler builds its own limiter from them).
    pub rate_limits: LimitsConfig,
    /// Store admission's settings (each handler builds its own sketches from them).
    pub admission: AdmissionConfig,
    /// Seconds a peer may stay stored after its last announce (admission's window).
    pub peer_lifetime_secs: u32,
    /// Worker threads sharing the limits (each allows 1/workers of them).
    pub workers: usize,
    /// Peers returned for a negative `num_want`.
    pub default_num_want: i32,
    /// Cap for IPv4 replies.
    pub max_num_want_v4: i32,
    /// Cap for IPv6 replies.
    pub max_num_want_v6: i32,
    /// Parser limits (scrape hashes).
    pub limits: ParseLimits,
}

impl HandlerSettings {
    /// From a validated configuration.
    pub fn from_config(c: &Config) -> Self {
        HandlerSettings {
            announce_interval: c.protocol.announce_interval_secs,
            interval: AnnounceInterval::new(c.protocol.announce_interval_secs),
            backoff_interval: c.protocol.backoff_interval_secs,
            denied_reply: c.access_list.denied_reply,
            rate_limits: c.limits.clone(),
            admission: c.admission.clone(),
            peer_lifetime_secs: peer_lifetime_secs(
                c.store.peer_timeout_secs,
                c.store.clean_cycle_secs,
                c.store.clean_interval_ms,
            ),
            workers: c.effective_workers(),
            default_num_want: c.protocol.default_num_want,
            max_num_want_v4: c.protocol.max_num_want_v4,
            max_num_want_v6: c.protocol.max_num_want_v6,
            limits: ParseLimits {
                max_scrape_hashes: c.protocol.max_scrape_hashes,
            },
        }
    }
}

/// State shared by all workers, read-only except through the store's and the source's own
/// synchronisation.
pub struct Shared {
    /// The peer store.
    pub store: Arc<PeerStore>,
    /// Connection-id key and lifetime.
    pub validator: ConnectionIdValidator,
    /// Access list in force.
    pub access: Arc<AccessListSource>,
    /// Protocol settings.
    pub settings: HandlerSettings,
    /// The store's monotonic clock (workers and the cleaner read the same one).
    pub clock: StoreClock,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Maps an address to the family the protocol sees: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// One worker's request handler.
pub struct RequestHandler {
    shared: Arc<Shared>,
    access: AccessListCache,
    /// This worker's rate limiter (`None`: `limits.enabled = false`).
    limiter: Option<RateLimiter>,
    /// This worker's store admission (`None`: `admission.enabled = false`).
    admission: Option<Admission>,
    /// This worker's counters (plain integers; published by the worker).
    pub counters: Counters,
    rng: u64,
    rows: Vec<SwarmCounts>,
    /// The current batch's announces that passed their checks, by datagram index, and
    /// their swarms' keys with the random number each selects its peers with (see
    /// `handle_batch`).
    admitted: Vec<(usize, Admitted)>,
    keys: Vec<(SwarmKey, u64)>,
}

/// Where a batch's replies go: buffers handed out one at a time, each committed (or not) as
/// the reply to one datagram of the batch. The worker's is its send batch.
pub trait ReplySink {
    /// A buffer of at least [`MAX_REPLY`] bytes for the next reply, or `None` when full.
    fn buf(&mut self) -> Option<&mut [u8]>;
    /// Queues the first `len` bytes of the last buffer as the reply to datagram `j`.
    fn commit(&mut self, j: usize, len: usize);
}

/// What the checks made of one datagram.
enum Prepared {
    /// Answered: this many bytes of the buffer.
    Reply(usize),
    /// Dropped (counted).
    Silence,
    /// An announce that passed its checks, waiting for the store.
    Announce(Admitted),
}

/// An announce that passed its checks (connection id, access list), with what the store and
/// the reply need of it: the datagram's bytes are not kept across the batch's stages.
#[derive(Clone, Copy)]
struct Admitted {
    ip: IpAddr,
    info_hash: [u8; 20],
    tid: TransactionId,
    left: i64,
    event: fjord_store::AnnounceEvent,
    num_want: i32,
    port: u16,
}

impl RequestHandler {
    /// A handler for one worker; `seed` seeds its peer-selection RNG.
    pub fn new(shared: Arc<Shared>, seed: u64) -> Self {
        let s = &shared.settings;
        RequestHandler {
            access: shared.access.cache(),
            limiter: RateLimiter::from_config(&s.rate_limits, s.workers),
            admission: Admission::from_config(
                &s.admission,
                shared.store.config().max_peers,
                s.peer_lifetime_secs,
                s.workers,
            ),
            shared,
            counters: Counters::default(),
            rng: seed,
            rows: Vec::with_capacity(80),
            admitted: Vec::with_capacity(64),
            keys: Vec::with_capacity(64),
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Handles one datagram from `src` received at `now` (Unix seconds for connection ids, the
    /// store's monotonic seconds for peers). Writes the reply into
    /// `out` (at least [`MAX_REPLY`] bytes) and returns its length, or `None` for
    /// silence. Counts everything.
    pub fn handle(
        &mut self,
        now: Now,
        src: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        match self.prepare(now, src, bytes, out) {
            Prepared::Reply(n) => Some(n),
            Prepared::Silence => None,
            Prepared::Announce(a) => {
                self.refresh_pressure(now.store);
                let store = &self.shared.store;
                let (pinned, key) = (store.pin(), store.swarm_key(&a.info_hash));
                let random = next_random(&mut self.rng);
                let mut serve = Serve {
                    counters: &mut self.counters,
                    admission: self.admission.as_mut(),
                    settings: &self.shared.settings,
                };
                serve.announce(&pinned, &a, &key, now.store, random, out)
            }
        }
    }

    /// Handles the `n` datagrams `datagram(0..n)` received at `now`, answering each exactly as
    /// [`RequestHandler::handle`] would, into `replies`; the batch's announces are served
    /// after all its datagrams were checked, with their swarms prefetched in three passes (map
    /// slots, blocks, then the lines of big blocks that the upsert and the selection read
    /// first) under one epoch pin. Replies to announces come after the others.
    pub fn handle_batch<'d>(
        &mut self,
        now: Now,
        n: usize,
        datagram: impl Fn(usize) -> (SocketAddr, &'d [u8]),
        replies: &mut impl ReplySink,
    ) {
        self.admitted.clear();
        for j in 0..n {
            let (src, bytes) = datagram(j);
            let Some(out) = replies.buf() else { break };
            match self.prepare(now, src, bytes, out) {
                Prepared::Reply(len) => replies.commit(j, len),
                Prepared::Silence => {}
                Prepared::Announce(a) => self.admitted.push((j, a)),
            }
        }
        if self.admitted.is_empty() {
            return;
        }
        self.refresh_pressure(now.store);
        let pinned = self.shared.store.pin();
        self.keys.clear();
        let rng = &mut self.rng;
        self.keys.extend(self.admitted.iter().map(|(_, a)| {
            let key = match a.ip {
                IpAddr::V4(_) => pinned.prefetch_map::<SocketAddrV4>(&a.info_hash),
                IpAddr::V6(_) => pinned.prefetch_map::<SocketAddrV6>(&a.info_hash),
            };
            (key, next_random(rng))
        }));
        for ((_, a), (key, _)) in self.admitted.iter().zip(&self.keys) {
            match a.ip {
                IpAddr::V4(_) => pinned.prefetch_block::<SocketAddrV4>(key),
                IpAddr::V6(_) => pinned.prefetch_block::<SocketAddrV6>(key),
            }
        }
        for ((_, a), (key, random)) in self.admitted.iter().zip(&self.keys) {
            match a.ip {
                IpAddr::V4(ip) => {
                    pinned.prefetch_peers(key, &SocketAddrV4::new(ip, a.port), *random)
                }
                IpAddr::V6(ip) => {
                    pinned.prefetch_peers(key, &SocketAddrV6::new(ip, a.port, 0, 0), *random)
                }
            }
        }
        let mut serve = Serve {
            counters: &mut self.counters,
            admission: self.admission.as_mut(),
            settings: &self.shared.settings,
        };
        for ((j, a), (key, random)) in self.admitted.iter().zip(&self.keys) {
            let Some(out) = replies.buf() else { break };
            if let Some(len) = serve.announce(&pinned, a, key, now.store, *random, out) {
                replies.commit(*j, len);
            }
        }
    }

    /// Admission looks at the store's fill once per store-clock second.
    #[inline]
    fn refresh_pressure(&mut self, now: u32) {
        let Some(admission) = self.admission.as_mut() else {
            return;
        };
        if !admission.pressure_stale(now) {
            return;
        }
        let (stats, config) = (self.shared.store.stats(), self.shared.store.config());
        let peers = stats.v4.seeders + stats.v4.leechers + stats.v6.seeders + stats.v6.leechers;
        admission.set_fill(
            now,
            (peers, config.max_peers as u64),
            (stats.v4.swarms + stats.v6.swarms, config.max_swarms as u64),
        );
    }

    /// Parses and checks one datagram: answers what needs no store (connects, errors,
    /// scrapes), drops what must be dropped, and admits announces.
    fn prepare(&mut self, now: Now, src: SocketAddr, bytes: &[u8], out: &mut [u8]) -> Prepared {
        let ip = canonical_ip(src.ip());
        let v = IpFamily::of(&ip);
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += bytes.len() as u64;
        if let Some(limiter) = &mut self.limiter
            && !limiter.allows(ip, now.store)
        {
            return reply(self.over_rate(now.unix, ip, v, bytes, out));
        }
        let request = match Request::parse(bytes, &self.shared.settings.limits) {
            Ok(r) => r,
            Err(e) => return reply(self.parse_error(now.unix, ip, v, &e, out)),
        };
        let reply = match request {
            Request::Connect(c) => {
                self.count_request(Action::Connect, v);
                let id = self.shared.validator.issue(now.unix, ip);
                let r = ConnectResponse {
                    transaction_id: c.transaction_id,
                    connection_id: ConnectionId(id),
                };
                r.write(out).ok().map(|n| (n, Action::Connect))
            }
            Request::Announce(a) => {
                self.count_request(Action::Announce, v);
                if !self
                    .shared
                    .validator
                    .is_valid(a.connection_id.0, ip, now.unix)
                {
                    return reply(self.silence(DropReason::BadConnectionId));
                }
                if !self.access.load().allows(&a.info_hash.0) {
                    match self.shared.settings.denied_reply {
                        DeniedReply::Error => self.error_reply(
                            a.transaction_id,
                            ACCESS_DENIED_MESSAGE,
                            ErrorReason::AccessDenied,
                            out,
                        ),
                        DeniedReply::Backoff => {
                            self.backoff_reply(a.transaction_id, BackoffReason::AccessDenied, out)
                        }
                    }
                } else {
                    return Prepared::Announce(self.admit(ip, &a));
                }
            }
            Request::Scrape(s) => {
                self.count_request(Action::Scrape, v);
                if !self
                    .shared
                    .validator
                    .is_valid(s.connection_id.0, ip, now.unix)
                {
                    return reply(self.silence(DropReason::BadConnectionId));
                }
                self.scrape(ip, &s, out).map(|n| (n, Action::Scrape))
            }
        };
        let Some((len, action)) = reply else {
            return Prepared::Silence;
        };
        self.counters.count_response(action, v);
        Prepared::Reply(len)
    }

    fn count_request(&mut self, a: Action, v: IpFamily) {
        self.counters.count_request(a, v);
    }

    /// A datagram from a source over its rate: silence, or (`limits.backoff`) a back-off reply
    /// to an announce with a valid connection id.
    #[cold]
    fn over_rate(
        &mut self,
        now: u32,
        ip: IpAddr,
        v: IpFamily,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        if self.shared.settings.rate_limits.backoff
            && let Ok(Request::Announce(a)) = Request::parse(bytes, &self.shared.settings.limits)
            && self.shared.validator.is_valid(a.connection_id.0, ip, now)
        {
            self.count_request(Action::Announce, v);
            let (n, action) =
                self.backoff_reply(a.transaction_id, BackoffReason::RateLimited, out)?;
            self.counters.count_response(action, v);
            return Some(n);
        }
        self.silence(DropReason::RateLimited)
    }

    /// A valid announce reply with no peers and the back-off interval (20 bytes).
    fn backoff_reply(
        &mut self,
        tid: TransactionId,
        reason: BackoffReason,
        out: &mut [u8],
    ) -> Option<(usize, Action)> {
        let h = header(tid, self.shared.settings.backoff_interval, 0u32, 0u32);
        let n = write_announce_response_v4(out, &h, std::iter::empty()).ok()?;
        self.counters.backoff_replies[reason as usize] += 1;
        Some((n, Action::Announce))
    }

    /// Answers with silence, counted under `reason`.
    fn silence(&mut self, reason: DropReason) -> Option<usize> {
        self.counters.drops[reason as usize] += 1;
        None
    }

    fn parse_error(
        &mut self,
        now: u32,
        ip: IpAddr,
        v: IpFamily,
        e: &RequestError,
        out: &mut [u8],
    ) -> Option<usize> {
        match e {
            RequestError::TooShort => self.silence(DropReason::Short),
            RequestError::BadProtocolId => self.silence(DropReason::BadProtocolId),
            RequestError::ClientSentError => self.silence(DropReason::ClientError),
            RequestError::UnknownAction { .. } => self.silence(DropReason::UnknownAction),
            RequestError::Malformed { .. } => {
                let Some(ctx) = e.reply_context() else {
                    return self.silence(DropReason::Malformed);
                };
                if !self.shared.validator.is_valid(ctx.connection_id.0, ip, now) {
                    return self.silence(DropReason::Malformed);
                }
                let n = ctx.response().write(out).ok()?;
                self.counters.errors_sent[ErrorReason::Malformed as usize] += 1;
                self.counters.count_response(Action::Error, v);
                Some(n)
            }
        }
    }

    fn error_reply(
        &mut self,
        tid: TransactionId,
        message: &str,
        reason: ErrorReason,
        out: &mut [u8],
    ) -> Option<(usize, Action)> {
        let n = ErrorResponse {
            transaction_id: tid,
            message: message.as_bytes(),
        }
        .write(out)
        .ok()?;
        self.counters.errors_sent[reason as usize] += 1;
        Some((n, Action::Error))
    }

    /// Counts what an admitted announce says (client, completion) and keeps what the store
    /// needs of it.
    fn admit(&mut self, ip: IpAddr, a: &AnnounceRequest<'_>) -> Admitted {
        self.counters
            .clients
            .count(&a.peer_id.0, a.event == AnnounceEvent::Started);
        let event = match a.event {
            AnnounceEvent::Started => fjord_store::AnnounceEvent::Started,
            AnnounceEvent::Completed => fjord_store::AnnounceEvent::Completed,
            AnnounceEvent::Stopped => fjord_store::AnnounceEvent::Stopped,
            AnnounceEvent::None | AnnounceEvent::Unknown(_) => fjord_store::AnnounceEvent::None,
        };
        if event == fjord_store::AnnounceEvent::Completed {
            self.counters.completed += 1;
        }
        // The `ip` field of the request is ignored: the peer is the packet's source address.
        Admitted {
            ip,
            info_hash: a.info_hash.0,
            tid: a.transaction_id,
            left: a.left,
            event,
            num_want: a.num_want,
            port: a.port,
        }
    }

    fn scrape(&mut self, ip: IpAddr, s: &ScrapeRequest<'_>, out: &mut [u8]) -> Option<usize> {
        self.rows.clear();
        match ip {
            IpAddr::V4(_) => self
                .shared
                .store
                .scrape::<SocketAddrV4>(s.info_hashes, &mut self.rows),
            IpAddr::V6(_) => self
                .shared
                .store
                .scrape::<SocketAddrV6>(s.info_hashes, &mut self.rows),
        }
        let rows = self.rows.iter().map(|r| ScrapeStats {
            seeders: sat_u32(r.seeders),
            completed: sat_u32(r.completed),
            leechers: sat_u32(r.leechers),
        });
        write_scrape_response(out, s.transaction_id, rows).ok()
    }
}

/// wyrand: fast, non-cryptographic; only picks which peers to hand out.
fn next_random(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*rng) * u128::from(*rng ^ 0xe703_7ed1_a0b4_28db);
    (t >> 64) as u64 ^ t as u64
}

fn reply(r: Option<usize>) -> Prepared {
    r.map_or(Prepared::Silence, Prepared::Reply)
}

/// What serving an admitted announce needs of the handler (disjoint borrows of its fields:
/// no reference-count traffic per packet).
struct Serve<'h> {
    counters: &'h mut Counters,
    admission: Option<&'h mut Admission>,
    settings: &'h HandlerSettings,
}

impl Serve<'_> {
    /// Serves an admitted announce from the store and writes its reply (the peer entry size
    /// of the packet's family, the interval in force); counts the response, its peers and a
    /// peer not stored or not admitted.
    fn announce(
        &mut self,
        pinned: &Pinned<'_>,
        a: &Admitted,
        key: &SwarmKey,
        now: u32,
        random: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let s = self.settings;
        let want = if a.num_want < 0 {
            s.default_num_want
        } else {
            a.num_want
        };
        let interval = s.interval.get();
        let hdr = |seeders, leechers| header(a.tid, interval, seeders, leechers);
        let admission = self.admission.as_deref_mut();
        let (done, v) = match a.ip {
            IpAddr::V4(ip4) => {
                let (peer, want) = (SocketAddrV4::new(ip4, a.port), want.min(s.max_num_want_v4));
                let params = (want, now, random);
                let done = announce_in(pinned, a, key, peer, params, admission, hdr, out)?;
                (done, IpFamily::V4)
            }
            IpAddr::V6(ip6) => {
                let peer = SocketAddrV6::new(ip6, a.port, 0, 0);
                let params = (want.min(s.max_num_want_v6), now, random);
                let done = announce_in(pinned, a, key, peer, params, admission, hdr, out)?;
                (done, IpFamily::V6)
            }
        };
        let c = &mut *self.counters;
        match (done.refused, done.status) {
            (Some(r), _) => c.peers_not_admitted[r as usize] += 1,
            (None, PeerStatus::NotStored(reason)) => c.peers_not_stored[reason as usize] += 1,
            _ => {}
        }
        c.announce_peers.record(done.peers as u64);
        c.count_response(Action::Announce, v);
        Some(done.len)
    }
}

/// What [`announce_in`] did.
struct AnnounceDone {
    /// The store's status for the peer (before an admission refusal removed it again).
    status: PeerStatus,
    /// Admission refused the new peer (it was removed again, or its swarm not created).
    refused: Option<Refusal>,
    /// Reply length.
    len: usize,
    /// Peers in the reply.
    peers: usize,
}

/// One announce in the store for a peer of family `A`, admission's decision on it, and its
/// reply written into `out` as the store selects the peers (the entry size of that family; no
/// list in between), with the header `hdr(seeders, leechers)` written last. `None` if `out`
/// cannot hold a reply.
///
/// A prefix over its cap does not create a swarm (an unknown swarm is answered empty without
/// calling the store) and a peer it inserts is removed again at once; refreshing its existing
/// peers is unaffected.
#[allow(clippy::too_many_arguments)]
fn announce_in<A: fjord_store::PeerAddress + PeerEntry>(
    pinned: &Pinned<'_>,
    a: &Admitted,
    key: &SwarmKey,
    peer: A,
    (want, now, random): (i32, u32, u64),
    admission: Option<&mut Admission>,
    hdr: impl Fn(u32, u32) -> AnnounceResponseHeader,
    out: &mut [u8],
) -> Option<AnnounceDone> {
    let mut reply = ReplyPeers(AnnounceResponseWriter::new(out).ok()?);
    let ticket = admission.as_ref().map(|adm| adm.check(a.ip, now));
    if let Some(t) = &ticket
        && t.over_cap
        && a.event != fjord_store::AnnounceEvent::Stopped
    {
        let c = pinned.scrape_one::<A>(key.info_hash());
        if c.seeders == 0 && c.leechers == 0 {
            return Some(AnnounceDone {
                status: PeerStatus::NotStored(fjord_store::NotStoredReason::SwarmLimit),
                refused: Some(Refusal::Prefix),
                len: reply.0.finish(&hdr(0, 0)),
                peers: 0,
            });
        }
    }
    let o = pinned.announce(key, peer, a.left, a.event, want, now, random, &mut reply);
    let refused = admission.zip(ticket).and_then(|(adm, t)| {
        let stored = match o.status {
            PeerStatus::Inserted => Stored::Inserted,
            PeerStatus::Updated => Stored::Updated,
            PeerStatus::Removed | PeerStatus::NotStored(_) => Stored::Nothing,
        };
        let size = u64::from(o.seeders) + u64::from(o.leechers);
        adm.after_store(&t, key.info_hash(), stored, size, now)
    });
    let (mut seeders, mut leechers) = (o.seeders, o.leechers);
    if refused.is_some() {
        // Counted in the reply as it will be: without the peer removed below.
        let count = if a.left == 0 {
            &mut seeders
        } else {
            &mut leechers
        };
        *count = count.saturating_sub(1);
        let stop = fjord_store::AnnounceEvent::Stopped;
        pinned.announce(key, peer, a.left, stop, 0, now, random, &mut NoPeers);
    }
    let peers = reply.0.peers();
    Some(AnnounceDone {
        status: o.status,
        refused,
        len: reply.0.finish(&hdr(seeders, leechers)),
        peers,
    })
}

/// The store's peer sink writing into a reply (`want` is capped so that every peer fits one
/// datagram; one that would not is left out).
struct ReplyPeers<'a, A>(AnnounceResponseWriter<'a, A>);

impl<A: PeerEntry> PeerSink<A> for ReplyPeers<'_, A> {
    #[inline]
    fn push(&mut self, peer: A) {
        self.0.push(&peer);
    }
}

/// A sink for a store call that selects no peers (a `stopped` announce).
struct NoPeers;

impl<A> PeerSink<A> for NoPeers {
    fn push(&mut self, _: A) {}
}

fn sat_u32<T: TryInto<u32>>(v: T) -> u32 {
    v.try_into().unwrap_or(u32::MAX)
}

fn header<T: TryInto<u32>>(
    transaction_id: TransactionId,
    interval: u32,
    seeders: T,
    leechers: T,
) -> AnnounceResponseHeader {
    AnnounceResponseHeader {
        transaction_id,
        interval,
        leechers: sat_u32(leechers),
        seeders: sat_u32(seeders),
    }
}
