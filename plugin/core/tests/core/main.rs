//! The core's integration tests, one binary (one link of the core and its dependencies): table-driven cases of
//! bundle validation, path normalization, routes, tokens, MCP parsing and decisions, signed envelopes, the example
//! bundles, governance (approvals, exceptions, shadow rules) and the gate end to end. `common` holds the shared
//! fixtures.
// Test code: fixtures that fail should fail loudly (clippy.toml only covers `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

mod decide;
mod envelope;
mod examples;
mod gate;
mod governance;
mod identity;
mod mcp;
mod paths;
mod public_routes;
mod routes;
mod tidy;
mod validation;
