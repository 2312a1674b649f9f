//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets'
//! checks, so a crash the fuzzer found and that was added to the corpus fails `cargo test`
//! without nightly or cargo-fuzz.

mod checks;

use std::path::{Path, PathBuf};

const TARGETS: [&str; 3] = ["parse_request", "parse_response", "roundtrip"];

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzz corpus at {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_passes_its_target_and_the_others() {
    let mut replayed = 0;
    for target in TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} has no seeds");
        for path in files {
            let data = std::fs::read(&path).unwrap();
            // Each input goes through every target: a request-shaped seed must not break
            // the response checks either, and vice versa.
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
