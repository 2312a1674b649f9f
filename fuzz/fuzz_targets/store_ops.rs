//! Random operation sequences on a small fjord-store (announces with every event, stops,
//! clean slices with random budgets, scrapes, clock jumps), checked after every step against
//! a simple model: no peer lost, duplicated or revived, counts exact, `clean` returns.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same check `cargo test -p fjord-store --test fuzz_corpus` replays over
// fuzz/corpus/store_ops/.
#[path = "../../crates/store/tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| model::store_ops(data));
