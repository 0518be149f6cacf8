//! `warden approve` (a step-up approval from a reply, through the binary) and `warden report` (exit codes, formats).

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_core::approval::CallBinding;
use warden_core::bundle::Bundle;
use warden_core::time::parse_rfc3339;

const ISS: &str = "https://approvals.acme.example";
const AGENT: &str = "spiffe://acme.example/agents/finance/refund-bot";

fn approver_key() -> std::path::PathBuf {
    root().join("policies/examples/keys/TEST-ONLY-approver-payments.jwk.json")
}

fn digest() -> String {
    warden_core::args::arguments_digest(Some(&json!({"charge": "ch_1", "amount": 250})))
}

/// The step-up reply of an MCP call, as a JSON-RPC error.
fn rpc_reply() -> Value {
    json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -31002, "message": "step-up approval required", "data": {
        "decision_id": "dec-42", "decision": "step_up", "reason": "step_up_required",
        "approval": {"agent": AGENT, "task": "task-1", "tool": "payments.refunds.create",
                     "arguments_digest": digest(), "digest_of": "arguments", "decision_id": "dec-42",
                     "rule": "finance-refunds-step-up",
                     "approvers": [{"id": "payments-approvals", "iss": ISS}],
                     "max_age_seconds": 300, "header": "x-warden-approval"}}}})
}

fn claims_of(token: &str) -> Value {
    let payload = token.trim().split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn approve_mints_from_a_reply_on_stdin_and_the_token_verifies() {
    let mut child = Command::new(warden_bin())
        .args(["approve", "--key"])
        .arg(approver_key())
        .args(["--iss", ISS, "--from", "-", "--approved-by", "alice@acme.example"])
        .args(["--issued-at", "2026-12-01T09:00:00Z", "--jti", "appr-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(rpc_reply().to_string().as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    let token = stdout(&o);
    assert_eq!(token.lines().count(), 1, "{token}");
    let now = parse_rfc3339("2026-12-01T09:00:00Z").unwrap();
    assert_eq!(
        claims_of(&token),
        json!({"iss": ISS, "sub": "alice@acme.example", "jti": "appr-1", "iat": now, "exp": now + 300,
               "agent": AGENT, "task": "task-1", "tool": "payments.refunds.create", "arguments_digest": digest(),
               "decision_id": "dec-42"})
    );
    assert!(stderr(&o).contains("approval appr-1 by \"https://approvals.acme.example\""), "{}", stderr(&o));

    let text = std::fs::read_to_string(root().join("policies/examples/finance-agent.json")).unwrap();
    let bundle: Bundle = serde_json::from_str(&text).unwrap();
    let compiled = warden_core::compile::compile(&bundle).unwrap();
    let d = digest();
    let call = CallBinding {
        agent: AGENT,
        task: Some("task-1"),
        tool: "payments.refunds.create",
        arguments_digest: Some(&d),
        head_digest: None,
    };
    let ok = compiled.verify_approval("finance-refunds-step-up", token.trim(), &call, now + 60).unwrap();
    assert_eq!(ok.id, "appr-1");
    assert_eq!(ok.approved_by.as_deref(), Some("alice@acme.example"));
}

#[test]
fn approve_explicit_flags_override_the_reply() {
    let s = Scratch::new("approve");
    let reply = s.write("reply.json", rpc_reply()["error"]["data"].to_string());
    let other = "a".repeat(64);
    let o = warden([
        "approve".as_ref(),
        "--key".as_ref(),
        approver_key().as_os_str(),
        "--iss".as_ref(),
        ISS.as_ref(),
        "--from".as_ref(),
        reply.as_os_str(),
        "--agent".as_ref(),
        "spiffe://acme.example/agents/finance/other".as_ref(),
        "--arguments-digest".as_ref(),
        other.as_ref(),
        "--ttl".as_ref(),
        "60".as_ref(),
        "--issued-at".as_ref(),
        "1800000000".as_ref(),
    ]);
    assert_exit(&o, 0);
    let c = claims_of(&stdout(&o));
    assert_eq!(c["agent"], "spiffe://acme.example/agents/finance/other");
    assert_eq!(c["arguments_digest"], other.as_str());
    assert_eq!(c["tool"], "payments.refunds.create");
    assert_eq!(c["exp"], 1_800_000_060);
    assert_eq!(c["jti"].as_str().unwrap().len(), 36);
}

#[test]
fn approve_refuses_with_exit_2() {
    let s = Scratch::new("approve-refused");
    let deny = s.write("deny.json", json!({"decision": "deny", "reason": "denied_by_rule"}).to_string());
    let reply = s.write("reply.json", rpc_reply().to_string());
    let key = approver_key();
    let zeros = "0".repeat(64);
    let run = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["approve".into(), "--key".into(), key.clone().into()];
        args.extend(extra.iter().map(Into::into));
        warden(args)
    };
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--iss", ISS, "--from", deny.to_str().unwrap()],
            "not a step-up reply: decision \"deny\" without an \"approval\" object".to_string(),
        ),
        (
            vec!["--iss", ISS, "--from", reply.to_str().unwrap(), "--ttl", "301"],
            "--ttl 301 is longer than the step-up's max_age_seconds 300: the gateway would refuse it".to_string(),
        ),
        (
            vec!["--iss", "https://other.example", "--from", reply.to_str().unwrap()],
            "--iss \"https://other.example\" is not one of the approvers this step-up accepts".to_string(),
        ),
        (
            vec!["--iss", ISS, "--tool", "payments.refunds.create", "--arguments-digest", &zeros],
            "missing the agent id: give --agent, or --from a step-up reply".to_string(),
        ),
    ];
    for (args, message) in cases {
        let o = run(&args);
        assert_exit(&o, 2);
        assert!(stderr(&o).starts_with("warden: error: "), "{}", stderr(&o));
        assert!(stderr(&o).contains(&message), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn report_prints_text_and_json() {
    let bundle = root().join("policies/examples/finance-agent.json");
    let o = warden(["report".as_ref(), bundle.as_os_str(), "--now".as_ref(), "2026-11-28T10:00:00Z".as_ref()]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.lines().any(|l| l == "- q4-close-void-invoices: 25 days left"), "{text}");
    assert!(text.lines().any(|l| l == "## Findings"), "{text}");

    let o = warden([
        "report".as_ref(),
        bundle.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
        "--now".as_ref(),
        "2026-12-20T00:00:00Z".as_ref(),
    ]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["summary"]["now"], "2026-12-20T00:00:00Z");
    assert_eq!(v["findings"][0]["kind"], "exception_expiring");
    assert_eq!(v["findings"][0]["subject"], "q4-close-void-invoices");
}

#[test]
fn report_refuses_a_bundle_that_does_not_validate() {
    let s = Scratch::new("report-bad");
    let mut b = example("finance-agent.json");
    b["rules"][1].as_object_mut().unwrap().remove("step_up");
    let path = s.write("bad.json", serde_json::to_string_pretty(&b).unwrap());
    let o = warden(["report".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("/rules/1"), "{out}");
    assert!(out.ends_with(": 1 error\n"), "{out}");

    let o = warden(["report".as_ref(), s.path("missing.json").as_os_str()]);
    assert_exit(&o, 2);
}
