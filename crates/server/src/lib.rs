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
pub mod sys;

#[cfg(test)]
pub(crate) mod test_util;

pub use config::Config;
pub use counters::{Counters, CountersSnapshot};
