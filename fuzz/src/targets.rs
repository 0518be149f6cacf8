//! The targets. Each takes the fuzzer's bytes; inputs a target cannot use (not UTF-8 where the host gives text)
//! return early. A panic is a finding: either the code under test panicked, or a property below was violated.

use std::sync::OnceLock;

use serde_json::Value;
use warden_core::compile::{self, CompiledBundle};
use warden_core::config::GateConfig;
use warden_core::envelope::{self, TrustedKeys};
use warden_core::gate::{driver, MemoryStore};
use warden_core::mcp::{self, Visibility};
use warden_core::path;
use warden_core::request::RecordedRequest;
use warden_core::{args, identity};

use crate::exact_json;

/// A time inside the example bundles' validity and the seed tokens' lifetime (2026-11-28T10:00:00Z).
pub const NOW: i64 = 1_795_860_000;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An example bundle, compiled once.
fn example() -> &'static CompiledBundle {
    static B: OnceLock<CompiledBundle> = OnceLock::new();
    B.get_or_init(|| {
        let bundle = serde_json::from_str(include_str!("../../policies/examples/finance-agent.json"))
            .unwrap_or_else(|e| panic!("the finance example does not parse: {e}"));
        compile::compile(&bundle).unwrap_or_else(|e| panic!("the finance example does not compile: {e:?}"))
    })
}

fn authority_keys() -> &'static TrustedKeys {
    static K: OnceLock<TrustedKeys> = OnceLock::new();
    K.get_or_init(|| {
        let jwks: Value =
            serde_json::from_str(include_str!("../../policies/examples/keys/TEST-ONLY-authority.jwks.json"))
                .unwrap_or_else(|e| panic!("authority JWKS: {e}"));
        TrustedKeys::from_jwks(&jwks).unwrap_or_else(|e| panic!("authority JWKS: {e}"))
    })
}

/// `path::normalize`: an accepted path is absolute, has no empty, `.` or `..` segment, only visible ASCII, and is a
/// fixed point (normalizing what is forwarded gives it back).
pub fn path_normalize(data: &[u8]) {
    let Some(raw) = text(data) else { return };
    let Ok(n) = path::normalize(raw) else { return };
    assert!(n.path.starts_with('/'), "{raw:?} → {:?}", n.path);
    assert!(n.path.bytes().all(|b| b.is_ascii_graphic()), "{raw:?} → {:?}", n.path);
    let inner = n.path.strip_suffix('/').unwrap_or(&n.path);
    for segment in inner.split('/').skip(1) {
        assert!(!matches!(segment, "" | "." | ".."), "{raw:?} → {:?} has segment {segment:?}", n.path);
    }
    let forwarded = n.request_path();
    match path::normalize(&forwarded) {
        Ok(again) => assert_eq!(again, n, "{raw:?}: normalizing the forwarded {forwarded:?} changes it"),
        Err(e) => panic!("{raw:?}: the forwarded {forwarded:?} is refused: {e}"),
    }
    assert!(n.is_request_path(&forwarded));
}

/// `path::normalize` against an independent RFC 3986 implementation (`fluent-uri`'s normalizer: percent-encoding
/// normalization and `remove_dot_segments`, underflow refused), on the path (before the first `?`). Documented
/// differences, not compared: Warden merges runs of `/` (RFC 3986 keeps empty segments), so paths with `//` are
/// skipped; Warden refuses what RFC 3986 allows but servers read differently (`%2F`, `%5C`, `;`, encoded controls,
/// `..` above the root): only paths Warden accepts are compared; Warden keeps the query verbatim and does not
/// check its escapes (RFC 3986 refuses `%2/` in a query; found by this target, `fuzz/regressions/path_differential`).
/// Where Warden accepts a path, RFC 3986 must accept it too and agree on the normalized form; where RFC 3986 finds it
/// climbs above the root, Warden must refuse it.
pub fn path_differential(data: &[u8]) {
    let Some(raw) = text(data) else { return };
    let path_part = raw.split('?').next().unwrap_or("");
    if path_part.contains("//") || !path_part.starts_with('/') || path_part.contains('#') {
        return;
    }
    let ours = path::normalize(path_part);
    let theirs = fluent_uri::Uri::parse(format!("http://h{path_part}"))
        .ok()
        .map(|u| fluent_uri::normalize::Normalizer::new().allow_path_underflow(false).normalize(&u));
    match (ours, theirs) {
        (Ok(n), None) => panic!("{path_part:?}: Warden accepts ({:?}) what RFC 3986 does not parse", n.path),
        (Ok(n), Some(Err(_))) => {
            panic!("{path_part:?}: Warden accepts ({:?}) a path RFC 3986 finds above the root", n.path)
        }
        (Ok(n), Some(Ok(u))) => {
            assert_eq!(n.path, u.path().as_str(), "{path_part:?}: Warden and RFC 3986 normalize differently");
        }
        (Err(path::PathError::AboveRoot), Some(Ok(u))) => {
            panic!("{path_part:?}: Warden finds it above the root, RFC 3986 normalizes it to {:?}", u.path().as_str())
        }
        (Err(_), _) => {}
    }
}

/// `identity::bearer_token`: an accepted token is non-empty, has no whitespace, and ends the header value.
pub fn bearer(data: &[u8]) {
    let Some(value) = text(data) else { return };
    if let Ok(token) = identity::bearer_token(value) {
        assert!(!token.is_empty(), "{value:?}");
        assert!(!token.bytes().any(|b| b.is_ascii_whitespace()), "{value:?} → {token:?}");
        assert!(value.trim_end().ends_with(token), "{value:?} → {token:?}");
    }
}

/// `identity::verify` (the JWS compact parser, the header checks, the signature, the claims) and
/// `identity::verify_txn_token` against the finance example's issuers: never a panic; no random bytes verify.
pub fn token_verify(data: &[u8]) {
    let Some(token) = text(data) else { return };
    let bundle = example();
    let verified = identity::verify(&bundle.issuers, token, NOW);
    if let Ok(agent) = &verified {
        let _ = identity::verify_txn_token(&bundle.issuers, token, agent, NOW);
    }
}

/// `envelope::verify_payload`: the signed-bundle parser and verifier, with the example authority's pinned keys;
/// what verifies is refused once its key is revoked.
pub fn envelope_verify(data: &[u8]) {
    let authority = "policy.acme.example";
    if let Ok(v) = envelope::verify_payload(data, authority_keys(), authority, &[], NOW) {
        let revoked = [v.key_id.clone()];
        assert!(envelope::verify_payload(data, authority_keys(), authority, &revoked, NOW).is_err());
        let _ = compile::compile(&v.bundle);
    }
}

/// The bundle's JSON and `compile::compile`: never a panic, whatever the document.
pub fn bundle_compile(data: &[u8]) {
    let Ok(bundle) = serde_json::from_slice::<warden_core::bundle::Bundle>(data) else { return };
    if let Ok(compiled) = compile::compile(&bundle) {
        let _ = compiled.resolve_http("payments.acme.example", "POST", "/v1/refunds");
    }
}

/// `mcp::parse_body`: never a panic; allowing batches never refuses a body accepted without them.
pub fn mcp_parse(data: &[u8]) {
    let single = mcp::parse_body(data, false);
    let batched = mcp::parse_body(data, true);
    if single.is_ok() {
        assert!(batched.is_ok(), "accepted without batches, refused with them: {:?}", batched.err());
    }
}

/// Visibility of a tool by its name, fixed for the run: names with an odd byte sum are hidden.
fn visibility(name: &str) -> Visibility {
    if name.bytes().map(u32::from).sum::<u32>() % 2 == 1 {
        Visibility::Hidden
    } else {
        Visibility::Visible
    }
}

/// The tool names of every JSON-RPC result in `value` (a response or a batch of them).
fn listed_tools(value: &Value) -> Vec<String> {
    let one = |v: &Value| -> Vec<String> {
        v.pointer("/result/tools")
            .and_then(Value::as_array)
            .map(|tools| tools.iter().filter_map(|t| t.get("name")?.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    match value {
        Value::Array(items) => items.iter().flat_map(one).collect(),
        other => one(other),
    }
}

/// The `tools/list` rewriter on a JSON answer: what it lets through lists no hidden tool (read back by an
/// independent JSON parser, so an escape cannot hide one).
pub fn tools_list_json(data: &[u8]) {
    let id = Value::from(1);
    let lens = mcp::list::Lens { visible: &visibility, pins: None };
    let Ok((out, _)) = mcp::list::filter_tools_list(mcp::list::ListFraming::Json, data, &id, lens) else {
        return;
    };
    if let Ok(v) = serde_json::from_slice::<Value>(&out) {
        for name in listed_tools(&v) {
            assert_ne!(
                visibility(&name),
                Visibility::Hidden,
                "hidden tool {name:?} passed: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

/// The `tools/list` rewriter on server-sent events: no event the client would read (any line a browser's SSE
/// parser takes as `data`) lists a hidden tool.
pub fn tools_list_sse(data: &[u8]) {
    let id = Value::from(1);
    let lens = mcp::list::Lens { visible: &visibility, pins: None };
    let Ok((out, _)) = mcp::list::filter_tools_list(mcp::list::ListFraming::Sse, data, &id, lens) else {
        return;
    };
    let text = String::from_utf8_lossy(&out);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    for event in text.replace("\r\n", "\n").replace('\r', "\n").split("\n\n") {
        let data: Vec<&str> =
            event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
        if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) {
            for name in listed_tools(&v) {
                assert_ne!(visibility(&name), Visibility::Hidden, "hidden tool {name:?} passed in SSE: {text}");
            }
        }
    }
}

/// The plugin configuration parser (`on_configure`): never a panic, and deterministic.
pub fn plugin_config(data: &[u8]) {
    let first = format!("{:?}", warden_core::config::parse(data));
    assert_eq!(first, format!("{:?}", warden_core::config::parse(data)));
}

/// The recorded-request format (`warden eval`, `warden-gateway replay`): parsed, validated, and run through the
/// gate's driver against the finance example, as `warden eval` does; the run names a decision.
pub fn recorded_request(data: &[u8]) {
    let Some(line) = text(data) else { return };
    let Ok(req) = RecordedRequest::parse_line(line) else { return };
    let Ok(exchange) = driver::Exchange::from_recorded(&req, NOW) else { return };
    let config = GateConfig::new("prod");
    let run = driver::run(&config, Some(example()), exchange, &mut MemoryStore::default());
    let _ = run.flow.decision();
}

/// The canonical JSON of tool arguments that step-up approvals bind to: two argument objects (split at the first
/// 0xFF byte) with the same canonical form are the same arguments, compared exactly (numbers as decimals, by an
/// independent parser): no two different amounts share a digest.
pub fn args_digest(data: &[u8]) {
    let Some(split) = data.iter().position(|b| *b == 0xff) else { return };
    let (a, b) = (&data[..split], &data[split + 1..]);
    let (Ok(va), Ok(vb)) = (serde_json::from_slice::<Value>(a), serde_json::from_slice::<Value>(b)) else { return };
    let (Some(ea), Some(eb)) = (exact_json::parse(a), exact_json::parse(b)) else { return };
    // Arguments with a number the canonical form cannot hold exactly never reach a digest: the MCP parser refuses
    // them (`mcp_inexact_number`, issue 19 item 4). The property is about every argument that can be digested.
    let (Ok(ta), Ok(tb)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else { return };
    if args::check_exact_numbers(ta).is_err() || args::check_exact_numbers(tb).is_err() {
        return;
    }
    let (ca, cb) = (args::canonical_json(&va), args::canonical_json(&vb));
    if ca == cb {
        assert_eq!(ea, eb, "different arguments share the canonical form {ca}");
        assert_eq!(args::arguments_digest(Some(&va)), args::arguments_digest(Some(&vb)));
    }
}
