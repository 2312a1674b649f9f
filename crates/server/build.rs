//! Puts the commit fjord is built from into `FJORD_COMMIT` (for `fjord --version`, the start-up
//! log line and metrics): `git rev-parse --short=12 HEAD`, or the `FJORD_COMMIT` environment
//! variable when set (packagers building outside git), or `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FJORD_COMMIT");
    let commit = std::env::var("FJORD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=FJORD_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD changes on checkout, logs/HEAD on every commit.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for file in ["HEAD", "logs/HEAD"] {
            let path = Path::new(&dir).join(file);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
