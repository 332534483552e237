//! The `rbuild` binary.
fn main() {}
