//! Starting, running and stopping the tracker: sockets, worker threads, maintenance thread.
//!
//! Ownership: each worker thread owns its mio `Poll`, its sockets (one per listen address, all
//! `SO_REUSEPORT` siblings of the other workers' sockets), its receive/send batches and its
//! [`RequestHandler`] (counters, RNG, scratch). Shared: the store, the connection-id validator
//! and the access-list source ([`Shared`]), plus one counters slot per worker, written by that
//! worker at most every 100 ms and on exit, read by [`RunningServer::counters`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fjord_store::PeerStore;
use anyhow::Context;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};

use crate::access_list::{AccessListError, AccessListSource};
use crate::config::{Config, NetworkConfig, default_listen};
use crate::connection_id::ConnectionIdValidator;
use crate::counters::{Counters, CountersSnapshot, DropReason};
use crate::handler::{HandlerSettings, RequestHandler, Shared};
use crate::metrics::{Exposition, MetricsEndpoint, MetricsInput};
use crate::sys::{self, RecvBatch, SendBatch};

/// Counters are published by each worker at least this often.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

const WAKER: Token = Token(usize::MAX);
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

/// A running tracker. Dropping it stops it (like [`RunningServer::shutdown`], ignoring errors).
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    slots: Arc<Vec<Mutex<Counters>>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    panic_flags: Vec<Arc<AtomicBool>>,
    threads: Vec<JoinHandle<()>>,
    maintenance_stop: Option<crossbeam_channel::Sender<()>>,
    failures: crossbeam_channel::Receiver<String>,
    /// Every failure ever reported (the channel only notifies).
    failed: Arc<Mutex<Vec<String>>>,
    /// The Prometheus endpoint, when `metrics.enabled`.
    metrics: Option<MetricsEndpoint>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addrs", &self.local_addrs)
            .finish()
    }
}

struct WorkerSocket {
    socket: mio::net::UdpSocket,
}

/// Binds one socket of a `SO_REUSEPORT` group. Returns the socket and the kernel's actual
/// receive/send buffer sizes.
fn bind_socket(addr: SocketAddr, net: &NetworkConfig) -> io::Result<Bound> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    // The kernel silently caps these; the caller compares what it got.
    let _ = socket.set_recv_buffer_size(net.socket_recv_buffer);
    let _ = socket.set_send_buffer_size(net.socket_send_buffer);
    socket.set_nonblocking(true)?;
    if addr.ip().is_unspecified() {
        sys::enable_packet_info(&socket, addr.is_ipv6())?;
    }
    socket.bind(&addr.into())?;
    let rcv = socket.recv_buffer_size().unwrap_or(0);
    let snd = socket.send_buffer_size().unwrap_or(0);
    Ok((socket.into(), rcv, snd))
}

/// Whether the kernel granted less than `requested` bytes of socket buffer, given what
/// `getsockopt` reports; returns the usable size granted. Linux doubles the value it stores
/// (half is bookkeeping overhead) and reports the doubled value, so a full grant reads back as
/// twice the request.
fn buffer_capped(requested: usize, reported: usize) -> Option<usize> {
    let granted = if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    };
    (granted < requested).then_some(granted)
}

/// Binds `workers` sockets for every listen address. An IPv6 address that cannot be bound is
/// skipped with a warning when the listen list is the default one; otherwise it is an error.
fn bind_all(
    config: &Config,
    workers: usize,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<Vec<std::net::UdpSocket>>)> {
    bind_all_with(config, workers, bind_socket)
}

type Bound = (std::net::UdpSocket, usize, usize);

/// [`bind_all`] with the socket factory as a parameter (tests inject failures).
fn bind_all_with(
    config: &Config,
    workers: usize,
    bind_socket: impl Fn(SocketAddr, &NetworkConfig) -> io::Result<Bound>,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<Vec<std::net::UdpSocket>>)> {
    let net = &config.network;
    let defaults = net.listen == default_listen();
    let mut addrs = Vec::new();
    let mut per_worker: Vec<Vec<std::net::UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
    for &requested in &net.listen {
        let (first, rcv, snd) = match bind_socket(requested, net) {
            Ok(s) => s,
            Err(e) if defaults && requested.is_ipv6() => {
                tracing::warn!("IPv6 unavailable, serving IPv4 only: cannot bind {requested}: {e}");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind UDP {requested}")),
        };
        if let Some(granted) = buffer_capped(net.socket_recv_buffer, rcv) {
            tracing::warn!(
                "{requested}: receive buffer capped at {granted} bytes ({} requested); raise net.core.rmem_max",
                net.socket_recv_buffer
            );
        }
        if let Some(granted) = buffer_capped(net.socket_send_buffer, snd) {
            tracing::warn!(
                "{requested}: send buffer capped at {granted} bytes ({} requested); raise net.core.wmem_max",
                net.socket_send_buffer
            );
        }
        let actual = first.local_addr()?;
        per_worker[0].push(first);
        for sockets in per_worker.iter_mut().skip(1) {
            let (s, _, _) = bind_socket(actual, net)
                .with_context(|| format!("cannot bind UDP {actual} (SO_REUSEPORT)"))?;
            sockets.push(s);
        }
        addrs.push(actual);
    }
    if addrs.is_empty() {
        anyhow::bail!("no listen address could be bound");
    }
    Ok((addrs, per_worker))
}

/// Binds every listen address, spawns the workers and the maintenance thread, and returns once
/// all sockets are bound (requests sent after it returns are queued by the kernel and served).
pub fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let workers = config.effective_workers();
    let validator = match config.connection_id_key() {
        Some(key) => ConnectionIdValidator::new(key, config.connection_id.grace_secs),
        None => ConnectionIdValidator::random(config.connection_id.grace_secs),
    };
    let store = Arc::new(PeerStore::new(config.store_config()));
    let access = Arc::new(
        AccessListSource::new(config.access_list.mode, config.access_list.path.clone())
            .context("cannot load the access list")?,
    );
    let shared = Arc::new(Shared {
        store,
        validator,
        access,
        settings: HandlerSettings::from_config(&config),
    });

    let (local_addrs, sockets) = bind_all(&config, workers)?;
    if !config.privileges.user.is_empty() || !config.privileges.group.is_empty() {
        #[cfg(unix)]
        sys::drop_privileges(&config.privileges.user, &config.privileges.group).with_context(
            || {
                format!(
                    "cannot drop privileges to user {:?} group {:?}",
                    config.privileges.user, config.privileges.group
                )
            },
        )?;
        tracing::info!(user = %config.privileges.user, group = %config.privileges.group, "privileges dropped");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let slots: Arc<Vec<Mutex<Counters>>> = Arc::new(
        (0..workers)
            .map(|_| Mutex::new(Counters::default()))
            .collect(),
    );
    let (fail_tx, failures) = crossbeam_channel::unbounded();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let fail_tx = FailureSink {
        tx: fail_tx,
        all: Arc::clone(&failed),
    };
    let mut server = RunningServer {
        local_addrs,
        shared: Arc::clone(&shared),
        slots: Arc::clone(&slots),
        stop: Arc::clone(&stop),
        wakers: Vec::new(),
        panic_flags: Vec::new(),
        threads: Vec::new(),
        maintenance_stop: None,
        failures,
        failed,
        metrics: None,
    };
    // Bound before any worker runs: a metrics address that cannot be bound fails the start
    // before a single packet has been answered.
    if config.metrics.enabled {
        server.metrics = Some(
            start_metrics(&config, &server, workers)
                .with_context(|| format!("cannot serve metrics on {}", config.metrics.listen))?,
        );
    }
    for (index, socks) in sockets.into_iter().enumerate() {
        let poll = Poll::new().context("cannot create a poll instance")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut worker_sockets = Vec::new();
        for (i, s) in socks.into_iter().enumerate() {
            let mut socket = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            worker_sockets.push(WorkerSocket { socket });
        }
        let panic_flag = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            index,
            poll,
            sockets: worker_sockets,
            handler: RequestHandler::new(Arc::clone(&shared), rand::random()),
            rx: RecvBatch::new(config.network.batch_size),
            tx: SendBatch::new(config.network.batch_size),
            stop: Arc::clone(&stop),
            panic_flag: Arc::clone(&panic_flag),
            slots: Arc::clone(&slots),
        };
        let fail_tx = fail_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fjord-worker-{index}"))
            .spawn(move || supervise(&format!("worker {index}"), &fail_tx, move || worker.run()))
            .context("cannot spawn a worker thread")?;
        server.wakers.push(waker);
        server.panic_flags.push(panic_flag);
        server.threads.push(handle);
    }
    let (mstop_tx, mstop_rx) = crossbeam_channel::bounded::<()>(0);
    let maintenance = Maintenance {
        shared: Arc::clone(&shared),
        clean_interval: Duration::from_millis(config.store.clean_interval_ms),
        clean_budget: config.store.clean_swarms_per_slice,
        poll_interval: (config.access_list.poll_interval_ms > 0)
            .then(|| Duration::from_millis(config.access_list.poll_interval_ms)),
        stop: mstop_rx,
    };
    let fail = fail_tx.clone();
    server.threads.push(
        std::thread::Builder::new()
            .name("fjord-maintenance".into())
            .spawn(move || supervise("maintenance thread", &fail, move || maintenance.run()))
            .context("cannot spawn the maintenance thread")?,
    );
    server.maintenance_stop = Some(mstop_tx);
    for a in &server.local_addrs {
        tracing::info!("listening on udp {a} ({workers} workers)");
    }
    Ok(server)
}

/// Serves `/metrics` and `/health`. A scrape sums the workers' published counter slots and reads
/// the store's and the access list's counts: nothing on the packet path is touched.
fn start_metrics(
    config: &Config,
    server: &RunningServer,
    workers: usize,
) -> io::Result<MetricsEndpoint> {
    let exposition = Exposition::new();
    let slots = Arc::clone(&server.slots);
    let shared = Arc::clone(&server.shared);
    let workers = workers as u64;
    let failed = Arc::clone(&server.failed);
    MetricsEndpoint::start(
        config.metrics.listen,
        move || {
            let mut counters = Counters::default();
            for slot in slots.iter() {
                counters.merge(&slot.lock());
            }
            let access = &shared.access;
            exposition.render(&MetricsInput {
                counters,
                store: shared.store.stats(),
                access_list_entries: access.current().len() as u64,
                access_list_reloads_ok: access.generation(),
                access_list_reloads_failed: access.failed_reloads(),
                access_list_last_reload_ok: !access.last_reload_failed(),
                workers,
            })
        },
        move || failed.lock().is_empty(),
    )
}

/// Where threads report their death.
#[derive(Clone)]
struct FailureSink {
    tx: crossbeam_channel::Sender<String>,
    all: Arc<Mutex<Vec<String>>>,
}

impl FailureSink {
    fn send(&self, msg: String) -> Result<(), ()> {
        tracing::error!("{msg}");
        self.all.lock().push(msg.clone());
        self.tx.send(msg).map_err(|_| ())
    }
}

/// Runs `f`, reporting a panic or an error on `fail`.
fn supervise(name: &str, fail: &FailureSink, f: impl FnOnce() -> io::Result<()>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = fail.send(format!("{name} failed: {e}"));
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = fail.send(format!("{name} panicked: {msg}"));
        }
    }
}

impl RunningServer {
    /// The bound addresses (port 0 resolved), one per listen address that was bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// The sum of the workers' counters as last published (at most ~100 ms old).
    pub fn counters(&self) -> CountersSnapshot {
        let mut total = Counters::default();
        for slot in self.slots.iter() {
            total.merge(&slot.lock());
        }
        total
    }

    /// Each worker's counters as last published, in worker order.
    pub fn worker_counters(&self) -> Vec<CountersSnapshot> {
        self.slots.iter().map(|s| s.lock().clone()).collect()
    }

    /// The address of the Prometheus endpoint (`/metrics`, `/health`), when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The peer store.
    pub fn store(&self) -> &Arc<PeerStore> {
        &self.shared.store
    }

    /// Re-reads the access-list file now (what SIGHUP does). On error the previous list stays.
    pub fn reload_access_list(&self) -> Result<(), AccessListError> {
        self.shared.access.reload()
    }

    /// The access-list source (list in force, reload counts).
    pub fn access_list(&self) -> &Arc<AccessListSource> {
        &self.shared.access
    }

    /// Successful access-list loads so far (1 after start).
    pub fn access_list_generation(&self) -> u64 {
        self.shared.access.generation()
    }

    /// Waits up to `timeout` for a worker or the maintenance thread to die; returns its message.
    /// The binary exits non-zero when this returns `Some`.
    pub fn wait_failure(&self, timeout: Duration) -> Option<String> {
        self.failures.recv_timeout(timeout).ok()
    }

    #[doc(hidden)]
    /// Makes worker `index` panic at its next wake-up (tests of the supervision path).
    pub fn inject_worker_panic_for_tests(&self, index: usize) {
        self.panic_flags[index].store(true, Ordering::SeqCst);
        let _ = self.wakers[index].wake();
    }

    fn stop_threads(&mut self) -> Vec<String> {
        self.metrics.take();
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
        self.maintenance_stop.take();
        let mut problems = Vec::new();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                problems.push("a thread panicked outside its supervisor".to_string());
            }
        }
        problems.extend(self.failed.lock().iter().cloned());
        problems
    }

    /// Stops the workers and the maintenance thread, joins them and returns the exact final
    /// counters. An error if any worker had died.
    pub fn shutdown(mut self) -> anyhow::Result<CountersSnapshot> {
        let problems = self.stop_threads();
        let counters = self.counters();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        Ok(counters)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_threads();
        }
    }
}

struct Worker {
    index: usize,
    poll: Poll,
    sockets: Vec<WorkerSocket>,
    handler: RequestHandler,
    rx: RecvBatch,
    tx: SendBatch,
    stop: Arc<AtomicBool>,
    panic_flag: Arc<AtomicBool>,
    slots: Arc<Vec<Mutex<Counters>>>,
}

impl Worker {
    fn run(mut self) -> io::Result<()> {
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

    fn publish(&self) {
        self.slots[self.index]
            .lock()
            .clone_from(&self.handler.counters);
    }

    /// Reads socket `i` until WouldBlock (returns false) or for a bounded number of batches
    /// (returns true: more may be waiting).
    fn drain(&mut self, i: usize) -> bool {
        let socket = &self.sockets[i].socket;
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
            let c = &mut self.handler.counters;
            c.recv_batch.record(n as u64);
            let now = unix_now();
            for j in 0..n {
                let (data, src, local) = self.rx.get(j);
                let Some(buf) = self.tx.next_buf() else { break };
                if let Some(len) = self.handler.handle(now, src, data, buf) {
                    self.tx.push(len, src, local);
                }
            }
            if !self.tx.is_empty() {
                let r = self.tx.flush(socket);
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

struct Maintenance {
    shared: Arc<Shared>,
    clean_interval: Duration,
    clean_budget: usize,
    poll_interval: Option<Duration>,
    stop: crossbeam_channel::Receiver<()>,
}

impl Maintenance {
    fn run(self) -> io::Result<()> {
        let mut next_clean = Instant::now() + self.clean_interval;
        let mut next_poll = self.poll_interval.map(|p| Instant::now() + p);
        loop {
            let wake = next_poll.map_or(next_clean, |p| p.min(next_clean));
            match self.stop.recv_deadline(wake) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_clean {
                let report = self.shared.store.clean(unix_now(), self.clean_budget);
                tracing::trace!(?report, "clean slice");
                next_clean = now + self.clean_interval;
            }
            if let (Some(p), Some(interval)) = (next_poll, self.poll_interval)
                && now >= p
            {
                self.shared.access.reload_if_changed();
                next_poll = Some(now + interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds loopback port 0 instead of the (fixed) default port; IPv6 "unavailable".
    fn no_ipv6(addr: SocketAddr, net: &NetworkConfig) -> io::Result<Bound> {
        if addr.is_ipv6() {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        let local = if addr.port() == 6969 {
            "127.0.0.1:0".parse().unwrap()
        } else {
            addr
        };
        bind_socket(local, net)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn capped_buffers_are_detected() {
        // rmem_max = 4 MiB, 8 MiB requested: Linux reports 8 MiB (2 x 4 MiB), which is capped.
        assert_eq!(buffer_capped(8 << 20, 8 << 20), Some(4 << 20));
        assert_eq!(buffer_capped(1 << 20, 2 << 20), None);
    }

    #[test]
    fn default_listen_without_ipv6_serves_ipv4_only() {
        let config = Config::default();
        assert_eq!(config.network.listen, default_listen());
        let (addrs, sockets) = bind_all_with(&config, 2, no_ipv6).unwrap();
        assert_eq!(addrs.len(), 1);
        assert!(addrs[0].is_ipv4());
        assert_eq!(sockets.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1]);
    }

    #[test]
    fn explicit_ipv6_listen_that_cannot_be_bound_fails() {
        let mut config = Config::default();
        config.network.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::]:0".parse().unwrap()];
        let e = bind_all_with(&config, 1, no_ipv6).unwrap_err();
        assert!(format!("{e:#}").contains("[::]:0"), "{e:#}");
    }

    #[test]
    fn workers_share_the_resolved_port() {
        let mut config = Config::default();
        config.network.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let (addrs, sockets) = bind_all(&config, 3).unwrap();
        assert_ne!(addrs[0].port(), 0);
        for s in sockets.iter().flatten() {
            assert_eq!(s.local_addr().unwrap(), addrs[0]);
        }
    }
}
