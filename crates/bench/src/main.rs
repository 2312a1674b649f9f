//! fjord-bench (work in progress).
fn main() {}
