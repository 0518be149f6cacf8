//! The plugin configuration: JSON from Envoy's `configuration` (Istio `pluginConfig`), parsed and validated in full.
//!
//! [`parse`] is pure: bytes in, a [`Config`] or one [`ConfigError`] out. [`Config::gate`] is the part that decides
//! requests ([`GateConfig`]: environment, mode, token headers, grace, body limits); the rest says where bundles come
//! from and whom to trust, and what to log. The filter, `warden eval` and the fuzzers read the same file through
//! this one parser. The error's text names the field and the
//! problem (or, for malformed JSON, serde's message with line and column), and the root context logs it as one line
//! before refusing the configuration. `plugin/filter/README.md` is the operator's reference for every field.

use std::fmt;

use crate::envelope::TrustedKeys;
use serde::Deserialize;
use serde_json::Value;

/// Default header that carries the agent token.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";
/// Default header that carries the Transaction Token (task context).
pub const DEFAULT_TXN_TOKEN_HEADER: &str = "txn-token";

/// Default header carrying a step-up approval token (bare JWS, or `Bearer <jws>`). The filter's own header: always
/// removed before the request goes upstream.
pub const DEFAULT_APPROVAL_HEADER: &str = "x-warden-approval";
/// Default grace after the active bundle's `expires_at` before the filter fails closed.
pub const DEFAULT_BUNDLE_GRACE_SECONDS: u64 = 300;
/// Default `max_revision_jump`: 2^32, room for revisions that are Unix times in seconds or dates, while 2^32 such
/// jumps are needed to reach the end of the revision space.
pub const DEFAULT_MAX_REVISION_JUMP: u64 = 1 << 32;
/// Upper bound of `max_revision_jump` (2^48): beyond it the bound would not bound anything.
pub const MAX_MAX_REVISION_JUMP: u64 = 1 << 48;
/// Upper bound of `bundle_grace_seconds` (one day): a stale bundle must not keep old revocations alive for long.
pub const MAX_BUNDLE_GRACE_SECONDS: u64 = 86_400;
/// Default for `max_body_bytes` (Envoy's default buffer limit: keep it at or below the listener's limit).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Upper bound for `max_body_bytes`.
pub const MAX_MAX_BODY_BYTES: u64 = 16 << 20;
/// Default for `max_list_response_bytes`: below Envoy's default buffer limit (1 MiB), so the filter, not Envoy,
/// answers a `tools/list` response over it.
pub const DEFAULT_MAX_LIST_RESPONSE_BYTES: u64 = 512 << 10;
/// Prefix of the headers the filter owns; clients' copies are always removed.
pub const RESERVED_HEADER_PREFIX: &str = "x-warden-";
/// Default path of the signed bundle on the control endpoint.
pub const DEFAULT_CONTROL_PATH: &str = "/bundles/bundle.jws";
/// Default poll period.
pub const DEFAULT_POLL_SECONDS: u64 = 10;
/// Poll period bounds.
pub const MAX_POLL_SECONDS: u64 = 3600;
/// Default jitter (percent of the period taken off at random).
pub const DEFAULT_JITTER_PERCENT: u64 = 10;
pub const MAX_JITTER_PERCENT: u64 = 50;
/// Default and bounds of the fetch timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Default and upper bound of the longest wait between fetches after failures.
pub const DEFAULT_BACKOFF_MAX_SECONDS: u64 = 300;
pub const MAX_BACKOFF_MAX_SECONDS: u64 = 86_400;
/// Upper bound of `control.long_poll_wait_seconds` (long polling is off when the field is absent).
pub const MAX_LONG_POLL_WAIT_SECONDS: u64 = 3600;

/// Whether decisions are enforced or only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deny and step-up decisions are answered with a local reply (the default).
    Enforce,
    /// Every decision is computed and logged (`would_deny`, `would_step_up`); every request continues.
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// What decides requests, from the plugin configuration: everything the gate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Environment label of this gateway (matched by rules' `environments`).
    pub environment: String,
    pub mode: Mode,
    /// Lower-case name of the header carrying the agent token.
    pub token_header: String,
    /// Lower-case name of the header carrying the Transaction Token (bare JWT, or `Bearer <jwt>`).
    pub txn_token_header: String,
    /// Lower-case name of the header carrying a step-up approval (bare JWS, or `Bearer <jws>`); never forwarded.
    pub approval_header: String,
    pub bundle_grace_seconds: u64,
    /// On continue: set `x-warden-agent`, `x-warden-task`, `x-warden-tool` (HTTP routes), `x-warden-decision-id` for
    /// the upstream and the filters after Warden.
    pub forward_identity_headers: bool,
    /// The host lets a filter pause at the request headers and still delivers the body (Envoy >= 1.35
    /// `allow_on_headers_stop_iteration`): held requests are then held at the headers until the body is decided.
    pub allow_on_headers_stop_iteration: bool,
    /// Largest request body read and decided (MCP, step-up); a larger one is refused (413).
    pub max_body_bytes: u64,
    /// Largest `tools/list` response buffered until its answer; a larger one is replaced by a JSON-RPC error
    /// (`mcp_list_too_large`).
    pub max_list_response_bytes: u64,
}

impl GateConfig {
    /// The defaults of every field, for this environment (what a configuration naming only the environment gets).
    pub fn new(environment: &str) -> GateConfig {
        GateConfig {
            environment: environment.to_string(),
            mode: Mode::Enforce,
            token_header: DEFAULT_TOKEN_HEADER.to_string(),
            txn_token_header: DEFAULT_TXN_TOKEN_HEADER.to_string(),
            approval_header: DEFAULT_APPROVAL_HEADER.to_string(),
            bundle_grace_seconds: DEFAULT_BUNDLE_GRACE_SECONDS,
            forward_identity_headers: true,
            allow_on_headers_stop_iteration: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_list_response_bytes: DEFAULT_MAX_LIST_RESPONSE_BYTES,
        }
    }
}

/// The validated plugin configuration.
pub struct Config {
    /// What decides requests.
    pub gate: GateConfig,
    /// The policy authority the bundle must name.
    pub authority: String,
    /// Pinned bundle-signing public keys.
    pub bundle_keys: TrustedKeys,
    /// A signed bundle (JWS compact serialization) given inline.
    pub inline_bundle: Option<String>,
    /// Write one decision record per request to the host log.
    pub log_decisions: bool,
    /// Also write the record's main fields as filter-state keys of their own
    /// ([`crate::gate::record::field_properties`]), for access-log formatters and the OpenTelemetry access logger.
    pub decision_fields: bool,
    /// Where live bundle updates are fetched from (none: the inline bundle is all there is).
    pub control: Option<Control>,
    /// Largest step from the highest revision this process activated to a candidate's: a bundle further ahead is
    /// refused (`revision_jump`), so one signed bundle cannot pin the fleet near the top of the revision space.
    pub max_revision_jump: u64,
}

/// The control endpoint the root context polls for signed bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Envoy cluster name the fetch is dispatched to.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch (starts with `/`).
    pub path: String,
    pub poll_seconds: u64,
    pub jitter_percent: u64,
    pub timeout_ms: u64,
    pub backoff_max_seconds: u64,
    /// Long polling: each fetch asks the endpoint to hold a conditional GET for up to this many seconds
    /// (`Prefer: wait=N`) until a new revision is published; the call's timeout is this wait plus `timeout_ms`.
    /// `None`: plain polls every `poll_seconds`.
    pub long_poll_wait_seconds: Option<u64>,
}

impl Control {
    /// The timeout of one dispatched fetch: `timeout_ms`, plus the long-poll wait when long polling.
    pub fn call_timeout_ms(&self) -> u64 {
        self.long_poll_wait_seconds.unwrap_or(0).saturating_mul(1000).saturating_add(self.timeout_ms)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("gate", &self.gate)
            .field("authority", &self.authority)
            .field("bundle_keys", &self.bundle_keys.len())
            .field("inline_bundle", &self.inline_bundle.as_ref().map(String::len))
            .field("log_decisions", &self.log_decisions)
            .field("decision_fields", &self.decision_fields)
            .field("control", &self.control)
            .field("max_revision_jump", &self.max_revision_jump)
            .finish()
    }
}

/// Why a configuration was refused. The text says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error about one field: ``field `name`: problem``.
    pub fn field(name: &str, problem: impl fmt::Display) -> ConfigError {
        ConfigError(format!("field `{name}`: {problem}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The JSON shape: every field kept as a raw value so that type errors can name their field, while serde still
/// refuses unknown and duplicate fields and reports malformed JSON with line and column.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawConfig {
    #[serde(default, deserialize_with = "present")]
    environment: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    authority: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    bundle_keys: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    mode: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    token_header: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    txn_token_header: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    approval_header: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    inline_bundle: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    bundle_grace_seconds: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    max_revision_jump: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    forward_identity_headers: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    log_decisions: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    decision_fields: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    control: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    allow_on_headers_stop_iteration: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    max_body_bytes: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    max_list_response_bytes: Option<Value>,
}

/// The `control` object, same approach as [`RawConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawControl {
    #[serde(default, deserialize_with = "present")]
    cluster: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    authority: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    path: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    poll_seconds: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jitter_percent: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    timeout_ms: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    backoff_max_seconds: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    long_poll_wait_seconds: Option<Value>,
}

/// A field that is present (even as `null`) is `Some`; only an absent field is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses and validates the plugin configuration.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError("empty (expected a JSON object)".to_string()));
    }
    // serde would also read a struct from a JSON array; only an object is a configuration.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError("expected a JSON object".to_string()));
    }
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;

    let environment = required_string("environment", raw.environment)?;
    check_label("environment", &environment)?;
    let authority = required_string("authority", raw.authority)?;
    if authority.trim().is_empty() {
        return Err(ConfigError::field("authority", "must not be empty"));
    }
    let bundle_keys = match raw.bundle_keys {
        None => return Err(ConfigError::field("bundle_keys", "missing")),
        Some(v @ Value::Object(_)) => TrustedKeys::from_jwks(&v).map_err(|e| ConfigError::field("bundle_keys", e))?,
        Some(other) => {
            return Err(ConfigError::field("bundle_keys", format!("expected a JWKS object, got {}", kind(&other))))
        }
    };
    if bundle_keys.is_empty() {
        return Err(ConfigError::field("bundle_keys", "no keys"));
    }
    let mode = match optional_string("mode", raw.mode)?.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("shadow") => Mode::Shadow,
        Some(other) => {
            return Err(ConfigError::field("mode", format!("expected `enforce` or `shadow`, got `{other}`")));
        }
    };
    let token_header = match optional_string("token_header", raw.token_header)? {
        None => DEFAULT_TOKEN_HEADER.to_string(),
        Some(h) => check_header_name("token_header", &h)?,
    };
    let txn_token_header = match optional_string("txn_token_header", raw.txn_token_header)? {
        None => DEFAULT_TXN_TOKEN_HEADER.to_string(),
        Some(h) => check_header_name("txn_token_header", &h)?,
    };
    if txn_token_header == token_header {
        return Err(ConfigError::field(
            "txn_token_header",
            format!("`{txn_token_header}` is also `token_header`: the two tokens need their own headers"),
        ));
    }
    let approval_header = match optional_string("approval_header", raw.approval_header)? {
        None => DEFAULT_APPROVAL_HEADER.to_string(),
        Some(h) if h.eq_ignore_ascii_case(DEFAULT_APPROVAL_HEADER) => DEFAULT_APPROVAL_HEADER.to_string(),
        Some(h) => check_header_name("approval_header", &h)?,
    };
    if approval_header == token_header || approval_header == txn_token_header {
        return Err(ConfigError::field(
            "approval_header",
            format!("`{approval_header}` already carries another token: the approval needs its own header"),
        ));
    }
    let inline_bundle = match optional_string("inline_bundle", raw.inline_bundle)? {
        Some(b) if b.trim().is_empty() => return Err(ConfigError::field("inline_bundle", "must not be empty")),
        other => other.map(|b| b.trim().to_string()),
    };
    let bundle_grace_seconds = match raw.bundle_grace_seconds {
        None => DEFAULT_BUNDLE_GRACE_SECONDS,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_BUNDLE_GRACE_SECONDS => n,
            _ => {
                return Err(ConfigError::field(
                    "bundle_grace_seconds",
                    format!("expected an integer from 0 to {MAX_BUNDLE_GRACE_SECONDS}, got {}", show(&v)),
                ))
            }
        },
    };
    let max_revision_jump = match raw.max_revision_jump {
        None => DEFAULT_MAX_REVISION_JUMP,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MAX_REVISION_JUMP).contains(&n) => n,
            _ => {
                return Err(ConfigError::field(
                    "max_revision_jump",
                    format!("expected an integer from 1 to {MAX_MAX_REVISION_JUMP}, got {}", show(&v)),
                ))
            }
        },
    };
    let forward_identity_headers = optional_bool("forward_identity_headers", raw.forward_identity_headers)?;
    let log_decisions = optional_bool("log_decisions", raw.log_decisions)?;
    let decision_fields = optional_bool("decision_fields", raw.decision_fields)?.unwrap_or(false);
    let allow_on_headers_stop_iteration =
        optional_bool("allow_on_headers_stop_iteration", raw.allow_on_headers_stop_iteration)?.unwrap_or(false);
    let max_body_bytes = match raw.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MAX_BODY_BYTES).contains(&n) => n,
            _ => {
                return Err(ConfigError::field(
                    "max_body_bytes",
                    format!("expected an integer from 1 to {MAX_MAX_BODY_BYTES}, got {}", show(&v)),
                ))
            }
        },
    };
    let max_list_response_bytes = match raw.max_list_response_bytes {
        None => DEFAULT_MAX_LIST_RESPONSE_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_MAX_BODY_BYTES).contains(&n) => n,
            _ => {
                return Err(ConfigError::field(
                    "max_list_response_bytes",
                    format!("expected an integer from 1 to {MAX_MAX_BODY_BYTES}, got {}", show(&v)),
                ))
            }
        },
    };
    let control = match raw.control {
        None => None,
        Some(v @ Value::Object(_)) => Some(parse_control(v)?),
        Some(other) => {
            return Err(ConfigError::field("control", format!("expected an object, got {}", kind(&other))));
        }
    };
    if inline_bundle.is_none() && control.is_none() {
        return Err(ConfigError(
            "neither `inline_bundle` nor `control` is set: the filter would have no policy and answer every request \
             with 503; set `control` (live updates), `inline_bundle` (static), or both"
                .to_string(),
        ));
    }

    Ok(Config {
        gate: GateConfig {
            environment,
            mode,
            token_header,
            txn_token_header,
            approval_header,
            bundle_grace_seconds,
            forward_identity_headers: forward_identity_headers.unwrap_or(true),
            allow_on_headers_stop_iteration,
            max_body_bytes,
            max_list_response_bytes,
        },
        authority,
        bundle_keys,
        inline_bundle,
        max_revision_jump,
        log_decisions: log_decisions.unwrap_or(true),
        decision_fields,
        control,
    })
}

fn parse_control(v: Value) -> Result<Control, ConfigError> {
    let raw: RawControl = serde_json::from_value(v).map_err(|e| ConfigError::field("control", e))?;
    let cluster = required_string("control.cluster", raw.cluster)?;
    check_visible("control.cluster", &cluster)?;
    let authority = required_string("control.authority", raw.authority)?;
    check_visible("control.authority", &authority)?;
    let path = optional_string("control.path", raw.path)?.unwrap_or_else(|| DEFAULT_CONTROL_PATH.to_string());
    check_visible("control.path", &path)?;
    if !path.starts_with('/') {
        return Err(ConfigError::field("control.path", format!("`{path}` must start with `/`")));
    }
    let poll_seconds = integer("control.poll_seconds", raw.poll_seconds, DEFAULT_POLL_SECONDS, 1, MAX_POLL_SECONDS)?;
    let jitter_percent =
        integer("control.jitter_percent", raw.jitter_percent, DEFAULT_JITTER_PERCENT, 0, MAX_JITTER_PERCENT)?;
    let timeout_ms = integer("control.timeout_ms", raw.timeout_ms, DEFAULT_TIMEOUT_MS, MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)?;
    let backoff_max_seconds = integer(
        "control.backoff_max_seconds",
        raw.backoff_max_seconds,
        DEFAULT_BACKOFF_MAX_SECONDS.max(poll_seconds),
        poll_seconds,
        MAX_BACKOFF_MAX_SECONDS,
    )?;
    let long_poll_wait_seconds = match raw.long_poll_wait_seconds {
        None => None,
        Some(v) => Some(v.as_u64().filter(|n| (1..=MAX_LONG_POLL_WAIT_SECONDS).contains(n)).ok_or_else(|| {
            ConfigError::field(
                "control.long_poll_wait_seconds",
                format!(
                    "expected an integer from 1 to {MAX_LONG_POLL_WAIT_SECONDS}, got {} (omit the field to poll \
                     every `poll_seconds` without waiting)",
                    show(&v)
                ),
            )
        })?),
    };
    Ok(Control {
        cluster,
        authority,
        path,
        poll_seconds,
        jitter_percent,
        timeout_ms,
        backoff_max_seconds,
        long_poll_wait_seconds,
    })
}

/// An integer field within `min..=max`, `default` when absent.
fn integer(name: &str, v: Option<Value>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::field(name, format!("expected an integer from {min} to {max}, got {}", show(&v)))),
        },
    }
}

/// Not empty; visible ASCII only (it goes into a header of the fetch).
fn check_visible(name: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::field(name, "must not be empty"));
    }
    if !s.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::field(name, format!("`{s}` must be visible ASCII without spaces")));
    }
    Ok(())
}

fn required_string(name: &str, v: Option<Value>) -> Result<String, ConfigError> {
    optional_string(name, v)?.ok_or_else(|| ConfigError::field(name, "missing"))
}

fn optional_string(name: &str, v: Option<Value>) -> Result<Option<String>, ConfigError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConfigError::field(name, format!("expected a string, got {}", kind(&other)))),
    }
}

fn optional_bool(name: &str, v: Option<Value>) -> Result<Option<bool>, ConfigError> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(ConfigError::field(name, format!("expected true or false, got {}", kind(&other)))),
    }
}

/// `[a-z0-9][a-z0-9._-]*`, at most 64 characters (the same syntax as bundle ids).
fn check_label(name: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::field(name, "must not be empty"));
    }
    let ok_first = s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit();
    let ok_rest = s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if !ok_first || !ok_rest || s.len() > 64 {
        return Err(ConfigError::field(
            name,
            format!("`{s}` is not a label (lower-case letters, digits, `.`, `_`, `-`; starting with a letter or digit; at most 64)"),
        ));
    }
    Ok(())
}

/// An HTTP field name (RFC 9110 `token`), lowercased; not a pseudo-header and not one of the filter's own.
fn check_header_name(name: &str, h: &str) -> Result<String, ConfigError> {
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if h.is_empty() {
        return Err(ConfigError::field(name, "must not be empty"));
    }
    if !h.bytes().all(is_tchar) {
        return Err(ConfigError::field(name, format!("`{h}` is not an HTTP header name")));
    }
    let lower = h.to_ascii_lowercase();
    if lower.starts_with(RESERVED_HEADER_PREFIX) {
        return Err(ConfigError::field(
            name,
            format!("`{h}`: `{RESERVED_HEADER_PREFIX}*` headers belong to the filter"),
        ));
    }
    Ok(lower)
}

/// A JSON value's type in words ("a string", "null"), for errors a person reads; `warden lint` uses it too.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 8037 appendix A.2 Ed25519 public key (test key only).
    pub(crate) fn test_jwks() -> Value {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "authority-1",
                          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
    }

    fn minimal() -> Value {
        json!({"environment": "prod", "authority": "acme-security", "bundle_keys": test_jwks(),
               "control": {"cluster": "warden-control", "authority": "control.acme.example"}})
    }

    fn with_control(field: &str, value: Value) -> Vec<u8> {
        let mut v = minimal();
        v["control"][field] = value;
        v.to_string().into_bytes()
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v = minimal();
        v[field] = value;
        v.to_string().into_bytes()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v = minimal();
        v.as_object_mut().map(|o| o.remove(field));
        v.to_string().into_bytes()
    }

    fn err(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(c) => panic!("accepted {}: {c:?}", String::from_utf8_lossy(bytes)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = parse(minimal().to_string().as_bytes()).unwrap();
        assert_eq!(c.gate.environment, "prod");
        assert_eq!(c.authority, "acme-security");
        assert_eq!(c.bundle_keys.len(), 1);
        assert_eq!(c.gate.mode, Mode::Enforce);
        assert_eq!(c.gate.token_header, "authorization");
        assert_eq!(c.gate.txn_token_header, "txn-token");
        assert_eq!(c.gate.approval_header, "x-warden-approval");
        assert_eq!(c.inline_bundle, None);
        assert_eq!(c.gate.bundle_grace_seconds, 300);
        assert!(c.gate.forward_identity_headers);
        assert!(c.log_decisions);
        assert_eq!(
            c.control,
            Some(Control {
                cluster: "warden-control".into(),
                authority: "control.acme.example".into(),
                path: "/bundles/bundle.jws".into(),
                poll_seconds: 10,
                jitter_percent: 10,
                timeout_ms: 5000,
                backoff_max_seconds: 300,
                long_poll_wait_seconds: None,
            })
        );
    }

    #[test]
    fn inline_bundle_alone_or_control_alone_or_both() {
        let mut inline_only = minimal();
        inline_only.as_object_mut().map(|o| o.remove("control"));
        inline_only["inline_bundle"] = json!("a.b.c");
        let c = parse(inline_only.to_string().as_bytes()).unwrap();
        assert_eq!((c.inline_bundle.as_deref(), c.control), (Some("a.b.c"), None));
        let mut both = minimal();
        both["inline_bundle"] = json!("a.b.c");
        assert!(parse(both.to_string().as_bytes()).unwrap().control.is_some());
        assert_eq!(
            err(&without("control")),
            "neither `inline_bundle` nor `control` is set: the filter would have no policy and answer every \
             request with 503; set `control` (live updates), `inline_bundle` (static), or both"
        );
    }

    #[test]
    fn every_control_field_set() {
        let mut v = minimal();
        v["control"] = json!({"cluster": "outbound|443||control.acme.example", "authority": "control.acme.example",
                              "path": "/v1/bundle.jws?env=prod", "poll_seconds": 3600, "jitter_percent": 0,
                              "timeout_ms": 100, "backoff_max_seconds": 86400, "long_poll_wait_seconds": 30});
        let c = parse(v.to_string().as_bytes()).unwrap().control.unwrap();
        assert_eq!(c.cluster, "outbound|443||control.acme.example");
        assert_eq!(c.path, "/v1/bundle.jws?env=prod");
        assert_eq!((c.poll_seconds, c.jitter_percent, c.timeout_ms, c.backoff_max_seconds), (3600, 0, 100, 86400));
        assert_eq!(c.long_poll_wait_seconds, Some(30));
        assert_eq!(c.call_timeout_ms(), 30_100, "the call outlasts the wait by `timeout_ms`");
        v["control"]["long_poll_wait_seconds"] = json!(3600);
        assert_eq!(parse(v.to_string().as_bytes()).unwrap().control.unwrap().long_poll_wait_seconds, Some(3600));
        // The default backoff cap is never below the period.
        v["control"] = json!({"cluster": "c", "authority": "a", "poll_seconds": 600});
        assert_eq!(parse(v.to_string().as_bytes()).unwrap().control.unwrap().backoff_max_seconds, 600);
    }

    #[test]
    fn bad_control_fields_and_their_messages() {
        let mut no_cluster = minimal();
        no_cluster["control"] = json!({"authority": "a"});
        let mut extra = minimal();
        extra["control"]["period"] = json!(5);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with("control", json!("c")), "field `control`: expected an object, got a string"),
            (with("control", json!(null)), "field `control`: expected an object, got null"),
            (no_cluster.to_string().into_bytes(), "field `control.cluster`: missing"),
            (
                extra.to_string().into_bytes(),
                "field `control`: unknown field `period`, expected one of `cluster`, `authority`, `path`, \
                 `poll_seconds`, `jitter_percent`, `timeout_ms`, `backoff_max_seconds`, `long_poll_wait_seconds`",
            ),
            (with_control("cluster", json!("")), "field `control.cluster`: must not be empty"),
            (with_control("cluster", json!(3)), "field `control.cluster`: expected a string, got a number"),
            (
                with_control("authority", json!("a b")),
                "field `control.authority`: `a b` must be visible ASCII without spaces",
            ),
            (with_control("path", json!("bundle.jws")), "field `control.path`: `bundle.jws` must start with `/`"),
            (with_control("path", json!("")), "field `control.path`: must not be empty"),
            (
                with_control("poll_seconds", json!(0)),
                "field `control.poll_seconds`: expected an integer from 1 to 3600, got 0",
            ),
            (
                with_control("poll_seconds", json!(3601)),
                "field `control.poll_seconds`: expected an integer from 1 to 3600, got 3601",
            ),
            (
                with_control("jitter_percent", json!(51)),
                "field `control.jitter_percent`: expected an integer from 0 to 50, got 51",
            ),
            (
                with_control("timeout_ms", json!(99)),
                "field `control.timeout_ms`: expected an integer from 100 to 60000, got 99",
            ),
            (
                with_control("timeout_ms", json!("5s")),
                "field `control.timeout_ms`: expected an integer from 100 to 60000, got a string",
            ),
            (
                with_control("backoff_max_seconds", json!(9)),
                "field `control.backoff_max_seconds`: expected an integer from 10 to 86400, got 9",
            ),
            (
                with_control("long_poll_wait_seconds", json!(0)),
                "field `control.long_poll_wait_seconds`: expected an integer from 1 to 3600, got 0 (omit the field \
                 to poll every `poll_seconds` without waiting)",
            ),
            (
                with_control("long_poll_wait_seconds", json!("30")),
                "field `control.long_poll_wait_seconds`: expected an integer from 1 to 3600, got a string (omit the \
                 field to poll every `poll_seconds` without waiting)",
            ),
            (
                with_control("long_poll_wait_seconds", json!(3601)),
                "field `control.long_poll_wait_seconds`: expected an integer from 1 to 3600, got 3601 (omit the \
                 field to poll every `poll_seconds` without waiting)",
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(err(&bytes), want, "config: {}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn every_field_set() {
        let mut v = minimal();
        v["mode"] = json!("shadow");
        v["token_header"] = json!("X-Agent-Token");
        v["approval_header"] = json!("X-Approval");
        v["inline_bundle"] = json!(" a.b.c\n");
        v["bundle_grace_seconds"] = json!(0);
        v["forward_identity_headers"] = json!(false);
        v["log_decisions"] = json!(false);
        let c = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.gate.mode, Mode::Shadow);
        assert_eq!(c.gate.token_header, "x-agent-token");
        assert_eq!(c.gate.approval_header, "x-approval");
        assert_eq!(c.inline_bundle.as_deref(), Some("a.b.c"));
        assert_eq!(c.gate.bundle_grace_seconds, 0);
        assert!(!c.gate.forward_identity_headers);
        assert!(!c.log_decisions);
        assert!(!c.decision_fields, "off unless asked for");
        v["decision_fields"] = json!(true);
        assert!(parse(v.to_string().as_bytes()).unwrap().decision_fields);
    }

    #[test]
    fn bad_configurations_and_their_messages() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty (expected a JSON object)"),
            (b"  \n".to_vec(), "empty (expected a JSON object)"),
            (b"[]".to_vec(), "expected a JSON object"),
            (b"[{}]".to_vec(), "expected a JSON object"),
            (b"\"prod\"".to_vec(), "expected a JSON object"),
            (b"null".to_vec(), "expected a JSON object"),
            (b"{\"environment\": \"prod\",\n \"authority\": }".to_vec(), "expected value at line 2 column 15"),
            (b"{\"environment\": \"prod\"".to_vec(), "EOF while parsing an object at line 1 column 22"),
            (
                b"{\"environment\": \"prod\", \"controls\": {}}".to_vec(),
                "unknown field `controls`, expected one of `environment`, `authority`, `bundle_keys`, `mode`, \
                 `token_header`, `txn_token_header`, `approval_header`, `inline_bundle`, `bundle_grace_seconds`, \
                 `max_revision_jump`, `forward_identity_headers`, `log_decisions`, `decision_fields`, \
                 `control`, `allow_on_headers_stop_iteration`, `max_body_bytes`, `max_list_response_bytes` at line 1 column 34",
            ),
            (
                b"{\"environment\": \"prod\", \"environment\": \"dev\"}".to_vec(),
                "duplicate field `environment` at line 1 column 37",
            ),
            (without("environment"), "field `environment`: missing"),
            (with("environment", json!(null)), "field `environment`: expected a string, got null"),
            (with("environment", json!(7)), "field `environment`: expected a string, got a number"),
            (with("environment", json!("")), "field `environment`: must not be empty"),
            (
                with("environment", json!("Prod EU")),
                "field `environment`: `Prod EU` is not a label (lower-case letters, digits, `.`, `_`, `-`; \
                 starting with a letter or digit; at most 64)",
            ),
            (without("authority"), "field `authority`: missing"),
            (with("authority", json!(" ")), "field `authority`: must not be empty"),
            (with("authority", json!(["a"])), "field `authority`: expected a string, got an array"),
            (without("bundle_keys"), "field `bundle_keys`: missing"),
            (with("bundle_keys", json!("k1")), "field `bundle_keys`: expected a JWKS object, got a string"),
            (with("mode", json!("audit")), "field `mode`: expected `enforce` or `shadow`, got `audit`"),
            (with("mode", json!(true)), "field `mode`: expected a string, got a boolean"),
            (with("token_header", json!("")), "field `token_header`: must not be empty"),
            (
                with("txn_token_header", json!("Authorization")),
                "field `txn_token_header`: `authorization` is also `token_header`: the two tokens need their own headers",
            ),
            (with("txn_token_header", json!("x y")), "field `txn_token_header`: `x y` is not an HTTP header name"),
            (with("token_header", json!("x token")), "field `token_header`: `x token` is not an HTTP header name"),
            (with("token_header", json!(":path")), "field `token_header`: `:path` is not an HTTP header name"),
            (
                with("token_header", json!("X-Warden-Agent")),
                "field `token_header`: `X-Warden-Agent`: `x-warden-*` headers belong to the filter",
            ),
            (
                with("approval_header", json!("Txn-Token")),
                "field `approval_header`: `txn-token` already carries another token: the approval needs its own header",
            ),
            (
                with("approval_header", json!("x-warden-agent")),
                "field `approval_header`: `x-warden-agent`: `x-warden-*` headers belong to the filter",
            ),
            (with("approval_header", json!("a b")), "field `approval_header`: `a b` is not an HTTP header name"),
            (with("inline_bundle", json!("")), "field `inline_bundle`: must not be empty"),
            (with("inline_bundle", json!({})), "field `inline_bundle`: expected a string, got an object"),
            (
                with("bundle_grace_seconds", json!(-1)),
                "field `bundle_grace_seconds`: expected an integer from 0 to 86400, got -1",
            ),
            (
                with("bundle_grace_seconds", json!(86401)),
                "field `bundle_grace_seconds`: expected an integer from 0 to 86400, got 86401",
            ),
            (
                with("bundle_grace_seconds", json!(1.5)),
                "field `bundle_grace_seconds`: expected an integer from 0 to 86400, got 1.5",
            ),
            (
                with("bundle_grace_seconds", json!("300")),
                "field `bundle_grace_seconds`: expected an integer from 0 to 86400, got a string",
            ),
            (
                with("forward_identity_headers", json!("yes")),
                "field `forward_identity_headers`: expected true or false, got a string",
            ),
            (with("log_decisions", json!(1)), "field `log_decisions`: expected true or false, got a number"),
            (with("decision_fields", json!("yes")), "field `decision_fields`: expected true or false, got a string"),
            (
                with("allow_on_headers_stop_iteration", json!("yes")),
                "field `allow_on_headers_stop_iteration`: expected true or false, got a string",
            ),
            (
                with("max_revision_jump", json!(0)),
                "field `max_revision_jump`: expected an integer from 1 to 281474976710656, got 0",
            ),
            (with("max_body_bytes", json!(0)), "field `max_body_bytes`: expected an integer from 1 to 16777216, got 0"),
            (
                with("max_body_bytes", json!(16777217)),
                "field `max_body_bytes`: expected an integer from 1 to 16777216, got 16777217",
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(err(&bytes), want, "config: {}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn bundle_key_errors_name_the_field() {
        let e = err(&with("bundle_keys", json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "x"}]})));
        assert!(e.starts_with("field `bundle_keys`: "), "{e}");
        let e = err(&with("bundle_keys", json!({"keys": []})));
        assert!(e.starts_with("field `bundle_keys`: "), "{e}");
    }
}
