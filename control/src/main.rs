//! `warden`: the command-line tool for policy owners.
fn main() {}
