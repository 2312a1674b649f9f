//! The threads of a running server: UDP workers (one mio event loop each) and the maintenance
//! thread (expiry slices, access-list polling, snapshots).
//!
//! A worker owns its `Poll`, its sockets (one per listen address, each a `SO_REUSEPORT`
//! sibling of the other workers' sockets), one [`RecvBatch`] and one [`SendBatch`] (fjord-udp:
//! `recvmmsg`/`sendmmsg`, allocated once), and its [`RequestHandler`]. Per batch it receives up
//! to `network.batch_size` datagrams, hands each to the handler, which writes its reply straight
//! into the send batch, and sends the replies with one system call, each from the local address
//! its request was sent to.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjord_udp::{RecvBatch, SendBatch};
use mio::{Events, Poll, Token};
use parking_lot::Mutex;

use crate::adaptive_interval::IntervalController;
use crate::counters::{Counters, DropReason, IpFamily};
use crate::fjord_store::{StoreConfig, StoreStats};
use crate::handler::{ReplySink, RequestHandler, Shared};
use crate::state::{SnapshotStatus, StateDir};
use crate::stats::StatsCollector;

/// Counters are published by each worker at least this often.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Largest datagram read in full; longer ones are cut (no valid request is longer than
/// 16 + 74·20 = 1,496 bytes of scrape, or an announce with ~1,900 bytes of BEP 41 options).
pub const MAX_DATAGRAM: usize = 2048;

/// The waker's token; sockets are `Token(0..)`.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Receive batches handled for one socket before the worker looks at its other sockets,
/// its stop flag and its counters (the socket stays marked pending).
const BATCHES_PER_TURN: usize = 64;

/// Current Unix time in seconds, as u32 (valid until 2106).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The two clocks a request is handled with, read once per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Unix time in seconds: connection ids carry it, so that a fleet sharing a key (and a
    /// restarted node) agree on their age.
    pub unix: u32,
    /// Seconds on the store's monotonic clock ([`StoreClock`]): peer stamps and expiry. A
    /// wall-clock step cannot age or revive peers.
    pub store: u32,
}

impl Now {
    /// Both clocks at `t` (tests).
    pub fn at(t: u32) -> Now {
        Now { unix: t, store: t }
    }
}

/// The peer store's clock: monotonic seconds since the server started (`Instant`, which a
/// wall-clock step does not move), shared by the workers and the cleaner.
#[derive(Debug, Clone, Copy)]
pub struct StoreClock {
    start: Instant,
}

impl StoreClock {
    /// A clock reading 0 now.
    pub fn new() -> Self {
        StoreClock {
            start: Instant::now(),
        }
    }
    /// Seconds since the clock started.
    pub fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs()).unwrap_or(u32::MAX)
    }
    /// Both clocks, read now.
    pub fn read(&self) -> Now {
        Now {
            unix: unix_now(),
            store: self.now(),
        }
    }
}

impl Default for StoreClock {
    fn default() -> Self {
        Self::new()
    }
}

/// One UDP worker thread's state.
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) poll: Poll,
    /// Registered with `poll` as `Token(i)`.
    pub(crate) sockets: Vec<mio::net::UdpSocket>,
    /// Per socket: its address family and the kernel's drop counter as last seen.
    pub(crate) kernel_drops: Vec<(IpFamily, u32)>,
    pub(crate) handler: RequestHandler,
    pub(crate) rx: RecvBatch,
    pub(crate) tx: SendBatch,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) panic_flag: Arc<AtomicBool>,
    /// Worker `index` publishes its counters into `slots[index]`.
    pub(crate) slots: Arc<Vec<Mutex<Counters>>>,
}

impl Worker {
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut pending = vec![true; self.sockets.len()];
        let mut last_publish = Instant::now();
        tracing::debug!(worker = self.index, "worker started");
        loop {
            let timeout = if pending.iter().any(|&p| p) {
                Duration::ZERO
            } else {
                PUBLISH_INTERVAL
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    pending[ev.token().0] = true;
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.panic_flag.load(Ordering::Relaxed) {
                panic!("injected panic in worker {}", self.index);
            }
            for (i, p) in pending.iter_mut().enumerate() {
                if *p {
                    *p = self.drain(i);
                }
            }
            if last_publish.elapsed() >= PUBLISH_INTERVAL {
                self.publish();
                last_publish = Instant::now();
            }
        }
        self.publish();
        tracing::debug!(worker = self.index, "worker stopped");
        Ok(())
    }

    /// Publishes the counters, with the kernel's drops on each socket read first (one
    /// `getsockopt` per socket per publish; nothing per datagram).
    fn publish(&mut self) {
        for (socket, (family, seen)) in self.sockets.iter().zip(&mut self.kernel_drops) {
            if let Ok(total) = fjord_udp::kernel_drops(socket) {
                // The kernel's counter is a wrapping u32 per socket.
                self.handler.counters.kernel_drops[*family as usize] +=
                    u64::from(total.wrapping_sub(*seen));
                *seen = total;
            }
        }
        self.slots[self.index]
            .lock()
            .clone_from(&self.handler.counters);
    }

    /// Reads socket `i` until WouldBlock (returns false) or for a bounded number of batches
    /// (returns true: more may be waiting).
    fn drain(&mut self, i: usize) -> bool {
        let socket = &self.sockets[i];
        for _ in 0..BATCHES_PER_TURN {
            let n = match self.rx.recv(socket) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.handler.counters.rx_errors += 1;
                    continue;
                }
            };
            self.handler.counters.recv_batch.record(n as u64);
            let now = self.handler.shared().clock.read();
            let rx = &self.rx;
            let mut replies = Replies {
                tx: &mut self.tx,
                rx,
            };
            self.handler.handle_batch(
                now,
                n,
                |j| {
                    let d = rx.get(j);
                    (d.src, d.data)
                },
                &mut replies,
            );
            if !self.tx.is_empty() {
                let r = self.tx.send(socket, |_, _| {});
                let c = &mut self.handler.counters;
                c.send_batch.record(r.sent as u64);
                c.tx_packets += r.sent as u64;
                c.tx_bytes += r.sent_bytes as u64;
                c.drops[DropReason::SendBufferFull as usize] += r.would_block as u64;
                c.drops[DropReason::SendError as usize] += r.errors as u64;
            }
        }
        true
    }
}

/// A worker's send batch as the handler's reply sink (replies go back to the datagram's
/// source, from the address it was sent to).
struct Replies<'a> {
    tx: &'a mut SendBatch,
    rx: &'a RecvBatch,
}

impl ReplySink for Replies<'_> {
    fn buf(&mut self) -> Option<&mut [u8]> {
        self.tx.next_buf()
    }
    fn commit(&mut self, j: usize, len: usize) {
        let d = self.rx.get(j);
        self.tx.push(len, d.src, d.dst);
    }
}

/// The maintenance thread: one expiry slice every `clean_interval` (through the statistics
/// collector, which ranks the swarms it visits and samples the catalogued torrents), and the
/// access-list and catalogue files checked every `poll_interval`.
pub(crate) struct Maintenance {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: StatsCollector,
    pub(crate) clean_interval: Duration,
    pub(crate) clean_budget: usize,
    pub(crate) poll_interval: Option<Duration>,
    /// The load-adaptive interval (`None`: off) and the workers' counter slots it reads the
    /// load from (datagrams received), once a second.
    pub(crate) interval: Option<(IntervalController, Arc<Vec<Mutex<Counters>>>)>,
    /// Closed (or sent to) when the server stops.
    pub(crate) stop: crossbeam_channel::Receiver<()>,
    /// With `state.dir`: snapshots every `state.snapshot_interval_secs` and on stop.
    pub(crate) snapshots: Option<SnapshotDuty>,
}

/// The maintenance thread's snapshot duty: where, how often, and the counts it keeps.
pub(crate) struct SnapshotDuty {
    pub(crate) dir: StateDir,
    pub(crate) interval: Option<Duration>,
    pub(crate) status: Arc<SnapshotStatus>,
}

impl SnapshotDuty {
    /// Writes a snapshot of the store now (the workers keep serving), logs and counts it.
    fn write(&self, shared: &Shared, why: &str) {
        let unix = u64::from(unix_now());
        let result = self
            .dir
            .write_snapshot(&shared.store, shared.clock.now(), unix);
        self.status.wrote(&result, unix);
        let path = self.dir.snapshot_path();
        match result {
            Ok(w) => tracing::info!(
                "snapshot ({why}) written to {}: {} peers in {} records, {} bytes, {:.2} s",
                path.display(),
                w.totals.peers,
                w.totals.records,
                w.totals.bytes,
                w.duration.as_secs_f64()
            ),
            Err(e) => tracing::error!(
                "snapshot ({why}) to {} failed: {e}; the previous snapshot stays",
                path.display()
            ),
        }
    }
}

/// How often the load-adaptive interval is fed the load.
const LOAD_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

impl Maintenance {
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut limits = LimitWatch::default();
        let mut next_clean = Instant::now() + self.clean_interval;
        let mut next_poll = self.poll_interval.map(|p| Instant::now() + p);
        let mut next_snapshot = self
            .snapshots
            .as_ref()
            .and_then(|d| d.interval)
            .map(|i| Instant::now() + i);
        let started = Instant::now();
        let mut next_sample = self.interval.as_ref().map(|_| started);
        loop {
            let wake = [next_poll, next_sample, next_snapshot]
                .into_iter()
                .flatten()
                .fold(next_clean, Instant::min);
            match self.stop.recv_deadline(wake) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => {
                    // The server joins the workers before it stops this thread: nothing
                    // changes the store any more.
                    if let Some(duty) = &self.snapshots {
                        duty.write(&self.shared, "on stop");
                    }
                    return Ok(());
                }
            }
            let now = Instant::now();
            if let (Some(at), Some(duty)) = (next_snapshot, &self.snapshots)
                && now >= at
            {
                duty.write(&self.shared, "periodic");
                next_snapshot = duty.interval.map(|i| Instant::now() + i);
            }
            if now >= next_clean {
                let report = self.stats.clean(
                    &self.shared.store,
                    self.shared.clock.now(),
                    self.clean_budget,
                );
                tracing::trace!(?report, "clean slice");
                limits.observe(&self.shared.store.stats(), self.shared.store.config());
                next_clean = now + self.clean_interval;
            }
            if let (Some(t), Some((controller, slots))) = (next_sample, self.interval.as_mut())
                && now >= t
            {
                let received: u64 = slots.iter().map(|s| s.lock().rx_packets).sum();
                controller.observe(now.duration_since(started).as_millis() as u64, received);
                next_sample = Some(now + LOAD_SAMPLE_INTERVAL);
            }
            if let (Some(p), Some(interval)) = (next_poll, self.poll_interval)
                && now >= p
            {
                self.shared.access.reload_if_changed();
                self.stats.hub().catalogue.reload_if_changed();
                next_poll = Some(now + interval);
            }
        }
    }
}

/// Says in the log when the store reaches `store.max_peers` or `store.max_swarms` (announces
/// are then answered but not stored), and when it is back below 90 % of the limit: a full store
/// is never silent, and the log is not flooded while it stays full.
#[derive(Debug, Default)]
pub(crate) struct LimitWatch {
    peers_full: bool,
    swarms_full: bool,
}

impl LimitWatch {
    pub(crate) fn observe(&mut self, stats: &StoreStats, config: &StoreConfig) {
        let peers = stats.v4.seeders + stats.v4.leechers + stats.v6.seeders + stats.v6.leechers;
        let swarms = stats.v4.swarms + stats.v6.swarms;
        for (full, used, max, key, what) in [
            (
                &mut self.peers_full,
                peers,
                config.max_peers,
                "store.max_peers",
                "new peers",
            ),
            (
                &mut self.swarms_full,
                swarms,
                config.max_swarms,
                "store.max_swarms",
                "new swarms",
            ),
        ] {
            match crossing(full, used, max as u64) {
                Some(true) => tracing::warn!(
                    "the store is full: {used} of {key} = {max}; {what} are answered but not stored \
                     (fjord_peers_rejected_total); raise {key}"
                ),
                Some(false) => tracing::info!("the store is below 90 % of {key} = {max} again"),
                None => {}
            }
        }
    }
}

/// Updates `full` for `used` of `max`: `Some(true)` when the limit is reached, `Some(false)`
/// when usage falls back below 90 % of it, `None` when nothing changed.
fn crossing(full: &mut bool, used: u64, max: u64) -> Option<bool> {
    let now_full = if *full {
        used.saturating_mul(10) >= max.saturating_mul(9)
    } else {
        used >= max
    };
    (now_full != std::mem::replace(full, now_full)).then_some(now_full)
}

#[cfg(test)]
mod tests {
    use super::crossing;

    #[test]
    fn a_full_store_is_reported_once_and_again_below_ninety_percent() {
        let mut full = false;
        let seen: Vec<Option<bool>> = [50, 100, 120, 95, 90, 89, 99, 100]
            .into_iter()
            .map(|used| crossing(&mut full, used, 100))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                Some(true),
                None,
                None,
                None,
                Some(false),
                None,
                Some(true)
            ]
        );
    }
}
