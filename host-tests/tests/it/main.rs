//! The integration tests of `warden-host`, as one test binary (wasmtime is linked once; one support module, one
//! artifact locator). Each module is one area; `support` is shared.
//!
//! Needs the wasm artifacts (`warden.wasm`, the test filter), the `warden` CLI and the Python environment with
//! Envoy (`scripts/test.sh` prepares all of them; `warden_host::artifacts` says where each is looked for).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

mod attack_approvals;
mod attack_distribution;
mod attack_mcp;
mod attack_paths;
mod attack_tokens;
mod attack_tools_list;
mod deploy_configs;
mod e2e_control;
mod e2e_filter;
mod e2e_nginx;
mod e2e_polling;
mod envoy_attack_step_up;
mod envoy_decisions;
mod envoy_deploy;
mod envoy_discovery;
mod envoy_fidelity;
mod envoy_limits;
mod envoy_live;
mod envoy_long_poll;
mod envoy_mcp;
mod envoy_mtls;
mod envoy_otlp;
mod envoy_pins;
mod envoy_soak;
mod envoy_step_up;
mod equivalence;
mod gateway;
mod governance;
mod hostcalls;
mod http_calls;
mod limits;
mod loading;
mod mcp_sdk;
mod mcp_sdk_ts;
mod mcp_smuggling;
mod pins;
mod public_routes;
mod replies;
mod streams;
mod time_and_failure;
mod token_attacks;
