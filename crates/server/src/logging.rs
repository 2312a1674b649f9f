//! Logging to stderr: human-readable text, JSON lines (`log_format = "json"`), or, under
//! systemd's journal, text without timestamps and with syslog priority prefixes (the sd-daemon
//! convention: journald reads `<3>` as error … `<7>` as debug and stamps the time itself).
//! Plus the one start-up line that states the version and the effective settings.

use std::fmt;
use std::net::SocketAddr;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{AccessListMode, Config, LogFormat};

/// `fjord`'s version line: `<version> (<commit>)`, the commit from the build script.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FJORD_COMMIT"), ")");

/// The syslog priority of a tracing level (RFC 5424: 3 error, 4 warning, 6 info, 7 debug).
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is connected to systemd's journal: `JOURNAL_STREAM` (`device:inode`, set by
/// systemd for services whose output goes to the journal) names the file stderr is.
pub fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM").is_ok_and(|v| names_stderr(&v))
}

fn names_stderr(journal_stream: &str) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Text lines for the journal: `<priority>` then the usual line without time and level.
struct JournalFormat {
    inner: Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber: `level` (unless `RUST_LOG` is set) in `format`, on stderr.
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(JournalFormat {
                inner: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false),
            })
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The start-up line: version, bound addresses and the effective settings (never the
/// connection-id key itself).
pub fn startup_line(config: &Config, bound: &[SocketAddr], metrics: Option<SocketAddr>) -> String {
    let listen: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let (n, p, s, a) = (
        &config.network,
        &config.protocol,
        &config.store,
        &config.access_list,
    );
    let access = match (a.mode, &a.path) {
        (AccessListMode::Off, _) | (_, None) => "off".to_string(),
        (mode, Some(path)) => format!("{mode:?} {}", path.display()).to_lowercase(),
    };
    let metrics = metrics.map_or("off".to_string(), |m| format!("http://{m}/metrics"));
    let key = match (
        config.connection_id.key.is_empty(),
        &config.state.dir,
        config.connection_id.previous_key.is_empty(),
    ) {
        (true, None, true) => "random",
        (true, Some(_), true) => "kept in the state dir",
        (false, _, true) => "configured",
        (true, None, false) => "random, previous key accepted",
        (true, Some(_), false) => "kept in the state dir, previous key accepted",
        (false, _, false) => "configured, previous key accepted",
    };
    let state = match &config.state.dir {
        None => "off".to_string(),
        Some(d) => match config.state.snapshot_interval_secs {
            0 => format!("{} (snapshot on stop)", d.display()),
            i => format!("{} (snapshot on stop and every {i} s)", d.display()),
        },
    };
    let user = match (
        config.privileges.user.as_str(),
        config.privileges.group.as_str(),
    ) {
        ("", "") => "unchanged".to_string(),
        (u, g) => format!("user {u:?} group {g:?}"),
    };
    format!(
        "fjord {VERSION} started: udp {}, {} workers, batch {}, socket buffers {}/{} bytes; \
         interval {} s, num_want {} (max {}/{}), scrape max {}; connection-id key {key}, \
         grace {} s; store max {} peers / {} swarms ({}), peer timeout {} s; access list {access}; \
         state {state}; metrics {metrics}; privileges {user}; log {} {:?}",
        listen.join(" "),
        config.effective_workers(),
        n.batch_size,
        n.socket_recv_buffer,
        n.socket_send_buffer,
        p.announce_interval_secs,
        p.default_num_want,
        p.max_num_want_v4,
        p.max_num_want_v6,
        p.max_scrape_hashes,
        config.connection_id.grace_secs,
        s.max_peers,
        s.max_swarms,
        s.memory_allowed_text(),
        s.peer_timeout_secs,
        config.log_level,
        config.log_format,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let p: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .map(syslog_priority)
        .collect();
        assert_eq!(p, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!names_stderr(""));
        assert!(!names_stderr("garbage"));
        assert!(!names_stderr("1:x"));
        assert!(!names_stderr("0:0"));
    }

    #[test]
    fn startup_line_states_version_and_settings_but_not_the_key() {
        let mut config = Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()]);
        config.connection_id.key = "00112233445566778899aabbccddeeff".into();
        let line = startup_line(&config, &["127.0.0.1:6969".parse().unwrap()], None);
        for part in [
            VERSION,
            "udp 127.0.0.1:6969",
            "1 workers",
            "store max 50000000 peers / 10000000 swarms (750 MB as IPv4 peers",
            "connection-id key configured",
            "access list off",
            "metrics off",
            "log info Text",
        ] {
            assert!(line.contains(part), "{part:?} missing in {line}");
        }
        assert!(!line.contains("00112233"), "{line}");
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
    }
}
