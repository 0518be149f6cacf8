//! Every example bundle in `policies/examples/` compiles through the product's path and makes the decisions its
//! README promises. A new example without a decision table here fails the test.

use crate::common;

use std::path::PathBuf;

use common::{agent, t, with_task};
use warden_core::bundle::Bundle;
use warden_core::compile::{compile, CompiledBundle};
use warden_core::config::GateConfig;
use warden_core::decide::decide;
use warden_core::facts::{Agent, Facts, Identity};
use warden_core::gate::driver::{self, Exchange};
use warden_core::gate::{Credentials, MemoryStore};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/examples")
}

fn load(name: &str) -> CompiledBundle {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bundle: Bundle = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    compile(&bundle).unwrap_or_else(|e| panic!("{name} does not compile:\n{e}"))
}

/// (description, environment, agent, host, method, path, now) → (decision, reason, rule).
type Case<'a> = (&'a str, &'a str, Agent, &'a str, &'a str, &'a str, i64, (&'a str, &'a str, &'a str));

fn check(b: &CompiledBundle, cases: Vec<Case<'_>>) {
    for (name, env, agent, host, method, path, now, want) in cases {
        let tool = b.resolve_http(host, method, path);
        let facts = Facts { environment: env.to_string(), identity: Identity::Verified(agent), tool };
        let d = decide(b, &facts, now);
        assert_eq!((d.outcome.as_str(), d.reason.code(), d.rule_id()), want, "case {name}");
        assert_eq!(d.revision, b.revision);
    }
}

fn from(issuer: &str, id: &str) -> Agent {
    let mut a = agent(id);
    a.issuer = issuer.to_string();
    a
}

const SUPPORT: &str = "spiffe://acme.example/agents/support";
const FINANCE: &str = "spiffe://acme.example/agents/finance";
const CODING: &str = "spiffe://acme.example/agents/coding";

fn support_agent() {
    let b = load("support-agent.json");
    let now = t("2026-12-01T09:00:00Z");
    let bot = || from("acme-workload", &format!("{SUPPORT}/tier1-bot"));
    let crm = "crm.acme.example";
    check(
        &b,
        vec![
            (
                "read a contact",
                "prod",
                bot(),
                crm,
                "GET",
                "/api/v2/contacts/c-123",
                now,
                ("allow", "allowed_by_rule", "support-read-crm"),
            ),
            (
                "search contacts",
                "prod",
                bot(),
                crm,
                "GET",
                "/api/v2/contacts",
                now,
                ("allow", "allowed_by_rule", "support-read-crm"),
            ),
            (
                "read ticket comments",
                "staging",
                bot(),
                crm,
                "GET",
                "/api/v2/tickets/t-9/comments",
                now,
                ("allow", "allowed_by_rule", "support-read-crm"),
            ),
            (
                "read a kb article",
                "prod",
                bot(),
                "kb.acme.example",
                "GET",
                "/articles/billing/refund-policy",
                now,
                ("allow", "allowed_by_rule", "support-read-crm"),
            ),
            (
                "update a contact",
                "prod",
                bot(),
                crm,
                "PATCH",
                "/api/v2/contacts/c-123",
                now,
                ("deny", "denied_by_rule", "support-no-writes"),
            ),
            (
                "comment on a ticket",
                "prod",
                bot(),
                crm,
                "POST",
                "/api/v2/tickets/t-9/comments",
                now,
                ("deny", "denied_by_rule", "support-no-writes"),
            ),
            (
                "delete a contact",
                "prod",
                bot(),
                crm,
                "DELETE",
                "/api/v2/contacts/c-123",
                now,
                ("deny", "denied_by_rule", "support-no-writes"),
            ),
            (
                "unknown endpoint",
                "prod",
                bot(),
                crm,
                "GET",
                "/api/v2/exports",
                now,
                ("deny", "unknown_tool", "default"),
            ),
            (
                "reads only in prod and staging",
                "dev",
                bot(),
                crm,
                "GET",
                "/api/v2/contacts/c-123",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "other teams' agents",
                "prod",
                from("acme-workload", "spiffe://acme.example/agents/marketing/bot"),
                crm,
                "GET",
                "/api/v2/contacts/c-1",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "revoked legacy bot",
                "prod",
                from("acme-workload", &format!("{SUPPORT}/legacy-bot")),
                crm,
                "GET",
                "/api/v2/contacts/c-1",
                now,
                ("deny", "revoked_agent", "default"),
            ),
        ],
    );
}

fn finance_agent() {
    let b = load("finance-agent.json");
    let now = t("2026-12-01T09:00:00Z");
    let pay = "payments.acme.example";
    let refunder = || {
        with_task(
            from("acme-workload", &format!("{FINANCE}/refund-bot")),
            "task-1",
            Some("customer-refund"),
            Some(now + 600),
        )
    };
    let reconciler = || from("acme-workload", &format!("{FINANCE}/reconciler"));
    check(
        &b,
        vec![
            (
                "refund needs step-up",
                "prod",
                refunder(),
                pay,
                "POST",
                "/v1/refunds",
                now,
                ("step_up", "step_up_required", "finance-refunds-step-up"),
            ),
            (
                "refund outside a refund task",
                "prod",
                from("acme-workload", &format!("{FINANCE}/refund-bot")),
                pay,
                "POST",
                "/v1/refunds",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "read a charge",
                "prod",
                refunder(),
                pay,
                "GET",
                "/v1/charges/ch_1",
                now,
                ("allow", "allowed_by_rule", "finance-read"),
            ),
            (
                "read an invoice",
                "prod",
                reconciler(),
                "billing.acme.example",
                "GET",
                "/invoices/in_1",
                now,
                ("allow", "allowed_by_rule", "finance-read"),
            ),
            (
                "payouts never",
                "prod",
                refunder(),
                pay,
                "POST",
                "/v1/payouts",
                now,
                ("deny", "denied_by_rule", "finance-never-payouts"),
            ),
            (
                "payouts never, any agent",
                "prod",
                from("acme-workload", "spiffe://acme.example/agents/support/bot"),
                pay,
                "POST",
                "/v1/payouts",
                now,
                ("deny", "denied_by_rule", "finance-never-payouts"),
            ),
            (
                "void by exception",
                "prod",
                reconciler(),
                "billing.acme.example",
                "POST",
                "/invoices/in_1/void",
                now,
                ("allow", "allowed_by_exception", "q4-close-void-invoices"),
            ),
            (
                "exception expired",
                "prod",
                reconciler(),
                "billing.acme.example",
                "POST",
                "/invoices/in_1/void",
                t("2027-01-31T00:00:00Z"),
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "exception is for the reconciler",
                "prod",
                refunder(),
                "billing.acme.example",
                "POST",
                "/invoices/in_1/void",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "ledger export is not granted",
                "prod",
                reconciler(),
                "ledger.acme.example",
                "GET",
                "/v1/exports/2026/11.csv",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "revoked task",
                "prod",
                with_task(
                    from("acme-workload", &format!("{FINANCE}/refund-bot")),
                    "task-7f3a-compromised",
                    Some("customer-refund"),
                    None,
                ),
                pay,
                "GET",
                "/v1/charges/ch_1",
                now,
                ("deny", "revoked_task", "default"),
            ),
            (
                "expired task",
                "prod",
                with_task(
                    from("acme-workload", &format!("{FINANCE}/refund-bot")),
                    "task-2",
                    Some("customer-refund"),
                    Some(now),
                ),
                pay,
                "POST",
                "/v1/refunds",
                now,
                ("deny", "task_expired", "default"),
            ),
        ],
    );
    let mut leaked = reconciler();
    leaked.token_id = Some("jti-0b4e-leaked".into());
    check(
        &b,
        vec![(
            "revoked token",
            "prod",
            leaked,
            pay,
            "GET",
            "/v1/charges/ch_1",
            now,
            ("deny", "revoked_token", "default"),
        )],
    );
}

fn coding_agent() {
    let b = load("coding-agent.json");
    let now = t("2026-12-01T09:00:00Z");
    let dev = || from("acme-ci", &format!("{CODING}/pr-bot"));
    let git = "git.acme.example";
    check(
        &b,
        vec![
            (
                "read code in staging",
                "staging",
                dev(),
                git,
                "GET",
                "/api/repos/acme/shop/contents/src/main.rs",
                now,
                ("allow", "allowed_by_rule", "coding-staging"),
            ),
            (
                "open a pull request in dev",
                "dev",
                dev(),
                git,
                "POST",
                "/api/repos/acme/shop/pulls",
                now,
                ("allow", "allowed_by_rule", "coding-staging"),
            ),
            (
                "run a pipeline on a ci shard",
                "staging",
                dev(),
                "eu-1.ci.acme.example",
                "POST",
                "/api/pipelines/p-7/runs",
                now,
                ("allow", "allowed_by_rule", "coding-staging"),
            ),
            (
                "read code in prod",
                "prod",
                dev(),
                git,
                "GET",
                "/api/repos/acme/shop/contents/README.md",
                now,
                ("deny", "denied_by_rule", "coding-not-in-prod"),
            ),
            (
                "push in prod",
                "prod",
                dev(),
                git,
                "POST",
                "/api/repos/acme/shop/git/refs",
                now,
                ("deny", "denied_by_rule", "coding-not-in-prod"),
            ),
            (
                "deploy from staging",
                "staging",
                dev(),
                "deploy.acme.example",
                "POST",
                "/api/releases",
                now,
                ("deny", "denied_by_rule", "coding-no-deploys"),
            ),
            (
                "token from another issuer",
                "staging",
                from("acme-workload", &format!("{CODING}/pr-bot")),
                git,
                "GET",
                "/api/repos/acme/shop/contents/a",
                now,
                ("deny", "no_matching_rule", "default"),
            ),
            (
                "unknown tool in staging",
                "staging",
                dev(),
                git,
                "DELETE",
                "/api/repos/acme/shop",
                now,
                ("deny", "unknown_tool", "default"),
            ),
        ],
    );
}

#[test]
fn every_example_bundle_compiles_and_decides() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Bundles; `*.cases.json` are the policy tests `warden test` runs against them.
        .filter(|n| n.ends_with(".json") && !n.ends_with(".cases.json"))
        .collect();
    names.sort();
    for name in &names {
        match name.as_str() {
            "support-agent.json" => support_agent(),
            "finance-agent.json" => finance_agent(),
            "coding-agent.json" => coding_agent(),
            "payments-mcp.json" => payments_mcp(),
            "refund-budget.json" => refund_budget(),
            other => panic!("policies/examples/{other} has no decision table in plugin/core/tests/examples.rs"),
        }
    }
    assert_eq!(
        names,
        ["coding-agent.json", "finance-agent.json", "payments-mcp.json", "refund-budget.json", "support-agent.json"]
    );
}

/// An MCP `tools/call` body to the payments MCP server, decided through the gate with the agent's facts given.
fn mcp_call(b: &CompiledBundle, agent: Agent, tool: &str, arguments: serde_json::Value) -> (String, String, String) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": tool, "arguments": arguments}});
    let headers: Vec<(String, Vec<u8>)> = [
        (":authority", "mcp.payments.acme.example"),
        (":path", "/mcp"),
        (":method", "POST"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let exchange = Exchange {
        headers,
        body: body.to_string().into_bytes(),
        peer: None,
        time_ns: 1_795_000_000_000_000_000,
        decision_id: "d-1".into(),
        credentials: Credentials::Given(Identity::Verified(agent)),
        response: None,
        listed: None,
    };
    let run = driver::run(&GateConfig::new("prod"), Some(b), exchange, &mut MemoryStore::default());
    let d = run.flow.decision();
    (d.outcome.as_str().to_string(), d.reason.code().to_string(), d.rule_id().to_string())
}

fn payments_mcp() {
    let b = load("payments-mcp.json");
    let refunder = |bound: bool, purpose: Option<&str>| {
        let mut a = from("acme-workload", &format!("{FINANCE}/refunder"));
        a.sender_bound = bound;
        match purpose {
            Some(p) => with_task(a, "task-91", Some(p), None),
            None => a,
        }
    };
    let refund = |amount: serde_json::Value| serde_json::json!({"charge": "ch_1", "amount": amount, "currency": "USD"});
    let want = |d: &str, r: &str, rule: &str| (d.to_string(), r.to_string(), rule.to_string());
    for (name, agent, tool, args, expected) in [
        (
            "small refund",
            refunder(true, Some("customer-refund")),
            "refund",
            refund(40.into()),
            want("allow", "allowed_by_rule", "refund-small"),
        ),
        (
            "not sender-bound",
            refunder(false, Some("customer-refund")),
            "refund",
            refund(40.into()),
            want("deny", "no_matching_rule", "default"),
        ),
        ("no task", refunder(true, None), "refund", refund(40.into()), want("deny", "no_matching_rule", "default")),
        (
            "large refund",
            refunder(true, Some("customer-refund")),
            "refund",
            refund(250.into()),
            want("step_up", "step_up_required", "refund-large"),
        ),
        (
            "too large",
            refunder(true, Some("customer-refund")),
            "refund",
            refund(90_000.into()),
            want("deny", "no_matching_rule", "default"),
        ),
        (
            "amount as a string",
            refunder(true, Some("customer-refund")),
            "refund",
            refund("40".into()),
            want("deny", "invalid_arguments", "refund-large"),
        ),
        (
            "read a charge",
            refunder(false, None),
            "get_charge",
            serde_json::json!({"charge": "ch_1"}),
            want("allow", "allowed_by_rule", "read-charges"),
        ),
        (
            "unknown tool",
            refunder(true, None),
            "transfer",
            serde_json::json!({}),
            want("deny", "unknown_tool", "default"),
        ),
    ] {
        assert_eq!(mcp_call(&b, agent, tool, args), expected, "case {name}");
    }
}

/// `policies/bundle.schema.json` names exactly the fields `bundle.rs` has, at every level.
#[test]
fn schema_matches_the_bundle_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("bundle.schema.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(examples_dir().join("finance-agent.json")).unwrap();
    let bundle: Bundle = serde_json::from_str(&text).unwrap();
    // Serializing writes every field (absent options as null), so the key sets are the types' field sets.
    let full = serde_json::to_value(&bundle).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let props = |def: &str| -> Vec<String> {
        let node = if def.is_empty() { &schema } else { &schema["$defs"][def] };
        keys(&node["properties"])
    };
    let exception = &schema["$defs"]["rule"]["properties"]["exception"]["anyOf"][0]["properties"];
    let jwks = &schema["$defs"]["issuer"]["properties"]["jwks"]["properties"];
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        ("bundle", keys(&full), props("")),
        ("issuer", keys(&full["issuers"][0]), props("issuer")),
        ("claims", keys(&full["issuers"][0]["claims"]), props("claims")),
        ("jwks", keys(&full["issuers"][0]["jwks"]), keys(jwks)),
        ("tool", keys(&full["tools"][0]), props("tool")),
        ("http_match", keys(&full["tools"][0]["http"][0]), props("http_match")),
        ("rule", keys(&full["rules"][3]), props("rule")),
        ("exception", keys(&full["rules"][3]["exception"]), keys(exception)),
        ("revocations", keys(&full["revocations"]), props("revocations")),
        ("defaults", keys(&full["defaults"]), props("defaults")),
        ("limit", keys(&full["limits"][0]), props("limit")),
    ];
    for (name, from_types, from_schema) in cases {
        assert_eq!(from_types, from_schema, "{name}");
    }
}

/// The refund budget through the gate's driver, one store for the whole sequence (one gateway): a batch is charged
/// whole, a refused call consumes nothing, the reply names the limit, the record states it, the day ends the window.
fn refund_budget() {
    let text = std::fs::read_to_string(examples_dir().join("refund-budget.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["mcp_servers"][0]["batches"] = true.into();
    let b = compile(&common::bundle(v)).unwrap();
    let refunder =
        with_task(from("acme-workload", &format!("{FINANCE}/refunder")), "task-b9", Some("customer-refund"), None);
    let mut store = MemoryStore::default();
    let day = 1_795_000_000i64;
    let mut send = |body: serde_json::Value, now: i64| {
        let headers: Vec<(String, Vec<u8>)> = [
            (":authority", "mcp.refunds.acme.example"),
            (":path", "/mcp"),
            (":method", "POST"),
            ("content-type", "application/json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let exchange = Exchange {
            headers,
            body: body.to_string().into_bytes(),
            peer: None,
            time_ns: u64::try_from(now).unwrap() * 1_000_000_000,
            decision_id: "d-1".into(),
            credentials: Credentials::Given(Identity::Verified(refunder.clone())),
            response: None,
            listed: None,
        };
        driver::run(&GateConfig::new("prod"), Some(&b), exchange, &mut store)
    };
    let call = |id: u64, amount: serde_json::Value| {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                           "params": {"name": "refund", "arguments": {"charge": "ch_1", "amount": amount}}})
    };
    let reason = |r: &driver::Run| r.flow.decision().reason.code();
    // A batch of 300 + 300 is 600: over the 500 of the task, refused whole, both ids answered.
    let batch = send(serde_json::json!([call(1, 300.into()), call(2, 300.into())]), day);
    assert_eq!(reason(&batch), "budget_exhausted");
    let reply = batch.reply.as_ref().unwrap();
    assert_eq!(reply.status, 429);
    let retry: i64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(retry, 86_400 - day.rem_euclid(86_400));
    let errors: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(errors[0]["id"], 1);
    assert_eq!(errors[1]["id"], 2);
    assert_eq!(errors[0]["error"]["code"], warden_core::decision::jsonrpc::LIMITED);
    let limit = &errors[0]["error"]["data"]["limit"];
    assert_eq!(limit["id"], "refund-budget-per-task");
    assert_eq!(limit["key"], serde_json::json!({"task": "task-b9"}));
    assert_eq!((limit["requested"].clone(), limit["remaining"].clone()), (600.into(), 500.into()));
    let record: serde_json::Value = serde_json::from_str(batch.record.as_deref().unwrap()).unwrap();
    assert_eq!(record["limit"]["id"], "refund-budget-per-task");
    assert_eq!(record["limit"]["remaining"], 500);
    assert_eq!(batch.counters.as_ref().unwrap().limit.as_deref(), Some("refund-budget-per-task"));
    // Nothing was consumed: 300 fits, then 200 fills the budget, then 0.5 is over.
    assert_eq!(reason(&send(call(3, 300.into()), day)), "allowed_by_rule");
    assert_eq!(reason(&send(call(4, 200.into()), day + 1)), "allowed_by_rule");
    let over = send(call(5, serde_json::json!(0.5)), day + 2);
    assert_eq!(reason(&over), "budget_exhausted");
    let body: serde_json::Value = serde_json::from_slice(&over.reply.unwrap().body).unwrap();
    assert_eq!(body["error"]["data"]["limit"]["remaining"], 0);
    assert_eq!(body["error"]["data"]["limit"]["requested"], 0.5);
    // An amount the budget cannot count exactly is refused as arguments, naming the argument.
    let inexact = send(call(6, serde_json::json!(0.1234567)), day + 3);
    assert_eq!(reason(&inexact), "invalid_arguments");
    let body: serde_json::Value = serde_json::from_slice(&inexact.reply.unwrap().body).unwrap();
    assert_eq!(body["error"]["data"]["argument"]["pointer"], "/amount");
    // A new day: the window ends, the counter starts over.
    let next_day = day - day.rem_euclid(86_400) + 86_400;
    assert_eq!(reason(&send(call(7, 500.into()), next_day)), "allowed_by_rule");
    // The record lines: the budget's counter (millionths) and the calls-per-agent counter.
    let (record, _) = warden_core::gate::SharedStore::get(&mut store, warden_core::limits::LIMITS_KEY).unwrap();
    let text = String::from_utf8(record).unwrap();
    assert!(text.lines().any(|l| l.starts_with(&format!("{} 500000000 ", next_day + 86_400))), "{text}");

    // A store that cannot be written: the allowed call is refused (fail closed), 503 with its own reason.
    struct Broken;
    impl warden_core::gate::SharedStore for Broken {
        fn get(&mut self, _: &str) -> Option<(Vec<u8>, u32)> {
            None
        }
        fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), warden_core::gate::StoreError> {
            Err(warden_core::gate::StoreError::Failed)
        }
    }
    let headers: Vec<(String, Vec<u8>)> = [
        (":authority", "mcp.refunds.acme.example"),
        (":path", "/mcp"),
        (":method", "POST"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let exchange = Exchange {
        headers,
        body: call(8, 10.into()).to_string().into_bytes(),
        peer: None,
        time_ns: u64::try_from(next_day).unwrap() * 1_000_000_000,
        decision_id: "d-2".into(),
        credentials: Credentials::Given(Identity::Verified(refunder.clone())),
        response: None,
        listed: None,
    };
    let down = driver::run(&GateConfig::new("prod"), Some(&b), exchange, &mut Broken);
    assert_eq!(down.flow.decision().reason.code(), "limit_store_unavailable");
    let reply = down.reply.unwrap();
    assert_eq!(reply.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], warden_core::decision::jsonrpc::UNAVAILABLE);
    assert_eq!(body["error"]["data"]["limit"]["remaining"], serde_json::Value::Null);
}
