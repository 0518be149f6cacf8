//! Warden's policy core: the signed bundle, its compilation, request facts, identity and `decide`.
//!
//! Everything here is pure: no host calls, no clock reads, no logging. The filter (`warden.wasm`), the `warden` CLI
//! and the benchmarks all use this crate, so there is one implementation of policy semantics.
//!
//! The flow, as the filter runs it:
//! 1. [`envelope::verify`] checks a signed bundle against the pinned authority keys and returns the [`bundle::Bundle`];
//! 2. [`compile::compile`] validates it and builds the indexed [`compile::CompiledBundle`];
//! 3. per request, [`path::normalize`] gives the one normalized path, [`compile::CompiledBundle::resolve_http`] finds
//!    the tool, [`identity`] verifies the agent's token, and [`decide::decide`] returns a [`decision::Decision`].
//!
//! A `step_up` decision is settled by the caller: [`compile::CompiledBundle::verify_approval`] checks the approval token presented with the
//! retried call against the rule's [`compile::CompiledBundle::step_up_requirement`], and
//! [`decision::Decision::with_approval`] turns the result into the final decision. Shadow rules never take part in
//! [`decide::decide`]; [`decide::shadow`] tells what they would have decided, for the decision record.
//!
//! Offline tools (`warden eval`, `warden test`) use [`explain::explain`] for the chain of reasons behind a decision.

// plugin/*: a panic in the filter is a trap, and a trap in Envoy is a 503 for the whole worker.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod activation;
pub mod approval;
pub mod args;
pub mod bundle;
pub mod cases;
pub mod compile;
pub mod config;
pub mod decide;
pub mod decision;
pub mod envelope;
pub mod explain;
pub mod facts;
mod fxhash;
pub mod gate;
pub mod identity;
pub mod ids;
mod index;
pub mod jose;
pub mod limits;
pub mod mcp;
pub mod path;
pub mod pins;
pub mod poll;
pub mod request;
mod route;
pub mod time;
pub mod token_cache;
pub mod vocab;
