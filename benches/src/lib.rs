//! The benchmarks' host-side parts: token issuer keys per algorithm and agent tokens ([`tokens`]), `warden.wasm`
//! in the host ([`host`]) and the MCP `tools/call` request of the MCP bench ([`mcp`]). The generated bundles and
//! scenarios are `warden-bench-fixtures`' (re-exported here); the peer comparison (Cedar, regorus) is its own
//! workspace under `benches/peers`.

pub use warden_bench_fixtures::*;

pub mod host;
pub mod mcp;
pub mod tokens;
