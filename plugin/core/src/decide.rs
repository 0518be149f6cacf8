//! `decide`: facts in, decision out; pure and total.
//!
//! Precedence (DESIGN.md §3.4), first that applies wins:
//! 1. identity missing → deny `identity_missing` (401); identity invalid → deny with the token failure code (401);
//! 2. revoked agent, task or token id → deny `revoked_*`;
//! 3. task past its `expires_at` → deny `task_expired`;
//! 4. no tool → the bundle's `defaults.unknown_tool` with reason `unknown_tool` and no rule;
//! 5. a matching deny rule → deny; else a matching step-up rule → step-up (approvals are checked by the caller);
//!    else a matching allow rule → allow (`allowed_by_exception` for an exception); else deny `no_matching_rule`.
//!
//! A rule past its `expires_at` does not match. Among matching rules of the same effect the earliest in the bundle
//! names the decision. The candidate rules come from the compiled index (tool × agent class), so the cost does not
//! depend on the number of rules in the bundle. Nothing is allocated except the clone of the deciding rule's id.

use crate::bundle::Effect;
use crate::compile::{effect_rank, sensitivity_bit, CompiledBundle, CompiledRule};
use crate::decision::{Decision, Outcome, Reason};
use crate::facts::{Agent, Facts, Identity};
use crate::index::{Candidates, ALL_TOOLS, ANY_AGENT};

/// Decides one request. `now` is seconds since the epoch, from the caller's clock.
pub fn decide(bundle: &CompiledBundle, facts: &Facts, now: i64) -> Decision {
    let done = |outcome: Outcome, reason: Reason| Decision { outcome, reason, rule: None, revision: bundle.revision };
    let agent = match &facts.identity {
        Identity::Missing => return done(Outcome::Deny, Reason::IdentityMissing),
        Identity::Invalid(failure) => return done(Outcome::Deny, Reason::IdentityInvalid(*failure)),
        Identity::Verified(agent) => agent,
    };
    // One lookup of the exact id answers both "revoked?" and "which rules name it exactly?".
    let exact = bundle.agents.exact(&agent.id);
    if exact.revoked {
        return done(Outcome::Deny, Reason::RevokedAgent);
    }
    if let Some(task) = &agent.task {
        if !bundle.revoked_tasks.is_empty() && bundle.revoked_tasks.contains(task.id.as_str()) {
            return done(Outcome::Deny, Reason::RevokedTask);
        }
    }
    if let Some(jti) = &agent.token_id {
        if !bundle.revoked_tokens.is_empty() && bundle.revoked_tokens.contains(jti.as_str()) {
            return done(Outcome::Deny, Reason::RevokedToken);
        }
    }
    if let Some(task_expiry) = agent.task.as_ref().and_then(|t| t.expires_at) {
        if task_expiry <= now {
            return done(Outcome::Deny, Reason::TaskExpired);
        }
    }
    let Some(tool_idx) = facts.tool else {
        return match bundle.unknown_tool {
            Effect::Allow => done(Outcome::Allow, Reason::UnknownTool),
            Effect::Deny | Effect::StepUp => done(Outcome::Deny, Reason::UnknownTool),
        };
    };
    // An index from another bundle: fail closed.
    let Some(tool) = bundle.tools.get(tool_idx.0 as usize) else {
        return done(Outcome::Deny, Reason::UnknownTool);
    };
    let tool_bit = sensitivity_bit(tool.sensitivity);

    // Best (lowest precedence key) matching rule over every candidate list.
    let mut best: Option<(u64, &CompiledRule)> = None;
    let mut consider = |candidates: &[u32]| {
        for &r in candidates {
            let Some(rule) = bundle.rules.get(r as usize) else { continue };
            let key = (effect_rank(rule.effect) << 32) | u64::from(r);
            if best.is_some_and(|(b, _)| b <= key) {
                // Lists are sorted by key: nothing later in this one can beat the best so far.
                return;
            }
            if matches(rule, agent, &facts.environment, tool_bit, now) {
                best = Some((key, rule));
                return;
            }
        }
    };
    let scope = Candidates::tool_scope(tool_idx.0);
    let all_tools = bundle.candidates.has_all_tools();
    let mut visit = |class: u32| {
        consider(bundle.candidates.get(scope, class));
        if all_tools {
            consider(bundle.candidates.get(ALL_TOOLS, class));
        }
    };
    visit(ANY_AGENT);
    if let Some(class) = exact.class {
        visit(class);
    }
    bundle.agents.for_each_prefix_class(&agent.id, visit);

    match best {
        None => done(Outcome::Deny, Reason::NoMatchingRule),
        Some((_, rule)) => {
            let (outcome, reason) = match rule.effect {
                Effect::Deny => (Outcome::Deny, Reason::DeniedByRule),
                Effect::StepUp => (Outcome::StepUp, Reason::StepUpRequired),
                Effect::Allow if rule.exception => (Outcome::Allow, Reason::AllowedByException),
                Effect::Allow => (Outcome::Allow, Reason::AllowedByRule),
            };
            Decision { outcome, reason, rule: Some(rule.id.clone()), revision: bundle.revision }
        }
    }
}

/// The selectors that are not indexed: expiry, sensitivity (for rules that select every tool), environment, task
/// purpose, issuer.
#[inline]
fn matches(rule: &CompiledRule, agent: &Agent, environment: &str, tool_bit: u8, now: i64) -> bool {
    if rule.expires_at.is_some_and(|e| e <= now) {
        return false;
    }
    if rule.sensitivities & tool_bit == 0 {
        return false;
    }
    if let Some(envs) = &rule.environments {
        if !envs.iter().any(|e| &**e == environment) {
            return false;
        }
    }
    if let Some(purposes) = &rule.task_purposes {
        let Some(purpose) = agent.task.as_ref().and_then(|t| t.purpose.as_deref()) else {
            return false;
        };
        if !purposes.iter().any(|p| &**p == purpose) {
            return false;
        }
    }
    if let Some(issuers) = &rule.issuers {
        if !issuers.iter().any(|i| **i == *agent.issuer) {
            return false;
        }
    }
    true
}
