//! Issue 19 items 5 and 7 through real Envoy: identity headers an upstream could read as Warden's (`_`/`-` and
//! case variants of `x-warden-*`), and path and route differentials (an empty segment next to a dot segment,
//! escapes the normalizer would have kept, the MCP endpoint spelled `/mcp/` or `/mcp/.`, near-misses of a catalog
//! route under `unknown_tool: allow`).
//!
//! Two Envoys: the harness's bootstrap as is (Envoy forwards underscore headers and does not touch the path, so
//! Warden alone must hold), and the same with the request-hygiene settings of the shipped `envoy/envoy.yaml`
//! (read from that file), where Envoy refuses underscore headers itself and normalizes the path before Warden; the
//! differential checks, path by path, that what Envoy forwards is what Warden matched.

use std::sync::OnceLock;

use serde_json::{json, Value};
use warden_core::path;
use warden_host::HttpRequest;

use crate::support::envoy::{now, Gateway, Seen};
use crate::support::filter::{authed, claims, config, mcp_bundle_at, sign, token, BILLING, CRM, MCP_HOST, SUPPORT_BOT};
use crate::support::repo;

/// The MCP bundle with `unknown_tool: allow`: a request that reaches no tool goes on, so a spelling that misses a
/// denied tool's route would reach that tool's upstream.
fn bundle() -> Value {
    let mut b = mcp_bundle_at(now());
    b["defaults"]["unknown_tool"] = json!("allow");
    b
}

/// The request-hygiene fields of the shipped `envoy/envoy.yaml`'s connection manager.
fn shipped_hygiene() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let hcm: Value = serde_json::to_value(
        &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"],
    )
    .unwrap();
    let fields =
        ["normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "common_http_protocol_options"];
    let out: Vec<(String, Value)> =
        fields.iter().filter_map(|f| hcm.get(*f).map(|v| (f.to_string(), v.clone()))).collect();
    assert_eq!(out.len(), fields.len(), "envoy/envoy.yaml sets every hygiene field: {hcm}");
    out
}

/// `shipped`: with the hygiene settings of `envoy/envoy.yaml`.
fn gateway(shipped: bool) -> &'static Gateway {
    static G: [OnceLock<Gateway>; 2] = [OnceLock::new(), OnceLock::new()];
    G[shipped as usize].get_or_init(|| {
        Gateway::start_with(&config(Some(&sign(&bundle()))), false, |mut o| {
            if shipped {
                for (k, v) in shipped_hygiene() {
                    o = o.hcm(&k, v);
                }
            }
            o.concurrency(1)
        })
    })
}

fn bot() -> String {
    token(&claims(SUPPORT_BOT, now()))
}

fn is_reserved_spelling(name: &str) -> bool {
    let n: String = name.chars().map(|c| if c == '_' { '-' } else { c.to_ascii_lowercase() }).collect();
    n.starts_with("x-warden-")
}

const FORGED: [&str; 6] = [
    "x_warden_agent",
    "x_warden_task",
    "x-warden_task",
    "X_Warden_Decision_Id",
    "x-warden-agent_",
    "x_WARDEN-approval",
];

fn forged(mut req: HttpRequest) -> HttpRequest {
    for name in FORGED {
        req = req.header(name, "spiffe://acme.example/agents/admin/root");
    }
    req
}

#[test]
fn underscore_variants_of_the_identity_headers_never_reach_the_upstream() {
    let g = gateway(false);
    let seen = g.send(forged(authed("GET", CRM, "/api/v2/contacts/42", &bot())));
    let up = seen.assert_forwarded();
    let reserved: Vec<(&str, &str)> =
        up.headers.iter().filter(|(k, _)| is_reserved_spelling(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let decision_id = seen.record()["decision_id"].as_str().unwrap().to_string();
    let mut names: Vec<&str> = reserved.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    assert_eq!(names, ["x-warden-agent", "x-warden-decision-id", "x-warden-task", "x-warden-tool"], "{reserved:?}");
    assert_eq!(up.all("x-warden-agent"), vec![SUPPORT_BOT]);
    assert_eq!(up.all("x-warden-tool"), vec!["crm.contacts.read"]);
    assert_eq!(up.all("x-warden-decision-id"), vec![decision_id.as_str()]);
}

#[test]
fn with_the_shipped_settings_envoy_refuses_underscore_headers_before_warden() {
    let g = gateway(true);
    for name in FORGED.iter().filter(|n| n.contains('_')) {
        let req = authed("GET", CRM, "/api/v2/contacts/42", &bot()).header(name, "forged");
        let seen = g.send(req);
        assert_eq!(seen.response.status, 400, "{name}: {seen:#?}");
        assert!(seen.upstream.is_none(), "{name}: {seen:#?}");
    }
    // Without one, the same request goes through.
    g.send(authed("GET", CRM, "/api/v2/contacts/42", &bot())).assert_forwarded();
}

/// Refused by Warden with this path reason, nothing upstream.
fn assert_path_refused(seen: &Seen, reason: &str) {
    assert_eq!(seen.response.status, 400, "{seen:#?}");
    assert_eq!(seen.json()["reason"], reason, "{seen:#?}");
    assert_eq!(seen.record()["reason"], reason);
    assert!(seen.upstream.is_none(), "{seen:#?}");
}

#[test]
fn an_empty_segment_next_to_a_dot_segment_is_refused() {
    let g = gateway(false);
    for p in ["/api/v2/contacts//../42", "/api//./v2/contacts/42", "/api/v2/contacts/42//%2E%2E/43"] {
        assert_path_refused(&g.send(authed("GET", CRM, p, &bot())), "path_ambiguous_segments");
    }
}

#[test]
fn escapes_outside_the_unreserved_set_are_refused() {
    let g = gateway(false);
    for p in ["/api/v2/contacts/%25", "/api/v2/contacts/a%20b", "/api/v2/contacts/caf%C3%A9", "/api/v2/contacts/%3F"] {
        assert_path_refused(&g.send(authed("GET", CRM, p, &bot())), "path_encoded_char");
    }
    // Unreserved escapes are decoded and go on decoded.
    let seen = g.send(authed("GET", CRM, "/api/v2/contacts/%34%32", &bot()));
    assert_eq!(seen.assert_forwarded().path, "/api/v2/contacts/42");
}

fn mcp_call(name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}}).to_string()
}

#[test]
fn the_mcp_endpoint_is_matched_on_the_normalized_path() {
    let g = gateway(false);
    for p in ["/mcp/", "/mcp/.", "/x/../mcp"] {
        let req = authed("POST", MCP_HOST, p, &bot()).header("content-type", "application/json").body(mcp_call("wipe"));
        let seen = g.send(req);
        assert_eq!(seen.response.status, 403, "{p}: {seen:#?}");
        let v = seen.json();
        assert_eq!(v["error"]["data"]["reason"], "denied_by_rule", "{p}: {v}");
        assert_eq!(seen.record()["tool"], "mcp.wipe", "{p}");
        assert!(seen.upstream.as_ref().is_none_or(|u| u.body.is_empty() && !u.complete), "{p}: {seen:#?}");
    }
}

#[test]
fn near_misses_of_a_catalog_route_do_not_reach_its_upstream_under_unknown_tool_allow() {
    let g = gateway(false);
    // billing.refunds.create (POST /v1/refunds) needs an approval; admin.users.delete is allowed only by an
    // exception for another agent.
    for (method, host, p) in [
        ("POST", BILLING, "/v1/refunds/"),
        ("POST", BILLING, "/V1/Refunds"),
        ("POST", BILLING, "/v1/refunds.json"),
        ("POST", BILLING, "/v1/REFUNDS/"),
        ("DELETE", CRM, "/Admin/users/7"),
        ("DELETE", CRM, "/admin/users/7/"),
        ("POST", MCP_HOST, "/MCP"),
    ] {
        let seen = g.send(authed(method, host, p, &bot()).header("content-type", "application/json").body("{}"));
        assert_eq!(seen.response.status, 400, "{method} {p}: {seen:#?}");
        let v = seen.json();
        let data = if v["jsonrpc"] == "2.0" { v["error"]["data"].clone() } else { v.clone() };
        assert_eq!(data["reason"], "route_near_miss", "{method} {p}: {v}");
        assert!(seen.upstream.is_none(), "{method} {p}: {seen:#?}");
    }
    // A path of no catalog route still goes on (that is what unknown_tool: allow says).
    let seen = g.send(authed("GET", BILLING, "/v1/invoices", &bot()));
    seen.assert_forwarded();
    assert_eq!(seen.record()["reason"], "unknown_tool");
}

/// Paths sent through Envoy with the shipped settings: each is refused (by Envoy or by Warden) or forwarded as
/// exactly the path Warden matched; and where Warden's own normalization of the raw path accepts it, Envoy
/// forwards that very path (no differential between the two normalizers).
#[test]
fn what_envoy_forwards_is_what_warden_matched() {
    let g = gateway(true);
    let paths = [
        "/api/v2/contacts/42",
        "/api//v2/contacts/42",
        "/api/v2/x/../contacts/42",
        "/api/v2/./contacts/42",
        "/api/v2/contacts/%34%32",
        "/api/v2/contacts/%2e%2e/contacts/42",
        "/api/v2/contacts//../42",
        "/api/v2/contacts/42/",
        "/api/v2/contacts/4%2F2",
        "/api/v2/contacts/4%5C2",
        "/api/v2/contacts/%7E",
        "/api/v2/contacts/%7e42",
        "/api/v2/contacts/a%20b",
        "/api/v2/contacts/%25",
        "/api/v2/contacts/caf%C3%A9",
        "/api/v2/contacts/42;x",
        "/api/v2/contacts/42?x=%2F&y=..",
        "/api/v2/contacts/..%2F42",
        "/api/v2/contacts/%2E",
        "/api/v2/contacts/42/.",
        "/api/v2//contacts/./42",
    ];
    let mut table = Vec::new();
    for raw in paths {
        let seen = g.send(authed("GET", CRM, raw, &bot()));
        let warden_alone = path::normalize(raw).map(|n| n.request_path());
        let outcome = match (&seen.upstream, seen.log.as_ref().and_then(|l| l.record.clone())) {
            (Some(up), record) => {
                let record = record.unwrap_or_else(|| panic!("{raw}: forwarded without a decision: {seen:#?}"));
                let matched = record["path"].as_str().unwrap().to_string();
                let forwarded_path = up.path.split('?').next().unwrap().to_string();
                assert_eq!(forwarded_path, matched, "{raw}: forwarded another path than Warden matched");
                if let Ok(alone) = &warden_alone {
                    assert_eq!(&up.path, alone, "{raw}: Envoy's normalization differs from Warden's");
                }
                format!("forwarded {}", up.path)
            }
            (None, Some(record)) => format!("{} by Warden ({})", seen.response.status, record["reason"]),
            (None, None) => format!("{} by Envoy", seen.response.status),
        };
        table.push(format!("{raw:45} {outcome:45} warden alone: {warden_alone:?}"));
    }
    eprintln!("{}", table.join("\n"));
}
