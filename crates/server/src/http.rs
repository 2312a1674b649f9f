//! The HTTP endpoint of the metrics address: `GET /metrics` (Prometheus), `GET /stats` (the
//! statistics as JSON), `GET /` (a self-contained status page rendering `/stats`), and
//! `GET`/`HEAD /health` (or `/ready`).
//!
//! One accept thread hands every connection to a thread of its own, so a health probe never
//! waits behind another client, idle or slow. Each connection is bounded: its request head to
//! [`MAX_REQUEST_HEAD`] bytes, its whole exchange to [`IO_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once (further ones get `503` at once). Renders of
//! `/metrics` and `/stats` run one at a time; `/health` reads only a flag, `/` is a constant.
//!
//! The status page ([`STATUS_PAGE`], `status.html`) has no external scripts, styles or fonts;
//! it is served with a `Content-Security-Policy` that lets it load nothing but `/stats` from
//! its own origin, so a browser enforces that too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest request head read before the connection is answered 400 and closed.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Longest a connection may take to send its request head and read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; further ones are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 32;

/// The status page served at `/`: one HTML file with its script and style inline.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// A page rendered on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/metrics`: the Prometheus text exposition.
    Metrics,
    /// `/stats`: the statistics as JSON.
    Stats,
}

/// What the endpoint answers with.
struct Handlers<R, H> {
    render: Mutex<R>,
    healthy: H,
}

/// The HTTP endpoint serving `/metrics`, `/stats`, `/` and `/health`. Stops accepting when dropped
/// (connections being served finish on their own, within [`IO_TIMEOUT`]).
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl MetricsEndpoint {
    /// Binds `listen` and serves: `GET /metrics` answers `render(Page::Metrics)`, `GET /stats`
    /// `render(Page::Stats)`, `GET /` the status page, `GET /health` `200 ok` while
    /// `healthy()` is true (503 otherwise); `HEAD` answers the same without a body.
    pub fn start<R, H>(listen: SocketAddr, render: R, healthy: H) -> io::Result<Self>
    where
        R: FnMut(Page) -> String + Send + 'static,
        H: Fn() -> bool + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handlers = Arc::new(Handlers {
            render: Mutex::new(render),
            healthy,
        });
        let active = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("fjord-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    accept(stream, &handlers, &active);
                }
            })?;
        Ok(MetricsEndpoint {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept; if the connect fails the listener is already gone.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decrements the count of connections being served when a connection thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept<R, H>(stream: TcpStream, handlers: &Arc<Handlers<R, H>>, active: &Arc<AtomicUsize>)
where
    R: FnMut(Page) -> String + Send + 'static,
    H: Fn() -> bool + Send + Sync + 'static,
{
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::AcqRel);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = respond(
            stream,
            false,
            Reply::text("503 Service Unavailable", "busy\n".into()),
        );
        return;
    }
    let slot = Slot(Arc::clone(active));
    let handlers = Arc::clone(handlers);
    let spawned = std::thread::Builder::new()
        .name("fjord-http".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_one(stream, &handlers) {
                tracing::debug!("metrics connection: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("metrics endpoint: cannot spawn a connection thread: {e}");
    }
}

/// Reads one request head (bounded in size and time) and answers it.
fn serve_one<R, H>(stream: TcpStream, handlers: &Handlers<R, H>) -> io::Result<()>
where
    R: FnMut(Page) -> String,
    H: Fn() -> bool,
{
    let deadline = Instant::now() + IO_TIMEOUT;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut lines = Vec::new();
    let mut head = 0;
    // The request line, then header lines until the blank line (or the bound).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head too slow",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let mut line = String::new();
        let n = reader
            .by_ref()
            .take((MAX_REQUEST_HEAD - head) as u64)
            .read_line(&mut line)?;
        head += n;
        let end = n == 0 || line == "\r\n" || line == "\n" || head >= MAX_REQUEST_HEAD;
        lines.push(line);
        if end {
            break;
        }
    }
    let mut parts = lines[0].split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    let reply = match (method, path) {
        ("GET" | "HEAD", "/metrics") => Reply {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            extra: "",
            body: (handlers.render.lock())(Page::Metrics),
        },
        ("GET" | "HEAD", "/stats") => Reply {
            status: "200 OK",
            content_type: "application/json",
            extra: "Cache-Control: no-store\r\n",
            body: (handlers.render.lock())(Page::Stats),
        },
        ("GET" | "HEAD", "/") => Reply {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            extra: STATUS_PAGE_HEADERS,
            body: STATUS_PAGE.to_string(),
        },
        ("GET" | "HEAD", "/health" | "/ready") => {
            if (handlers.healthy)() {
                Reply::text("200 OK", "ok\n".into())
            } else {
                Reply::text("503 Service Unavailable", "unhealthy\n".into())
            }
        }
        ("GET" | "HEAD", _) => Reply::text("404 Not Found", "not found\n".into()),
        _ => Reply::text("400 Bad Request", "bad request\n".into()),
    };
    respond(stream, head_only, reply)
}

/// Headers of the status page (the policy, and no sniffing or framing).
const STATUS_PAGE_HEADERS: &str = concat!(
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; ",
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; ",
    "form-action 'none'; frame-ancestors 'none'\r\n",
    "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
);

/// One answer.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    /// Further header lines, each ending in CRLF.
    extra: &'static str,
    body: String,
}

impl Reply {
    fn text(status: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            extra: "",
            body,
        }
    }
}

fn respond(mut w: TcpStream, head_only: bool, r: Reply) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len(),
        r.extra
    )?;
    if !head_only {
        w.write_all(r.body.as_bytes())?;
    }
    w.flush()?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn endpoint(healthy: &Arc<AtomicBool>) -> MetricsEndpoint {
        let h2 = Arc::clone(healthy);
        MetricsEndpoint::start(
            "127.0.0.1:0".parse().unwrap(),
            |page| match page {
                Page::Metrics => "fjord_x_total 1\n".to_string(),
                Page::Stats => "{\"uptime_secs\": 1}".to_string(),
            },
            move || h2.load(Ordering::Relaxed),
        )
        .unwrap()
    }

    #[test]
    fn endpoint_serves_metrics_health_and_404() {
        let healthy = Arc::new(AtomicBool::new(true));
        let ep = endpoint(&healthy);
        let m = ask(ep.local_addr(), "GET", "/metrics");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.ends_with("\r\n\r\nfjord_x_total 1\n"), "{m}");
        assert!(ask(ep.local_addr(), "GET", "/health").starts_with("HTTP/1.1 200 OK"));
        healthy.store(false, Ordering::Relaxed);
        assert!(ask(ep.local_addr(), "GET", "/health").starts_with("HTTP/1.1 503"));
        assert!(ask(ep.local_addr(), "GET", "/nope").starts_with("HTTP/1.1 404"));
        let stats = ask(ep.local_addr(), "GET", "/stats");
        assert!(
            stats.contains("Content-Type: application/json\r\n"),
            "{stats}"
        );
        assert!(stats.ends_with("{\"uptime_secs\": 1}"), "{stats}");
        let page = ask(ep.local_addr(), "GET", "/");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("Content-Security-Policy: default-src 'none';"),
            "{page}"
        );
        assert!(page.ends_with(STATUS_PAGE), "the page is served whole");
        assert!(ask(ep.local_addr(), "POST", "/health").starts_with("HTTP/1.1 400"));
        drop(ep);
    }

    /// The page loads nothing from elsewhere (the browser test checks it renders `/stats`).
    #[test]
    fn the_status_page_is_self_contained() {
        let page = STATUS_PAGE.to_ascii_lowercase();
        for external in [
            "http:",
            "https:",
            "src=",
            "<link",
            "@import",
            "url(",
            "@font-face",
            "<iframe",
        ] {
            assert!(
                !page.contains(external),
                "the status page contains {external}"
            );
        }
        assert!(page.contains("fetch(\"stats\""));
    }

    /// Regression (issue 11): `HEAD /health` was answered 400.
    #[test]
    fn head_requests_get_the_headers_without_a_body() {
        let ep = endpoint(&Arc::new(AtomicBool::new(true)));
        let r = ask(ep.local_addr(), "HEAD", "/health");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 3\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "no body: {r:?}");
    }

    /// Regression (issue 11): three idle connections delayed `/health` by 15 s (one connection
    /// at a time, 5 s timeouts). Now it answers while they stay open.
    #[test]
    fn health_never_waits_behind_idle_connections() {
        let ep = endpoint(&Arc::new(AtomicBool::new(true)));
        let idle: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut s = TcpStream::connect(ep.local_addr()).unwrap();
                s.write_all(b"GET /metr").unwrap(); // a request head that never ends
                s
            })
            .collect();
        let started = Instant::now();
        assert!(ask(ep.local_addr(), "GET", "/health").starts_with("HTTP/1.1 200 OK"));
        assert!(ask(ep.local_addr(), "HEAD", "/health").starts_with("HTTP/1.1 200 OK"));
        let took = started.elapsed();
        assert!(
            took < IO_TIMEOUT / 2,
            "health took {took:?} behind idle clients"
        );
        drop(idle);
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_at_once() {
        let ep = endpoint(&Arc::new(AtomicBool::new(true)));
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(ep.local_addr()).unwrap())
            .collect();
        // The accept thread takes connections in order: one more is refused, not queued.
        let refused = ask(ep.local_addr(), "GET", "/health");
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.ends_with("busy\n"), "{refused}");
        drop(idle);
    }
}
