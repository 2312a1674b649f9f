//! Tracker addresses as users write them: `udp://host:port[/path?query]`, `host:port`,
//! `1.2.3.4:port`, `[2001:db8::1]:port`.
//!
//! The path and query of a `udp://` URL travel in every announce as BEP 41 URL-data options
//! (type `0x02`, at most 255 bytes each, so a long path takes several), exactly as libtorrent
//! sends them; trackers that key access or statistics on the path (`/announce?passkey=…`)
//! therefore see what a real client sends. Host names are resolved once, before the run.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Longest path + query accepted (an announce then still fits one 1500-byte datagram).
pub const MAX_PATH_LEN: usize = 1024;

/// Why a target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Nothing given.
    #[error("the target is empty: give udp://HOST:PORT[/PATH] or HOST:PORT")]
    Empty,
    /// A scheme other than `udp://`.
    #[error(
        "{0}:// trackers are not supported: fjord-bench speaks the UDP tracker protocol (BEP 15); give udp://HOST:PORT"
    )]
    UnsupportedScheme(String),
    /// No `:port`.
    #[error("{0}: no port (UDP trackers have no default port; write HOST:PORT, e.g. {0}:6969)")]
    MissingPort(String),
    /// The port is not a number in 1..=65535.
    #[error("{target}: bad port {port:?} (a number from 1 to 65535)")]
    BadPort {
        /// The whole target.
        target: String,
        /// What stood after the colon.
        port: String,
    },
    /// An IPv6 literal without brackets.
    #[error("{0}: an IPv6 address needs brackets, e.g. [::1]:6969 or udp://[::1]:6969/announce")]
    Ipv6NeedsBrackets(String),
    /// `[` without `]`.
    #[error("{0}: unclosed '[' in the IPv6 address")]
    UnclosedBracket(String),
    /// Path + query too long for one datagram.
    #[error("{target}: the path is {len} bytes long; at most {MAX_PATH_LEN} fit an announce")]
    PathTooLong {
        /// The whole target.
        target: String,
        /// Its path length.
        len: usize,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The host name resolved to no address (of the wanted family).
    #[error("{host} has no {family}address")]
    NoAddress {
        /// The host name.
        host: String,
        /// "IPv4 ", "IPv6 " or "".
        family: &'static str,
    },
}

/// A tracker to drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address literal (IPv6 without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Path and query of a `udp://` URL (starting with `/`), sent as BEP 41 URL data.
    pub path: Option<String>,
}

impl Target {
    /// Parses what a user wrote. Does not resolve host names (see [`Target::resolve`]).
    pub fn parse(written: &str) -> Result<Self, TargetError> {
        let written = written.trim();
        if written.is_empty() {
            return Err(TargetError::Empty);
        }
        let rest = match written.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("udp") => rest,
            Some((scheme, _)) => return Err(TargetError::UnsupportedScheme(scheme.to_string())),
            None => written,
        };
        // A fragment is never sent anywhere.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let Some((host, after)) = inner.split_once(']') else {
                return Err(TargetError::UnclosedBracket(written.to_string()));
            };
            match after.strip_prefix(':') {
                Some(port) => (host, port),
                None if after.is_empty() => {
                    return Err(TargetError::MissingPort(format!("[{host}]")));
                }
                None => {
                    return Err(TargetError::BadPort {
                        target: written.to_string(),
                        port: after.to_string(),
                    });
                }
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(TargetError::Ipv6NeedsBrackets(written.to_string()));
                }
                Some((host, port)) => (host, port),
                None => return Err(TargetError::MissingPort(authority.to_string())),
            }
        };
        if host.is_empty() {
            return Err(TargetError::Empty);
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(TargetError::BadPort {
                    target: written.to_string(),
                    port: port.to_string(),
                });
            }
        };
        let path = path.map(|p| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                // `udp://host:1?x=y`: a query without a path.
                format!("/{p}")
            }
        });
        if let Some(p) = &path
            && p.len() > MAX_PATH_LEN
        {
            return Err(TargetError::PathTooLong {
                target: written.to_string(),
                len: p.len(),
            });
        }
        Ok(Self {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The canonical URL: `udp://host:port/path` (IPv6 literals in brackets).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "udp://{host}:{}{}",
            self.port,
            self.path.as_deref().unwrap_or("")
        )
    }

    /// Resolves the host. With `family`, the first address of that family (the family of
    /// `--bind`); otherwise the first address the resolver returns.
    pub fn resolve(&self, family: Option<AddrFamily>) -> Result<SocketAddr, TargetError> {
        let want = |a: &SocketAddr| family.is_none_or(|f| f.matches(a.ip()));
        let family_name = match family {
            None => "",
            Some(AddrFamily::V4) => "IPv4 ",
            Some(AddrFamily::V6) => "IPv6 ",
        };
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, self.port);
            return if want(&addr) {
                Ok(addr)
            } else {
                Err(TargetError::NoAddress {
                    host: self.host.clone(),
                    family: family_name,
                })
            };
        }
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                host: self.host.clone(),
                source,
            })?;
        addrs
            .into_iter()
            .find(want)
            .ok_or_else(|| TargetError::NoAddress {
                host: self.host.clone(),
                family: family_name,
            })
    }

    /// The BEP 41 option bytes every announce carries: the path and query as URL-data
    /// options of at most 255 bytes each, then end-of-options; empty without a path.
    pub fn announce_options(&self) -> Vec<u8> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(path.len() + path.len() / 255 * 2 + 3);
        for chunk in path.as_bytes().chunks(255) {
            out.push(0x02);
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
        out.push(0x00);
        out
    }
}

/// An address family, for choosing among a host name's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl AddrFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    fn matches(self, ip: IpAddr) -> bool {
        Self::of(ip) == self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_protocol::AnnounceOptions;

    fn ok(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn udp_urls_with_and_without_path() {
        let t = ok("udp://tracker.example.org:6969/announce");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_deref()),
            ("tracker.example.org", 6969, Some("/announce"))
        );
        assert_eq!(t.url(), "udp://tracker.example.org:6969/announce");
        let t = ok("udp://tracker.example.org:1337");
        assert_eq!((t.port, t.path.as_deref()), (1337, None));
        assert_eq!(t.url(), "udp://tracker.example.org:1337");
        let t = ok("UDP://127.0.0.1:6969/announce?passkey=abc&x=1#frag");
        assert_eq!(t.path.as_deref(), Some("/announce?passkey=abc&x=1"));
        let t = ok("udp://127.0.0.1:6969?key=1");
        assert_eq!(t.path.as_deref(), Some("/?key=1"));
        let t = ok("udp://127.0.0.1:6969/");
        assert_eq!(t.path.as_deref(), Some("/"));
    }

    #[test]
    fn plain_addresses_and_ipv6_literals() {
        let t = ok("127.0.0.1:6969");
        assert_eq!((t.host.as_str(), t.port, t.path), ("127.0.0.1", 6969, None));
        let t = ok("[::1]:6969");
        assert_eq!(t.host, "::1");
        assert_eq!(t.url(), "udp://[::1]:6969");
        let t = ok("udp://[2001:db8::1]:80/announce");
        assert_eq!(
            (t.host.as_str(), t.path.as_deref()),
            ("2001:db8::1", Some("/announce"))
        );
        assert_eq!(t.url(), "udp://[2001:db8::1]:80/announce");
        assert_eq!(ok("localhost:6969").host, "localhost");
    }

    #[test]
    fn mistakes_are_named() {
        let err = |s: &str| Target::parse(s).unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("http://t.example:80/announce").contains("http:// trackers are not supported"));
        assert!(err("udp://t.example/announce").contains("no port"));
        assert!(err("t.example").contains("no port"));
        assert!(err("::1:6969").contains("needs brackets"));
        assert!(err("[::1]").contains("no port"));
        assert!(err("[::1:6969").contains("unclosed"));
        assert!(err("t.example:0").contains("bad port"));
        assert!(err("t.example:70000").contains("bad port"));
        assert!(err("t.example:x").contains("bad port"));
        assert!(err(":6969").contains("empty"));
        let long = format!("udp://t:1/{}", "a".repeat(MAX_PATH_LEN));
        assert!(err(&long).contains("at most"));
    }

    #[test]
    fn path_becomes_url_data_options_that_parse_back() {
        assert!(ok("udp://h:1").announce_options().is_empty());
        let t = ok("udp://h:1/announce?auth=abc");
        let bytes = t.announce_options();
        assert_eq!(&bytes[..2], &[0x02, 18]);
        let opts = AnnounceOptions::new(&bytes);
        assert!(!opts.is_malformed());
        assert!(opts.url_data().eq([&b"/announce?auth=abc"[..]]));
        // A long path is split into options of at most 255 bytes, concatenated by trackers.
        let path = format!("/{}", "p".repeat(600));
        let t = ok(&format!("udp://h:1{path}"));
        let bytes = t.announce_options();
        let opts = AnnounceOptions::new(&bytes);
        let pieces: Vec<&[u8]> = opts.url_data().collect();
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [255, 255, 91]
        );
        assert_eq!(pieces.concat(), path.as_bytes());
    }

    #[test]
    fn resolution_picks_the_wanted_family() {
        let t = ok("127.0.0.1:6969");
        assert_eq!(t.resolve(None).unwrap(), "127.0.0.1:6969".parse().unwrap());
        assert!(
            t.resolve(Some(AddrFamily::V6))
                .unwrap_err()
                .to_string()
                .contains("no IPv6 address")
        );
        let t = ok("localhost:6969");
        let v4 = t.resolve(Some(AddrFamily::V4)).unwrap();
        assert!(v4.ip().is_loopback() && v4.is_ipv4());
    }
}
