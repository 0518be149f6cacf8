//! The JSON Schemas under `policies/` against the code that reads each format: every bundle `warden lint` refuses
//! whose check JSON Schema can express is refused by `policies/bundle.schema.json` too (and the others are accepted
//! by it, so the fixture's claims stay true); lint reports shape errors all at once, with "did you mean"; lint warns
//! about routes normalization never lets through.

use crate::support::*;
use serde_json::{json, Value};

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("policies").join(name)).unwrap();
    jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// Applies a JSON Patch (RFC 6902: add, replace, remove; `-` appends); a value `{"$copy": POINTER}` is the value at
/// that pointer.
fn patch(doc: &mut Value, ops: &[Value]) {
    for op in ops {
        let path = op["path"].as_str().unwrap();
        let mut value = op.get("value").cloned().unwrap_or(Value::Null);
        if let Some(from) = value.get("$copy").and_then(Value::as_str) {
            value = doc.pointer(from).unwrap().clone();
        }
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent} in the base bundle"));
        match (op["op"].as_str().unwrap(), target) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last, value);
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).unwrap_or_else(|| panic!("nothing to remove at {path}"));
            }
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), value),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = value,
            ("remove", Value::Array(a)) => {
                a.remove(last.parse().unwrap());
            }
            (op, _) => panic!("unsupported patch op {op} at {path}"),
        }
    }
}

/// Does a schema error at instance path `found` concern the place `at` (the same value, inside it, or the object
/// that lacks it)?
fn related(found: &str, at: &str) -> bool {
    found == at || found.starts_with(&format!("{at}/")) || (!found.is_empty() && at.starts_with(&format!("{found}/")))
}

/// Where a schema error is: its instance path, or for a missing or unknown member, that member's path.
fn places(e: &jsonschema::ValidationError<'_>) -> Vec<String> {
    use jsonschema::error::ValidationErrorKind as K;
    let at = e.instance_path().as_str().to_string();
    match e.kind() {
        K::AdditionalProperties { unexpected } => unexpected.iter().map(|n| format!("{at}/{n}")).collect(),
        K::Required { property } => vec![format!("{at}/{}", property.as_str().unwrap_or_default())],
        _ => vec![at],
    }
}

#[test]
fn every_refused_bundle_the_schema_can_express_is_refused_by_the_schema() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("control/tests/cli/fixtures/refused-bundles.json")).unwrap(),
    )
    .unwrap();
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(fixture["base"].as_str().unwrap())).unwrap())
            .unwrap();
    let validator = schema("bundle.schema.json");
    assert!(validator.is_valid(&base), "the base bundle must be valid");
    let s = Scratch::new("schema-fixtures");
    let mut problems = Vec::new();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 100, "the fixture lost cases: {}", cases.len());
    let mut expressible = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let at = case["at"].as_str().unwrap();
        let mut doc = base.clone();
        patch(&mut doc, case["patch"].as_array().unwrap());
        let path = s.write(&format!("case-{i}.json"), serde_json::to_string_pretty(&doc).unwrap());
        let o = warden(["lint".as_ref(), path.as_os_str()]);
        let out = stdout(&o);
        if o.status.code() != Some(1) || !out.lines().any(|l| l.contains(&format!(": {at}: "))) {
            problems.push(format!("{name}: lint should refuse it naming {at}; it said (exit {:?}):\n{out}", o.status));
        }
        let errors: Vec<String> = validator.iter_errors(&doc).flat_map(|e| places(&e)).collect();
        match &case["schema"] {
            Value::Bool(true) => {
                expressible += 1;
                if !errors.iter().any(|found| related(found, at)) {
                    problems.push(format!("{name}: the schema should refuse it at {at}; its errors: {errors:?}"));
                }
            }
            Value::String(why) => {
                assert!(!why.is_empty());
                if !errors.is_empty() {
                    problems.push(format!(
                        "{name}: marked as beyond JSON Schema ({why}) but the schema refuses it at {errors:?}: mark it \
                         \"schema\": true"
                    ));
                }
            }
            other => panic!("{name}: \"schema\" must be true or a reason, found {other}"),
        }
    }
    assert!(problems.is_empty(), "{} of {} cases:\n{}", problems.len(), cases.len(), problems.join("\n"));
    assert!(expressible * 4 >= cases.len() * 3, "most checks are expressible: {expressible} of {}", cases.len());
}

#[test]
fn lint_reports_every_shape_error_at_once_with_did_you_mean() {
    let s = Scratch::new("lint-shape");
    let mut b = example("finance-agent.json");
    b["rules"][0]["efect"] = b["rules"][0]["effect"].take();
    b["rules"][0].as_object_mut().unwrap().remove("effect");
    b["rules"][2]["effect"] = json!("alow");
    b["tools"][1]["sensitivity"] = json!("Read");
    b["issuers"][0]["jwks"]["keys"][0]["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    b["revision"] = json!("7");
    let path = s.write("shapes.json", pretty(&b));
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    let f = path.display();
    let lines: Vec<&str> = out.lines().collect();
    let expect = [
        format!("{f}:53:11: /issuers/0/jwks/keys/0: private key material in a public key set: publish only the public key (warden keygen writes it to the .jwks.json file)"),
        format!("{f}:103:15: /revision: expected an integer, found a string"),
        format!("{f}:115:5: /rules/0/effect: missing: this field is required"),
        format!("{f}:122:16: /rules/0/efect: unknown field \"efect\": did you mean \"effect\"?"),
        format!("{f}:165:17: /rules/2/effect: \"alow\" is not one of \"allow\", \"deny\", \"step_up\": did you mean \"allow\"?"),
        format!("{f}:223:22: /tools/1/sensitivity: \"Read\" is not one of \"read\", \"write\", \"payment\", \"admin\": did you mean \"read\"?"),
        format!("{f}: 6 errors"),
    ];
    assert_eq!(lines, expect.iter().map(String::as_str).collect::<Vec<_>>(), "{out}");
}

#[test]
fn compile_errors_suggest_the_id_that_was_meant() {
    let s = Scratch::new("lint-hints");
    let mut b = example("finance-agent.json");
    b["rules"][0]["tools"] = json!(["payments.payout.create", "payment.*"]);
    b["rules"][1]["step_up"]["approvers"] = json!(["payments-approval"]);
    let path = s.write("hints.json", pretty(&b));
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains(
            "/rules/0/tools/0: unknown tool \"payments.payout.create\": did you mean \"payments.payouts.create\"?"
        ),
        "{out}"
    );
    assert!(
        out.contains("/rules/0/tools/1: pattern \"payment.*\" matches no tool: did you mean \"payments.*\"?"),
        "{out}"
    );
    assert!(out.contains("/rules/1/step_up/approvers/0: unknown approver \"payments-approval\""), "{out}");
}

#[test]
fn lint_warns_about_what_no_request_can_reach() {
    let s = Scratch::new("lint-warn");
    let mut b = example("finance-agent.json");
    b["tools"][6]["http"][0]["path"] = json!("/v1/exports%2Fall/**");
    b["tools"][5]["http"][0]["path"] = json!("/invoices/{invoice_id}/void;jsessionid=1");
    b["tools"].as_array_mut().unwrap().push(json!({"id": "payments.disputes.read", "sensitivity": "read"}));
    b["rules"][3]["expires_at"] = json!("2026-11-01T00:00:00Z");
    b["rules"][3]["exception"]["granted_at"] = json!("2026-10-25T00:00:00Z");
    let path = s.write("warn.json", pretty(&b));
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 4, "{out}");
    assert!(warnings[0].contains("/tools/5/http/0/path: this route never matches: the gateway refuses every request path containing it before matching (path_semicolon"), "{out}");
    assert!(warnings[1].contains("/tools/6/http/0/path: this route never matches: the gateway refuses every request path containing it before matching (path_encoded_slash"), "{out}");
    assert!(warnings[2].contains("/tools/7: no request reaches tool \"payments.disputes.read\""), "{out}");
    assert!(warnings[3].contains("/rules/3/expires_at: rule \"q4-close-void-invoices\" never decides: it expires before the bundle is issued"), "{out}");
    assert!(out.ends_with(", 4 warnings\n"), "{out}");
    let o = warden(["lint".as_ref(), "--strict".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
}

#[test]
fn lint_and_report_recognise_a_signed_bundle() {
    let s = Scratch::new("lint-signed");
    let (key, _, _) = s.key(warden_core::envelope::Algorithm::EdDSA, "authority-1");
    let src = root().join("policies/examples/finance-agent.json");
    let signed = s.path("finance.jws");
    let o = warden([
        "sign".as_ref(),
        src.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        signed.as_os_str(),
    ]);
    assert_exit(&o, 0);
    for command in ["lint", "report"] {
        let o = warden([command.as_ref(), signed.as_os_str()]);
        let said = format!("{}{}", stdout(&o), stderr(&o));
        assert!(said.contains("this is a signed bundle (JWS), not bundle JSON"), "{command}: {said}");
        assert!(o.status.code() != Some(0), "{command}");
    }
    // Not JSON and not a JWS either: a syntax error, not "signed".
    let garbage = s.write("garbage.json", "hello world\n");
    let o = warden(["lint".as_ref(), garbage.as_os_str()]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("1:1: expected value"), "{}", stdout(&o));
}

/// (case, document, what JSON Schema cannot express about it, or "" when the schema must agree with the code).
type Row = (&'static str, Value, &'static str);

/// For each row: the code's verdict (`accepts`) and the schema's must agree, unless the row names a reason the
/// schema cannot tell (then the schema must accept it and the code refuse it).
fn agree(validator: &jsonschema::Validator, rows: &[Row], accepts: impl Fn(&Value) -> Result<(), String>) {
    let mut problems = Vec::new();
    for (name, doc, beyond) in rows {
        let code = accepts(doc);
        let schema: Vec<String> =
            validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path().as_str())).collect();
        match (beyond.is_empty(), &code, schema.is_empty()) {
            (true, Ok(()), true) | (true, Err(_), false) | (false, Err(_), true) => {}
            (true, Ok(()), false) => {
                problems.push(format!("{name}: the code accepts it, the schema refuses: {schema:?}"))
            }
            (true, Err(e), true) => problems.push(format!("{name}: the code refuses it ({e}), the schema accepts it")),
            (false, Ok(()), _) => {
                problems.push(format!("{name}: marked as refused by the code only, but it accepts it"))
            }
            (false, Err(_), false) => problems
                .push(format!("{name}: marked as beyond JSON Schema ({beyond}) but the schema refuses it: {schema:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cases_schema_accepts_the_examples_and_refuses_what_warden_test_refuses() {
    let validator = schema("cases.schema.json");
    for name in ["coding-agent", "finance-agent", "payments-mcp", "support-agent"] {
        let cases = example(&format!("{name}.cases.json"));
        let errors: Vec<String> = validator.iter_errors(&cases).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    // The token failure codes the schema offers are the core's.
    let text = std::fs::read_to_string(root().join("policies/cases.schema.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut listed: Vec<&str> =
        doc["$defs"]["token_failure"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut codes: Vec<&str> = warden_core::facts::TokenFailure::ALL.iter().map(|f| f.code()).collect();
    codes.push("missing");
    listed.sort_unstable();
    codes.sort_unstable();
    assert_eq!(listed, codes, "policies/cases.schema.json token_failure must list every TokenFailure code");

    let agent = json!({"id": "spiffe://acme.example/agents/finance/reconciler", "issuer": "acme-workload"});
    let http = json!({"host": "payments.acme.example", "method": "GET", "path": "/v1/charges/ch_1"});
    let ok = json!({"name": "reads", "agent": agent, "http": http, "expect": {"decision": "allow"}});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = ok.clone();
        f(&mut c);
        json!({"defaults": {"environment": "prod", "time": "2026-11-28T10:00:00Z"}, "cases": [c]})
    };
    let rows: Vec<Row> = vec![
        ("valid", with(&|_| {}), ""),
        (
            "valid list form",
            json!([{"name": "t", "agent": "missing", "tool": "payments.charges.read",
            "environment": "prod", "expect": {"decision": "deny", "reason": "token_missing"}}]),
            "",
        ),
        ("unknown top-level field", json!({"cases": [], "default": {}}), ""),
        ("no cases member", json!({"defaults": {}}), ""),
        (
            "case without a name",
            with(&|c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            "",
        ),
        ("agent code misspelt", with(&|c| c["agent"] = json!("token_expird")), ""),
        (
            "agent without issuer",
            with(&|c| {
                c["agent"].as_object_mut().unwrap().remove("issuer");
            }),
            "",
        ),
        ("both tool and http", with(&|c| c["tool"] = json!("payments.charges.read")), ""),
        (
            "neither tool nor http",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
            }),
            "",
        ),
        (
            "http without method",
            with(&|c| {
                c["http"].as_object_mut().unwrap().remove("method");
            }),
            "",
        ),
        ("expected decision permit", with(&|c| c["expect"]["decision"] = json!("permit")), ""),
        ("unknown field in expect", with(&|c| c["expect"]["rules"] = json!("x")), ""),
        ("time not RFC 3339", with(&|c| c["time"] = json!("yesterday")), ""),
        ("task without id", with(&|c| c["agent"]["task"] = json!({"purpose": "x"})), ""),
        (
            "issuer not in the bundle",
            with(&|c| c["agent"]["issuer"] = json!("okta")),
            "which issuers exist is the bundle's",
        ),
        (
            "tool not in the catalog",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["tool"] = json!("x.y");
            }),
            "which tools exist is the bundle's",
        ),
        ("no environment anywhere", json!({"cases": [ok.clone()]}), "whether a default exists is another member's"),
        ("expected status", with(&|c| c["expect"]["status"] = json!(200)), ""),
        (
            "peer and headers",
            with(&|c| {
                c["peer"] = json!("spiffe://acme.example/agents/finance/reconciler");
                c["headers"] = json!({"x-trace": "1"});
            }),
            "",
        ),
        ("an http body", with(&|c| c["body"] = json!("{}")), ""),
        (
            "an MCP call",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["mcp"] = json!({"host": "mcp.acme.example", "path": "/mcp",
                "message": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}});
            }),
            "",
        ),
        (
            "an MCP body as text",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["mcp"] = json!({"host": "mcp.acme.example", "path": "/mcp"});
                c["body"] = json!("{\"jsonrpc\": \"2.0\"}");
            }),
            "",
        ),
        (
            "MCP message and body",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["mcp"] = json!({"host": "mcp.acme.example", "path": "/mcp", "message": {}});
                c["body"] = json!("{}");
            }),
            "",
        ),
        ("both http and mcp", with(&|c| c["mcp"] = json!({"host": "h", "path": "/mcp"})), ""),
        (
            "mcp without path",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["mcp"] = json!({"host": "h"});
            }),
            "",
        ),
        ("arguments with http", with(&|c| c["arguments"] = json!({"amount": 1})), ""),
        (
            "arguments with tool",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["tool"] = json!("payments.charges.read");
                c["arguments"] = json!({"amount": 1});
            }),
            "",
        ),
        (
            "approval with tool",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["tool"] = json!("payments.charges.read");
                c["approval"] = json!({"approver": "payments-approvals"});
            }),
            "",
        ),
        (
            "headers with tool",
            with(&|c| {
                c.as_object_mut().unwrap().remove("http");
                c["tool"] = json!("payments.charges.read");
                c["headers"] = json!([["x-a", "1"]]);
            }),
            "",
        ),
        ("approval without approver", with(&|c| c["approval"] = json!({"claims": {}})), ""),
        ("txn_token without txn", with(&|c| c["txn_token"] = json!({"issuer": "acme-txn", "purpose": "p"})), ""),
        (
            "approval on a call that is not a step-up",
            with(&|c| c["approval"] = json!({"approver": "payments-approvals"})),
            "whether the call steps up is the bundle's",
        ),
        // A path the filter refuses is a valid case: it runs through the gate and gets the gateway's refusal.
        ("http path the gate refuses", with(&|c| c["http"]["path"] = json!("/a%2Fb")), ""),
    ];
    let s = Scratch::new("cases-schema");
    let bundle = root().join("policies/examples/finance-agent.json");
    let n = std::sync::atomic::AtomicUsize::new(0);
    agree(&validator, &rows, |doc| {
        let path = s.write(&format!("c{}.json", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), doc.to_string());
        let o = warden(["test".as_ref(), bundle.as_os_str(), path.as_os_str()]);
        // A failing or invalid case exits 1 ("FAIL ... invalid case"); a file that does not parse exits 2.
        let invalid = stdout(&o).contains("invalid case") || o.status.code() == Some(2);
        if invalid {
            Err(format!("{}{}", stdout(&o), stderr(&o)))
        } else {
            Ok(())
        }
    });
}

#[test]
fn the_recorded_request_schema_agrees_with_the_parser() {
    use warden_core::request::RecordedRequest;
    let validator = schema("request.schema.json");
    let ok = json!({"id": "r1", "method": "POST", "path": "/v1/refunds?x=1", "host": "payments.acme.example",
        "headers": [["authorization", "Bearer eyJ"], ["content-type", "application/json"]],
        "body": "{}", "source_address": "10.0.0.7:51000", "peer_uri_san": "spiffe://acme.example/a",
        "time": "2026-11-28T10:00:00.250Z"});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut r = ok.clone();
        f(&mut r);
        r
    };
    let rows: Vec<Row> = vec![
        ("full", ok.clone(), ""),
        ("minimal with a host header", json!({"method": "GET", "path": "/", "headers": {"Host": "h.example"}}), ""),
        ("host header in list form", json!({"method": "GET", "path": "/", "headers": [["HOST", "h"]]}), ""),
        (
            "repeated header values",
            json!({"method": "GET", "path": "/", "host": "h", "headers": {"x-a": ["1", "2"]}}),
            "",
        ),
        (
            "binary body",
            with(&|r| {
                r.as_object_mut().unwrap().remove("body");
                r["body_base64"] = json!("AP8=");
            }),
            "",
        ),
        (
            "no host at all",
            with(&|r| {
                r.as_object_mut().unwrap().remove("host");
            }),
            "",
        ),
        ("empty host", with(&|r| r["host"] = json!("")), ""),
        ("host with a space", with(&|r| r["host"] = json!("a b")), ""),
        ("method with a space", with(&|r| r["method"] = json!("GE T")), ""),
        ("empty path", with(&|r| r["path"] = json!("")), ""),
        ("path with a space", with(&|r| r["path"] = json!("/a b")), ""),
        ("pseudo-header", with(&|r| r["headers"] = json!([[":authority", "h"]])), ""),
        ("header name with a space", with(&|r| r["headers"] = json!({"x a": "1"})), ""),
        ("header value with a newline", with(&|r| r["headers"] = json!({"x-a": "1\r\nx-b: 2"})), ""),
        ("header pair of three", with(&|r| r["headers"] = json!([["a", "1", "2"]])), ""),
        ("headers null", with(&|r| r["headers"] = Value::Null), ""),
        ("two bodies", with(&|r| r["body_base64"] = json!("AA==")), ""),
        (
            "bad base64",
            with(&|r| {
                r.as_object_mut().unwrap().remove("body");
                r["body_base64"] = json!("!!!");
            }),
            "",
        ),
        ("unknown field", with(&|r| r["url"] = json!("/")), ""),
        ("time with an offset", with(&|r| r["time"] = json!("2026-11-28T10:00:00+01:00")), ""),
        (
            "missing method",
            with(&|r| {
                r.as_object_mut().unwrap().remove("method");
            }),
            "",
        ),
        (
            "source address not an IP",
            with(&|r| r["source_address"] = json!("gateway-7")),
            "IP address syntax (v4 and v6, with or without a port) is left to the parser",
        ),
        (
            "a day that does not exist",
            with(&|r| r["time"] = json!("2026-02-30T10:00:00Z")),
            "calendar validity of a date",
        ),
    ];
    agree(&validator, &rows, |doc| {
        RecordedRequest::parse_line(&doc.to_string()).map(|_| ()).map_err(|e| e.to_string())
    });
}

fn authority_key() -> Value {
    let text = std::fs::read_to_string(root().join("policies/examples/keys/TEST-ONLY-authority.jwks.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_plugin_configuration_schema_agrees_with_the_filter() {
    let validator = schema("plugin-config.schema.json");
    let ok = json!({"environment": "prod", "authority": "policy.acme.example", "bundle_keys": authority_key(),
        "control": {"cluster": "warden-control", "authority": "warden-control.warden-system.svc.cluster.local"}});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = ok.clone();
        f(&mut c);
        c
    };
    let full = with(&|c| {
        c["mode"] = json!("shadow");
        c["token_header"] = json!("x-agent-token");
        c["txn_token_header"] = json!("txn-token");
        c["approval_header"] = json!("X-Warden-Approval");
        c["inline_bundle"] = json!("eyJh.eyJi.c2ln");
        c["bundle_grace_seconds"] = json!(0);
        c["forward_identity_headers"] = json!(false);
        c["log_decisions"] = json!(true);
        c["allow_on_headers_stop_iteration"] = json!(true);
        c["max_body_bytes"] = json!(16 << 20);
        c["control"] = json!({"cluster": "c", "authority": "a", "path": "/bundles/x.jws", "poll_seconds": 30,
            "jitter_percent": 50, "timeout_ms": 100, "backoff_max_seconds": 600, "long_poll_wait_seconds": 30});
    });
    let key = |f: &dyn Fn(&mut Value)| with(&|c| f(&mut c["bundle_keys"]["keys"][0]));
    let rows: Vec<Row> = vec![
        ("minimal", ok.clone(), ""),
        ("every field", full, ""),
        ("unknown field", with(&|c| c["enviroment"] = json!("prod")), ""),
        (
            "no environment",
            with(&|c| {
                c.as_object_mut().unwrap().remove("environment");
            }),
            "",
        ),
        ("environment upper case", with(&|c| c["environment"] = json!("Prod")), ""),
        ("environment of 65 characters", with(&|c| c["environment"] = json!("a".repeat(65))), ""),
        ("authority blank", with(&|c| c["authority"] = json!(" ")), ""),
        (
            "no policy source",
            with(&|c| {
                c.as_object_mut().unwrap().remove("control");
            }),
            "",
        ),
        (
            "inline bundle only",
            with(&|c| {
                c.as_object_mut().unwrap().remove("control");
                c["inline_bundle"] = json!("a.b.c");
            }),
            "",
        ),
        ("inline bundle blank", with(&|c| c["inline_bundle"] = json!("  ")), ""),
        ("mode audit", with(&|c| c["mode"] = json!("audit")), ""),
        ("token header with a space", with(&|c| c["token_header"] = json!("x token")), ""),
        ("token header of the filter's own", with(&|c| c["token_header"] = json!("X-Warden-Token")), ""),
        (
            "approval header of the filter's own, not the approval one",
            with(&|c| c["approval_header"] = json!("x-warden-ok")),
            "",
        ),
        ("grace over a day", with(&|c| c["bundle_grace_seconds"] = json!(86_401)), ""),
        ("grace negative", with(&|c| c["bundle_grace_seconds"] = json!(-1)), ""),
        ("body limit 0", with(&|c| c["max_body_bytes"] = json!(0)), ""),
        ("body limit over 16 MiB", with(&|c| c["max_body_bytes"] = json!((16 << 20) + 1)), ""),
        ("flag as a string", with(&|c| c["log_decisions"] = json!("true")), ""),
        (
            "control without cluster",
            with(&|c| {
                c["control"].as_object_mut().unwrap().remove("cluster");
            }),
            "",
        ),
        ("control cluster with a space", with(&|c| c["control"]["cluster"] = json!("a b")), ""),
        ("control path relative", with(&|c| c["control"]["path"] = json!("bundles/b.jws")), ""),
        ("poll 0", with(&|c| c["control"]["poll_seconds"] = json!(0)), ""),
        ("poll over an hour", with(&|c| c["control"]["poll_seconds"] = json!(3601)), ""),
        ("jitter 51", with(&|c| c["control"]["jitter_percent"] = json!(51)), ""),
        ("timeout 99 ms", with(&|c| c["control"]["timeout_ms"] = json!(99)), ""),
        ("long poll wait 0", with(&|c| c["control"]["long_poll_wait_seconds"] = json!(0)), ""),
        ("long poll wait over an hour", with(&|c| c["control"]["long_poll_wait_seconds"] = json!(3601)), ""),
        ("unknown control field", with(&|c| c["control"]["period"] = json!(1)), ""),
        ("no keys", with(&|c| c["bundle_keys"] = json!({"keys": []})), ""),
        ("keys not a JWKS", with(&|c| c["bundle_keys"] = json!([])), ""),
        ("JWKS with another member", with(&|c| c["bundle_keys"]["extra"] = json!(1)), ""),
        ("private key", key(&|k| k["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")), ""),
        ("RSA key", key(&|k| *k = json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"})), ""),
        (
            "P-384 key",
            key(&|k| {
                k["kty"] = json!("EC");
                k["crv"] = json!("P-384");
            }),
            "",
        ),
        (
            "key without kid",
            key(&|k| {
                k.as_object_mut().unwrap().remove("kid");
            }),
            "",
        ),
        ("key use enc", key(&|k| k["use"] = json!("enc")), ""),
        ("Ed25519 key with alg ES256", key(&|k| k["alg"] = json!("ES256")), ""),
        ("x too short", key(&|k| k["x"] = json!("AAAA")), ""),
        (
            "the same header for both tokens",
            with(&|c| c["txn_token_header"] = json!("authorization")),
            "two members compared with each other",
        ),
        (
            "backoff below the poll period",
            with(&|c| {
                c["control"]["poll_seconds"] = json!(60);
                c["control"]["backoff_max_seconds"] = json!(30);
            }),
            "two members compared with each other",
        ),
        (
            "the same kid twice",
            with(&|c| {
                let k = c["bundle_keys"]["keys"][0].clone();
                c["bundle_keys"]["keys"].as_array_mut().unwrap().push(k);
            }),
            "uniqueness of one member across array items",
        ),
    ];
    agree(&validator, &rows, |doc| {
        warden_core::config::parse(doc.to_string().as_bytes()).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn the_plugin_configuration_schema_lists_the_filters_fields_and_defaults() {
    let text = std::fs::read_to_string(root().join("policies/plugin-config.schema.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let source = std::fs::read_to_string(root().join("plugin/core/src/config.rs")).unwrap();
    // The fields of the parser's raw structs, in source order.
    let fields = |name: &str| -> Vec<String> {
        let start = source.find(&format!("struct {name} {{")).unwrap();
        let body = &source[start..start + source[start..].find("\n}").unwrap()];
        body.lines().filter_map(|l| l.trim().strip_suffix(": Option<Value>,")).map(str::to_string).collect()
    };
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(keys(&doc["properties"]), sorted(fields("RawConfig")));
    assert_eq!(keys(&doc["properties"]["control"]["properties"]), sorted(fields("RawControl")));
    use warden_core::config as c;
    let p = &doc["properties"];
    let cp = &p["control"]["properties"];
    for (field, default) in [
        (&p["token_header"], json!(c::DEFAULT_TOKEN_HEADER)),
        (&p["txn_token_header"], json!(c::DEFAULT_TXN_TOKEN_HEADER)),
        (&p["approval_header"], json!(c::DEFAULT_APPROVAL_HEADER)),
        (&p["bundle_grace_seconds"], json!(c::DEFAULT_BUNDLE_GRACE_SECONDS)),
        (&p["max_body_bytes"], json!(c::DEFAULT_MAX_BODY_BYTES)),
        (&cp["path"], json!(c::DEFAULT_CONTROL_PATH)),
        (&cp["poll_seconds"], json!(c::DEFAULT_POLL_SECONDS)),
        (&cp["jitter_percent"], json!(c::DEFAULT_JITTER_PERCENT)),
        (&cp["timeout_ms"], json!(c::DEFAULT_TIMEOUT_MS)),
        (&cp["backoff_max_seconds"], json!(c::DEFAULT_BACKOFF_MAX_SECONDS)),
    ] {
        assert_eq!(field["default"], default, "{field}");
    }
    for (field, max) in [
        (&p["bundle_grace_seconds"], c::MAX_BUNDLE_GRACE_SECONDS),
        (&p["max_body_bytes"], c::MAX_MAX_BODY_BYTES),
        (&cp["poll_seconds"], c::MAX_POLL_SECONDS),
        (&cp["jitter_percent"], c::MAX_JITTER_PERCENT),
        (&cp["timeout_ms"], c::MAX_TIMEOUT_MS),
        (&cp["backoff_max_seconds"], c::MAX_BACKOFF_MAX_SECONDS),
        (&cp["long_poll_wait_seconds"], c::MAX_LONG_POLL_WAIT_SECONDS),
    ] {
        assert_eq!(field["maximum"], json!(max), "{field}");
    }
    assert_eq!(cp["timeout_ms"]["minimum"], json!(c::MIN_TIMEOUT_MS));
}
