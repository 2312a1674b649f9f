//! Shared helpers for the fjord benches.
