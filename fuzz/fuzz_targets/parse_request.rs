//! `Request::parse` never panics on arbitrary bytes, and its result is consistent with them
//! (offsets, truncation, BEP 41 option walk, error classification, reply context).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same checks `cargo test -p fjord-protocol` replays over fuzz/corpus/.
#[path = "../../crates/protocol/tests/checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::parse_request(data));
