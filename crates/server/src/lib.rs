//! fjord-server (work in progress).
