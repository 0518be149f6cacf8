//! Fuzz targets for every parser and normalizer of untrusted bytes in Warden, as plain functions `fn(&[u8])`.
//!
//! Each target calls the core's (or the filter's) own entry point and checks what must hold whatever the input: no
//! panic, and where there is one, a property (the normalized path is a fixed point, a `tools/list` answer the
//! filter let through shows no hidden tool, equal canonical arguments are equal arguments, …). A violated property
//! is a panic, which libFuzzer reports as a crash.
//!
//! Two drivers run them: `fuzz/libfuzzer` (coverage-guided libFuzzer, `scripts/fuzz.sh`, bounded time in CI) and
//! `tests/corpus.rs` (every committed corpus and regression input through every target, in `cargo test`). See
//! `fuzz/README.md`.

pub mod exact_json;
pub mod targets;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name (the name is also its corpus directory, `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("path_normalize", targets::path_normalize),
    ("path_differential", targets::path_differential),
    ("bearer", targets::bearer),
    ("token_verify", targets::token_verify),
    ("envelope_verify", targets::envelope_verify),
    ("bundle_compile", targets::bundle_compile),
    ("mcp_parse", targets::mcp_parse),
    ("tools_list_json", targets::tools_list_json),
    ("tools_list_sse", targets::tools_list_sse),
    ("plugin_config", targets::plugin_config),
    ("recorded_request", targets::recorded_request),
    ("args_digest", targets::args_digest),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
