//! Decision precedence, selectors and agent patterns (table-driven): facts in, decision out.

use crate::common;

use common::{agent, compiled, now, t, with_task};
use serde_json::{json, Value};
use warden_core::compile::{CompiledBundle, ToolIdx};
use warden_core::decide::decide;
use warden_core::decision::Outcome;
use warden_core::facts::{Agent, Facts, Identity, TokenFailure};

const A: &str = "spiffe://a/agents";

fn decide_bundle(unknown_tool: &str) -> Value {
    let ci_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "acme-ci-test-1", "alg": "ES256", "use": "sig",
        "x": "kIoviSMD-_gGvkM9C-Bn4VJy2RDndU3Iytb5PYaunUU", "y": "BOUWs5qGjPJakFMyDcJMHczq6SHrSYwGs-1NinkNX3w"});
    let mut v = common::base();
    v["issuers"].as_array_mut().unwrap().push(json!({
        "id": "other-idp", "iss": "https://other.example", "audiences": ["warden"], "jwks": {"keys": [ci_jwk]},
        "algorithms": ["ES256"], "max_token_lifetime_seconds": 600, "profile": "spiffe_jwt_svid"
    }));
    v["tools"] = json!([
        {"id": "crm.contacts.read", "sensitivity": "read"},
        {"id": "crm.contacts.update", "sensitivity": "write"},
        {"id": "pay.refunds.create", "sensitivity": "payment"},
        {"id": "admin.users.delete", "sensitivity": "admin"},
        {"id": "crm.notes.read", "sensitivity": "read"},
        {"id": "kb.read", "sensitivity": "read"}
    ]);
    v["rules"] = json!([
        {"id": "quarantine", "effect": "deny", "agents": [format!("{A}/quarantine/*")]},
        {"id": "deny-admin", "effect": "deny", "sensitivities": ["admin"]},
        {"id": "refund-step-up", "effect": "step_up", "agents": [format!("{A}/finance/*")], "tools": ["pay.refunds.create"],
         "step_up": {"approvers": ["approvals"]}},
        {"id": "support-read", "effect": "allow", "agents": [format!("{A}/support/*")], "sensitivities": ["read"],
         "environments": ["prod", "staging"]},
        {"id": "contacts-any-agent", "effect": "allow", "agents": [format!("{A}/*")], "tools": ["crm.contacts.read"]},
        {"id": "bot1-update-exception", "effect": "allow", "agents": [format!("{A}/support/bot-1")],
         "tools": ["crm.contacts.update"], "expires_at": "2026-12-15T00:00:00Z",
         "exception": {"approver": "ciso@acme.example", "ticket": "SEC-42", "granted_at": "2026-11-20T00:00:00Z"}},
        {"id": "kb-until-mid-november", "effect": "allow", "tools": ["kb.read"], "expires_at": "2026-11-15T00:00:00Z"},
        {"id": "notes-for-case-review", "effect": "allow", "agents": ["*"], "tools": ["crm.notes.read"],
         "task_purposes": ["case-review"]},
        {"id": "dev-writes-in-staging", "effect": "allow", "agents": [format!("{A}/dev/*")], "sensitivities": ["write"],
         "environments": ["staging"]},
        {"id": "no-writes-in-prod", "effect": "deny", "sensitivities": ["write"], "environments": ["prod"]},
        {"id": "kb-for-other-idp", "effect": "allow", "tools": ["kb.*"], "issuers": ["other-idp"]},
        {"id": "finance-not-contacts", "effect": "deny", "agents": [format!("{A}/finance/*")],
         "tools": ["crm.contacts.read"]}
    ]);
    v["revocations"] = json!({"agents": [format!("{A}/support/bot-revoked")], "tasks": ["task-bad"],
        "token_ids": ["jti-bad"]});
    v["defaults"] = json!({"unknown_tool": unknown_tool});
    v
}

/// One case: facts → (outcome, reason code, rule id or `default`, HTTP status).
struct Case {
    name: &'static str,
    env: &'static str,
    identity: Identity,
    tool: Option<&'static str>,
    now: i64,
    want: (Outcome, &'static str, &'static str, u16),
}

fn check(b: &CompiledBundle, c: Case) {
    let tool = c.tool.map(|id| b.tool_by_id(id).unwrap_or_else(|| panic!("{}: no tool {id}", c.name)));
    let facts = Facts { environment: c.env.to_string(), identity: c.identity, tool };
    let d = decide(b, &facts, c.now);
    let got = (d.outcome, d.reason.code(), d.rule_id(), d.http_status());
    assert_eq!(got, c.want, "case {}", c.name);
    assert_eq!(d.revision, 7, "case {}", c.name);
}

fn v(a: Agent) -> Identity {
    Identity::Verified(a)
}

fn ag(suffix: &str) -> Agent {
    agent(&format!("{A}/{suffix}"))
}

fn case(name: &'static str, env: &'static str, identity: Identity, tool: Option<&'static str>) -> Case {
    Case { name, env, identity, tool, now: now(), want: (Outcome::Deny, "", "", 0) }
}

trait Want {
    fn at(self, now: i64) -> Self;
    fn want(self, outcome: Outcome, reason: &'static str, rule: &'static str, status: u16) -> Self;
}

impl Want for Case {
    fn at(mut self, now: i64) -> Self {
        self.now = now;
        self
    }
    fn want(mut self, outcome: Outcome, reason: &'static str, rule: &'static str, status: u16) -> Self {
        self.want = (outcome, reason, rule, status);
        self
    }
}

use Outcome::{Allow, Deny, StepUp};

#[test]
fn identity_revocation_and_task() {
    let b = compiled(decide_bundle("deny"));
    let mut jti_bad = ag("support/bot-1");
    jti_bad.token_id = Some("jti-bad".into());
    let mut jti_ok = ag("support/bot-1");
    jti_ok.token_id = Some("jti-ok".into());
    let cases = vec![
        case("missing identity", "prod", Identity::Missing, Some("crm.contacts.read")).want(
            Deny,
            "identity_missing",
            "default",
            401,
        ),
        case("missing identity, unknown tool", "prod", Identity::Missing, None).want(
            Deny,
            "identity_missing",
            "default",
            401,
        ),
        case("invalid identity", "prod", Identity::Invalid(TokenFailure::Expired), Some("crm.contacts.read")).want(
            Deny,
            "token_expired",
            "default",
            401,
        ),
        case("invalid identity, bad signature", "prod", Identity::Invalid(TokenFailure::BadSignature), None).want(
            Deny,
            "token_bad_signature",
            "default",
            401,
        ),
        case("revoked agent beats allow", "prod", v(ag("support/bot-revoked")), Some("crm.contacts.read")).want(
            Deny,
            "revoked_agent",
            "default",
            403,
        ),
        case("revoked agent beats unknown-tool default", "prod", v(ag("support/bot-revoked")), None).want(
            Deny,
            "revoked_agent",
            "default",
            403,
        ),
        case(
            "revoked task beats allow",
            "prod",
            v(with_task(ag("support/bot-1"), "task-bad", None, None)),
            Some("crm.contacts.read"),
        )
        .want(Deny, "revoked_task", "default", 403),
        case("revoked token beats allow", "prod", v(jti_bad), Some("crm.contacts.read")).want(
            Deny,
            "revoked_token",
            "default",
            403,
        ),
        case("other token id is fine", "prod", v(jti_ok), Some("crm.contacts.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case(
            "task expired at now",
            "prod",
            v(with_task(ag("support/bot-1"), "task-1", None, Some(now()))),
            Some("crm.contacts.read"),
        )
        .want(Deny, "task_expired", "default", 403),
        case(
            "task expired beats unknown tool",
            "prod",
            v(with_task(ag("support/bot-1"), "task-1", None, Some(now() - 1))),
            None,
        )
        .want(Deny, "task_expired", "default", 403),
        case(
            "task valid one second more",
            "prod",
            v(with_task(ag("support/bot-1"), "task-1", None, Some(now() + 1))),
            Some("crm.contacts.read"),
        )
        .want(Allow, "allowed_by_rule", "support-read", 200),
        case("unknown tool, default deny", "prod", v(ag("support/bot-1")), None).want(
            Deny,
            "unknown_tool",
            "default",
            403,
        ),
    ];
    for c in cases {
        check(&b, c);
    }

    let allow_unknown = compiled(decide_bundle("allow"));
    check(
        &allow_unknown,
        case("unknown tool, default allow", "prod", v(ag("support/bot-1")), None).want(
            Allow,
            "unknown_tool",
            "default",
            200,
        ),
    );
    check(
        &allow_unknown,
        case("default allow does not override revocation", "prod", v(ag("support/bot-revoked")), None).want(
            Deny,
            "revoked_agent",
            "default",
            403,
        ),
    );
    check(
        &allow_unknown,
        case("default allow does not apply to known tools", "prod", v(ag("support/bot-1")), Some("pay.refunds.create"))
            .want(Deny, "no_matching_rule", "default", 403),
    );
}

#[test]
fn rule_precedence() {
    let b = compiled(decide_bundle("deny"));
    let cases = vec![
        case("earliest allow names the decision", "prod", v(ag("support/bot-1")), Some("crm.contacts.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case("second allow when the first does not match", "dev", v(ag("support/bot-1")), Some("crm.contacts.read"))
            .want(Allow, "allowed_by_rule", "contacts-any-agent", 200),
        case("deny beats an earlier allow", "prod", v(ag("finance/bot")), Some("crm.contacts.read")).want(
            Deny,
            "denied_by_rule",
            "finance-not-contacts",
            403,
        ),
        case("earliest deny names the decision", "prod", v(ag("quarantine/x")), Some("admin.users.delete")).want(
            Deny,
            "denied_by_rule",
            "quarantine",
            403,
        ),
        case("deny by sensitivity for everyone", "prod", v(ag("support/bot-1")), Some("admin.users.delete")).want(
            Deny,
            "denied_by_rule",
            "deny-admin",
            403,
        ),
        case("step-up without approval", "prod", v(ag("finance/bot")), Some("pay.refunds.create")).want(
            StepUp,
            "step_up_required",
            "refund-step-up",
            403,
        ),
        case("step-up rule is for finance only", "prod", v(ag("support/bot-1")), Some("pay.refunds.create")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case("exception allows", "staging", v(ag("support/bot-1")), Some("crm.contacts.update")).want(
            Allow,
            "allowed_by_exception",
            "bot1-update-exception",
            200,
        ),
        case("deny beats exception", "prod", v(ag("support/bot-1")), Some("crm.contacts.update")).want(
            Deny,
            "denied_by_rule",
            "no-writes-in-prod",
            403,
        ),
        case("expired exception no longer matches", "staging", v(ag("support/bot-1")), Some("crm.contacts.update"))
            .at(t("2026-12-15T00:00:00Z"))
            .want(Deny, "no_matching_rule", "default", 403),
        case("exception one second before expiry", "staging", v(ag("support/bot-1")), Some("crm.contacts.update"))
            .at(t("2026-12-14T23:59:59Z"))
            .want(Allow, "allowed_by_exception", "bot1-update-exception", 200),
        case("exception is for bot-1 only", "staging", v(ag("support/bot-2")), Some("crm.contacts.update")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case("expired rule no longer matches", "prod", v(ag("support/bot-1")), Some("kb.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case("expired rule, no other match", "prod", v(ag("dev/bot")), Some("kb.read")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case("rule before its expiry", "prod", v(ag("dev/bot")), Some("kb.read")).at(t("2026-11-14T00:00:00Z")).want(
            Allow,
            "allowed_by_rule",
            "kb-until-mid-november",
            200,
        ),
    ];
    for c in cases {
        check(&b, c);
    }
}

#[test]
fn selectors() {
    let b = compiled(decide_bundle("deny"));
    let mut other_idp = ag("dev/bot");
    other_idp.issuer = "other-idp".into();
    let cases = vec![
        // Environments.
        case("environment selects", "staging", v(ag("dev/bot")), Some("crm.contacts.update")).want(
            Allow,
            "allowed_by_rule",
            "dev-writes-in-staging",
            200,
        ),
        case("environment excludes", "prod", v(ag("dev/bot")), Some("crm.contacts.update")).want(
            Deny,
            "denied_by_rule",
            "no-writes-in-prod",
            403,
        ),
        case("no environment matches", "dev", v(ag("dev/bot")), Some("crm.contacts.update")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case("environment is case-sensitive", "Staging", v(ag("dev/bot")), Some("crm.contacts.update")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        // Task purposes.
        case(
            "task purpose selects",
            "prod",
            v(with_task(ag("dev/bot"), "t1", Some("case-review"), None)),
            Some("crm.notes.read"),
        )
        .want(Allow, "allowed_by_rule", "notes-for-case-review", 200),
        case(
            "other task purpose",
            "prod",
            v(with_task(ag("dev/bot"), "t1", Some("marketing"), None)),
            Some("crm.notes.read"),
        )
        .want(Deny, "no_matching_rule", "default", 403),
        case("task without purpose", "prod", v(with_task(ag("dev/bot"), "t1", None, None)), Some("crm.notes.read"))
            .want(Deny, "no_matching_rule", "default", 403),
        case("no task context", "prod", v(ag("dev/bot")), Some("crm.notes.read")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        // Sensitivities without a tools selector select every tool of that sensitivity.
        case("sensitivity selects kb", "prod", v(ag("support/bot-9")), Some("kb.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case("sensitivity selects notes", "staging", v(ag("support/bot-9")), Some("crm.notes.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case("sensitivity does not select writes", "staging", v(ag("support/bot-9")), Some("crm.contacts.update"))
            .want(Deny, "no_matching_rule", "default", 403),
        // Issuers.
        case("issuer selects", "prod", v(other_idp), Some("kb.read")).want(
            Allow,
            "allowed_by_rule",
            "kb-for-other-idp",
            200,
        ),
        // Agent patterns at segment boundaries.
        case(
            "prefix needs the segment boundary",
            "prod",
            v(agent("spiffe://a/agentsX/support/bot-1")),
            Some("crm.contacts.read"),
        )
        .want(Deny, "no_matching_rule", "default", 403),
        case("prefix itself without slash", "prod", v(agent("spiffe://a/agents/support")), Some("crm.contacts.read"))
            .want(Allow, "allowed_by_rule", "contacts-any-agent", 200),
        case(
            "prefix needs something after the slash",
            "prod",
            v(agent("spiffe://a/agents/")),
            Some("crm.contacts.read"),
        )
        .want(Deny, "no_matching_rule", "default", 403),
        case("prefix matches deeper ids", "prod", v(ag("support/eu/bot-7")), Some("crm.contacts.read")).want(
            Allow,
            "allowed_by_rule",
            "support-read",
            200,
        ),
        case("exact id is exact", "staging", v(ag("support/bot-10")), Some("crm.contacts.update")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case(
            "agent ids are case-sensitive",
            "prod",
            v(agent("spiffe://a/Agents/support/bot-1")),
            Some("crm.contacts.read"),
        )
        .want(Deny, "no_matching_rule", "default", 403),
        case("star matches any agent", "prod", v(agent("bot")), Some("crm.notes.read")).want(
            Deny,
            "no_matching_rule",
            "default",
            403,
        ),
        case(
            "star matches any agent with the purpose",
            "prod",
            v(with_task(agent("bot"), "t", Some("case-review"), None)),
            Some("crm.notes.read"),
        )
        .want(Allow, "allowed_by_rule", "notes-for-case-review", 200),
    ];
    for c in cases {
        check(&b, c);
    }
}

#[test]
fn tool_index_from_another_bundle_fails_closed() {
    let b = compiled(decide_bundle("allow"));
    let facts = Facts { environment: "prod".into(), identity: v(ag("support/bot-1")), tool: Some(ToolIdx(999)) };
    let d = decide(&b, &facts, now());
    assert_eq!((d.outcome, d.reason.code(), d.rule_id()), (Deny, "unknown_tool", "default"));
    assert_eq!(b.tool_id(ToolIdx(999)), "");
}

#[test]
fn accessors() {
    let b = compiled(decide_bundle("allow"));
    assert_eq!(b.revision, 7);
    assert_eq!(b.issued_at, t("2026-11-01T00:00:00Z"));
    assert_eq!(b.expires_at, t("2027-12-31T00:00:00Z"));
    assert_eq!(b.owner, "security@acme.example");
    assert_eq!(b.authority, "policy.acme.example");
    assert_eq!(b.default_unknown_tool(), warden_core::bundle::Effect::Allow);
    assert_eq!(b.tool_count(), 6);
    let refunds = b.tool_by_id("pay.refunds.create").unwrap();
    assert_eq!(b.tool_id(refunds), "pay.refunds.create");
    assert_eq!(b.tool_sensitivity(refunds), warden_core::bundle::Sensitivity::Payment);
    let rules: Vec<_> = b.rules().map(|r| (r.id, r.effect.as_str(), r.exception)).collect();
    assert_eq!(rules.len(), 12);
    assert_eq!(rules[5], ("bot1-update-exception", "allow", true));
    assert!(b.revoked_signing_keys().is_empty());
}

#[test]
fn namespace_selectors_match_whole_segments_at_every_depth() {
    let mut bundle = common::base();
    bundle["tools"] = json!([
        {"id": "a.b.c", "sensitivity": "read"},
        {"id": "a.bc", "sensitivity": "read"},
        {"id": "ab.c", "sensitivity": "read"},
        {"id": "a.b.d.e", "sensitivity": "read"},
        {"id": "x.y", "sensitivity": "read"}
    ]);
    bundle["rules"] = json!([
        {"id": "deep", "effect": "allow", "agents": [format!("{A}/support/*")], "tools": ["a.b.*"]},
        {"id": "top", "effect": "step_up", "agents": [format!("{A}/support/*")], "tools": ["x.*", "a.b.d.*"],
         "step_up": {"approvers": ["approvals"]}},
        {"id": "all-a", "effect": "allow", "agents": [format!("{A}/other/*")], "tools": ["a.*"]}
    ]);
    let b = compiled(bundle);
    let cases = [
        ("support/bot-1", "a.b.c", "deep"),
        ("support/bot-1", "a.b.d.e", "top"),
        ("support/bot-1", "x.y", "top"),
        ("support/bot-1", "a.bc", "default"),
        ("support/bot-1", "ab.c", "default"),
        ("other/bot-2", "a.b.c", "all-a"),
        ("other/bot-2", "a.bc", "all-a"),
        ("other/bot-2", "a.b.d.e", "all-a"),
        ("other/bot-2", "ab.c", "default"),
        ("other/bot-2", "x.y", "default"),
    ];
    for (agent, tool, rule) in cases {
        let facts = Facts { environment: "prod".into(), identity: v(ag(agent)), tool: b.tool_by_id(tool) };
        let d = decide(&b, &facts, now());
        assert_eq!(d.rule_id(), rule, "{agent} on {tool}");
    }
}
