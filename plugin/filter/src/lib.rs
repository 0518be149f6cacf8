//! The proxy-wasm filter: configuration, bundle activation and per-request enforcement.
//!
//! `warden.wasm` (this crate built for `wasm32-wasip1` with `--profile wasm`) is thin glue around `warden-core`: every
//! request goes through the core's gate ([`warden_core::gate`]), which decides, builds the replies and the record;
//! this crate reads what the host gives, calls the gate, and carries out its steps.
//! This comment is the filter's externally visible contract; `host-tests/` tests against it and
//! `plugin/filter/README.md` is the operator's version.
//!
//! # Configuration (`on_configure`)
//!
//! The plugin configuration is one JSON object (Envoy `configuration` as a `StringValue`, Istio `pluginConfig`).
//! Unknown and duplicate fields are errors.
//!
//! | field | type | default | meaning |
//! |---|---|---|---|
//! | `environment` | string, required | | label of this gateway, `[a-z0-9][a-z0-9._-]*`, ≤ 64 chars; rules select on it |
//! | `authority` | string, required | | the policy authority the bundle must name (`authority` in the bundle) |
//! | `bundle_keys` | JWKS object, required | | pinned public keys of the authority (`{"keys": [...]}`, each with `kid`) |
//! | `mode` | `"enforce"` \| `"shadow"` | `enforce` | shadow: decide and log, never block |
//! | `token_header` | string | `authorization` | header carrying the agent token (lowercased; not `x-warden-*`) |
//! | `approval_header` | string | `x-warden-approval` | header carrying a step-up approval on retry; never forwarded |
//! | `inline_bundle` | string | none | a signed bundle (JWS compact); the initial bundle when `control` is set too |
//! | `control` | object | none | the control endpoint to poll (below); `inline_bundle` or `control` is required |
//! | `bundle_grace_seconds` | integer 0..=86400 | 300 | how long past `expires_at` the bundle is still enforced |
//! | `forward_identity_headers` | bool | true | on continue, set `x-warden-*` identity headers for the upstream |
//! | `log_decisions` | bool | true | one decision record per request in the host log |
//! | `allow_on_headers_stop_iteration` | bool | false | the host delivers the body to a filter paused at headers (Envoy ≥ 1.35): MCP requests are held at the headers until decided |
//! | `max_body_bytes` | integer 1..=16 MiB | 1 MiB | largest MCP body read and decided; over it: 413 `mcp_body_too_large` |
//!
//! `control`: `cluster` (Envoy cluster, required), `authority` (`:authority`, required), `path` (default
//! `/bundles/bundle.jws`, starts with `/`), `poll_seconds` (1..=3600, default 10), `jitter_percent` (0..=50, default
//! 10), `timeout_ms` (100..=60000, default 5000), `backoff_max_seconds` (`poll_seconds`..=86400, default 300 or
//! `poll_seconds` if higher), `long_poll_wait_seconds` (1..=3600, absent: plain polls; `Prefer: wait=N`, see
//! `README.md` "Long polling"). Unknown fields are refused. A configuration with neither `inline_bundle` nor `control`
//! is refused.
//!
//! A bad configuration, or an inline bundle that fails verification (signature, pinned key, authority, expiry,
//! format) or validation, makes `proxy_on_configure` return `false` after one log line at error level:
//! `warden: plugin configuration: <what and where>`, e.g. ``field `bundle_keys`: missing``,
//! ``unknown field `control`, expected one of … at line 1 column 34``, ``field `inline_bundle`: <envelope error>``.
//! On success one info line names the environment, mode, bundle revision, key id, payload sha256 and expiry, and
//! ``control `<path>` (cluster `<cluster>`) every <n> s`` or `no control endpoint` (a warn line when there is no
//! bundle yet).
//!
//! # Live updates (`on_tick`, `on_http_call_response`)
//!
//! With `control`, each VM ticks every second ([`poll::TICK_MS`]): it adopts a newer bundle another VM published in
//! shared data (after verifying and compiling it itself), then, if the fleet-wide fetch lease in shared data says a
//! fetch is due and nobody holds it, takes the lease by compare-and-swap and dispatches `GET <path>` with
//! `If-None-Match`. 304 keeps the bundle; 200 is verified (pinned keys minus the active bundle's revoked signing
//! keys, authority, expiry), checked against rollback (higher revision; same revision must have the same digest),
//! compiled and swapped in (in-flight requests keep the old one), then published to shared data. Anything else
//! keeps the last good bundle, counts `warden.bundle.fetch.failure.<cause>`, logs once per change of cause, and
//! backs off exponentially up to `backoff_max_seconds`. See [`warden_core::poll`] and `README.md` "Live updates".
//!
//! # Metrics
//!
//! Gauges `warden.bundle.revision`, `warden.bundle.age_seconds`; counters `warden.bundle.fetch.success`,
//! `warden.bundle.fetch.not_modified`, `warden.bundle.fetch.long_poll`, `warden.bundle.wakeups`,
//! `warden.bundle.fetch.failure.<cause>` (causes in [`warden_core::poll::Cause`]),
//! `warden.bundle.activations` (per VM), `warden.decisions.<allow|deny|step_up|would_deny|would_step_up>`,
//! `warden.approvals.accepted`, `warden.exceptions.used`, `warden.shadow.<would_allow|would_deny|would_step_up>`. Ids
//! are defined once per VM in the first `on_configure`; `warden.reasons.<reason>` and
//! `warden.approvals.refused.<code>` the first time the code occurs on the VM.
//!
//! # Requests (`on_http_request_headers`)
//!
//! In order, the first that applies:
//!
//! | condition | status | `reason` |
//! |---|---|---|
//! | no active bundle | 503 | `no_active_bundle` |
//! | now > bundle `expires_at` + `bundle_grace_seconds` | 503 | `bundle_expired` |
//! | `:method`, `:path` or `:authority` missing, repeated or not UTF-8 | 400 | `bad_request` |
//! | `:path` refused by path normalization | 400 | the path error's code |
//! | token header repeated | 401 | `token_ambiguous` |
//! | token header absent | 401 | `identity_missing` |
//! | token unusable (not `Bearer <token68>`; a non-`authorization` header may carry the bare token) | 401 | `token_malformed` |
//! | token refused by the bundle's issuers | 401 | the token failure code (`token_expired`, …) |
//! | otherwise `decide` | 403 (deny, step-up) or continue | the decision's reason code |
//! | a step-up whose approval (`approval_header`) binds to this call and was not used before | continue | `allowed_by_approval` |
//! | a step-up with a refused approval | 403 | the approval failure code (`approval_wrong_arguments`, …) |
//!
//! Step-up: the approval binds to the SHA-256 of the body, so a
//! step-up call with a body is held like an MCP body (below) until it is complete; the reply carries an `approval`
//! object saying what to bind to, who may approve and for how long. Used approvals are recorded process-wide in
//! shared data ([`warden_core::approval::used::USED_KEY`]).
//!
//! Continue (allow, or anything in shadow mode): every client-supplied `x-warden-*` header is removed; `:path` is
//! replaced by the normalized path (plus the query) when they differ, so what was matched is what goes upstream; and
//! with `forward_identity_headers`, `x-warden-decision-id`, `x-warden-agent` (verified agent id) and `x-warden-task`
//! (task id) are added (an id with characters outside visible ASCII is not forwarded).
//!
//! Refusal (enforce mode): a local reply and `Pause`. Headers `content-type: application/json`,
//! `cache-control: no-store`, `x-warden-decision-id: <id>`, and on 401 `www-authenticate`: `Bearer realm="warden"`
//! when no token was presented, else `Bearer error="invalid_token", error_description="<reason>"`. Body:
//! `{"decision_id":"<uuid>","decision":"deny"|"step_up","reason":"<code>","rule":"<rule id>"|"default","revision":N|null}`.
//!
//! Decision ids are UUID v4 text from a per-VM generator seeded once from WASI `random_get`.
//!
//! # MCP requests (`on_http_request_headers`, `on_http_request_body`)
//!
//! When the request reaches an MCP server of the bundle and the caller passed the checks above, the body decides
//! ([`warden_core::gate::flow`]): `GET`/`DELETE` get the server's life-cycle effect; a `POST` must be
//! `application/json` (415 `mcp_content_type`); `Mcp-Method`/`Mcp-Name` the policy denies are refused at once.
//! Otherwise headers `Pause` (with `allow_on_headers_stop_iteration`) or `Continue` (without: Envoy would withhold
//! the body), body chunks `Pause` until the end (over `max_body_bytes`: 413), and the whole body is parsed strictly,
//! checked against the MCP headers and decided with `warden_core::decide::mcp::decide_body`. Refusals are JSON-RPC error
//! objects carrying the request's `id` (codes in [`warden_core::decision`]); the record gains an `mcp` object. `README.md` "MCP
//! servers" is the operator's version, including what the upstream may have seen of a refused call.
//!
//! # Decision record
//!
//! One per request that reaches `on_http_request_headers`, as one line of pure JSON through `proxy_log` at info
//! (unless `log_decisions` is false) and always as filter state `wasm.warden_decision` (`proxy_set_property` path
//! `warden_decision`). Fields, all always present:
//! `type` (`"warden.decision"`), `decision_id`, `timestamp` (RFC 3339 UTC with milliseconds), `environment`,
//! `agent` (id or null), `issuer` (bundle issuer id or null), `task` (`{"id","purpose"}` or null), `tool` (id or null),
//! `method`, `path` (normalized, no query; the raw path without query if it could not be normalized), `host`
//! (`:authority` as sent), `decision` (`allow` | `deny` | `step_up`, in shadow mode `would_deny` | `would_step_up`),
//! `mode` (`enforce` | `shadow`), `rule` (id or `default`), `reason`, `bundles` (`{"warden":{"revision":N}}`, `{}` with
//! no active bundle), `latency_ns` (host clock delta from the headers; 0 when decided at the headers), `vm` (this worker VM's id), `approval`
//! (`{"id","approver","approved_by","expires_at"}` or null), `exception` (`{"ticket","approver","expires_at"}` or null;
//! such records are logged at warn), `shadow` (what shadow rules would have decided, or null), `arguments_digest`
//! (or null); `arguments` only for tools with `log_arguments`. Token contents are never recorded.
//!
//! # Code map
//!
//! `root` is the root context (configuration, polling, activation: the pure parts are the core's `config`,
//! `activation` and `poll`); `http` is the HTTP context, which carries out the gate's steps; `metrics` defines and
//! bumps the Envoy stats; `host` holds the host helpers (log, clock, shared data as the gate's store). No module
//! here decides a request: the tidy test (`plugin/core/tests/core/tidy.rs`) checks that they only use the core's gate
//! and distribution modules.

// plugin/*: a panic in the filter is a trap, and a trap in Envoy is a 503 for the whole worker.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod host;
mod http;
mod metrics;
mod root;

pub use http::DECISION_PROPERTY;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

// `set_log_level` also installs the SDK's panic hook, which logs a panic at critical before the trap.
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::WardenRoot::default()) });
}}
