//! MCP in the core: strict JSON-RPC parsing, MCP servers and bindings in the catalog, argument conditions,
//! batch decisions, `tools/list` visibility, canonical arguments and their digest. Table-driven.

use crate::common;

use common::{agent, compiled, now, try_compile};
use serde_json::{json, Value};
use warden_core::args::{arguments_digest, canonical_json};
use warden_core::compile::CompiledBundle;
use warden_core::decide::decide_with_args;
use warden_core::decide::mcp::{decide_body, decide_message, tool_visibility};
use warden_core::facts::{Facts, Identity};
use warden_core::mcp::{parse_body, McpKind, McpServerIdx, McpTarget, Visibility};
use warden_core::pins::PinMemory;

/// (name, body, batches allowed, `Ok(summary)` or `Err(code)`).
type ParseCase<'a> = (&'a str, Vec<u8>, bool, Result<String, &'a str>);
/// (name, agent, server host, body, (outcome, reason, rule)).
type DecideCase<'a> = (&'a str, &'a str, &'a str, String, (&'a str, &'a str, &'a str));
/// (name, change to the bundle, expected validation errors).
type ValidationCase<'a> = (&'a str, Box<dyn Fn(&mut Value)>, Vec<&'a str>);

const BOT: &str = "spiffe://acme.example/agents/support/bot-1";
const FIN: &str = "spiffe://acme.example/agents/finance/reconciler";

fn mcp_bundle() -> Value {
    json!({
        "format": "warden.bundle/v1", "revision": 9,
        "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-12-31T00:00:00Z",
        "owner": "security@acme.example", "authority": "policy.acme.example",
        "approvers": [common::approver()],
        "mcp_servers": [
            {"name": "payments", "host": "mcp.pay.acme.example", "path": "/mcp"},
            {"name": "docs", "host": "*.docs.acme.example", "path": "/", "batches": true},
            {"name": "locked", "path": "/locked/mcp", "lifecycle": "deny"}
        ],
        "tools": [
            {"id": "pay.refund", "sensitivity": "payment", "mcp": [{"server": "payments", "tool": "refund"}]},
            {"id": "pay.lookup", "sensitivity": "read", "mcp": [{"server": "payments", "tool": "lookup"}]},
            {"id": "pay.delete", "sensitivity": "admin", "mcp": [{"server": "payments", "tool": "delete_all"}]},
            {"id": "docs.read", "sensitivity": "read", "mcp": [
                {"server": "docs", "resource": "file:///srv/docs/**"},
                {"server": "docs", "resource": "docs://manual"},
                {"server": "docs", "tool": "search"},
                {"server": "docs", "prompt": "summarize"}
            ]},
            {"id": "docs.secret", "sensitivity": "admin", "mcp": [
                {"server": "docs", "resource": "file:///srv/docs/secret/*"}
            ]},
            {"id": "docs.write", "sensitivity": "write", "mcp": [
                {"server": "docs", "tool": "write_file"},
                {"server": "docs", "method": "resources/subscribe"}
            ]}
        ],
        "rules": [
            {"id": "refund-small", "effect": "allow", "agents": ["spiffe://acme.example/agents/*"],
             "tools": ["pay.refund"],
             "conditions": [{"argument": "/amount", "exclusive_min": 0, "max": 100},
                            {"argument": "/currency", "one_of": ["USD", "EUR"]}]},
            {"id": "refund-large", "effect": "step_up", "agents": ["spiffe://acme.example/agents/*"],
             "tools": ["pay.refund"], "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
             "step_up": {"approvers": ["approvals"]}},
            {"id": "no-admin", "effect": "deny", "sensitivities": ["admin"]},
            {"id": "reads", "effect": "allow", "agents": ["spiffe://acme.example/agents/*"], "sensitivities": ["read"]},
            {"id": "write-under-inbox", "effect": "allow", "agents": [FIN], "tools": ["docs.write"],
             "conditions": [{"argument": "/path", "path_prefix": "/srv/inbox"}]},
            {"id": "write-csv", "effect": "allow", "agents": [BOT], "tools": ["docs.write"],
             "conditions": [{"argument": "/path", "glob": "/srv/*/reports/*.csv"},
                            {"argument": "/dry_run", "present": false}]},
            {"id": "no-etc", "effect": "deny", "tools": ["docs.write"],
             "conditions": [{"argument": "/path", "prefix": "/etc"}]}
        ]
    })
}

fn who(id: &str) -> Facts {
    Facts { environment: "prod".into(), identity: Identity::Verified(agent(id)), tool: None }
}

fn server(b: &CompiledBundle, host: &str, path: &str) -> McpServerIdx {
    b.resolve_mcp_server(host, path).unwrap_or_else(|| panic!("no MCP server at {host}{path}"))
}

fn call(name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

#[test]
fn parsing_is_strict() {
    // (name, body, batches allowed, Ok(summary) or Err(code))
    let ok = |s: &str| Ok::<String, &str>(s.to_string());
    let cases: Vec<ParseCase<'_>> = vec![
        ("a tool call", call("refund", json!({"amount": 5})).into_bytes(), false, ok("tools/call refund id=1")),
        ("string id", br#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#.to_vec(), false, ok("ping - id=\"a-1\"")),
        ("notification", br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(), false, {
            ok("notifications/initialized - notification")
        }),
        ("client answer", br#"{"jsonrpc":"2.0","id":4,"result":{}}"#.to_vec(), false, ok(" - id=4")),
        (
            "resource read",
            br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///srv/docs/a.md"}}"#.to_vec(),
            false,
            ok("resources/read file:///srv/docs/a.md id=2"),
        ),
        (
            "prompt",
            br#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"summarize","arguments":{"x":"y"}}}"#
                .to_vec(),
            false,
            ok("prompts/get summarize id=3"),
        ),
        (
            "whitespace around is fine",
            b" \n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n ".to_vec(),
            false,
            ok("ping - id=1"),
        ),
        ("not utf-8", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xff\"}".to_vec(), false, Err("mcp_not_utf8")),
        ("truncated", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ref"#.to_vec(), false, {
            Err("mcp_not_json")
        }),
        ("trailing data", br#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#.to_vec(), false, Err("mcp_not_json")),
        ("empty body", b"".to_vec(), false, Err("mcp_not_json")),
        ("BOM", b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}".to_vec(), false, Err("mcp_not_json")),
        ("lone surrogate", br#"{"jsonrpc":"2.0","id":1,"method":"ping\ud800"}"#.to_vec(), false, Err("mcp_not_json")),
        (
            "duplicate name",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","name":"refund"}}"#.to_vec(),
            false,
            Err("mcp_duplicate_key"),
        ),
        (
            "duplicate name, escaped",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","n\u0061me":"refund"}}"#
                .to_vec(),
            false,
            Err("mcp_duplicate_key"),
        ),
        (
            "duplicate method",
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#.to_vec(),
            false,
            Err("mcp_duplicate_key"),
        ),
        (
            "duplicate deep in arguments",
            call("refund", json!({})).replace("{}", r#"{"a":{"amount":1,"amount":900}}"#).into_bytes(),
            false,
            Err("mcp_duplicate_key"),
        ),
        (
            "a number beyond 64 bits (issue 19 item 4)",
            call("refund", json!({})).replace("{}", r#"{"amount":18446744073709551617}"#).into_bytes(),
            false,
            Err("mcp_inexact_number"),
        ),
        (
            "a number beyond double precision",
            call("refund", json!({})).replace("{}", r#"{"amount":100.0000000000000001}"#).into_bytes(),
            false,
            Err("mcp_inexact_number"),
        ),
        ("batch refused", format!("[{}]", call("lookup", json!({}))).into_bytes(), false, Err("mcp_batch_refused")),
        ("empty batch", b"[]".to_vec(), true, Err("mcp_empty_batch")),
        ("batch of a number", b"[1]".to_vec(), true, Err("mcp_invalid_message")),
        ("no jsonrpc", br#"{"id":1,"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_message")),
        ("jsonrpc 1.0", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_message")),
        ("jsonrpc number", br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_message")),
        ("extra member", br#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1}"#.to_vec(), false, {
            Err("mcp_invalid_message")
        }),
        ("a string", br#""tools/call""#.to_vec(), false, Err("mcp_invalid_message")),
        ("request and result", br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#.to_vec(), false, {
            Err("mcp_invalid_message")
        }),
        ("null id", br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_id")),
        ("fractional id", br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_id")),
        ("object id", br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#.to_vec(), false, Err("mcp_invalid_id")),
        ("answer without id", br#"{"jsonrpc":"2.0","result":{}}"#.to_vec(), false, Err("mcp_invalid_id")),
        ("method case", call("refund", json!({})).replace("tools/call", "Tools/Call").into_bytes(), false, {
            Err("mcp_invalid_method")
        }),
        ("method upper", call("refund", json!({})).replace("tools/call", "TOOLS/CALL").into_bytes(), false, {
            Err("mcp_invalid_method")
        }),
        ("method with space", call("refund", json!({})).replace("tools/call", "tools/call ").into_bytes(), false, {
            Err("mcp_invalid_method")
        }),
        ("method not a string", br#"{"jsonrpc":"2.0","id":1,"method":7}"#.to_vec(), false, Err("mcp_invalid_method")),
        ("empty method", br#"{"jsonrpc":"2.0","id":1,"method":""}"#.to_vec(), false, Err("mcp_invalid_method")),
        (
            "tools/call as a notification",
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"refund"}}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        ("tools/call without params", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_vec(), false, {
            Err("mcp_invalid_params")
        }),
        (
            "tools/call name not a string",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["refund"]}}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        (
            "tools/call arguments an array",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund","arguments":[1]}}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        (
            "tools/call unknown param",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","tool":"refund"}}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        ("params an array", br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}"#.to_vec(), false, {
            Err("mcp_invalid_params")
        }),
        (
            "notification with id",
            br#"{"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        (
            "resource with dot-dot",
            br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///srv/docs/../etc/passwd"}}"#
                .to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        (
            "resource with encoded slash",
            br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///srv/docs/..%2Fetc"}}"#
                .to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
        (
            "prompt arguments not strings",
            br#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"s","arguments":{"x":1}}}"#.to_vec(),
            false,
            Err("mcp_invalid_params"),
        ),
    ];
    for (name, body, batches, want) in cases {
        let got = parse_body(&body, batches).map(|b| {
            assert_eq!(b.messages.len(), 1, "{name}");
            let m = &b.messages[0];
            let id = match &m.id {
                Some(id) => format!("id={id}"),
                None => "notification".to_string(),
            };
            format!("{} {} {id}", m.method(), m.name().unwrap_or("-"))
        });
        assert_eq!(got.as_ref().map_err(|e| e.code()), want.as_ref().map_err(|e| *e), "case {name}");
    }
}

#[test]
fn batches_parse_when_allowed() {
    let body = format!(
        "[{},{},{}]",
        call("lookup", json!({"q": 1})),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        call("refund", json!({"amount": 5}))
    );
    let b = parse_body(body.as_bytes(), true).unwrap();
    assert!(b.batch);
    assert_eq!(b.messages.len(), 3);
    assert!(b.messages[1].is_notification());
    assert!(matches!(&b.messages[2].kind, McpKind::ToolCall { name, .. } if name == "refund"));
}

#[test]
fn servers_and_bindings_resolve() {
    let b = compiled(mcp_bundle());
    assert_eq!(b.mcp_server_count(), 3);
    // (host, path) → server name or none
    for (host, path, want) in [
        ("mcp.pay.acme.example", "/mcp", Some("payments")),
        ("MCP.PAY.acme.example:443", "/mcp", Some("payments")),
        ("mcp.pay.acme.example", "/mcp/sub", Some("payments")),
        ("mcp.pay.acme.example", "/mcpx", None),
        ("mcp.pay.acme.example", "/", None),
        ("eu.docs.acme.example", "/", Some("docs")),
        ("eu.docs.acme.example", "/anything/below", Some("docs")),
        ("docs.acme.example", "/", None),
        ("anyhost.example", "/locked/mcp", Some("locked")),
    ] {
        let got = b.resolve_mcp_server(host, path).map(|s| b.mcp_server_name(s));
        assert_eq!(got, want, "{host}{path}");
    }
    let docs = server(&b, "a.docs.acme.example", "/");
    let pay = server(&b, "mcp.pay.acme.example", "/mcp");
    assert!(b.mcp_batches(docs));
    assert!(!b.mcp_batches(pay));

    let one = |body: &str| parse_body(body.as_bytes(), true).unwrap().messages.remove(0);
    let target = |s: McpServerIdx, body: &str| match b.resolve_mcp(s, &one(body)) {
        McpTarget::Tool(t) => b.tool_id(t).to_string(),
        McpTarget::Lifecycle => "lifecycle".to_string(),
        McpTarget::Unknown => "unknown".to_string(),
    };
    let read =
        |uri: &str| json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}}).to_string();
    let cases: Vec<(McpServerIdx, String, &str)> = vec![
        (pay, call("refund", json!({})), "pay.refund"),
        (pay, call("lookup", json!({})), "pay.lookup"),
        (pay, call("search", json!({})), "unknown"), // bound on another server
        (docs, call("search", json!({})), "docs.read"),
        (docs, call("Search", json!({})), "unknown"), // names are case-sensitive
        (docs, read("docs://manual"), "docs.read"),
        (docs, read("file:///srv/docs/guide/a.md"), "docs.read"),
        (docs, read("file:///srv/docs/secret/keys.txt"), "docs.secret"), // longer literal prefix wins
        (docs, read("file:///srv/docs/secret/deeper/keys.txt"), "docs.read"), // `*` stays in one segment
        (docs, read("file:///srv/other"), "unknown"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summarize"}}"#.into(), "docs.read"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"x"}}"#.into(), "docs.write"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#.into(), "lifecycle"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(), "lifecycle"),
        (docs, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into(), "lifecycle"),
        (docs, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#.into(), "lifecycle"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#.into(), "unknown"),
        (docs, r#"{"jsonrpc":"2.0","id":1,"method":"x/custom"}"#.into(), "unknown"),
    ];
    for (s, body, want) in cases {
        assert_eq!(target(s, &body), want, "{body}");
    }
}

/// (agent, server host, body) → (outcome, reason, rule).
fn check(b: &CompiledBundle, cases: Vec<DecideCase<'_>>) {
    for (name, who_id, host, body, want) in cases {
        let path = if host.starts_with("mcp.pay") { "/mcp" } else { "/" };
        let s = server(b, host, path);
        let parsed = parse_body(body.as_bytes(), b.mcp_batches(s)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = decide_body(b, &who(who_id), s, &parsed, &PinMemory::default(), now()).decision;
        assert_eq!((d.outcome.as_str(), d.reason.code(), d.rule_id()), want, "case {name}");
        assert_eq!(d.revision, 9);
    }
}

#[test]
fn argument_conditions_decide() {
    let b = compiled(mcp_bundle());
    let pay = "mcp.pay.acme.example";
    let docs = "x.docs.acme.example";
    let refund = |args: Value| call("refund", args);
    let write = |args: Value| call("write_file", args);
    check(
        &b,
        vec![
            ("refund under the limit", BOT, pay, refund(json!({"amount": 40, "currency": "USD"})), {
                ("allow", "allowed_by_rule", "refund-small")
            }),
            ("refund at the limit", BOT, pay, refund(json!({"amount": 100, "currency": "EUR"})), {
                ("allow", "allowed_by_rule", "refund-small")
            }),
            ("refund as a float", BOT, pay, refund(json!({"amount": 99.99, "currency": "EUR"})), {
                ("allow", "allowed_by_rule", "refund-small")
            }),
            ("refund over the limit", BOT, pay, refund(json!({"amount": 100.01, "currency": "USD"})), {
                ("step_up", "step_up_required", "refund-large")
            }),
            ("refund far over", BOT, pay, refund(json!({"amount": 90000, "currency": "USD"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("refund zero", BOT, pay, refund(json!({"amount": 0, "currency": "USD"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("refund negative", BOT, pay, refund(json!({"amount": -5, "currency": "USD"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("refund wrong currency", BOT, pay, refund(json!({"amount": 5, "currency": "GBP"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("refund missing amount", BOT, pay, refund(json!({"currency": "USD"})), {
                ("deny", "invalid_arguments", "refund-large")
            }),
            (
                "refund without arguments",
                BOT,
                pay,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund"}}"#.to_string(),
                { ("deny", "invalid_arguments", "refund-large") },
            ),
            ("refund amount as a string", BOT, pay, refund(json!({"amount": "40", "currency": "USD"})), {
                ("deny", "invalid_arguments", "refund-large")
            }),
            ("refund amount nested wrong", BOT, pay, refund(json!({"amount": {"v": 40}, "currency": "USD"})), {
                ("deny", "invalid_arguments", "refund-large")
            }),
            ("lookup has no conditions", BOT, pay, call("lookup", json!({"anything": true})), {
                ("allow", "allowed_by_rule", "reads")
            }),
            ("admin tool", BOT, pay, call("delete_all", json!({})), ("deny", "denied_by_rule", "no-admin")),
            ("unknown tool", BOT, pay, call("transfer", json!({})), ("deny", "unknown_tool", "default")),
            ("write in the inbox", FIN, docs, write(json!({"path": "/srv/inbox/a.txt"})), {
                ("allow", "allowed_by_rule", "write-under-inbox")
            }),
            ("write the inbox itself", FIN, docs, write(json!({"path": "/srv/inbox"})), {
                ("allow", "allowed_by_rule", "write-under-inbox")
            }),
            ("write escaping the inbox", FIN, docs, write(json!({"path": "/srv/inbox/../secrets"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("write a sibling", FIN, docs, write(json!({"path": "/srv/inboxes/a"})), {
                ("deny", "no_matching_rule", "default")
            }),
            (
                "write under /etc",
                FIN,
                docs,
                write(json!({"path": "/etc/passwd"})),
                ("deny", "denied_by_rule", "no-etc"),
            ),
            ("write with no path", FIN, docs, write(json!({})), ("deny", "invalid_arguments", "no-etc")),
            ("bot writes a report", BOT, docs, write(json!({"path": "/srv/eu/reports/q3.csv"})), {
                ("allow", "allowed_by_rule", "write-csv")
            }),
            ("bot glob stays in a segment", BOT, docs, write(json!({"path": "/srv/eu/x/reports/q3.csv"})), {
                ("deny", "no_matching_rule", "default")
            }),
            ("bot dry_run present", BOT, docs, write(json!({"path": "/srv/eu/reports/q3.csv", "dry_run": true})), {
                ("deny", "no_matching_rule", "default")
            }),
            (
                "bot dry_run null is absent",
                BOT,
                docs,
                write(json!({"path": "/srv/eu/reports/q3.csv", "dry_run": null})),
                { ("allow", "allowed_by_rule", "write-csv") },
            ),
            ("lifecycle", BOT, docs, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#.into(), {
                ("allow", "mcp_lifecycle", "default")
            }),
            (
                "resource read",
                BOT,
                docs,
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"docs://manual"}}"#.into(),
                { ("allow", "allowed_by_rule", "reads") },
            ),
            (
                "secret resource",
                BOT,
                docs,
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/docs/secret/k"}}"#
                    .into(),
                { ("deny", "denied_by_rule", "no-admin") },
            ),
        ],
    );
}

#[test]
fn batches_are_allowed_only_whole() {
    let b = compiled(mcp_bundle());
    let docs = "x.docs.acme.example";
    let search = call("search", json!({"q": "a"}));
    let secret = r#"{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"file:///srv/docs/secret/k"}}"#;
    let init = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    check(
        &b,
        vec![
            ("all allowed", BOT, docs, format!("[{search},{init}]"), ("allow", "allowed_by_rule", "reads")),
            ("one denied", BOT, docs, format!("[{search},{secret},{init}]"), ("deny", "denied_by_rule", "no-admin")),
            ("denied first", BOT, docs, format!("[{secret},{search}]"), ("deny", "denied_by_rule", "no-admin")),
        ],
    );
    let s = server(&b, docs, "/");
    let body = parse_body(format!("[{search},{secret}]").as_bytes(), true).unwrap();
    let d = decide_body(&b, &who(BOT), s, &body, &PinMemory::default(), now());
    assert_eq!(d.message, 1, "the denied message is named");
}

#[test]
fn identity_and_lifecycle_defaults() {
    let b = compiled(mcp_bundle());
    let locked = server(&b, "h", "/locked/mcp");
    let init = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#, false).unwrap();
    let d = decide_message(&b, &who(BOT), locked, &init.messages[0], &PinMemory::default(), now());
    assert_eq!((d.outcome.as_str(), d.reason.code()), ("deny", "mcp_lifecycle"));
    assert_eq!(d.http_status(), 403);
    let anon = Facts { environment: "prod".into(), identity: Identity::Missing, tool: None };
    let docs = server(&b, "x.docs.acme.example", "/");
    let d = decide_message(&b, &anon, docs, &init.messages[0], &PinMemory::default(), now());
    assert_eq!((d.outcome.as_str(), d.reason.code(), d.http_status()), ("deny", "identity_missing", 401));
}

#[test]
fn tools_list_visibility() {
    let b = compiled(mcp_bundle());
    let pay = server(&b, "mcp.pay.acme.example", "/mcp");
    let docs = server(&b, "x.docs.acme.example", "/");
    for (s, agent_id, name, want) in [
        (pay, BOT, "refund", Visibility::Visible), // allowed for some arguments
        (pay, BOT, "lookup", Visibility::Visible),
        (pay, BOT, "delete_all", Visibility::Hidden),
        (pay, BOT, "not_in_catalog", Visibility::Hidden),
        (pay, "spiffe://other.example/x", "lookup", Visibility::Hidden),
        (docs, FIN, "write_file", Visibility::Visible), // the conditional deny does not hide it
        (docs, "spiffe://acme.example/agents/ops/x", "write_file", Visibility::Hidden),
    ] {
        assert_eq!(tool_visibility(&b, &who(agent_id), s, name, now()), want, "{agent_id} {name}");
    }
    // A tool that only a step-up rule reaches is listed as needing approval.
    let mut v = mcp_bundle();
    v["rules"][0]["agents"] = json!(["spiffe://acme.example/agents/finance/*"]);
    let b = compiled(v);
    let pay = server(&b, "mcp.pay.acme.example", "/mcp");
    assert_eq!(tool_visibility(&b, &who(BOT), pay, "refund", now()), Visibility::NeedsApproval);
}

#[test]
fn decide_with_args_matches_decide_without_conditions() {
    let b = compiled(mcp_bundle());
    let tool = b.tool_by_id("pay.lookup");
    let facts = Facts { tool, ..who(BOT) };
    let plain = warden_core::decide::decide(&b, &facts, now());
    assert_eq!(decide_with_args(&b, &facts, Some(&json!({"x": 1})), now()), plain);
    // A rule with conditions seen through plain `decide` (no arguments): never loosens.
    let facts = Facts { tool: b.tool_by_id("pay.refund"), ..who(BOT) };
    let d = warden_core::decide::decide(&b, &facts, now());
    assert_eq!((d.outcome.as_str(), d.reason.code()), ("deny", "invalid_arguments"));
}

#[test]
fn mcp_validation_errors() {
    let errs = |patch: &dyn Fn(&mut Value)| -> Vec<String> {
        let mut v = mcp_bundle();
        patch(&mut v);
        match try_compile(v) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    };
    let cases: Vec<ValidationCase<'_>> = vec![
        ("valid", Box::new(|_| {}), vec![]),
        ("bad server name", Box::new(|v| v["mcp_servers"][0]["name"] = json!("Pay")), vec![
            "/mcp_servers/0/name: invalid id \"Pay\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit",
            "/tools/0/mcp/0/server: unknown MCP server \"payments\"",
            "/tools/1/mcp/0/server: unknown MCP server \"payments\"",
            "/tools/2/mcp/0/server: unknown MCP server \"payments\"",
        ]),
        ("duplicate server", Box::new(|v| v["mcp_servers"][1]["name"] = json!("payments")), vec![
            "/mcp_servers/1/name: duplicate MCP server name \"payments\" (first defined at /mcp_servers/0)",
            "/tools/3/mcp/0/server: unknown MCP server \"docs\"",
            "/tools/3/mcp/1/server: unknown MCP server \"docs\"",
            "/tools/3/mcp/2/server: unknown MCP server \"docs\"",
            "/tools/3/mcp/3/server: unknown MCP server \"docs\"",
            "/tools/4/mcp/0/server: unknown MCP server \"docs\"",
            "/tools/5/mcp/0/server: unknown MCP server \"docs\"",
            "/tools/5/mcp/1/server: unknown MCP server \"docs\"",
        ]),
        ("same endpoint", Box::new(|v| v["mcp_servers"][2] = json!({"name": "x", "host": "mcp.pay.acme.example", "path": "/mcp"})), vec![
            "/mcp_servers/2: same host and path as /mcp_servers/0: a request must reach one MCP server",
        ]),
        ("path with a parameter", Box::new(|v| v["mcp_servers"][0]["path"] = json!("/mcp/{id}")), vec![
            "/mcp_servers/0/path: invalid MCP path \"/mcp/{id}\": literal segments only, no trailing \"/\"",
        ]),
        ("lifecycle step_up", Box::new(|v| v["mcp_servers"][0]["lifecycle"] = json!("step_up")), vec![
            "/mcp_servers/0/lifecycle: must be \"allow\" or \"deny\"",
        ]),
        ("two kinds in a binding", Box::new(|v| v["tools"][0]["mcp"][0]["prompt"] = json!("p")), vec![
            "/tools/0/mcp/0: give exactly one of \"tool\", \"resource\", \"prompt\", \"method\"",
        ]),
        ("ambiguous tool name", Box::new(|v| v["tools"][1]["mcp"][0]["tool"] = json!("refund")), vec![
            "/tools/1/mcp/0/tool: ambiguous: tool \"refund\" of server \"payments\" already reaches tool \"pay.refund\"",
        ]),
        ("tools/call as a method", Box::new(|v| v["tools"][5]["mcp"][1]["method"] = json!("tools/call")), vec![
            "/tools/5/mcp/1/method: \"tools/call\" is bound by \"tool\", \"resource\" or \"prompt\", not \"method\"",
        ]),
        ("bad pointer", Box::new(|v| v["rules"][0]["conditions"][0]["argument"] = json!("amount")), vec![
            "/rules/0/conditions/0/argument: invalid argument pointer \"amount\": a JSON Pointer such as \"/amount\"",
        ]),
        ("two tests", Box::new(|v| v["rules"][0]["conditions"][1]["prefix"] = json!("U")), vec![
            "/rules/0/conditions/1: more than one test: give exactly one of \"equals\", \"one_of\", \"min\"/\"max\"/\"exclusive_min\"/\"exclusive_max\", \"prefix\", \"path_prefix\", \"glob\", \"present\"",
        ]),
        ("no test", Box::new(|v| v["rules"][0]["conditions"][1] = json!({"argument": "/x"})), vec![
            "/rules/0/conditions/1: no test: give one of \"equals\", \"one_of\", \"min\"/\"max\"/\"exclusive_min\"/\"exclusive_max\", \"prefix\", \"path_prefix\", \"glob\", \"present\"",
        ]),
        ("empty range", Box::new(|v| v["rules"][0]["conditions"][0]["exclusive_min"] = json!(500)), vec![
            "/rules/0/conditions/0: empty range: the lower bound is above the upper bound",
        ]),
        ("mixed one_of", Box::new(|v| v["rules"][0]["conditions"][1]["one_of"] = json!(["USD", 1])), vec![
            "/rules/0/conditions/1/one_of: must be a non-empty list of strings, or of numbers, or of booleans (one type)",
        ]),
        ("equals an object", Box::new(|v| v["rules"][0]["conditions"][1] = json!({"argument": "/c", "equals": {}})), vec![
            "/rules/0/conditions/1/equals: must be a string, number, boolean or null",
        ]),
        ("unclean path prefix", Box::new(|v| v["rules"][4]["conditions"][0]["path_prefix"] = json!("/srv/../etc")), vec![
            "/rules/4/conditions/0/path_prefix: invalid path \"/srv/../etc\": an absolute path without empty, \".\" or \"..\" segments, \"\\\" or control characters",
        ]),
        ("empty conditions", Box::new(|v| v["rules"][0]["conditions"] = json!([])), vec![
            "/rules/0/conditions: empty list: omit the field to match everything",
        ]),
    ];
    for (name, patch, want) in cases {
        assert_eq!(errs(&*patch), want, "case {name}");
    }
}

#[test]
fn canonical_arguments_and_digest() {
    for (input, want) in [
        (json!({"b": 1, "a": [true, null, "x\n"], "é": 1.5e3}), r#"{"a":[true,null,"x\n"],"b":1,"é":1500}"#),
        (json!({"amount": 100.0}), r#"{"amount":100}"#),
        (json!({"amount": 100}), r#"{"amount":100}"#),
        (json!({"n": 1e21, "m": 1e-7, "k": 0.5}), r#"{"k":0.5,"m":1e-7,"n":1e+21}"#),
        (json!({"big": 12345678901234567890u64}), r#"{"big":12345678901234567890}"#),
        (json!({"s": "\u{1}\"\\/€"}), r#"{"s":"\u0001\"\\/€"}"#),
        // UTF-16 order: U+1F600 (surrogates D83D DE00) sorts before U+E000, unlike UTF-8 byte order.
        (json!({"\u{1F600}": 1, "\u{E000}": 2}), "{\"\u{1F600}\":1,\"\u{E000}\":2}"),
        (json!({"nested": {"z": [], "a": {}}}), r#"{"nested":{"a":{},"z":[]}}"#),
    ] {
        assert_eq!(canonical_json(&input), want, "{input}");
    }
    assert_eq!(arguments_digest(None), "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    assert_eq!(arguments_digest(Some(&json!({}))), arguments_digest(None));
    // Key order and number spelling do not change the digest; a different amount does.
    let a =
        parse_body(call("refund", json!({})).replace("{}", r#"{"currency":"USD","amount":100.0}"#).as_bytes(), false)
            .unwrap();
    let b = parse_body(
        call("refund", json!({})).replace("{}", r#"{ "amount" : 1e2, "currency" : "USD" }"#).as_bytes(),
        false,
    )
    .unwrap();
    let c = parse_body(call("refund", json!({"amount": 101, "currency": "USD"})).as_bytes(), false).unwrap();
    let d = |body: &warden_core::mcp::McpBody| arguments_digest(body.messages[0].arguments());
    assert_eq!(d(&a), d(&b));
    assert_ne!(d(&a), d(&c));
}

#[test]
fn conditional_step_up_ranks_with_denies_only_when_unknown() {
    let mut v = mcp_bundle();
    v["rules"] = json!([
        {"id": "a-allow", "effect": "allow", "tools": ["pay.refund"]},
        {"id": "b-step", "effect": "step_up", "tools": ["pay.refund"], "step_up": {"approvers": ["approvals"]},
         "conditions": [{"argument": "/amount", "min": 100}]},
        {"id": "c-deny", "effect": "deny", "tools": ["pay.refund"], "conditions": [{"argument": "/to", "equals": "x"}]}
    ]);
    let b = compiled(v);
    let facts = Facts { tool: b.tool_by_id("pay.refund"), ..who(BOT) };
    for (args, want) in [
        (json!({"amount": 5, "to": "y"}), ("allow", "allowed_by_rule", "a-allow")),
        (json!({"amount": 500, "to": "y"}), ("step_up", "step_up_required", "b-step")),
        (json!({"amount": 500, "to": "x"}), ("deny", "denied_by_rule", "c-deny")),
        (json!({"to": "x"}), ("deny", "invalid_arguments", "b-step")), // earliest of the denials names it
        (json!({"amount": 5}), ("deny", "invalid_arguments", "c-deny")),
        (json!({"amount": 5, "to": 7}), ("deny", "invalid_arguments", "c-deny")),
    ] {
        let d = decide_with_args(&b, &facts, Some(&args), now());
        assert_eq!((d.outcome.as_str(), d.reason.code(), d.rule_id()), want, "{args}");
    }
}
