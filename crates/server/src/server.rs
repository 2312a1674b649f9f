//! Starting, running and stopping the tracker: sockets ([`crate::listen`]), worker threads and
//! the maintenance thread ([`crate::worker`]), the metrics endpoint, supervision.
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
use std::time::Duration;

use crate::fjord_store::PeerStore;
use anyhow::Context;
use fjord_udp::{RecvBatch, SendBatch};
use mio::{Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::access_list::{AccessListError, AccessListSource, ListFileError, Reloaded};
use crate::adaptive_interval::IntervalController;
use crate::config::Config;
use crate::connection_id::ConnectionIdValidator;
use crate::counters::{Counters, CountersSnapshot};
use crate::handler::{HandlerSettings, MAX_REPLY, RequestHandler, Shared};
use crate::http::Page;
use crate::metrics::{Exposition, MetricsEndpoint, MetricsInput};
use crate::privileges::{PrivilegeChange, drop_privileges};
use crate::state::{KeyOrigin, Loaded, SnapshotStatus, StateDir};
use crate::stats::{StatsCollector, StatsHub, StatsInput, stats_json};
use crate::worker::{MAX_DATAGRAM, Maintenance, SnapshotDuty, WAKER, Worker};

pub use crate::worker::{Now, PUBLISH_INTERVAL, StoreClock, unix_now};

/// A running tracker. Dropping it stops it (like [`RunningServer::shutdown`], ignoring errors).
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    /// Statistics published by the maintenance thread (catalogue, largest swarms).
    stats: Arc<StatsHub>,
    slots: Arc<Vec<Mutex<Counters>>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    panic_flags: Vec<Arc<AtomicBool>>,
    /// The workers.
    threads: Vec<JoinHandle<()>>,
    /// Joined after the workers: it writes the final snapshot once they have stopped.
    maintenance: Option<JoinHandle<()>>,
    maintenance_stop: Option<crossbeam_channel::Sender<()>>,
    /// Snapshot counts (all zero without `state.dir`).
    snapshots: Arc<SnapshotStatus>,
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

/// Binds every listen address, spawns the workers and the maintenance thread, and returns once
/// all sockets are bound (requests sent after it returns are queued by the kernel and served).
pub fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let workers = config.effective_workers();
    let access = Arc::new(
        AccessListSource::new(config.access_list.mode, config.access_list.path.clone())
            .context("cannot load the access list")?
            .with_max_shrink_fraction(config.access_list.max_shrink_fraction),
    );
    let stats = Arc::new(StatsHub::new(&config.stats).context("cannot load the catalogue")?);

    let (local_addrs, sockets) = crate::listen::bind_all(&config, workers)?;
    let (user, group) = (&config.privileges.user, &config.privileges.group);
    match drop_privileges(user, group)
        .with_context(|| format!("cannot drop privileges to user {user:?} group {group:?}"))?
    {
        PrivilegeChange::NotAsked => {}
        PrivilegeChange::AlreadyThere => {
            tracing::info!(%user, %group, "already running as the configured user and group")
        }
        PrivilegeChange::Switched => tracing::info!(%user, %group, "privileges dropped"),
    }

    // The state directory is used as the user fjord serves as (the files it creates stay
    // writable for the next start), before any worker runs: requests answered after `start`
    // returns see the restored swarms.
    let snapshots = Arc::new(SnapshotStatus::default());
    let state = match &config.state.dir {
        None => None,
        Some(dir) => Some(StateDir::open(dir).with_context(|| {
            format!(
                "cannot use the state directory {} (state.dir)",
                dir.display()
            )
        })?),
    };
    let grace = config.connection_id.grace_secs;
    let validator = match (config.connection_id_key(), &state) {
        (Some(key), _) => ConnectionIdValidator::new(key, grace),
        (None, Some(state)) => {
            let (key, origin) = state
                .connection_id_key(u64::from(unix_now()))
                .context("cannot keep the connection-id key in the state directory (state.dir)")?;
            let file = state.path().join(crate::state::KEY_FILE);
            match origin {
                KeyOrigin::Reused => tracing::info!(
                    "connection-id key read from {}: ids issued before the restart stay valid",
                    file.display()
                ),
                KeyOrigin::Created => {
                    tracing::info!("connection-id key generated and kept in {}", file.display())
                }
            }
            ConnectionIdValidator::new(key, grace)
        }
        (None, None) => ConnectionIdValidator::random(grace),
    }
    .with_previous(config.connection_id_previous_key());
    let clock = StoreClock::new();
    let store = match &state {
        None => PeerStore::new(config.store_config()),
        Some(state) => restore_store(&config, state, &clock, &snapshots),
    };
    let shared = Arc::new(Shared {
        store: Arc::new(store),
        validator,
        access,
        settings: HandlerSettings::from_config(&config),
        clock,
    });

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
        stats: Arc::clone(&stats),
        slots: Arc::clone(&slots),
        stop: Arc::clone(&stop),
        wakers: Vec::new(),
        panic_flags: Vec::new(),
        threads: Vec::new(),
        maintenance: None,
        maintenance_stop: None,
        snapshots: Arc::clone(&snapshots),
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
        let mut kernel_drops = Vec::new();
        for (i, s) in socks.into_iter().enumerate() {
            let family = match s.local_addr()?.ip() {
                std::net::IpAddr::V4(_) => crate::counters::IpFamily::V4,
                std::net::IpAddr::V6(_) => crate::counters::IpFamily::V6,
            };
            kernel_drops.push((family, 0));
            let mut socket = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            worker_sockets.push(socket);
        }
        let panic_flag = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            index,
            poll,
            sockets: worker_sockets,
            kernel_drops,
            handler: RequestHandler::new(Arc::clone(&shared), rand::random()),
            rx: RecvBatch::new(config.network.batch_size, MAX_DATAGRAM),
            tx: SendBatch::new(config.network.batch_size, MAX_REPLY),
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
        snapshots: state.map(|dir| SnapshotDuty {
            dir,
            interval: (config.state.snapshot_interval_secs > 0)
                .then(|| Duration::from_secs(config.state.snapshot_interval_secs)),
            status: Arc::clone(&snapshots),
        }),
        shared: Arc::clone(&shared),
        stats: StatsCollector::new(Arc::clone(&stats)),
        clean_interval: Duration::from_millis(config.store.clean_interval_ms),
        clean_budget: config.store.clean_swarms_per_slice,
        poll_interval: (config.access_list.poll_interval_ms > 0)
            .then(|| Duration::from_millis(config.access_list.poll_interval_ms)),
        interval: IntervalController::from_config(
            &config.adaptive_interval,
            config.protocol.announce_interval_secs,
            shared.settings.interval.clone(),
        )
        .map(|c| (c, Arc::clone(&slots))),
        stop: mstop_rx,
    };
    let fail = fail_tx.clone();
    server.maintenance = Some(
        std::thread::Builder::new()
            .name("fjord-maintenance".into())
            .spawn(move || supervise("maintenance thread", &fail, move || maintenance.run()))
            .context("cannot spawn the maintenance thread")?,
    );
    server.maintenance_stop = Some(mstop_tx);
    tracing::info!(
        "{}",
        crate::logging::startup_line(&config, &server.local_addrs, server.metrics_addr())
    );
    Ok(server)
}

/// A store with the state directory's snapshot restored into it, or an empty one when there
/// is none or it cannot be trusted (the file is set aside; both are logged and counted).
fn restore_store(
    config: &Config,
    state: &StateDir,
    clock: &StoreClock,
    status: &SnapshotStatus,
) -> PeerStore {
    let store = PeerStore::new(config.store_config());
    let path = state.snapshot_path();
    let loaded = state.load_snapshot(&store, clock.now(), u64::from(unix_now()));
    status.loaded(&loaded);
    match loaded {
        Loaded::Missing => {
            tracing::info!(
                "no snapshot at {}: starting with empty swarms",
                path.display()
            );
            store
        }
        Loaded::Restored {
            totals,
            restored_peers,
            age_secs,
            duration,
        } => {
            tracing::info!(
                "restored {restored_peers} peers from {} ({} peers in {} records, {} bytes, \
                 written {age_secs} s ago; {} expired meanwhile or over the store's limits) \
                 in {:.2} s",
                path.display(),
                totals.peers,
                totals.records,
                totals.bytes,
                totals.peers - restored_peers,
                duration.as_secs_f64()
            );
            store
        }
        Loaded::Refused { error, set_aside } => {
            let aside = set_aside.map_or_else(
                || "it could not be moved aside".to_string(),
                |p| format!("moved aside as {}", p.display()),
            );
            tracing::error!(
                reason = error.reason(),
                "snapshot {} refused: {error}; {aside}; starting with empty swarms",
                path.display()
            );
            drop(store); // a partial restore: never trusted
            PeerStore::new(config.store_config())
        }
    }
}

/// Serves `/metrics`, `/stats`, `/` and `/health`. A render sums the workers' published counter
/// slots and reads the store's, the lists' and the statistics hub's state: nothing on the
/// packet path is touched.
fn start_metrics(
    config: &Config,
    server: &RunningServer,
    workers: usize,
) -> io::Result<MetricsEndpoint> {
    let exposition = Exposition::new();
    let view = server.view();
    let workers = workers as u64;
    let failed = Arc::clone(&server.failed);
    MetricsEndpoint::start(
        config.metrics.listen,
        move |page| match page {
            Page::Metrics => exposition.render(&view.metrics_input(workers)),
            Page::Stats => view.stats_json(),
        },
        move || failed.lock().is_empty(),
    )
}

/// What the HTTP threads read: the counter slots, the shared state and the statistics hub.
struct ServerView {
    slots: Arc<Vec<Mutex<Counters>>>,
    shared: Arc<Shared>,
    stats: Arc<StatsHub>,
    snapshots: Arc<SnapshotStatus>,
}

impl ServerView {
    fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for slot in self.slots.iter() {
            total.merge(&slot.lock());
        }
        total
    }

    fn metrics_input(&self, workers: u64) -> MetricsInput {
        let (shared, access, catalogue) =
            (&self.shared, &self.shared.access, &self.stats.catalogue);
        MetricsInput {
            counters: self.counters(),
            store: shared.store.stats(),
            clean: shared.store.clean_stats(),
            store_limits: {
                let c = shared.store.config();
                (c.max_peers as u64, c.max_swarms as u64)
            },
            access_list: access.file().status(access.current().len() as u64),
            catalogue: catalogue.file().status(catalogue.current().len() as u64),
            torrents: self.stats.published().torrents,
            workers,
            snapshots: self.snapshots.counts(),
            announce_interval: (
                shared.settings.interval.get(),
                shared.settings.announce_interval,
            ),
            access_list_refused: crate::access_list::Refused::ALL
                .map(|r| (r.name(), access.refused(r))),
        }
    }

    fn stats_json(&self) -> String {
        let counters = self.counters();
        let published = self.stats.published();
        stats_json(&StatsInput {
            counters: &counters,
            store: self.shared.store.stats(),
            published: &published,
            hub: &self.stats,
            uptime_secs: self.shared.clock.now(),
            announce_interval_secs: self.shared.settings.interval.get(),
            clean_cycles: self.shared.store.clean_stats().cycles,
        })
    }
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
        self.view().counters()
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
    pub fn reload_access_list(&self) -> Result<Reloaded, AccessListError> {
        self.shared.access.reload()
    }

    /// Re-reads the catalogue file now (what SIGHUP does); `None` without one. On error the
    /// previous catalogue stays.
    pub fn reload_catalogue(&self) -> Option<Result<usize, ListFileError>> {
        self.stats.catalogue.reload()
    }

    /// The statistics hub (catalogue, what the maintenance thread last published).
    pub fn stats(&self) -> &Arc<StatsHub> {
        &self.stats
    }

    /// The `/stats` JSON, as the metrics endpoint serves it (also with metrics off).
    pub fn stats_json(&self) -> String {
        self.view().stats_json()
    }

    fn view(&self) -> ServerView {
        ServerView {
            slots: Arc::clone(&self.slots),
            shared: Arc::clone(&self.shared),
            stats: Arc::clone(&self.stats),
            snapshots: Arc::clone(&self.snapshots),
        }
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
        let mut problems = Vec::new();
        // Workers first, then the maintenance thread, which writes the final snapshot (with
        // `state.dir`) once no announce can change the store any more.
        let mut join = |t: JoinHandle<()>| {
            if t.join().is_err() {
                problems.push("a thread panicked outside its supervisor".to_string());
            }
        };
        self.threads.drain(..).for_each(&mut join);
        self.maintenance_stop.take();
        self.maintenance.take().into_iter().for_each(&mut join);
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
        if !self.threads.is_empty() || self.maintenance.is_some() {
            self.stop_threads();
        }
    }
}
