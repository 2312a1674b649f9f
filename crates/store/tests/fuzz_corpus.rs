//! The `store_ops` fuzz target's model check (tests/model), run by `cargo test`: over the
//! committed corpus (fuzz/corpus/store_ops), and over a few thousand pseudo-random operation
//! sequences, so the model check runs without nightly or cargo-fuzz.

mod model;

use std::path::Path;

#[test]
fn committed_corpus_passes_the_model_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/store_ops");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "fuzz/corpus/store_ops has {} seeds",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| model::store_ops(&data));
        assert!(run.is_ok(), "corpus file {} failed", path.display());
    }
}

#[test]
fn random_operation_sequences_pass_the_model_check() {
    let runs = if cfg!(debug_assertions) { 30 } else { 1_000 };
    let mut x = 0x0123_4567_89ab_cdefu64;
    for _ in 0..runs {
        let len = 64 + (x % 900) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        model::store_ops(&data);
    }
}
