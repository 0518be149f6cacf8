//! A proxy-wasm host on wasmtime that behaves toward a module as Envoy does.
//!
//! `warden.wasm` cannot meet a real Envoy on our machines, so this host reproduces the Envoy
//! behaviours listed in `shared/HOST-FIDELITY.md`: the 37 `env.proxy_*` imports of the Rust SDK
//! 0.2.5 with Envoy's status codes, Envoy's WASI subset, header-map phase rules, pause/resume in
//! both `allow_on_headers_stop_iteration` modes, body buffering with a 413, deferred local replies
//! that pass through the filter's response callbacks, http calls to loopback clusters with
//! Envoy's failure shapes, ticks per VM, properties, shared data/queues/metrics shared by N
//! worker VMs, and trap handling with fail-open/closed.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use warden_host::{
//!     CannedUpstream, Clock, CompiledModule, HttpRequest, Outcome, Plugin, PluginConfig,
//!     UpstreamResponse,
//! };
//!
//! // Compiled once per process (cached by path); instantiated cheaply per VM.
//! let module = CompiledModule::load_cached("target/wasm32-wasip1/wasm/warden.wasm")?;
//! let clock = Clock::manual_default();
//! let mut plugin = Plugin::start(
//!     &module,
//!     PluginConfig::new(r#"{"mode":"enforce"}"#)
//!         .workers(2)
//!         .clock(clock.clone())
//!         .cluster("control", "127.0.0.1:9000".parse()?),
//! )?;
//! let mut upstream = CannedUpstream(UpstreamResponse::ok("hello"));
//! let x = plugin.send(0, HttpRequest::get("/tools").header("authorization", "Bearer t"), &mut upstream);
//! assert_eq!(x.outcome, Outcome::Completed);
//! println!("{:?} {} forwarded={:?}", x.status, x.body_str(), x.forwarded.is_some());
//! plugin.advance(Duration::from_secs(60)); // ticks on every VM, http-call timeouts
//! println!("{:?} {:?}", plugin.metric("requests_total"), plugin.take_logs());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Step by step (for pause semantics): `open_stream`, `request_headers`, `request_body`,
//! `request_trailers`, `response_headers`, `response_body`, `response_trailers`, `stream_state`,
//! `finish_stream`. For a multi-threaded gateway, [`Plugin::into_workers`] hands out the `Send`
//! workers, each with its own `send` and `poll`.
//!
//! # What is deliberately absent or simplified
//! - One root context per VM (one `root_id`); no FAIL_RELOAD; no gRPC clusters (gRPC calls fail
//!   with InternalFailure, as Envoy does for an unknown gRPC service); no foreign functions.
//! - `proxy_http_call` trailers are not sent; attributes under `upstream.*` and `xds.*` are
//!   NotFound; dynamic metadata is JSON (objects come back as JSON text, not protobuf).
//! - A local reply sent from a response callback replaces the response without running the
//!   response callbacks again.
//!
//! # Map
//! Bottom-up (a module uses only those above it; the tidy test in `warden-core` checks there is no cycle):
//! - [`abi`] (statuses, enums, header maps), [`clock`] (the manual or real [`Clock`] everything time-related
//!   reads), `log` ([`LogEntry`]), [`http_call`] (the blocking HTTP/1.1 client), [`shared`] (process-wide
//!   tables and the VMs' inboxes).
//! - [`stream`]: what goes into a stream and what comes out: [`HttpRequest`], [`Upstream`], [`LocalReply`],
//!   [`Exchange`], [`StreamSnapshot`].
//! - `state`: what a VM's `Store` holds, per VM and per stream; `memory`: bounds-checked guest memory and what
//!   a hostcall ends with.
//! - `properties`, `wasi`, `hostcalls`: the imports themselves; [`engine`]: the process `Engine` (epoch
//!   interruption), the linker with every import, the [`CompiledModule`] cache.
//! - [`plugin`]: [`PluginConfig`], [`Plugin`] (N [`Worker`] VMs), start-up and the event loop (`advance`,
//!   `run_pending`, `settle`, `poll`), inspectors (logs, metrics, shared data); `plugin::flow` runs a worker's
//!   streams (pause/resume, buffering, local replies) and is the step-by-step stream API.
//! - [`client`], [`upstream`], [`envoy`], [`artifacts`]: the real-Envoy harness.

pub mod abi;
pub mod artifacts;
pub mod client;
pub mod clock;
pub mod engine;
pub mod envoy;
mod hostcalls;
pub mod http_call;
mod log;
mod memory;
pub mod plugin;
mod properties;
pub mod shared;
mod state;
pub mod stream;
pub mod upstream;
mod wasi;

pub use abi::{Action, Headers, LogLevel, MetricType, Status};
pub use clock::Clock;
pub use engine::{CompiledModule, HostEngine, LoadError};
pub use hostcalls::PROXY_IMPORTS;
pub use http_call::HttpResponse;
pub use log::LogEntry;
pub use plugin::{HostError, Plugin, PluginConfig, StartError, Worker};
pub use stream::{
    socket_pieces, CallbackRecord, CannedUpstream, Exchange, FlowState, ForwardedRequest, HttpRequest, HttpUpstream,
    LocalReply, Outcome, RecordingUpstream, StopPoint, StreamId, StreamSnapshot, TlsInfo, Upstream, UpstreamResponse,
    BODY_PIECE,
};
