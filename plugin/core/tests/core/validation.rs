//! Every bundle validation error, with its exact location and message (table-driven).

use crate::common;

use common::{base, try_compile};
use serde_json::{json, Value};

const BAD_TIME: &str = "expected RFC 3339 in UTC, like \"2026-11-28T10:00:00Z\"";
const EMPTY_LIST: &str = "empty list: omit the field to match everything";
const AGENT_HINT: &str = "use an exact id, a prefix ending in \"/*\", or \"*\"";

/// Applies `mutate` to the valid base bundle, compiles, and compares the full error list (location, message).
fn check(name: &str, mutate: fn(&mut Value), expected: &[(&str, &str)]) {
    let mut v = base();
    mutate(&mut v);
    let got: Vec<(String, String)> = match try_compile(v) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| (e.location, e.message)).collect(),
    };
    let want: Vec<(String, String)> = expected.iter().map(|(l, m)| (l.to_string(), m.to_string())).collect();
    assert_eq!(got, want, "case {name}");
}

fn push_tool(v: &mut Value, tool: Value) {
    v["tools"].as_array_mut().unwrap().push(tool);
}

fn push_rule(v: &mut Value, rule: Value) {
    v["rules"].as_array_mut().unwrap().push(rule);
}

#[test]
fn base_bundle_is_valid() {
    check("base", |_| {}, &[]);
}

#[test]
fn header_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let bad_issued = format!("invalid timestamp \"2026-11-01\": {BAD_TIME}");
    let bad_expires = format!("invalid timestamp \"2027-12-31T00:00:00+01:00\": {BAD_TIME}");
    let cases: &[Case] = &[
        (
            "format",
            |v| v["format"] = json!("warden.bundle/v2"),
            &[("/format", "unsupported format \"warden.bundle/v2\": expected \"warden.bundle/v1\"")],
        ),
        (
            "expires before issued",
            |v| v["expires_at"] = json!("2026-10-31T23:59:59Z"),
            &[("/expires_at", "must be later than issued_at")],
        ),
        (
            "expires equals issued",
            |v| v["expires_at"] = json!("2026-11-01T00:00:00Z"),
            &[("/expires_at", "must be later than issued_at")],
        ),
        ("owner empty", |v| v["owner"] = json!("  "), &[("/owner", "must not be empty")]),
        ("authority empty", |v| v["authority"] = json!(""), &[("/authority", "must not be empty")]),
        (
            "unknown_tool step_up",
            |v| v["defaults"] = json!({"unknown_tool": "step_up"}),
            &[(
                "/defaults/unknown_tool",
                "must be \"deny\" or \"allow\": step_up needs a known tool to bind the approval to",
            )],
        ),
        (
            "revoked agent empty",
            |v| v["revocations"] = json!({"agents": ["a", ""]}),
            &[("/revocations/agents/1", "must not be empty")],
        ),
        (
            "revoked task empty",
            |v| v["revocations"] = json!({"tasks": [""]}),
            &[("/revocations/tasks/0", "must not be empty")],
        ),
        (
            "revoked token empty",
            |v| v["revocations"] = json!({"token_ids": [""]}),
            &[("/revocations/token_ids/0", "must not be empty")],
        ),
        (
            "revoked signing key empty",
            |v| v["revocations"] = json!({"signing_keys": [""]}),
            &[("/revocations/signing_keys/0", "must not be empty")],
        ),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
    // Messages that embed the input are built at run time.
    let mut v = base();
    v["issued_at"] = json!("2026-11-01");
    v["expires_at"] = json!("2027-12-31T00:00:00+01:00");
    let errs = try_compile(v).unwrap_err().0;
    let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.location.as_str(), e.message.as_str())).collect();
    assert_eq!(got, vec![("/issued_at", bad_issued.as_str()), ("/expires_at", bad_expires.as_str())]);
}

#[test]
fn tool_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        ("duplicate tool id", |v| push_tool(v, json!({"id": "crm.contacts.read", "sensitivity": "read"})), &[(
            "/tools/4/id",
            "duplicate tool id \"crm.contacts.read\" (first defined at /tools/0)",
        )]),
        ("tool id upper case", |v| v["tools"][0]["id"] = json!("CRM.contacts.read"), &[
            ("/tools/0/id", "invalid id \"CRM.contacts.read\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit"),
            // The rule's `crm.*` now only selects crm.contacts.update, which is not `read`.
            ("/rules/0", "selects no tool: none of its tools has one of its sensitivities"),
        ]),
        ("tool id starts with dot", |v| push_tool(v, json!({"id": ".x", "sensitivity": "read"})), &[(
            "/tools/4/id",
            "invalid id \".x\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit",
        )]),
        ("host with port", |v| v["tools"][0]["http"][0]["host"] = json!("crm.acme.example:8443"), &[(
            "/tools/0/http/0/host",
            "invalid host \"crm.acme.example:8443\": must not include a port",
        )]),
        ("host wildcard in the middle", |v| v["tools"][0]["http"][0]["host"] = json!("crm.*.example"), &[(
            "/tools/0/http/0/host",
            "invalid host \"crm.*.example\": \"*\" may only be the first label, as in \"*.example.com\"",
        )]),
        ("host bare star", |v| v["tools"][0]["http"][0]["host"] = json!("*"), &[(
            "/tools/0/http/0/host",
            "invalid host \"*\": \"*\" may only be the first label, as in \"*.example.com\"",
        )]),
        ("host empty label", |v| v["tools"][0]["http"][0]["host"] = json!("crm..example"), &[(
            "/tools/0/http/0/host",
            "invalid host \"crm..example\": empty label",
        )]),
        ("host underscore", |v| v["tools"][0]["http"][0]["host"] = json!("crm_acme.example"), &[(
            "/tools/0/http/0/host",
            "invalid host \"crm_acme.example\": labels are letters, digits and \"-\"",
        )]),
        ("method lower case", |v| v["tools"][0]["http"][0]["methods"] = json!(["GET", "get"]), &[(
            "/tools/0/http/0/methods/1",
            "invalid method \"get\": use an upper-case HTTP method such as \"GET\"",
        )]),
        ("ambiguous route", |v| {
            push_tool(v, json!({"id": "crm.contacts.get", "sensitivity": "read",
                "http": [{"host": "CRM.acme.example", "methods": ["POST", "GET"], "path": "/contacts/{contact}"}]}))
        }, &[(
            "/tools/4/http/0",
            "ambiguous route: same host, method and path as /tools/0/http/0 (tool \"crm.contacts.read\")",
        )]),
        ("ambiguous rest route", |v| {
            v["tools"][0]["http"][0]["path"] = json!("/files/**");
            v["tools"][1]["http"][0] = json!({"host": "crm.acme.example", "methods": ["GET"], "path": "/files/{p...}"});
        }, &[(
            "/tools/1/http/0",
            "ambiguous route: same host, method and path as /tools/0/http/0 (tool \"crm.contacts.read\")",
        )]),
        ("same route twice in one tool is fine", |v| {
            let route = json!({"host": "crm.acme.example", "methods": ["GET"], "path": "/contacts/{x}"});
            v["tools"][0]["http"].as_array_mut().unwrap().push(route);
        }, &[]),
        ("method-specific and any-method routes do not clash", |v| {
            push_tool(v, json!({"id": "crm.contacts.any", "sensitivity": "read",
                "http": [{"host": "crm.acme.example", "path": "/contacts/{id}"}]}))
        }, &[]),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
}

#[test]
fn path_pattern_errors() {
    let cases: &[(&str, &str)] = &[
        ("contacts/{id}", "must start with \"/\""),
        ("/contacts?x=1", "must not contain a query or fragment"),
        ("/contacts#top", "must not contain a query or fragment"),
        ("/contacts//{id}", "empty segment (\"//\" never matches a normalized path)"),
        ("/contacts/../{id}", "\".\" and \"..\" segments never match a normalized path"),
        ("/./contacts", "\".\" and \"..\" segments never match a normalized path"),
        ("/files/**/raw", "\"{name...}\" and \"**\" must be the last segment"),
        ("/files/{rest...}/raw", "\"{name...}\" and \"**\" must be the last segment"),
        ("/contacts/{1id}", "invalid parameter name \"1id\""),
        ("/contacts/{}", "invalid parameter name \"\""),
        ("/contacts/{id}/notes/{id}", "duplicate parameter name \"id\""),
        ("/v{version}/contacts", "a segment is literal text, \"{name}\", \"{name...}\" or \"**\", not a mix"),
        ("/contacts/*", "a segment is literal text, \"{name}\", \"{name...}\" or \"**\", not a mix"),
        ("/files/a**", "a segment is literal text, \"{name}\", \"{name...}\" or \"**\", not a mix"),
        ("/con tacts", "invalid character ' '"),
        ("/con\\tacts", "invalid character '\\\\'"),
        ("/caf\u{e9}", "non-ASCII characters must be percent-encoded"),
        ("/a%2fb", "percent-escapes are \"%\" and two upper-case hex digits"),
        ("/a%2", "percent-escapes are \"%\" and two upper-case hex digits"),
        ("/%41bc", "\"%41\" escapes an unreserved character; write \"A\" (paths are matched decoded)"),
    ];
    for (pattern, detail) in cases {
        let mut v = base();
        v["tools"][0]["http"][0]["path"] = json!(pattern);
        let errs = try_compile(v).err().map(|e| e.0).unwrap_or_default();
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.location.as_str(), e.message.as_str())).collect();
        let message = format!("invalid path pattern \"{pattern}\": {detail}");
        assert_eq!(got, vec![("/tools/0/http/0/path", message.as_str())], "pattern {pattern}");
    }
    // Valid patterns, for contrast.
    for pattern in ["/", "/contacts/", "/a%2Fb", "/files/{path...}", "/files/**", "/a-b_c.d~e/{x_1}", "/v1/{a}/{b}"] {
        let mut v = base();
        v["tools"][0]["http"][0]["path"] = json!(pattern);
        assert!(try_compile(v).is_ok(), "pattern {pattern} should be valid");
    }
    let mut v = base();
    v["tools"][0]["http"][0]["path"] = json!(format!("/{}", vec!["a"; 65].join("/")));
    let errs = try_compile(v).unwrap_err().0;
    assert!(errs[0].message.ends_with("too many segments (at most 64)"), "{errs:?}");
}

#[test]
fn rule_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        ("duplicate rule id", |v| push_rule(v, json!({"id": "read-crm", "effect": "deny"})), &[(
            "/rules/2/id",
            "duplicate rule id \"read-crm\" (first defined at /rules/0)",
        )]),
        ("bad rule id", |v| v["rules"][1]["id"] = json!("No Admin"), &[(
            "/rules/1/id",
            "invalid id \"No Admin\": use lower-case letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit",
        )]),
        ("unknown tool", |v| v["rules"][0]["tools"] = json!(["crm.contacts.read", "crm.contacts.list"]), &[(
            "/rules/0/tools/1",
            "unknown tool \"crm.contacts.list\"",
        )]),
        ("pattern matches no tool", |v| v["rules"][0]["tools"] = json!(["crm.*", "billing.*"]), &[(
            "/rules/0/tools/1",
            "pattern \"billing.*\" matches no tool",
        )]),
        ("pattern is a namespace, not a prefix", |v| v["rules"][0]["tools"] = json!(["crm.con.*"]), &[(
            "/rules/0/tools/0",
            "pattern \"crm.con.*\" matches no tool",
        )]),
        ("tool selector without dot", |v| v["rules"][0]["tools"] = json!(["crm*"]), &[(
            "/rules/0/tools/0",
            "invalid tool selector \"crm*\": use a tool id, \"namespace.*\" or \"*\"",
        )]),
        ("tool selector suffix pattern", |v| v["rules"][0]["tools"] = json!(["*.read"]), &[(
            "/rules/0/tools/0",
            "invalid tool selector \"*.read\": use a tool id, \"namespace.*\" or \"*\"",
        )]),
        ("empty agents", |v| v["rules"][0]["agents"] = json!([]), &[("/rules/0/agents", EMPTY_LIST)]),
        ("empty tools", |v| v["rules"][0]["tools"] = json!([]), &[("/rules/0/tools", EMPTY_LIST)]),
        ("empty sensitivities", |v| v["rules"][0]["sensitivities"] = json!([]), &[(
            "/rules/0/sensitivities",
            EMPTY_LIST,
        )]),
        ("empty environments", |v| v["rules"][0]["environments"] = json!([]), &[(
            "/rules/0/environments",
            EMPTY_LIST,
        )]),
        ("empty task purposes", |v| v["rules"][0]["task_purposes"] = json!([]), &[(
            "/rules/0/task_purposes",
            EMPTY_LIST,
        )]),
        ("empty issuers", |v| v["rules"][0]["issuers"] = json!([]), &[("/rules/0/issuers", EMPTY_LIST)]),
        ("empty environment name", |v| v["rules"][0]["environments"] = json!(["prod", ""]), &[(
            "/rules/0/environments/1",
            "must not be empty",
        )]),
        ("unknown issuer", |v| v["rules"][0]["issuers"] = json!(["idp", "okta"]), &[(
            "/rules/0/issuers/1",
            "unknown issuer \"okta\"",
        )]),
        ("sensitivity no tool has", |v| {
            v["tools"].as_array_mut().unwrap().remove(2);
            v["rules"][0]["sensitivities"] = json!(["read", "payment"]);
        }, &[("/rules/0/sensitivities/1", "no tool in the catalog has sensitivity \"payment\"")]),
        ("tools and sensitivities disjoint", |v| v["rules"][0]["sensitivities"] = json!(["payment"]), &[(
            "/rules/0",
            "selects no tool: none of its tools has one of its sensitivities",
        )]),
        ("bad rule expires_at", |v| v["rules"][0]["expires_at"] = json!("next week"), &[(
            "/rules/0/expires_at",
            "invalid timestamp \"next week\": expected RFC 3339 in UTC, like \"2026-11-28T10:00:00Z\"",
        )]),
        ("exception without expires_at", |v| {
            v["rules"][0]["exception"] =
                json!({"approver": "ciso@acme.example", "ticket": "SEC-1", "granted_at": "2026-12-01T00:00:00Z"})
        }, &[("/rules/0/expires_at", "missing: an exception must have expires_at")]),
        ("exception on a deny rule", |v| {
            v["rules"][1]["exception"] =
                json!({"approver": "ciso@acme.example", "ticket": "SEC-1", "granted_at": "2026-12-15T00:00:00Z"});
            v["rules"][1]["expires_at"] = json!("2027-01-01T00:00:00Z");
        }, &[("/rules/1/exception", "only allow rules can be exceptions; this rule's effect is \"deny\"")]),
        ("exception on a step-up rule", |v| {
            v["rules"][1]["effect"] = json!("step_up");
            v["rules"][1]["step_up"] = json!({"approvers": ["approvals"]});
            v["rules"][1]["exception"] =
                json!({"approver": "ciso@acme.example", "ticket": "SEC-1", "granted_at": "2026-12-15T00:00:00Z"});
            v["rules"][1]["expires_at"] = json!("2027-01-01T00:00:00Z");
        }, &[("/rules/1/exception", "only allow rules can be exceptions; this rule's effect is \"step_up\"")]),
        ("exception without approver or ticket", |v| {
            v["rules"][0]["exception"] = json!({"approver": " ", "ticket": "", "granted_at": "2026-12-15T00:00:00Z"});
            v["rules"][0]["expires_at"] = json!("2027-01-01T00:00:00Z");
        }, &[("/rules/0/exception/approver", "must not be empty"), ("/rules/0/exception/ticket", "must not be empty")]),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
}

#[test]
fn agent_pattern_errors() {
    for pattern in [
        "",
        "/*",
        "spiffe://acme.example/agents*",
        "spiffe://acme.example/*/bot",
        "spiffe://acme.example/agents/**",
        "spiffe://acme.example/agents/ bot",
        "*/",
        "**",
    ] {
        let mut v = base();
        v["rules"][0]["agents"] = json!([pattern]);
        let errs = try_compile(v).err().map(|e| e.0).unwrap_or_default();
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.location.as_str(), e.message.as_str())).collect();
        let message = format!("invalid agent pattern \"{pattern}\": {AGENT_HINT}");
        assert_eq!(got, vec![("/rules/0/agents/0", message.as_str())], "pattern {pattern:?}");
    }
    for pattern in ["*", "spiffe://acme.example/agents/*", "spiffe://*", "spiffe://acme.example/agents/bot-1", "bot"] {
        let mut v = base();
        v["rules"][0]["agents"] = json!([pattern]);
        assert!(try_compile(v).is_ok(), "pattern {pattern:?} should be valid");
    }
}

#[test]
fn all_errors_at_once_in_bundle_order() {
    let mut v = base();
    v["format"] = json!("v0");
    v["tools"][1]["id"] = json!("crm.contacts.read");
    v["rules"][0]["tools"] = json!(["nope"]);
    v["rules"][1]["agents"] = json!(["a*b"]);
    v["defaults"] = json!({"unknown_tool": "step_up"});
    let errs = try_compile(v).unwrap_err();
    let text = errs.to_string();
    assert_eq!(
        text,
        [
            "/format: unsupported format \"v0\": expected \"warden.bundle/v1\"",
            "/tools/1/id: duplicate tool id \"crm.contacts.read\" (first defined at /tools/0)",
            "/rules/0/tools/0: unknown tool \"nope\"",
            &format!("/rules/1/agents/0: invalid agent pattern \"a*b\": {AGENT_HINT}"),
            "/defaults/unknown_tool: must be \"deny\" or \"allow\": step_up needs a known tool to bind the approval to",
        ]
        .join("\n")
    );
}

#[test]
fn unknown_fields_are_refused_by_the_format() {
    let mut v = base();
    v["rules"][0]["agent"] = json!(["*"]);
    let err = serde_json::from_value::<warden_core::bundle::Bundle>(v).unwrap_err().to_string();
    assert!(err.contains("unknown field `agent`"), "{err}");
}

#[test]
fn issuer_errors_come_through_compile() {
    // The messages are the identity module's (tested there); compile reports them with the rest, in bundle order.
    let mut v = base();
    let dup = v["issuers"][0].clone();
    v["issuers"].as_array_mut().unwrap().push(dup);
    v["format"] = json!("v0");
    v["rules"][0]["issuers"] = json!(["idp"]);
    let errs = try_compile(v).unwrap_err().0;
    let locations: Vec<&str> = errs.iter().map(|e| e.location.as_str()).collect();
    assert_eq!(locations.first(), Some(&"/format"), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.location == "/issuers/1/id" && e.message.starts_with("duplicate issuer id")),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| !e.location.starts_with("/rules")), "a known issuer id stays known: {errs:?}");
}

#[test]
fn approver_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        ("bad id", |v| v["approvers"][0]["id"] = json!("Fin"), &[(
            "/approvers/0/id",
            "bad approver id \"Fin\": use [a-z0-9][a-z0-9._-]*",
        )]),
        ("duplicate id and iss", |v| {
            let dup = v["approvers"][0].clone();
            v["approvers"].as_array_mut().unwrap().push(dup);
        }, &[
            ("/approvers/1/id", "duplicate approver id \"approvals\" (also /approvers/0/id)"),
            ("/approvers/1/iss", "duplicate iss \"https://approvals.acme.example\" (also /approvers/0/iss)"),
        ]),
        ("empty iss", |v| v["approvers"][0]["iss"] = json!(""), &[("/approvers/0/iss", "must not be empty")]),
        ("symmetric and unsupported algorithms", |v| v["approvers"][0]["algorithms"] = json!(["EdDSA", "HS256", "none", "XS1"]), &[
            ("/approvers/0/algorithms/1", "\"HS256\" is symmetric (HMAC): approvals must be signed with an asymmetric key"),
            ("/approvers/0/algorithms/2", "\"none\" is never accepted: tokens must be signed"),
            ("/approvers/0/algorithms/3", "unsupported algorithm \"XS1\" (supported: EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512)"),
        ]),
        ("no algorithms", |v| v["approvers"][0]["algorithms"] = json!([]), &[
            ("/approvers/0/algorithms", "at least one algorithm is required"),
        ]),
        ("key without kid", |v| {
            v["approvers"][0]["jwks"]["keys"][0].as_object_mut().unwrap().remove("kid");
        }, &[("/approvers/0/jwks/keys/0", "\"kid\" is missing: every approver key needs a key id")]),
        ("symmetric key", |v| v["approvers"][0]["jwks"]["keys"] = json!([{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]), &[
            ("/approvers/0/jwks/keys/0", "symmetric key (kty \"oct\") is never accepted: approver keys must be public keys"),
        ]),
        ("key fits no algorithm", |v| v["approvers"][0]["algorithms"] = json!(["ES256"]), &[
            ("/approvers/0/jwks/keys/0", "key \"alg\" \"EdDSA\" is not in the approver's algorithms"),
        ]),
        ("no keys", |v| v["approvers"][0]["jwks"]["keys"] = json!([]), &[
            ("/approvers/0/jwks/keys", "at least one key is required"),
        ]),
        ("max age zero", |v| v["approvers"][0]["max_approval_age_seconds"] = json!(0), &[
            ("/approvers/0/max_approval_age_seconds", "must be 1 to 86400, found 0"),
        ]),
        ("max age over a day", |v| v["approvers"][0]["max_approval_age_seconds"] = json!(86401), &[
            ("/approvers/0/max_approval_age_seconds", "must be 1 to 86400, found 86401"),
        ]),
        ("skew", |v| v["approvers"][0]["clock_skew_seconds"] = json!(301), &[
            ("/approvers/0/clock_skew_seconds", "must be at most 300, found 301"),
        ]),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
}

fn step_up_rule(step_up: Value) -> Value {
    json!({"id": "refunds", "effect": "step_up", "tools": ["pay.refunds.create"], "step_up": step_up})
}

fn second_approver(v: &mut Value) {
    let mut other = v["approvers"][0].clone();
    other["id"] = json!("treasury");
    other["iss"] = json!("https://treasury.acme.example");
    other["max_approval_age_seconds"] = json!(120);
    v["approvers"].as_array_mut().unwrap().push(other);
}

#[test]
fn step_up_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        ("valid", |v| push_rule(v, step_up_rule(json!({"approvers": ["approvals"], "max_age_seconds": 600}))), &[]),
        (
            "step_up rule without step_up",
            |v| push_rule(v, json!({"id": "refunds", "effect": "step_up", "tools": ["pay.refunds.create"]})),
            &[(
                "/rules/2/step_up",
                "missing: a step_up rule must name the approvers whose approvals let a call through",
            )],
        ),
        (
            "step_up on an allow rule",
            |v| v["rules"][0]["step_up"] = json!({"approvers": ["approvals"]}),
            &[("/rules/0/step_up", "only step_up rules can have step_up; this rule's effect is \"allow\"")],
        ),
        (
            "step_up on a deny rule",
            |v| v["rules"][1]["step_up"] = json!({"approvers": ["approvals"]}),
            &[("/rules/1/step_up", "only step_up rules can have step_up; this rule's effect is \"deny\"")],
        ),
        (
            "no approvers",
            |v| push_rule(v, step_up_rule(json!({"approvers": []}))),
            &[("/rules/2/step_up/approvers", "at least one approver is required")],
        ),
        (
            "unknown and duplicate approvers",
            |v| {
                second_approver(v);
                push_rule(v, step_up_rule(json!({"approvers": ["approvals", "nope", "approvals"]})));
            },
            &[
                (
                    "/rules/2/step_up/approvers/1",
                    "unknown approver \"nope\" (known approvers: \"approvals\", \"treasury\")",
                ),
                ("/rules/2/step_up/approvers/2", "duplicate approver \"approvals\""),
            ],
        ),
        (
            "no approvers in the bundle",
            |v| {
                v["approvers"] = json!([]);
                push_rule(v, step_up_rule(json!({"approvers": ["approvals"]})));
            },
            &[("/rules/2/step_up/approvers/0", "unknown approver \"approvals\" (the bundle has no approvers)")],
        ),
        (
            "max age zero",
            |v| push_rule(v, step_up_rule(json!({"approvers": ["approvals"], "max_age_seconds": 0}))),
            &[("/rules/2/step_up/max_age_seconds", "must be at least 1")],
        ),
        (
            "max age above the smallest approver's",
            |v| {
                second_approver(v);
                push_rule(v, step_up_rule(json!({"approvers": ["approvals", "treasury"], "max_age_seconds": 121})));
            },
            &[(
                "/rules/2/step_up/max_age_seconds",
                "must be at most 120, the smallest max_approval_age_seconds of the rule's approvers, found 121",
            )],
        ),
        (
            "controls",
            |v| {
                v["rules"][0]["controls"] = json!(["OWASP-ASI02", " "]);
                v["rules"][1]["controls"] = json!([]);
            },
            &[
                ("/rules/0/controls/1", "must not be empty"),
                ("/rules/1/controls", "empty list: omit the field when the rule implements no tagged control"),
            ],
        ),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
}

fn exception_rule(granted_at: &str, expires_at: &str) -> Value {
    json!({"id": "temp", "effect": "allow", "tools": ["crm.contacts.update"], "expires_at": expires_at,
           "exception": {"approver": "ciso@acme.example", "ticket": "SEC-7", "granted_at": granted_at}})
}

#[test]
fn exception_errors() {
    type Case = (&'static str, fn(&mut Value), &'static [(&'static str, &'static str)]);
    let cases: &[Case] = &[
        ("exactly 30 days", |v| push_rule(v, exception_rule("2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z")), &[]),
        ("one second over 30 days", |v| push_rule(v, exception_rule("2026-12-01T00:00:00Z", "2026-12-31T00:00:01Z")), &[(
            "/rules/2/expires_at",
            "the exception lasts 30 days 00:00:01 from granted_at, longer than exception_policy.max_duration_days (30 days)",
        )]),
        ("a policy of 90 days", |v| {
            v["exception_policy"] = json!({"max_duration_days": 90});
            push_rule(v, exception_rule("2026-12-01T00:00:00Z", "2027-03-01T00:00:00Z"));
        }, &[]),
        ("over a policy of 7 days", |v| {
            v["exception_policy"] = json!({"max_duration_days": 7});
            push_rule(v, exception_rule("2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z"));
        }, &[(
            "/rules/2/expires_at",
            "the exception lasts 30 days from granted_at, longer than exception_policy.max_duration_days (7 days)",
        )]),
        ("granted after expiry", |v| push_rule(v, exception_rule("2026-12-31T00:00:00Z", "2026-12-31T00:00:00Z")), &[(
            "/rules/2/exception/granted_at",
            "must be earlier than expires_at",
        )]),
        ("bad granted_at", |v| push_rule(v, exception_rule("yesterday", "2026-12-31T00:00:00Z")), &[(
            "/rules/2/exception/granted_at",
            "invalid timestamp \"yesterday\": expected RFC 3339 in UTC, like \"2026-11-28T10:00:00Z\"",
        )]),
        ("policy days out of range", |v| v["exception_policy"] = json!({"max_duration_days": 0}), &[(
            "/exception_policy/max_duration_days",
            "must be 1 to 365, found 0",
        )]),
        ("policy days over a year", |v| v["exception_policy"] = json!({"max_duration_days": 366}), &[(
            "/exception_policy/max_duration_days",
            "must be 1 to 365, found 366",
        )]),
        ("policy environments", |v| v["exception_policy"] = json!({"environments": []}), &[(
            "/exception_policy/environments",
            "empty list: omit the field to allow exceptions in every environment",
        )]),
        ("policy environment empty", |v| v["exception_policy"] = json!({"environments": ["staging", ""]}), &[(
            "/exception_policy/environments/1",
            "must not be empty",
        )]),
        ("exception in a forbidden environment", |v| {
            v["exception_policy"] = json!({"environments": ["staging", "dev"]});
            let mut rule = exception_rule("2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z");
            rule["environments"] = json!(["staging", "prod"]);
            push_rule(v, rule);
        }, &[(
            "/rules/2/environments/1",
            "environment \"prod\" is not allowed for exceptions: exception_policy.environments is [\"staging\", \"dev\"]",
        )]),
        ("plain rules may select any environment", |v| {
            v["exception_policy"] = json!({"environments": ["staging"]});
            v["rules"][0]["environments"] = json!(["prod"]);
        }, &[]),
    ];
    for (name, mutate, expected) in cases {
        check(name, *mutate, expected);
    }
}
