//! Governance in the core: shadow rules, exceptions bounded by `granted_at` and `exception_policy`, the accessors
//! the filter uses after a decision, and settling a step-up with an approval.

use crate::common;

use common::{agent, compiled, now, t};
use serde_json::{json, Value};
use warden_core::approval::{ApprovalFailure, VerifiedApproval};
use warden_core::compile::{ExceptionInfo, StepUpRequirement, ToolIdx};
use warden_core::decide::{decide, decide_listing, decide_with_args, shadow};
use warden_core::decision::{Decision, Outcome, Reason};
use warden_core::facts::{Facts, Identity};

const BOT: &str = "spiffe://acme.example/agents/support/bot-1";

fn governed() -> Value {
    let mut v = common::base();
    let mut treasury = common::approver();
    treasury["id"] = json!("treasury");
    treasury["iss"] = json!("https://treasury.acme.example");
    treasury["max_approval_age_seconds"] = json!(120);
    v["approvers"].as_array_mut().unwrap().push(treasury);
    v["tools"][2]["log_arguments"] = json!(true);
    v["exception_policy"] = json!({"max_duration_days": 14, "environments": ["staging", "dev"]});
    v["rules"] = json!([
        {"id": "read-crm", "effect": "allow", "agents": ["spiffe://acme.example/agents/*"], "tools": ["crm.*"],
         "sensitivities": ["read"]},
        {"id": "no-admin", "effect": "deny", "sensitivities": ["admin"]},
        {"id": "refunds", "effect": "step_up", "tools": ["pay.refunds.create"],
         "step_up": {"approvers": ["approvals", "treasury"]}, "controls": ["OWASP-ASI02"]},
        {"id": "refunds-short", "effect": "step_up", "tools": ["pay.refunds.create"], "agents": ["spiffe://x/y"],
         "step_up": {"approvers": ["approvals"], "max_age_seconds": 60}},
        {"id": "update-exception", "effect": "allow", "agents": [BOT], "tools": ["crm.contacts.update"],
         "expires_at": "2026-12-10T00:00:00Z",
         "exception": {"approver": "ciso@acme.example", "ticket": "SEC-9", "granted_at": "2026-11-30T12:00:00Z"}},
        {"id": "shadow-no-reads", "effect": "deny", "tools": ["crm.contacts.read"], "environments": ["prod"],
         "shadow": true},
        {"id": "shadow-allow-admin", "effect": "allow", "sensitivities": ["admin"], "shadow": true}
    ]);
    v
}

fn facts(b: &warden_core::compile::CompiledBundle, env: &str, tool: &str) -> Facts {
    Facts { environment: env.into(), identity: Identity::Verified(agent(BOT)), tool: b.tool_by_id(tool) }
}

fn summary(d: &Decision) -> (&'static str, &'static str, String) {
    (d.outcome.as_str(), d.reason.code(), d.rule_id().to_string())
}

#[test]
fn shadow_rules_never_decide_and_are_reported() {
    let b = compiled(governed());
    assert!(b.has_shadow_rules());
    let read_prod = facts(&b, "prod", "crm.contacts.read");
    for d in [decide(&b, &read_prod, now()), decide_with_args(&b, &read_prod, None, now())] {
        assert_eq!(summary(&d), ("allow", "allowed_by_rule", "read-crm".into()));
    }
    assert_eq!(decide_listing(&b, &read_prod, now()).outcome, Outcome::Allow);
    let s = shadow(&b, &read_prod, None, now()).unwrap();
    assert_eq!(summary(&s), ("deny", "denied_by_rule", "shadow-no-reads".into()));
    assert_eq!(s.http_status(), 403);

    // The shadow rule does not match in staging: nothing to report.
    assert_eq!(shadow(&b, &facts(&b, "staging", "crm.contacts.read"), None, now()), None);

    // A shadow allow is outranked by an enforced deny: same decision, nothing to report.
    let admin = facts(&b, "prod", "admin.users.delete");
    assert_eq!(summary(&decide(&b, &admin, now())), ("deny", "denied_by_rule", "no-admin".into()));
    assert_eq!(shadow(&b, &admin, None, now()), None);

    // Shadow rules' ids are not in the enforced decisions at all.
    let rules: Vec<(&str, bool)> = b.rules().map(|r| (r.id, r.shadow)).collect();
    assert_eq!(rules.iter().filter(|r| r.1).count(), 2);

    // A bundle without shadow rules answers at once.
    let plain = compiled(common::base());
    assert!(!plain.has_shadow_rules());
    assert_eq!(shadow(&plain, &facts(&plain, "prod", "crm.contacts.read"), None, now()), None);
}

#[test]
fn shadow_of_a_no_match_is_a_would_allow() {
    let mut v = governed();
    v["rules"].as_array_mut().unwrap().push(json!(
        {"id": "shadow-allow-updates", "effect": "allow", "tools": ["crm.contacts.update"],
         "environments": ["prod"], "shadow": true}
    ));
    let b = compiled(v);
    let f = facts(&b, "prod", "crm.contacts.update");
    assert_eq!(summary(&decide(&b, &f, now())), ("deny", "no_matching_rule", "default".into()));
    let s = shadow(&b, &f, None, now()).unwrap();
    assert_eq!(summary(&s), ("allow", "allowed_by_rule", "shadow-allow-updates".into()));
}

#[test]
fn exceptions_match_from_granted_at_to_expires_at_in_allowed_environments() {
    let b = compiled(governed());
    let at = |env: &str, when: &str| summary(&decide(&b, &facts(&b, env, "crm.contacts.update"), t(when)));
    let allowed = ("allow", "allowed_by_exception", "update-exception".to_string());
    let none = ("deny", "no_matching_rule", "default".to_string());
    assert_eq!(at("staging", "2026-11-30T11:59:59Z"), none, "before granted_at");
    assert_eq!(at("staging", "2026-11-30T12:00:00Z"), allowed, "at granted_at");
    assert_eq!(at("dev", "2026-12-09T23:59:59Z"), allowed, "one second before expiry");
    assert_eq!(at("staging", "2026-12-10T00:00:00Z"), none, "at expiry");
    // No environments selector: exactly exception_policy.environments.
    assert_eq!(at("prod", "2026-12-01T00:00:00Z"), none, "prod is not an exception environment");
    assert_eq!(
        b.exception_of("update-exception"),
        Some(ExceptionInfo {
            approver: "ciso@acme.example",
            ticket: "SEC-9",
            granted_at: t("2026-11-30T12:00:00Z"),
            expires_at: t("2026-12-10T00:00:00Z"),
        })
    );
    assert_eq!(b.exception_of("read-crm"), None);
    assert_eq!(b.exception_of("no-such-rule"), None);
}

#[test]
fn step_up_requirements_and_tool_accessors() {
    let b = compiled(governed());
    assert_eq!(
        b.step_up_requirement("refunds"),
        Some(StepUpRequirement {
            approvers: vec![
                ("approvals", "https://approvals.acme.example"),
                ("treasury", "https://treasury.acme.example")
            ],
            max_age_seconds: 120,
        })
    );
    assert_eq!(
        b.step_up_requirement("refunds-short"),
        Some(StepUpRequirement {
            approvers: vec![("approvals", "https://approvals.acme.example")],
            max_age_seconds: 60
        })
    );
    assert_eq!(b.step_up_requirement("read-crm"), None);
    assert_eq!(b.step_up_requirement("nope"), None);
    let refunds = b.tool_by_id("pay.refunds.create").unwrap();
    assert!(b.logs_arguments(refunds));
    assert!(!b.logs_arguments(b.tool_by_id("crm.contacts.read").unwrap()));
    assert!(!b.logs_arguments(ToolIdx(999)));
    assert_eq!(b.tool_sensitivity(refunds), warden_core::bundle::Sensitivity::Payment);
    assert_eq!(b.approvers.ids().collect::<Vec<_>>(), vec!["approvals", "treasury"]);
}

#[test]
fn with_approval_settles_only_step_ups() {
    let b = compiled(governed());
    let step_up = decide(&b, &facts(&b, "prod", "pay.refunds.create"), now());
    assert_eq!(summary(&step_up), ("step_up", "step_up_required", "refunds".into()));
    let approval = VerifiedApproval {
        id: "jti-1".into(),
        approver: "approvals".into(),
        approved_by: Some("alice@acme.example".into()),
        expires_at: now() + 60,
        decision_id: None,
    };
    let allowed = step_up.clone().with_approval(Ok(&approval));
    assert_eq!(summary(&allowed), ("allow", "allowed_by_approval", "refunds".into()));
    assert_eq!((allowed.http_status(), allowed.revision), (200, 7));
    for failure in ApprovalFailure::ALL {
        let refused = step_up.clone().with_approval(Err(*failure));
        assert_eq!(refused.outcome, Outcome::StepUp);
        assert_eq!(refused.reason, Reason::ApprovalRefused(*failure));
        assert_eq!(refused.reason.code(), failure.code());
        assert_eq!((refused.rule_id(), refused.http_status()), ("refunds", 403));
    }
    // Any other decision is unchanged.
    let read = decide(&b, &facts(&b, "prod", "crm.contacts.read"), now());
    assert_eq!(read.clone().with_approval(Err(ApprovalFailure::Expired)), read);
    let admin = decide(&b, &facts(&b, "prod", "admin.users.delete"), now());
    assert_eq!(admin.clone().with_approval(Ok(&approval)), admin);
}
