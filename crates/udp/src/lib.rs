//! fjord-udp: every UDP system call of fjord in one crate (the model: quinn-udp).
//!
//! - [`RecvBatch`] receives up to its capacity of datagrams with one `recvmmsg(2)` and hands
//!   out batch views: for each datagram its bytes, its source and (packet info) the local
//!   address it was sent to.
//! - [`SendBatch`] collects replies written in place into its own buffers and sends them with
//!   one `sendmmsg(2)`, each from the local address given (packet info), never blocking.
//! - [`bind`] creates and configures a socket: `SO_REUSEPORT`, buffer sizes, `IPV6_V6ONLY`,
//!   packet info, non-blocking mode; [`probe_exclusive`] checks that no other socket holds an
//!   address before a `SO_REUSEPORT` group is bound; [`kernel_drops`] reads the kernel's count
//!   of datagrams it dropped on a socket (`SO_MEMINFO`).
//!
//! Both batches allocate only when they are created: receiving and sending a batch touches
//! nothing but the buffers they own, so a worker can keep one of each for its whole life.
//!
//! # Backends
//! [`Backend::Mmsg`] (Linux): `recvmmsg`/`sendmmsg` with `IP_PKTINFO`/`IPV6_PKTINFO` control
//! messages, the only `unsafe` code of fjord outside the peer store, every block with its
//! `// SAFETY:` argument, every libc call through one `syscall!` macro that turns -1 into
//! `io::Error`. [`Backend::Portable`] (everywhere, and selectable on Linux): one
//! `recvfrom`/`sendto` per datagram through `nix`, no packet info. On a wildcard bind the
//! portable backend's replies leave from whatever address the routing table picks, and its
//! truncation flag is a guess (a datagram exactly as long as the slot counts as truncated).
//!
//! # Unpleasant parts
//! - Sockets must be non-blocking for the portable backend ([`bind`] makes them so); the mmsg
//!   backend passes `MSG_DONTWAIT` either way.
//! - A full send buffer drops the rest of a batch (counted in [`SendReport::would_block`]),
//!   and a datagram the kernel refuses (e.g. no route) is skipped and counted: a tracker must
//!   not stall on one client.
//! - The drop counter is read, not delivered: `SO_RXQ_OVFL` would attach it to every datagram
//!   and cost ~4 % of a busy worker's CPU in the kernel's control-message path (measured,
//!   docs/benchmarks.md), so [`kernel_drops`] asks for it with one `getsockopt` when wanted.
//!
//! ```
//! use fjord_udp::{Backend, RecvBatch, SendBatch, SocketOptions};
//! use std::time::{Duration, Instant};
//!
//! let opts = SocketOptions { packet_info: true, ..SocketOptions::default() };
//! let server = fjord_udp::bind("0.0.0.0:0".parse()?, &opts)?.socket;
//! let port = server.local_addr()?.port();
//! let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! client.send_to(b"ping", ("127.0.0.1", port))?;
//!
//! let (mut rx, mut tx) = (RecvBatch::new(32, 2048), SendBatch::new(32, 1280));
//! let deadline = Instant::now() + Duration::from_secs(5);
//! let n = loop {
//!     match rx.recv(&server) {
//!         Ok(n) => break n,
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {}
//!         Err(e) => return Err(e.into()),
//!     }
//! };
//! for i in 0..n {
//!     let d = rx.get(i);
//!     let Some(buf) = tx.next_buf() else { break };
//!     buf[..4].copy_from_slice(b"pong");
//!     tx.push(4, d.src, d.dst); // answered from the address the client asked
//! }
//! let report = tx.send(&server, |_, _| {});
//! assert_eq!(report.sent, 1);
//! let mut reply = [0; 8];
//! assert_eq!(client.recv_from(&mut reply)?, (4, ([127, 0, 0, 1], port).into()));
//! # assert_eq!(rx.backend(), Backend::best());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg(unix)]
#![deny(missing_docs)]

mod batch;
#[cfg(target_os = "linux")]
mod mmsg;
mod portable;
mod socket;

pub use batch::{Backend, Datagram, LocalAddr, RecvBatch, SendBatch, SendReport, Unsent};
pub use socket::{BoundSocket, SocketOptions, bind, granted_buffer, kernel_drops, probe_exclusive};
