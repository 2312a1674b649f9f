//! Counters: plain `u64`s owned by one worker (no atomics, no lock per packet), copied into a
//! shared slot at most every 100 ms and summed on demand.
//!
//! Every counter is indexed by a small enum with a stable label value, so that the Prometheus
//! exporter can map them as `fjord_requests_total{action="announce",ip_version="4"}` and so on
//! without knowing the struct's layout: see [`Counters::visit`]. The action and the address
//! family are the codec's types ([`Action`], [`IpFamily`]), the not-stored reason is the
//! store's ([`NotStoredReason`]): one name per concept across the crates.

pub use crate::clients::ClientTally;
pub use crate::fjord_store::NotStoredReason;
use fjord_protocol::client::Client;
pub use fjord_protocol::{Action, IpFamily};

/// The label value of an action (`action="announce"`).
pub fn action_label(action: Action) -> &'static str {
    match action {
        Action::Connect => "connect",
        Action::Announce => "announce",
        Action::Scrape => "scrape",
        Action::Error => "error",
        Action::Unknown(_) => "unknown",
    }
}

/// The label value of an address family (`ip_version="4"`).
pub fn family_label(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "4",
        IpFamily::V6 => "6",
    }
}

/// Rows of the per-action arrays: the actions BEP 15 defines, indexed by wire code.
const ACTIONS: usize = Action::KNOWN.len();
/// Columns of the per-action arrays: `family as usize`.
const FAMILIES: usize = IpFamily::ALL.len();

/// Why a datagram got no reply (or a reply was not sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than 16 bytes.
    Short,
    /// Connect with the wrong protocol id.
    BadProtocolId,
    /// Action other than 0–3.
    UnknownAction,
    /// Action 3 (error) sent by a client.
    ClientError,
    /// Malformed request whose connection id could not be checked (or no reply context).
    Malformed,
    /// Forged, expired, future or other-IP connection id.
    BadConnectionId,
    /// The socket's send buffer was full (EAGAIN); the reply was dropped.
    SendBufferFull,
    /// `sendmmsg`/`send_to` failed for another reason (e.g. no route).
    SendError,
    /// The source prefix is over its rate (`[limits]`); dropped before parsing.
    RateLimited,
}

impl DropReason {
    /// All reasons, in index order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Short,
        DropReason::BadProtocolId,
        DropReason::UnknownAction,
        DropReason::ClientError,
        DropReason::Malformed,
        DropReason::BadConnectionId,
        DropReason::SendBufferFull,
        DropReason::SendError,
        DropReason::RateLimited,
    ];
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::BadProtocolId => "bad_protocol_id",
            DropReason::UnknownAction => "unknown_action",
            DropReason::ClientError => "client_error",
            DropReason::Malformed => "malformed",
            DropReason::BadConnectionId => "bad_connection_id",
            DropReason::SendBufferFull => "send_buffer_full",
            DropReason::SendError => "send_error",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

/// Why an (authenticated) error reply was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// Malformed request with a valid connection id.
    Malformed,
    /// Announce for an info hash the access list refuses.
    AccessDenied,
}

impl ErrorReason {
    /// All reasons, in index order.
    pub const ALL: [ErrorReason; 2] = [ErrorReason::Malformed, ErrorReason::AccessDenied];
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            ErrorReason::Malformed => "malformed",
            ErrorReason::AccessDenied => "access_denied",
        }
    }
}

/// Why a back-off reply (an announce reply with no peers and a long interval) was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackoffReason {
    /// The access list refuses the info hash (`access_list.denied_reply = "backoff"`).
    AccessDenied,
    /// The source is over its rate (`limits.backoff = true`).
    RateLimited,
}

impl BackoffReason {
    /// All reasons, in index order.
    pub const ALL: [BackoffReason; 2] = [BackoffReason::AccessDenied, BackoffReason::RateLimited];
    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            BackoffReason::AccessDenied => "access_denied",
            BackoffReason::RateLimited => "rate_limited",
        }
    }
}

pub use crate::admission::Refusal as AdmissionRefusal;

/// Why the store did not keep an announcing peer (the store's own type), in index order.
pub const NOT_STORED_REASONS: [NotStoredReason; 4] = [
    NotStoredReason::StoreFull,
    NotStoredReason::SwarmLimit,
    NotStoredReason::InvalidPort,
    NotStoredReason::UnknownPeerStopped,
];

/// The label value of a reason the store did not keep a peer.
pub fn not_stored_label(reason: NotStoredReason) -> &'static str {
    match reason {
        NotStoredReason::StoreFull => "store_full",
        NotStoredReason::SwarmLimit => "swarm_limit",
        NotStoredReason::InvalidPort => "invalid_port",
        NotStoredReason::UnknownPeerStopped => "unknown_peer_stopped",
    }
}

/// Number of finite buckets of a [`Histogram`].
pub const BUCKETS: usize = 8;

/// A histogram with fixed upper bounds (Prometheus `le` buckets; counts here are per bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    /// Inclusive upper bounds of the finite buckets, ascending; one more bucket is +Inf.
    pub bounds: [u64; BUCKETS],
    /// Observations per bucket (the last entry is +Inf). Not cumulative.
    pub counts: [u64; BUCKETS + 1],
    /// Sum of observed values.
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Empty histogram with these bounds.
    pub const fn new(bounds: [u64; BUCKETS]) -> Self {
        Histogram {
            bounds,
            counts: [0; BUCKETS + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(BUCKETS);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Adds another histogram with the same bounds.
    pub fn merge(&mut self, o: &Self) {
        for (x, y) in self.counts.iter_mut().zip(o.counts) {
            *x += y;
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    /// Cumulative `(le, count)` pairs, ending with `(u64::MAX, count)` for +Inf.
    pub fn cumulative(&self) -> [(u64, u64); BUCKETS + 1] {
        let mut acc = 0;
        let mut v = [(0, 0); BUCKETS + 1];
        for (i, slot) in v.iter_mut().enumerate() {
            acc += self.counts[i];
            *slot = (self.bounds.get(i).copied().unwrap_or(u64::MAX), acc);
        }
        v
    }
}

/// Bounds of the batch-size histograms (datagrams per recvmmsg / sendmmsg call).
pub const BATCH_BUCKETS: [u64; BUCKETS] = [1, 2, 4, 8, 16, 32, 64, 128];
/// Bounds of the announce peer-count histogram (peers per announce reply).
pub const PEERS_BUCKETS: [u64; BUCKETS] = [0, 1, 5, 10, 25, 50, 100, 200];

fn cell(a: &[[u64; FAMILIES]; ACTIONS], action: Action, family: IpFamily) -> u64 {
    a.get(action.to_wire() as usize)
        .map_or(0, |row| row[family as usize])
}

fn bump(a: &mut [[u64; FAMILIES]; ACTIONS], action: Action, family: IpFamily) {
    if let Some(row) = a.get_mut(action.to_wire() as usize) {
        row[family as usize] += 1;
    }
}

/// All counters of one worker, and (summed) of the whole server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Parsed requests by [action wire code][family] (`Action::Error` is never counted here).
    pub requests: [[u64; FAMILIES]; ACTIONS],
    /// Replies produced by [action wire code][family]; `Action::Error` counts error replies.
    pub responses: [[u64; FAMILIES]; ACTIONS],
    /// Datagrams dropped or replies not sent, by [`DropReason`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Error replies sent, by [`ErrorReason`].
    pub errors_sent: [u64; ErrorReason::ALL.len()],
    /// Announces whose peer the store did not keep, by [`NotStoredReason`].
    pub peers_not_stored: [u64; NOT_STORED_REASONS.len()],
    /// Announces whose new peer admission refused, by [`AdmissionRefusal`].
    pub peers_not_admitted: [u64; AdmissionRefusal::ALL.len()],
    /// Back-off replies sent, by [`BackoffReason`].
    pub backoff_replies: [u64; BackoffReason::ALL.len()],
    /// Datagrams the kernel dropped on the sockets (receive buffer full), by [`IpFamily`]
    /// of the socket (`SO_MEMINFO`, read by the worker at each publish).
    pub kernel_drops: [u64; FAMILIES],
    /// Announces with event `completed`.
    pub completed: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received (UDP payload).
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: u64,
    /// Receive errors other than WouldBlock/EINTR.
    pub rx_errors: u64,
    /// Datagrams per receive call.
    pub recv_batch: Histogram,
    /// Datagrams per send call.
    pub send_batch: Histogram,
    /// Peers in each announce reply.
    pub announce_peers: Histogram,
    /// Announces by client software and version (from the peer id).
    pub clients: ClientTally,
}

/// What `RunningServer::counters` returns: the sum over workers.
pub type CountersSnapshot = Counters;

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: [[0; FAMILIES]; ACTIONS],
            responses: [[0; FAMILIES]; ACTIONS],
            drops: [0; DropReason::ALL.len()],
            errors_sent: [0; ErrorReason::ALL.len()],
            peers_not_stored: [0; NOT_STORED_REASONS.len()],
            peers_not_admitted: [0; AdmissionRefusal::ALL.len()],
            backoff_replies: [0; BackoffReason::ALL.len()],
            kernel_drops: [0; FAMILIES],
            completed: 0,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            rx_errors: 0,
            recv_batch: Histogram::new(BATCH_BUCKETS),
            send_batch: Histogram::new(BATCH_BUCKETS),
            announce_peers: Histogram::new(PEERS_BUCKETS),
            clients: ClientTally::default(),
        }
    }
}

/// One exported value, for [`Counters::visit`].
#[derive(Debug, Clone, Copy)]
pub enum Metric<'a> {
    /// A counter: name, labels, value.
    Counter(&'static str, &'a [(&'static str, &'static str)], u64),
    /// A histogram: name, buckets (`le`, cumulative count), sum, count.
    Histogram(&'static str, &'a [(u64, u64)], u64, u64),
}

impl Counters {
    /// Requests of `action` over `family` (0 for an unknown action: never counted).
    pub fn requests(&self, action: Action, family: IpFamily) -> u64 {
        cell(&self.requests, action, family)
    }
    /// Replies of `action` over `family`.
    pub fn responses(&self, action: Action, family: IpFamily) -> u64 {
        cell(&self.responses, action, family)
    }
    /// Counts one request of `action` over `family`.
    #[inline]
    pub fn count_request(&mut self, action: Action, family: IpFamily) {
        bump(&mut self.requests, action, family);
    }
    /// Counts one reply of `action` over `family`.
    #[inline]
    pub fn count_response(&mut self, action: Action, family: IpFamily) {
        bump(&mut self.responses, action, family);
    }
    /// Drops for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
    /// Error replies for `reason`.
    pub fn errors_sent(&self, reason: ErrorReason) -> u64 {
        self.errors_sent[reason as usize]
    }
    /// Peers not stored for `reason`.
    pub fn peers_not_stored(&self, reason: NotStoredReason) -> u64 {
        self.peers_not_stored[reason as usize]
    }
    /// New peers admission refused for `reason`.
    pub fn peers_not_admitted(&self, reason: AdmissionRefusal) -> u64 {
        self.peers_not_admitted[reason as usize]
    }
    /// Back-off replies sent for `reason`.
    pub fn backoff_replies(&self, reason: BackoffReason) -> u64 {
        self.backoff_replies[reason as usize]
    }
    /// Datagrams the kernel dropped on the sockets of `family`.
    pub fn kernel_drops(&self, family: IpFamily) -> u64 {
        self.kernel_drops[family as usize]
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Counters) {
        for (mine, theirs) in [
            (&mut self.requests, &o.requests),
            (&mut self.responses, &o.responses),
        ] {
            for (x, y) in mine.iter_mut().flatten().zip(theirs.iter().flatten()) {
                *x += y;
            }
        }
        for (x, y) in self.drops.iter_mut().zip(o.drops) {
            *x += y;
        }
        for (x, y) in self.errors_sent.iter_mut().zip(o.errors_sent) {
            *x += y;
        }
        for (mine, theirs) in [
            (&mut self.peers_not_stored[..], &o.peers_not_stored[..]),
            (&mut self.peers_not_admitted[..], &o.peers_not_admitted[..]),
            (&mut self.backoff_replies[..], &o.backoff_replies[..]),
            (&mut self.kernel_drops[..], &o.kernel_drops[..]),
        ] {
            for (x, y) in mine.iter_mut().zip(theirs) {
                *x += y;
            }
        }
        self.completed += o.completed;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_errors += o.rx_errors;
        self.recv_batch.merge(&o.recv_batch);
        self.send_batch.merge(&o.send_batch);
        self.announce_peers.merge(&o.announce_peers);
        self.clients.merge(&o.clients);
    }

    /// Calls `f` once per exported value with a Prometheus-style name and labels.
    pub fn visit(&self, mut f: impl FnMut(Metric<'_>)) {
        for a in [Action::Connect, Action::Announce, Action::Scrape] {
            for v in IpFamily::ALL {
                let l = [("action", action_label(a)), ("ip_version", family_label(v))];
                f(Metric::Counter(
                    "fjord_requests_total",
                    &l,
                    self.requests(a, v),
                ));
            }
        }
        for a in Action::KNOWN {
            for v in IpFamily::ALL {
                let l = [("action", action_label(a)), ("ip_version", family_label(v))];
                f(Metric::Counter(
                    "fjord_responses_total",
                    &l,
                    self.responses(a, v),
                ));
            }
        }
        for r in DropReason::ALL {
            f(Metric::Counter(
                "fjord_dropped_total",
                &[("reason", r.name())],
                self.drops(r),
            ));
        }
        for r in ErrorReason::ALL {
            let l = [("reason", r.name())];
            f(Metric::Counter(
                "fjord_errors_sent_total",
                &l,
                self.errors_sent(r),
            ));
        }
        for r in [
            NotStoredReason::StoreFull,
            NotStoredReason::SwarmLimit,
            NotStoredReason::InvalidPort,
        ] {
            let l = [("reason", not_stored_label(r))];
            f(Metric::Counter(
                "fjord_peers_rejected_total",
                &l,
                self.peers_not_stored(r),
            ));
        }
        // One label each: (metric, label key, label value, count).
        let single = AdmissionRefusal::ALL
            .map(|r| {
                (
                    "fjord_peers_rejected_total",
                    "reason",
                    r.name(),
                    self.peers_not_admitted(r),
                )
            })
            .into_iter()
            .chain(BackoffReason::ALL.map(|r| {
                let n = self.backoff_replies(r);
                ("fjord_backoff_replies_total", "reason", r.name(), n)
            }))
            .chain(IpFamily::ALL.map(|v| {
                let n = self.kernel_drops(v);
                ("fjord_kernel_drops_total", "ip_version", family_label(v), n)
            }));
        for (name, key, value, n) in single {
            f(Metric::Counter(name, &[(key, value)], n));
        }
        f(Metric::Counter(
            "fjord_unknown_peer_stops_total",
            &[],
            self.peers_not_stored(NotStoredReason::UnknownPeerStopped),
        ));
        f(Metric::Counter(
            "fjord_completed_events_total",
            &[],
            self.completed,
        ));
        f(Metric::Counter(
            "fjord_rx_packets_total",
            &[],
            self.rx_packets,
        ));
        f(Metric::Counter("fjord_rx_bytes_total", &[], self.rx_bytes));
        f(Metric::Counter(
            "fjord_tx_packets_total",
            &[],
            self.tx_packets,
        ));
        f(Metric::Counter("fjord_tx_bytes_total", &[], self.tx_bytes));
        f(Metric::Counter(
            "fjord_rx_errors_total",
            &[],
            self.rx_errors,
        ));
        let per_client = self.clients.per_client();
        for (c, n) in Client::ALL.iter().zip(per_client) {
            let l = [("client", c.label())];
            f(Metric::Counter(
                "fjord_client_announces_total",
                &l,
                n.announces,
            ));
            f(Metric::Counter("fjord_client_started_total", &l, n.started));
        }
        for (name, h) in [
            ("fjord_recv_batch_datagrams", &self.recv_batch),
            ("fjord_send_batch_datagrams", &self.send_batch),
            ("fjord_announce_response_peers", &self.announce_peers),
        ] {
            f(Metric::Histogram(name, &h.cumulative(), h.sum, h.count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_merge() {
        let mut h = Histogram::new(BATCH_BUCKETS);
        for v in [1, 2, 3, 32, 33, 1000] {
            h.record(v);
        }
        assert_eq!(h.counts, [1, 1, 1, 0, 0, 1, 1, 0, 1]);
        let mut g = h;
        g.merge(&h);
        assert_eq!(g.count, 12);
        assert_eq!(g.sum, 2 * 1071);
        assert_eq!(g.cumulative().last(), Some(&(u64::MAX, 12)));
    }

    #[test]
    fn enums_index_their_arrays_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in ErrorReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in NOT_STORED_REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in BackoffReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in AdmissionRefusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut n = 0;
        Counters::default().visit(|_| n += 1);
        assert_eq!(
            n,
            6 + 8 + 9 + 2 + 3 + 2 + 2 + 2 + 1 + 6 + 2 * Client::ALL.len() + 3
        );
    }
}
