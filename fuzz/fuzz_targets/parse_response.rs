//! `Response::parse` never panics on arbitrary bytes and is exactly as strict as documented,
//! with both peer families (6- and 18-byte announce entries).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same checks `cargo test -p fjord-protocol` replays over fuzz/corpus/.
#[path = "../../crates/protocol/tests/checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::parse_response(data));
