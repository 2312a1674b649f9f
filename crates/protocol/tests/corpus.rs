//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets'
//! checks, so a crash the fuzzer found and that was added to the corpus fails `cargo test`
//! without nightly or cargo-fuzz.

mod checks;

use std::path::{Path, PathBuf};

/// The targets in fuzz/fuzz_targets/; each must have committed seeds.
const TARGETS: [&str; 3] = ["parse_request", "parse_response", "roundtrip"];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzz corpus at {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    paths
}

#[test]
fn every_corpus_file_passes_every_target() {
    for target in TARGETS {
        let dir = corpus_root().join(target);
        assert!(
            files_in(&dir).iter().any(|path| path.is_file()),
            "fuzz/corpus/{target} has no seeds"
        );
    }
    let mut replayed = 0;
    for dir in files_in(&corpus_root())
        .into_iter()
        .filter(|path| path.is_dir())
    {
        for path in files_in(&dir).into_iter().filter(|path| path.is_file()) {
            let data = std::fs::read(&path).unwrap();
            // Each input goes through every target's checks: a request-shaped seed must not
            // break the response checks either, and vice versa.
            let run = std::panic::catch_unwind(|| {
                checks::parse_request(&data);
                checks::parse_response(&data);
                checks::roundtrip(&data);
            });
            assert!(run.is_ok(), "corpus file {} failed", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 30, "only {replayed} corpus files found");
}
