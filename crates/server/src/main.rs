//! The `fjord` tracker binary.
fn main() {}
