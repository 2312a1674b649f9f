//! Binding the listen sockets: one `SO_REUSEPORT` group per listen address, one socket of it
//! per worker (through fjord-udp).
//!
//! Before any group is bound, every listen address with a fixed port is probed with a socket
//! without `SO_REUSEPORT` ([`fjord_udp::probe_exclusive`]): if anything else holds the address
//! (another fjord, another tracker, a wildcard bind of the same port), the start is refused.
//! Without the probe a second process of the same user would silently join the group and the
//! kernel would split every swarm between the two.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use anyhow::Context;
use fjord_udp::{BoundSocket, SocketOptions, granted_buffer};

use crate::config::{Config, NetworkConfig, default_listen};

/// Binds one socket for `addr` with the configured buffers, IPv6-only for IPv6, and packet info
/// on wildcard addresses (so replies leave from the address asked). `shared`: a member of a
/// `SO_REUSEPORT` group; otherwise an exclusive probe.
pub(crate) fn bind_socket(
    addr: SocketAddr,
    net: &NetworkConfig,
    shared: bool,
) -> io::Result<BoundSocket> {
    let opts = SocketOptions {
        reuse_port: shared,
        recv_buffer: Some(net.socket_recv_buffer),
        send_buffer: Some(net.socket_send_buffer),
        v6_only: true,
        packet_info: shared && addr.ip().is_unspecified(),
    };
    fjord_udp::bind(addr, &opts)
}

/// The bound addresses (port 0 resolved) and, per worker, its socket for each of them.
pub(crate) type Listeners = (Vec<SocketAddr>, Vec<Vec<UdpSocket>>);

/// Binds `workers` sockets for every listen address. An IPv6 address that cannot be bound is
/// skipped with a warning when the listen list is the default one; otherwise it is an error.
pub(crate) fn bind_all(config: &Config, workers: usize) -> anyhow::Result<Listeners> {
    bind_all_with(config, workers, bind_socket)
}

/// [`bind_all`] with the socket factory as a parameter (tests inject failures).
pub(crate) fn bind_all_with(
    config: &Config,
    workers: usize,
    bind_socket: impl Fn(SocketAddr, &NetworkConfig, bool) -> io::Result<BoundSocket>,
) -> anyhow::Result<Listeners> {
    let net = &config.network;
    let defaults = net.listen == default_listen();
    let unavailable = |requested: SocketAddr, e: &io::Error| {
        let skip = defaults && requested.is_ipv6() && e.kind() != io::ErrorKind::AddrInUse;
        if skip {
            tracing::warn!("IPv6 unavailable, serving IPv4 only: cannot bind {requested}: {e}");
        }
        skip
    };
    // Probe every fixed port first, before this process holds any of them itself.
    let mut wanted = Vec::new();
    for &requested in &net.listen {
        let probe = if requested.port() == 0 {
            Ok(())
        } else {
            bind_socket(requested, net, false).map(drop)
        };
        match probe {
            Ok(()) => wanted.push(requested),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                anyhow::bail!(
                    "UDP {requested} is already in use by another socket (another fjord?); \
                     refusing to share it: the kernel would split every swarm between the two"
                )
            }
            Err(e) if unavailable(requested, &e) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot bind UDP {requested}")),
        }
    }
    let mut addrs = Vec::new();
    let mut per_worker: Vec<Vec<UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
    for requested in wanted {
        let first = match bind_socket(requested, net, true) {
            Ok(s) => s,
            Err(e) if unavailable(requested, &e) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot bind UDP {requested}")),
        };
        warn_if_capped(
            requested,
            "receive",
            net.socket_recv_buffer,
            first.recv_buffer,
        );
        warn_if_capped(requested, "send", net.socket_send_buffer, first.send_buffer);
        let actual = first.socket.local_addr()?;
        per_worker[0].push(first.socket);
        for sockets in per_worker.iter_mut().skip(1) {
            let s = bind_socket(actual, net, true)
                .with_context(|| format!("cannot bind UDP {actual} (SO_REUSEPORT)"))?;
            sockets.push(s.socket);
        }
        addrs.push(actual);
    }
    if addrs.is_empty() {
        anyhow::bail!("no listen address could be bound");
    }
    Ok((addrs, per_worker))
}

fn warn_if_capped(addr: SocketAddr, which: &str, requested: usize, reported: usize) {
    if let Some(granted) = granted_buffer(requested, reported) {
        let sysctl = if which == "receive" {
            "net.core.rmem_max"
        } else {
            "net.core.wmem_max"
        };
        tracing::warn!(
            "{addr}: {which} buffer capped at {granted} bytes ({requested} requested); raise {sysctl}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds loopback port 0 instead of the (fixed) default port; IPv6 "unavailable".
    fn no_ipv6(addr: SocketAddr, net: &NetworkConfig, shared: bool) -> io::Result<BoundSocket> {
        if addr.is_ipv6() {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        let local = if addr.port() == 6969 {
            "127.0.0.1:0".parse().unwrap()
        } else {
            addr
        };
        bind_socket(local, net, shared)
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

    /// Regression (issue 11): a port already held by another `SO_REUSEPORT` socket of this
    /// user (another fjord's worker) is refused instead of joined.
    #[test]
    fn a_port_held_by_another_reuse_port_socket_is_refused() {
        let opts = SocketOptions {
            reuse_port: true,
            ..SocketOptions::default()
        };
        let other = fjord_udp::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let mut config = Config::default();
        config.network.listen = vec![other.socket.local_addr().unwrap()];
        let e = format!("{:#}", bind_all(&config, 2).unwrap_err());
        assert!(e.contains("already in use by another socket"), "{e}");
    }
}
