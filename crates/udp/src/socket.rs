//! Socket creation and options: `SO_REUSEPORT`, buffer sizes, `IPV6_V6ONLY`, packet info
//! (through `socket2` and `nix`, no `unsafe`), and the kernel's drop counter.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// How [`bind`] configures a socket. `Default`: no `SO_REUSEPORT`, kernel-default buffers,
/// IPv6 sockets IPv6-only, no packet info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_REUSEPORT`: several sockets (of one user) share the address and the kernel spreads
    /// datagrams over them by source address (unix; ignored elsewhere).
    pub reuse_port: bool,
    /// Requested `SO_RCVBUF` in bytes; the kernel caps it at `net.core.rmem_max` (see
    /// [`BoundSocket::recv_buffer`] and [`granted_buffer`]).
    pub recv_buffer: Option<usize>,
    /// Requested `SO_SNDBUF` in bytes; capped at `net.core.wmem_max`.
    pub send_buffer: Option<usize>,
    /// `IPV6_V6ONLY` for IPv6 addresses, so that IPv4 needs (and gets) its own socket; ignored
    /// for IPv4.
    pub v6_only: bool,
    /// Report each datagram's local address (`IP_PKTINFO` / `IPV6_RECVPKTINFO`, Linux), so a
    /// socket bound to a wildcard address can reply from the address it was asked on. Ignored
    /// elsewhere.
    pub packet_info: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            reuse_port: false,
            recv_buffer: None,
            send_buffer: None,
            v6_only: true,
            packet_info: false,
        }
    }
}

/// A bound, non-blocking socket and the buffer sizes the kernel reports for it.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket.
    pub socket: UdpSocket,
    /// `SO_RCVBUF` as `getsockopt` reports it (Linux: twice the usable size).
    pub recv_buffer: usize,
    /// `SO_SNDBUF` as `getsockopt` reports it.
    pub send_buffer: usize,
}

/// Creates a UDP socket for `addr`'s family, applies `opts`, makes it non-blocking and binds
/// it to `addr`.
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<BoundSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(opts.v6_only)?;
    }
    #[cfg(unix)]
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // The kernel silently caps these; the caller compares what it got.
    if let Some(size) = opts.recv_buffer {
        let _ = socket.set_recv_buffer_size(size);
    }
    if let Some(size) = opts.send_buffer {
        let _ = socket.set_send_buffer_size(size);
    }
    socket.set_nonblocking(true)?;
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        if opts.packet_info {
            if addr.is_ipv6() {
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
            } else {
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
            }
        }
    }
    socket.bind(&addr.into())?;
    Ok(BoundSocket {
        recv_buffer: socket.recv_buffer_size().unwrap_or(0),
        send_buffer: socket.send_buffer_size().unwrap_or(0),
        socket: socket.into(),
    })
}

/// Checks that no socket of any process holds `addr` (nor a wildcard address covering it):
/// binds a socket without `SO_REUSEPORT` (IPv6-only for IPv6, as [`bind`]'s default) and closes
/// it again. `Err(AddrInUse)` means someone else is there; without this check a second
/// process of the same user could join a `SO_REUSEPORT` group silently and take half of its
/// traffic. Port 0 always passes (a fresh port is never taken).
pub fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    bind(addr, &SocketOptions::default()).map(drop)
}

/// The usable buffer size the kernel granted, if less than `requested`, given what `getsockopt`
/// `reported`. Linux doubles the value it stores (half is bookkeeping overhead) and reports the
/// doubled value, so a full grant reads back as twice the request.
pub fn granted_buffer(requested: usize, reported: usize) -> Option<usize> {
    let granted = if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    };
    (granted < requested).then_some(granted)
}

/// Datagrams the kernel dropped on `socket` before they reached it (a full receive buffer,
/// memory pressure) since it was created: a wrapping `u32` counter, read with one
/// `getsockopt(SO_MEMINFO)` (Linux 4.14+). A caller that wants a rate reads it now and then and
/// takes differences with `wrapping_sub`; nothing is paid per datagram (unlike `SO_RXQ_OVFL`,
/// which attaches the same counter to every datagram received). `Unsupported` elsewhere.
pub fn kernel_drops(socket: &impl std::os::fd::AsFd) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        crate::mmsg::socket_drops(socket.as_fd())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no per-socket drop counter on this platform",
        ))
    }
}
