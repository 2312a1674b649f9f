//! fjord-protocol (work in progress).
#![forbid(unsafe_code)]
