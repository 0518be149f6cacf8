//! `warden test` (policy unit tests, the example suites included) and `warden eval` (one recorded request).

use std::ffi::OsStr;

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde_json::{json, Value};
use warden_core::envelope::Algorithm;
use warden_core::time::parse_rfc3339;

fn examples(name: &str) -> std::path::PathBuf {
    root().join("policies/examples").join(name)
}

#[test]
fn the_example_suites_pass() {
    for (bundle, count) in
        [("coding-agent", 8), ("finance-agent", 20), ("payments-mcp", 25), ("refund-budget", 8), ("support-agent", 10)]
    {
        let o = warden(
            [examples(&format!("{bundle}.json")), examples(&format!("{bundle}.cases.json"))]
                .iter()
                .map(|p| p.as_os_str())
                .fold(vec![OsStr::new("test"), OsStr::new("--fail-uncovered")], |mut v, p| {
                    v.push(p);
                    v
                }),
        );
        assert_exit(&o, 0);
        assert!(stdout(&o).ends_with(&format!("{count} passed, 0 failed\n")), "{}", stdout(&o));
    }
}

#[test]
fn a_failing_case_shows_expected_actual_and_why() {
    let s = Scratch::new("cases");
    let cases = s.write(
        "cases.json",
        json!([
            {"name": "passes", "environment": "prod",
             "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload"},
             "tool": "crm.contacts.read", "expect": {"decision": "allow"}},
            {"name": "wrong expectation", "environment": "prod", "time": "2026-11-28T10:00:00Z",
             "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload"},
             "http": {"host": "crm.acme.example", "method": "DELETE", "path": "/api/v2/contacts/42"},
             "expect": {"decision": "allow", "rule": "support-read-crm"}},
            {"name": "names a tool the bundle lacks", "environment": "prod",
             "agent": "missing", "tool": "crm.nothing", "expect": {"decision": "deny"}},
            {"name": "unknown failure code", "environment": "prod",
             "agent": "token_stolen", "tool": "crm.contacts.read", "expect": {"decision": "deny"}}
        ])
        .to_string(),
    );
    let o = warden([OsStr::new("test"), examples("support-agent.json").as_os_str(), cases.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "FAIL  wrong expectation\n\
             \x20     expected: allow, rule support-read-crm\n\
             \x20     actual:   deny, rule support-no-writes, reason denied_by_rule\n\
             \x20     why:\n"
        ),
        "{out}"
    );
    assert!(out.contains("        tool: \"crm.contacts.delete\" (sensitivity admin)\n"), "{out}");
    assert!(
        out.contains(
            "        rule support-no-writes (deny): decided: matched; a matching deny rule wins over step-up and allow\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "        rule support-read-crm (allow): not_selected: does not select tool \"crm.contacts.delete\"\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL  names a tool the bundle lacks\n      invalid case: tool \"crm.nothing\" is not in the bundle's catalog\n"
        ),
        "{out}"
    );
    assert!(out.contains("invalid case: agent \"token_stolen\" is not \"missing\" nor a token failure code"), "{out}");
    assert!(out.ends_with("1 passed, 3 failed\n"), "{out}");
}

#[test]
fn a_malformed_cases_file_is_a_usage_error() {
    let s = Scratch::new("cases-bad");
    let cases = s.write("cases.json", "[{\"name\": \"x\",}]");
    let o = warden([OsStr::new("test"), examples("support-agent.json").as_os_str(), cases.as_os_str()]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("cases.json: 1:15: "), "{}", stderr(&o));
}

/// An agent token of the example issuer `acme-workload`, signed with its TEST key.
fn workload_token(sub: &str, iat: i64, extra: Value) -> String {
    let jwk: Value = serde_json::from_slice(
        &std::fs::read(root().join("policies/examples/keys/TEST-ONLY-issuer-acme-workload.jwk.json")).unwrap(),
    )
    .unwrap();
    let d: [u8; 32] = URL_SAFE_NO_PAD.decode(jwk["d"].as_str().unwrap()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&d);
    let header = json!({"alg": "EdDSA", "kid": jwk["kid"], "typ": "JWT"});
    let mut claims =
        json!({"iss": "https://spire.acme.example", "sub": sub, "aud": "warden", "iat": iat, "exp": iat + 300});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn audience() -> String {
    let b = example("support-agent.json");
    b["issuers"][0]["audiences"][0].as_str().unwrap().to_string()
}

#[test]
fn eval_explains_one_recorded_request() {
    let s = Scratch::new("eval");
    let now = parse_rfc3339("2026-11-28T10:00:00Z").unwrap();
    let token = workload_token("spiffe://acme.example/agents/support/bot-1", now - 10, json!({"aud": audience()}));
    let request = s.write(
        "req.json",
        json!({"id": "r1", "method": "GET", "path": "/api/v2//contacts/%34%32?x=1", "host": "crm.acme.example",
               "headers": [["authorization", format!("Bearer {token}")]], "time": "2026-11-28T10:00:00Z"})
        .to_string(),
    );
    let bundle = examples("support-agent.json");
    let run = |extra: &[&str]| {
        let mut a: Vec<&OsStr> = vec!["eval".as_ref(), "--bundle".as_ref(), bundle.as_os_str()];
        a.extend(extra.iter().map(OsStr::new));
        a.push(request.as_os_str());
        warden(a)
    };

    let o = run(&["--environment", "prod"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("decision: allow (200)\nreason:   allowed_by_rule\nrule:     support-read-crm\nrevision: "),
        "{out}"
    );
    assert!(out.contains("request:  GET crm.acme.example /api/v2/contacts/42\n"), "{out}");
    assert!(
        out.contains(
            "  identity: agent \"spiffe://acme.example/agents/support/bot-1\" from issuer \"acme-workload\"\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  rule support-read-crm (allow): decided: matched; no deny or step-up rule matched\n"),
        "{out}"
    );
    assert!(
        out.contains("  rule support-no-writes (deny): not_matched: does not select tools of this sensitivity\n"),
        "{out}"
    );

    let o = run(&["--environment", "prod", "--json"]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["status"], 200);
    assert_eq!(v["rule"], "support-read-crm");
    assert_eq!(v["tool"], "crm.contacts.read");
    assert_eq!(v["agent"]["id"], "spiffe://acme.example/agents/support/bot-1");
    assert_eq!(v["request"]["path"], "/api/v2/contacts/42");
    assert!(v["explanation"].as_array().unwrap().len() >= 3);
    assert_eq!(v["rules"][1]["id"], "support-read-crm");
    assert_eq!(v["rules"][1]["verdict"], "decided");
    assert_eq!(v["rules"][0]["verdict"], "not_matched");

    // Whatever the decision, exit 0; --expect turns a different decision into exit 1.
    let o = run(&["--environment", "dev"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with("decision: deny (403)\nreason:   no_matching_rule\n"), "{}", stdout(&o));
    let o = run(&["--environment", "dev", "--expect", "allow"]);
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "warden eval: expected allow, decided deny\n");
    assert_exit(&run(&["--environment", "dev", "--expect", "deny"]), 0);

    // After the token expired (the clock from --now): 401 with the token failure.
    let o = run(&["--environment", "prod", "--now", "2026-11-28T11:00:00Z"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("decision: deny (401)\nreason:   token_expired\nrule:     default\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn eval_without_token_with_a_bad_path_and_with_a_signed_bundle() {
    let s = Scratch::new("eval-2");
    let bundle = examples("support-agent.json");
    let no_token = s.write(
        "no-token.json",
        r#"{"method": "GET", "path": "/api/v2/contacts/42", "host": "crm.acme.example", "time": "2026-11-28T10:00:00Z"}"#,
    );
    let o = warden([
        OsStr::new("eval"),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--environment".as_ref(),
        "prod".as_ref(),
        no_token.as_os_str(),
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with("decision: deny (401)\nreason:   identity_missing\n"), "{}", stdout(&o));

    let bad_path = s.write(
        "bad-path.json",
        r#"{"method": "GET", "path": "/api/v2/contacts/..%2F..%2Fadmin", "host": "crm.acme.example"}"#,
    );
    let o = warden([
        OsStr::new("eval"),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--environment".as_ref(),
        "prod".as_ref(),
        bad_path.as_os_str(),
    ]);
    assert_exit(&o, 0);
    // The gate's answer, warden.wasm's too: the path error's own code.
    assert!(stdout(&o).starts_with("decision: deny (400)\nreason:   path_encoded_slash\n"), "{}", stdout(&o));
    assert!(stdout(&o).contains("the request path was refused: path_encoded_slash"), "{}", stdout(&o));

    // A signed bundle needs the pinned keys; with them it decides the same.
    let (_, jwks, key) = s.key(Algorithm::EdDSA, "authority-1");
    let signed = s.write("support.jws", warden_core::envelope::sign(&std::fs::read(&bundle).unwrap(), &key));
    let o = warden([
        OsStr::new("eval"),
        "--bundle".as_ref(),
        signed.as_os_str(),
        "--environment".as_ref(),
        "prod".as_ref(),
        no_token.as_os_str(),
    ]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is a signed bundle: pass --keys"), "{}", stderr(&o));
    let o = warden([
        OsStr::new("eval"),
        "--bundle".as_ref(),
        signed.as_os_str(),
        "--keys".as_ref(),
        jwks.as_os_str(),
        "--authority".as_ref(),
        AUTHORITY.as_ref(),
        "--environment".as_ref(),
        "prod".as_ref(),
        no_token.as_os_str(),
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).starts_with("decision: deny (401)\nreason:   identity_missing\n"), "{}", stdout(&o));
}

#[test]
fn help_documents_exit_codes() {
    let o = warden(["--help"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for sub in ["keygen", "lint", "test", "sign", "verify", "eval", "serve"] {
        assert!(out.contains(&format!("  {sub} ")), "{sub} missing in:\n{out}");
    }
    assert!(out.contains("Exit codes:\n  0  success\n  1  the checked thing failed"), "{out}");
    assert_exit(&warden(["frobnicate"]), 2);
}

#[test]
fn coverage_names_the_rules_no_case_exercised_and_json_carries_every_case() {
    let s = Scratch::new("cases-coverage");
    let cases = s.write(
        "cases.json",
        json!([
            {"name": "reads a contact", "environment": "prod",
             "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload"},
             "tool": "crm.contacts.read", "expect": {"decision": "allow", "rule": "support-read-crm"}},
            {"name": "expects the wrong rule", "environment": "prod",
             "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload"},
             "tool": "crm.contacts.read", "expect": {"decision": "allow", "rule": "support-no-writes"}}
        ])
        .to_string(),
    );
    let bundle = examples("support-agent.json");
    let o = warden([OsStr::new("test"), bundle.as_os_str(), cases.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(
        out.ends_with("coverage: 1 of 2 rules exercised\nnot exercised: support-no-writes\n1 passed, 1 failed\n"),
        "{out}"
    );

    let o =
        warden([OsStr::new("test"), bundle.as_os_str(), cases.as_os_str(), OsStr::new("--format"), OsStr::new("json")]);
    assert_exit(&o, 1);
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["summary"], json!({"passed": 1, "failed": 1}));
    assert_eq!(doc["cases"][0]["passed"], true);
    assert_eq!(doc["cases"][0]["actual"]["rule"], "support-read-crm");
    assert!(doc["cases"][0].get("why").is_none(), "a passing case carries no explanation");
    assert_eq!(doc["cases"][1]["passed"], false);
    assert_eq!(doc["cases"][1]["expected"]["rule"], "support-no-writes");
    assert_eq!(doc["cases"][1]["actual"]["reason"], "allowed_by_rule");
    assert!(doc["cases"][1]["why"].as_array().is_some_and(|w| !w.is_empty()));
    assert_eq!(doc["coverage"]["not_exercised"], json!(["support-no-writes"]));
    assert_eq!(
        doc["coverage"]["rules"][1],
        json!({"rule": "support-read-crm", "cases": ["reads a contact", "expects the wrong rule"]})
    );

    // Passing cases with a rule left out: exit 0, unless coverage is required.
    let passing = s.write(
        "passing.json",
        json!([{"name": "reads", "environment": "prod",
        "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload"},
        "tool": "crm.contacts.read", "expect": {"decision": "allow"}}])
        .to_string(),
    );
    assert_exit(&warden([OsStr::new("test"), bundle.as_os_str(), passing.as_os_str()]), 0);
    let o = warden([OsStr::new("test"), bundle.as_os_str(), passing.as_os_str(), OsStr::new("--fail-uncovered")]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("not exercised: support-no-writes\n"), "{}", stdout(&o));
}
