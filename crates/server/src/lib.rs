//! fjord-server: the `fjord` UDP BitTorrent tracker (BEP 15).
//!
//! A mio event loop per worker thread, each with its own `SO_REUSEPORT` socket per listen
//! address, wiring the sans-IO codec (`fjord-protocol`) to the lock-free peer store
//! (`fjord-store`). The request logic lives in [`handler::RequestHandler::handle`], which takes
//! bytes, an address and a time and writes a reply into a caller-owned buffer, so every protocol
//! behaviour is tested without sockets.
//!
//! ```
//! use fjord_server::{Config, start};
//! use fjord_server::counters::{Action, IpFamily};
//!
//! let server = start(Config::for_tests(vec!["127.0.0.1:0".parse().unwrap()])).unwrap();
//! let addr = server.local_addrs()[0]; // port 0 resolved; bound before `start` returns
//! let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! let mut connect = [0u8; 16];
//! connect[..8].copy_from_slice(&0x41727101980u64.to_be_bytes());
//! client.send_to(&connect, addr).unwrap();
//! let mut reply = [0u8; 64];
//! assert_eq!(client.recv(&mut reply).unwrap(), 16);
//! let counts = server.shutdown().unwrap(); // exact: workers are joined
//! assert_eq!(counts.responses(Action::Connect, IpFamily::V4), 1);
//! ```
//!
//! Modules: [`handler`] (protocol decisions), [`server`] (start, stop, supervision),
//! `worker` (the event loops), `listen` (binding the sockets), [`privileges`],
//! [`connection_id`], [`access_list`], [`config`], [`counters`], [`metrics`], [`state`] (the
//! state directory: snapshots in the [`snapshot_file`] format, the kept connection-id key). Every socket
//! system call is in the fjord-udp crate.

#![forbid(unsafe_code)]

pub mod access_list;
pub mod adaptive_interval;
pub mod admission;
pub mod catalogue;
pub mod clients;
pub mod config;
pub mod connection_id;
pub mod counters;
pub mod handler;
pub mod http;
pub mod limiter;
mod listen;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod server;
pub mod snapshot_file;
pub mod state;
pub mod stats;
pub mod top_swarms;
pub mod watched_file;
mod worker;

/// The peer store crate, re-exported so that embedders name the same types.
pub use ::fjord_store;

#[cfg(test)]
mod handler_tests;
#[cfg(test)]
pub(crate) mod test_util;

pub use config::Config;
pub use counters::{Counters, CountersSnapshot};
pub use server::{RunningServer, start};
