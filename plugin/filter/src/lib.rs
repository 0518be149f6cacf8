//! The proxy-wasm filter: configuration, bundle activation and per-request enforcement.
//!
//! `warden.wasm` (this crate built for `wasm32-wasip1` with `--profile wasm`) is thin glue around `warden-core`.
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
//! | `inline_bundle` | string | none | a signed bundle (JWS compact); without it every request gets 503 |
//! | `bundle_grace_seconds` | integer 0..=86400 | 300 | how long past `expires_at` the bundle is still enforced |
//! | `forward_identity_headers` | bool | true | on continue, set `x-warden-*` identity headers for the upstream |
//! | `log_decisions` | bool | true | one decision record per request in the host log |
//!
//! A bad configuration, or an inline bundle that fails verification (signature, pinned key, authority, expiry,
//! format) or validation, makes `proxy_on_configure` return `false` after one log line at error level:
//! `warden: plugin configuration: <what and where>`, e.g. ``field `bundle_keys`: missing``,
//! ``unknown field `control`, expected one of … at line 1 column 34``, ``field `inline_bundle`: <envelope error>``.
//! On success one info line names the environment, mode, bundle revision, key id, payload sha256 and expiry (or a warn
//! line when there is no bundle).
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
//! no active bundle), `latency_ns` (host clock delta; often 0 in Envoy). Token contents are never recorded.
//!
//! # Code map
//!
//! [`config`] parses the configuration; [`active`] verifies and compiles the inline bundle; [`evaluate`] scans the
//! headers once and produces the [`evaluate::Verdict`]; [`reply`] and [`record`] turn it into bytes; [`ids`] makes
//! decision ids; `filter` is the only module that talks to the host.

pub mod active;
pub mod config;
pub mod evaluate;
mod filter;
pub mod ids;
mod metrics;
pub mod poll;
pub mod record;
pub mod reply;

pub use filter::DECISION_PROPERTY;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

// `set_log_level` also installs the SDK's panic hook, which logs a panic at critical before the trap.
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(filter::WardenRoot::default()) });
}}
