//! The JSON Schemas under `policies/` against the code that reads each format: every bundle `warden lint` refuses
//! whose check JSON Schema can express is refused by `policies/bundle.schema.json` too (and the others are accepted
//! by it, so the fixture's claims stay true); lint reports shape errors all at once, with "did you mean"; lint warns
//! about routes normalization never lets through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use common::*;
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
        &std::fs::read_to_string(root().join("control/tests/fixtures/refused-bundles.json")).unwrap(),
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
    let path = s.write("shapes.json", serde_json::to_string_pretty(&b).unwrap());
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    let f = path.display();
    let lines: Vec<&str> = out.lines().collect();
    let expect = [
        format!("{f}:53:11: /issuers/0/jwks/keys/0: private key material in a public key set: publish only the public key (warden keygen writes it to the .jwks.json file)"),
        format!("{f}:69:15: /revision: expected an integer, found a string"),
        format!("{f}:81:5: /rules/0/effect: missing: this field is required"),
        format!("{f}:88:16: /rules/0/efect: unknown field \"efect\": did you mean \"effect\"?"),
        format!("{f}:131:17: /rules/2/effect: \"alow\" is not one of \"allow\", \"deny\", \"step_up\": did you mean \"allow\"?"),
        format!("{f}:189:22: /tools/1/sensitivity: \"Read\" is not one of \"read\", \"write\", \"payment\", \"admin\": did you mean \"read\"?"),
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
    let path = s.write("hints.json", serde_json::to_string_pretty(&b).unwrap());
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
    let path = s.write("warn.json", serde_json::to_string_pretty(&b).unwrap());
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
