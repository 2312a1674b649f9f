//! `impl Config`: parsing a file, validation that names the offending key, and the settings
//! derived from it.

use super::*;

impl Config {
    /// Parses TOML (unknown keys refused) and validates the result.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(s).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Config::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .log_level
            .parse::<tracing::level_filters::LevelFilter>()
            .is_err()
        {
            return Err(invalid(
                "log_level",
                "expected off, error, warn, info, debug or trace",
            ));
        }
        if self.workers > 1024 {
            return Err(invalid("workers", "at most 1024"));
        }
        let n = &self.network;
        if n.listen.is_empty() {
            return Err(invalid(
                "network.listen",
                "at least one address is required",
            ));
        }
        for (i, a) in n.listen.iter().enumerate() {
            if n.listen[..i].contains(a) {
                return Err(invalid("network.listen", format!("{a} is listed twice")));
            }
        }
        if !(1..=1024).contains(&n.batch_size) {
            return Err(invalid("network.batch_size", "must be between 1 and 1024"));
        }
        if n.socket_recv_buffer > i32::MAX as usize / 2 {
            return Err(invalid("network.socket_recv_buffer", "too large"));
        }
        if n.socket_send_buffer > i32::MAX as usize / 2 {
            return Err(invalid("network.socket_send_buffer", "too large"));
        }
        let p = &self.protocol;
        if p.announce_interval_secs == 0 || p.announce_interval_secs > 86_400 {
            return Err(invalid(
                "protocol.announce_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=MAX_NUM_WANT_V4).contains(&p.max_num_want_v4) {
            return Err(invalid(
                "protocol.max_num_want_v4",
                format!("must be between 1 and {MAX_NUM_WANT_V4} (one packet)"),
            ));
        }
        if !(1..=MAX_NUM_WANT_V6).contains(&p.max_num_want_v6) {
            return Err(invalid(
                "protocol.max_num_want_v6",
                format!("must be between 1 and {MAX_NUM_WANT_V6} (one packet)"),
            ));
        }
        if !(0..=MAX_NUM_WANT_V4).contains(&p.default_num_want) {
            return Err(invalid(
                "protocol.default_num_want",
                format!("must be between 0 and {MAX_NUM_WANT_V4}"),
            ));
        }
        if !(1..=MAX_SCRAPE_HASHES).contains(&p.max_scrape_hashes) {
            return Err(invalid(
                "protocol.max_scrape_hashes",
                format!("must be between 1 and {MAX_SCRAPE_HASHES} (one packet)"),
            ));
        }
        let c = &self.connection_id;
        if !c.key.is_empty() {
            parse_key(&c.key).map_err(|r| invalid("connection_id.key", r))?;
        }
        if !c.previous_key.is_empty() {
            let previous =
                parse_key(&c.previous_key).map_err(|r| invalid("connection_id.previous_key", r))?;
            if self.connection_id_key() == Some(previous) {
                return Err(invalid(
                    "connection_id.previous_key",
                    "equals connection_id.key: remove it, or give key the new key",
                ));
            }
        }
        if c.grace_secs > 600 {
            return Err(invalid("connection_id.grace_secs", "at most 600"));
        }
        let s = &self.store;
        if s.max_peers == 0 || s.max_peers > u32::MAX as usize {
            return Err(invalid(
                "store.max_peers",
                "must be between 1 and 4294967295",
            ));
        }
        if s.max_swarms == 0 || s.max_swarms > u32::MAX as usize {
            return Err(invalid(
                "store.max_swarms",
                "must be between 1 and 4294967295",
            ));
        }
        // The store keeps 8-second stamps in 13 bits: at most 4095 units of 8 s.
        let max_timeout = crate::fjord_store::MAX_PEER_TIMEOUT_SECS;
        if !(60..=max_timeout).contains(&s.peer_timeout_secs) {
            return Err(invalid(
                "store.peer_timeout_secs",
                format!("must be between 60 and {max_timeout}"),
            ));
        }
        if s.clean_interval_ms == 0 || s.clean_interval_ms > 300_000 {
            return Err(invalid(
                "store.clean_interval_ms",
                "must be between 1 and 300000 (5 minutes)",
            ));
        }
        // Every peer must be visited before its stamp's age wraps: the cycle plus one call
        // interval must fit the window the timeout leaves.
        let window = self.store_config().max_clean_cycle_secs();
        let interval = s.clean_interval_ms.div_ceil(1000) as u32;
        if s.clean_cycle_secs == 0 || s.clean_cycle_secs.saturating_add(interval) > window {
            return Err(invalid(
                "store.clean_cycle_secs",
                format!(
                    "must be between 1 and {} with peer_timeout_secs = {} and clean_interval_ms = {} \
                     (a peer must be expired before its 18.2-hour stamp wraps)",
                    window.saturating_sub(interval),
                    s.peer_timeout_secs,
                    s.clean_interval_ms
                ),
            ));
        }
        if s.clean_swarms_per_slice == 0 {
            return Err(invalid(
                "store.clean_swarms_per_slice",
                "must be at least 1",
            ));
        }
        let a = &self.access_list;
        if a.mode != AccessListMode::Off && a.path.is_none() {
            return Err(invalid(
                "access_list.path",
                "required when access_list.mode is not off",
            ));
        }
        // A list file with the list off would be ignored silently: refuse it instead.
        if a.mode == AccessListMode::Off && a.path.is_some() {
            return Err(invalid(
                "access_list.mode",
                "off, but access_list.path is set: choose allow or deny (--access-list-mode), \
                 or remove the path",
            ));
        }
        if !(0.0..=1.0).contains(&a.max_shrink_fraction) {
            return Err(invalid(
                "access_list.max_shrink_fraction",
                "must be between 0 and 1 (1 accepts any shrink)",
            ));
        }
        if p.backoff_interval_secs == 0 || p.backoff_interval_secs > 86_400 {
            return Err(invalid(
                "protocol.backoff_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        self.validate_limits()?;
        let st = &self.stats;
        if st.max_torrent_series > MAX_TORRENT_SERIES {
            return Err(invalid(
                "stats.max_torrent_series",
                format!("at most {MAX_TORRENT_SERIES}"),
            ));
        }
        let max_top = crate::top_swarms::MAX_TOP_SWARMS;
        if st.top_swarms > max_top {
            return Err(invalid("stats.top_swarms", format!("at most {max_top}")));
        }
        let state = &self.state;
        if let Some(dir) = &state.dir {
            if dir.as_os_str().is_empty() {
                return Err(invalid(
                    "state.dir",
                    "empty: remove the key to keep nothing across restarts",
                ));
            }
            if dir.to_string_lossy().contains('\0') {
                return Err(invalid("state.dir", "contains a NUL byte"));
            }
        }
        if state.snapshot_interval_secs > MAX_SNAPSHOT_INTERVAL_SECS {
            return Err(invalid(
                "state.snapshot_interval_secs",
                format!("at most {MAX_SNAPSHOT_INTERVAL_SECS} (a day); 0 = only on stop"),
            ));
        }
        if self.privileges.user.contains('\0') {
            return Err(invalid("privileges.user", "contains a NUL byte"));
        }
        if self.privileges.group.contains('\0') {
            return Err(invalid("privileges.group", "contains a NUL byte"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(1..=32).contains(&l.prefix_v4) {
            return Err(invalid("limits.prefix_v4", "must be between 1 and 32"));
        }
        if !(1..=128).contains(&l.prefix_v6) {
            return Err(invalid("limits.prefix_v6", "must be between 1 and 128"));
        }
        if l.requests_per_sec == 0 {
            return Err(invalid("limits.requests_per_sec", "must be at least 1"));
        }
        if l.burst < l.requests_per_sec {
            return Err(invalid(
                "limits.burst",
                "must be at least limits.requests_per_sec (tokens are added once a second)",
            ));
        }
        if !l.buckets.is_power_of_two() || !(64..=1 << 26).contains(&l.buckets) {
            return Err(invalid(
                "limits.buckets",
                "must be a power of two between 64 and 67108864",
            ));
        }
        let m = &self.admission;
        if !(1..=32).contains(&m.prefix_v4) {
            return Err(invalid("admission.prefix_v4", "must be between 1 and 32"));
        }
        if !(1..=128).contains(&m.prefix_v6) {
            return Err(invalid("admission.prefix_v6", "must be between 1 and 128"));
        }
        let share = |v: f64| v > 0.0 && v <= 1.0;
        if !share(m.max_prefix_share) {
            return Err(invalid(
                "admission.max_prefix_share",
                "must be above 0 and at most 1",
            ));
        }
        if !share(m.pressure_prefix_share) || m.pressure_prefix_share > m.max_prefix_share {
            return Err(invalid(
                "admission.pressure_prefix_share",
                "must be above 0 and at most admission.max_prefix_share",
            ));
        }
        if !share(m.pressure_fill) {
            return Err(invalid(
                "admission.pressure_fill",
                "must be above 0 and at most 1",
            ));
        }
        if m.max_peers_per_swarm == 0 {
            return Err(invalid(
                "admission.max_peers_per_swarm",
                "must be at least 1",
            ));
        }
        for (key, cells) in [
            ("admission.sketch_cells", m.sketch_cells),
            ("admission.swarm_sketch_cells", m.swarm_sketch_cells),
        ] {
            if !cells.is_power_of_two() || !(1024..=1 << 28).contains(&cells) {
                return Err(invalid(
                    key,
                    "must be a power of two between 1024 and 268435456",
                ));
            }
        }
        let d = &self.adaptive_interval;
        if !(d.load_fraction > 0.0 && d.load_fraction <= 1.0) {
            return Err(invalid(
                "adaptive_interval.load_fraction",
                "must be above 0 and at most 1",
            ));
        }
        if d.max_interval_secs < self.protocol.announce_interval_secs
            || d.max_interval_secs > 86_400
        {
            return Err(invalid(
                "adaptive_interval.max_interval_secs",
                "must be between protocol.announce_interval_secs and 86400",
            ));
        }
        if d.step_secs == 0 {
            return Err(invalid("adaptive_interval.step_secs", "must be at least 1"));
        }
        if d.window_secs == 0 || d.window_secs > 86_400 {
            return Err(invalid(
                "adaptive_interval.window_secs",
                "must be between 1 and 86400",
            ));
        }
        Ok(())
    }

    /// Worker threads actually started (resolves `workers = 0`).
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        }
    }

    /// The connection-id key, if one is configured (validated).
    pub fn connection_id_key(&self) -> Option<[u8; 16]> {
        if self.connection_id.key.is_empty() {
            None
        } else {
            parse_key(&self.connection_id.key).ok()
        }
    }

    /// The previous connection-id key, if one is configured (validated).
    pub fn connection_id_previous_key(&self) -> Option<[u8; 16]> {
        if self.connection_id.previous_key.is_empty() {
            None
        } else {
            parse_key(&self.connection_id.previous_key).ok()
        }
    }

    /// The peer store's settings.
    pub fn store_config(&self) -> crate::fjord_store::StoreConfig {
        crate::fjord_store::StoreConfig {
            max_peers: self.store.max_peers,
            max_swarms: self.store.max_swarms,
            peer_timeout_secs: self.store.peer_timeout_secs,
            clean_cycle_secs: self.store.clean_cycle_secs,
            default_num_want: self.protocol.default_num_want as usize,
            max_num_want_v4: self.protocol.max_num_want_v4 as usize,
            max_num_want_v6: self.protocol.max_num_want_v6 as usize,
        }
    }

    /// A configuration for tests and embedding: loopback listen addresses with port 0, one worker,
    /// metrics off, otherwise defaults.
    pub fn for_tests(listen: Vec<SocketAddr>) -> Config {
        let mut c = Config::default();
        c.network.listen = listen;
        c.workers = 1;
        c.metrics.enabled = false;
        c.network.socket_recv_buffer = 1 << 20;
        c.network.socket_send_buffer = 1 << 20;
        c
    }
}
