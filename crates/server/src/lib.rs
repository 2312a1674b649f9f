//! fjord-server: the `fjord` UDP BitTorrent tracker (BEP 15).
//!
//! A mio event loop per worker thread, each with its own `SO_REUSEPORT` socket per listen
//! address, wiring the sans-IO codec (`fjord-protocol`) to the lock-free peer store
//! (`fjord-store`). The request logic lives in [`handler::RequestHandler::handle`], which takes
//! bytes, an address and a time and writes a reply into a caller-owned buffer, so every protocol
//! behaviour is tested without sockets.

pub mod access_list;
pub mod config;
pub mod connection_id;
pub mod counters;
pub mod handler;
pub mod server;
pub mod sys;

/// The peer store crate, re-exported so that embedders name the same types.
pub use ::fjord_store;

#[cfg(test)]
mod handler_tests;
#[cfg(test)]
pub(crate) mod test_util;

pub use config::Config;
pub use counters::{Counters, CountersSnapshot};
pub use server::{RunningServer, start};
