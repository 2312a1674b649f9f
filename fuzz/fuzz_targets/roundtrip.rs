//! Whatever parses (as a request, or as a response of either family) re-encodes to the same
//! bytes. For requests "the same bytes" is the prefix the parser used: all of an announce or
//! untruncated scrape, the first 16 bytes of a connect (trailing bytes are ignored by design),
//! and header + kept hashes of a truncated scrape; `checks::roundtrip` asserts that these
//! are the only cases where bytes are left over.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same checks `cargo test -p fjord-protocol` replays over fuzz/corpus/.
#[path = "../../crates/protocol/tests/checks/mod.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::roundtrip(data));
