//! `decide`: facts in, decision out; pure and total.
//!
//! Precedence (DESIGN.md §3.4), first that applies wins:
//! 0. a public route of the bundle (`public_routes`, or a protected resource's metadata document the gateway serves)
//!    → allow `public_route` (rule: the route's id) / `resource_metadata`, without identity ([`public`]; the gate
//!    looks the route up before it reads any token);
//! 1. identity missing → deny `identity_missing` (401); identity invalid → deny with the token failure code (401);
//! 2. revoked agent, task or token id → deny `revoked_*`;
//! 3. task past its `expires_at` → deny `task_expired`;
//! 4. no tool → the bundle's `defaults.unknown_tool` with reason `unknown_tool` and no rule;
//! 5. a matching deny rule → deny; else a matching step-up rule → step-up (approvals are checked by the caller);
//!    else a matching allow rule → allow (`allowed_by_exception` for an exception); else deny `no_matching_rule`.
//!
//! Argument conditions (`args`) are checked last, on candidates whose other selectors match. A rule whose
//! conditions are false does not match. When they cannot be evaluated (an argument missing or of the wrong type) the
//! rule never loosens policy: an allow rule does not match, and a deny or step-up rule denies with reason
//! `invalid_arguments` (a call that cannot be checked is not sent to an approver either). [`decide`] is
//! [`decide_with_args`] without arguments.
//!
//! A rule past its `expires_at` does not match, nor an exception before its `granted_at`. Among matching rules of
//! the same effect the earliest in the bundle names the decision. The candidate rules come from the compiled index
//! (tool × agent class), so the cost does not depend on the number of rules in the bundle. Nothing is allocated
//! except the clone of the deciding rule's id.
//!
//! A step-up decision is final only once the caller has checked the call's approval (`CompiledBundle::verify_approval`, then
//! `Decision::with_approval`).
//!
//! # Shadow rules
//!
//! Rules with `shadow: true` sit in their own candidate index and take no part in [`decide`], [`decide_with_args`]
//! or [`decide_listing`]: the request is decided as if they were absent. [`shadow`] decides again with them
//! included (same precedence) and returns that decision when it differs from the enforced one, for the decision
//! record (`would_deny`, `would_step_up`, `would_allow`); with no shadow rule in the bundle it returns at once.

pub mod mcp;

use serde_json::Value;

use crate::args::Truth;
use crate::bundle::Effect;
use crate::compile::{CompiledBundle, CompiledRule, PublicTarget};
use crate::decision::{Decision, Outcome, Reason};
use crate::facts::{Agent, Facts, Identity};
use crate::index::ExactAgent;

/// Which rules a decision consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// The enforced rules (shadow rules left out).
    Enforced,
    /// The enforced rules and the shadow rules.
    WithShadow,
}

/// How argument conditions are read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Args<'v> {
    /// Against the call's arguments (`None`: the call has none).
    Call(Option<&'v Value>),
    /// For listing tools: conditions may hold for some call. A conditional deny rule does not count; a conditional
    /// step-up rule ranks after allow rules (the tool is callable without approval for some arguments).
    Listing,
}

/// Decides one request. `now` is seconds since the epoch, from the caller's clock.
pub fn decide(bundle: &CompiledBundle, facts: &Facts, now: i64) -> Decision {
    decide_inner(bundle, facts, Args::Call(None), now, Pool::Enforced)
}

/// Decides one call with its arguments (an MCP `tools/call`'s `arguments`), for rules with `conditions`.
pub fn decide_with_args(bundle: &CompiledBundle, facts: &Facts, arguments: Option<&Value>, now: i64) -> Decision {
    decide_inner(bundle, facts, Args::Call(arguments), now, Pool::Enforced)
}

/// Decides whether a tool could be called at all, reading argument conditions optimistically (see `Args`). For
/// filtering `tools/list`; never for letting a call through.
pub fn decide_listing(bundle: &CompiledBundle, facts: &Facts, now: i64) -> Decision {
    decide_inner(bundle, facts, Args::Listing, now, Pool::Enforced)
}

/// What the bundle's shadow rules would change: the decision with shadow rules included, when it differs from the
/// enforced one ([`decide_with_args`] with the same `arguments`) in outcome, reason or rule; `None` when it does
/// not, or when the bundle has no shadow rule (checked first, in constant time). Never enforced: for the record.
pub fn shadow(bundle: &CompiledBundle, facts: &Facts, arguments: Option<&Value>, now: i64) -> Option<Decision> {
    if !bundle.has_shadow_rules() {
        return None;
    }
    let enforced = decide_inner(bundle, facts, Args::Call(arguments), now, Pool::Enforced);
    let with_shadow = decide_inner(bundle, facts, Args::Call(arguments), now, Pool::WithShadow);
    (with_shadow != enforced).then_some(with_shadow)
}

/// The decision for a request that needs no identity (see [`CompiledBundle::resolve_public`]): allow, reason
/// `public_route` with the public route's id as its rule, or `resource_metadata` (the gateway answers the document).
pub fn public(bundle: &CompiledBundle, target: PublicTarget) -> Decision {
    let (reason, rule) = match target {
        PublicTarget::Route(i) => (Reason::PublicRoute, Some(bundle.public_route_id(i).into())),
        PublicTarget::Metadata(_) => (Reason::ResourceMetadata, None),
    };
    Decision { outcome: Outcome::Allow, reason, rule, revision: bundle.revision }
}

/// The checks before any tool or rule: identity, revocations, task expiry. `Err` is the refusal.
pub(crate) fn decide_gate<'f>(
    bundle: &CompiledBundle,
    facts: &'f Facts,
    now: i64,
) -> Result<(&'f Agent, ExactAgent), Decision> {
    let done = |outcome: Outcome, reason: Reason| Decision { outcome, reason, rule: None, revision: bundle.revision };
    let agent = match &facts.identity {
        Identity::Missing => return Err(done(Outcome::Deny, Reason::IdentityMissing)),
        Identity::Invalid(failure) => return Err(done(Outcome::Deny, Reason::IdentityInvalid(*failure))),
        Identity::Verified(agent) => agent,
    };
    // One lookup of the exact id answers both "revoked?" and "which rules name it exactly?".
    let exact = bundle.agents.exact(&agent.id);
    if exact.revoked {
        return Err(done(Outcome::Deny, Reason::RevokedAgent));
    }
    if let Some(task) = &agent.task {
        if !bundle.revoked_tasks.is_empty() && bundle.revoked_tasks.contains(task.id.as_str()) {
            return Err(done(Outcome::Deny, Reason::RevokedTask));
        }
    }
    if let Some(jti) = &agent.token_id {
        if !bundle.revoked_tokens.is_empty() && bundle.revoked_tokens.contains(jti.as_str()) {
            return Err(done(Outcome::Deny, Reason::RevokedToken));
        }
    }
    if let Some(task_expiry) = agent.task.as_ref().and_then(|t| t.expires_at) {
        if task_expiry <= now {
            return Err(done(Outcome::Deny, Reason::TaskExpired));
        }
    }
    Ok((agent, exact))
}

fn decide_inner(bundle: &CompiledBundle, facts: &Facts, args: Args<'_>, now: i64, pool: Pool) -> Decision {
    let done = |outcome: Outcome, reason: Reason| Decision { outcome, reason, rule: None, revision: bundle.revision };
    let (agent, exact) = match decide_gate(bundle, facts, now) {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
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
    let tool_bit = tool.sensitivity.bit();

    // Best (lowest precedence key) matching rule over every candidate list. Lists are sorted by each rule's
    // lowest possible key (`CompiledRule::floor_key`): a step-up rule with conditions may deny.
    let mut best: Option<(u64, &CompiledRule, Outcome, Reason)> = None;
    let mut consider = |candidates: &[u32]| {
        for &r in candidates {
            let Some(rule) = bundle.rules.get(r as usize) else { continue };
            let floor = rule.floor_key(r);
            if best.is_some_and(|(b, ..)| b <= floor) {
                // Nothing later in this list can beat the best so far.
                return;
            }
            if !matches(rule, agent, &facts.environment, tool_bit, now) {
                continue;
            }
            let Some((rank, outcome, reason)) = effect_of(rule, args) else { continue };
            let key = (rank << 32) | u64::from(r);
            if best.is_none_or(|(b, ..)| key < b) {
                best = Some((key, rule, outcome, reason));
            }
            if key == floor {
                return;
            }
        }
    };
    bundle.candidates.for_each_list(&bundle.agents, tool_idx.0, exact.class, &agent.id, &mut consider);
    if pool == Pool::WithShadow {
        if let Some(shadow) = &bundle.shadow_candidates {
            shadow.for_each_list(&bundle.agents, tool_idx.0, exact.class, &agent.id, &mut consider);
        }
    }

    match best {
        None => done(Outcome::Deny, Reason::NoMatchingRule),
        Some((_, rule, outcome, reason)) => {
            Decision { outcome, reason, rule: Some(rule.id.clone()), revision: bundle.revision }
        }
    }
}

/// What a rule whose other selectors match does, given its argument conditions: (precedence rank, outcome,
/// reason), or `None` when it does not match.
#[inline]
pub(crate) fn effect_of(rule: &CompiledRule, args: Args<'_>) -> Option<(u64, Outcome, Reason)> {
    let plain = || {
        let (outcome, reason) = match rule.effect {
            Effect::Deny => (Outcome::Deny, Reason::DeniedByRule),
            Effect::StepUp => (Outcome::StepUp, Reason::StepUpRequired),
            Effect::Allow if rule.exception.is_some() => (Outcome::Allow, Reason::AllowedByException),
            Effect::Allow => (Outcome::Allow, Reason::AllowedByRule),
        };
        Some((rule.effect.rank(), outcome, reason))
    };
    let Some(conditions) = &rule.conditions else { return plain() };
    match args {
        // A conditional deny may not apply; a conditional step-up only counts when no allow rule could match.
        Args::Listing => match rule.effect {
            Effect::Deny => None,
            Effect::StepUp => Some((Effect::Allow.rank() + 1, Outcome::StepUp, Reason::StepUpRequired)),
            Effect::Allow => plain(),
        },
        Args::Call(arguments) => match conditions.eval(arguments) {
            Truth::True => plain(),
            Truth::False => None,
            Truth::Unknown => match rule.effect {
                Effect::Allow => None,
                Effect::Deny | Effect::StepUp => Some((Effect::Deny.rank(), Outcome::Deny, Reason::InvalidArguments)),
            },
        },
    }
}

/// Calls `f` with every enforced candidate list for a tool and an agent (see [`Candidates::for_each_list`]):
/// `decide` and `explain` both walk the rules through the index this way, so they see the same candidates.
#[inline]
pub(crate) fn for_each_candidate_list<'b>(
    bundle: &'b CompiledBundle,
    tool: u32,
    exact_class: Option<u32>,
    agent_id: &str,
    f: impl FnMut(&'b [u32]),
) {
    bundle.candidates.for_each_list(&bundle.agents, tool, exact_class, agent_id, f);
}

/// Why a candidate rule does not match: the first of its non-indexed selectors that fails, in the order checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The rule's `expires_at` has passed.
    Expired,
    /// An exception before its `granted_at`.
    NotYetGranted,
    /// The tool's sensitivity is not among the rule's (rules that select every tool).
    Sensitivity,
    Environment,
    /// The rule selects task purposes and the request has no task purpose.
    NoTaskPurpose,
    TaskPurpose,
    Issuer,
    /// The rule selects delegators and the request has no delegation.
    NoDelegation,
    Delegator,
    DelegationDepth,
    /// The rule requires sender binding and the mTLS peer is not the agent.
    SenderBinding,
}

#[inline]
fn matches(rule: &CompiledRule, agent: &Agent, environment: &str, tool_bit: u8, now: i64) -> bool {
    miss(rule, agent, environment, tool_bit, now).is_none()
}

/// The selectors that are not indexed: expiry and grant time, sensitivity (for rules that select every tool),
/// environment, task purpose, issuer, delegation, sender binding. `None` when the rule matches.
#[inline]
pub(crate) fn miss(rule: &CompiledRule, agent: &Agent, environment: &str, tool_bit: u8, now: i64) -> Option<Miss> {
    if rule.expires_at.is_some_and(|e| e <= now) {
        return Some(Miss::Expired);
    }
    if rule.not_before.is_some_and(|g| now < g) {
        return Some(Miss::NotYetGranted);
    }
    if rule.sensitivities & tool_bit == 0 {
        return Some(Miss::Sensitivity);
    }
    if let Some(envs) = &rule.environments {
        if !envs.iter().any(|e| &**e == environment) {
            return Some(Miss::Environment);
        }
    }
    if let Some(purposes) = &rule.task_purposes {
        let Some(purpose) = agent.task.as_ref().and_then(|t| t.purpose.as_deref()) else {
            return Some(Miss::NoTaskPurpose);
        };
        if !purposes.iter().any(|p| &**p == purpose) {
            return Some(Miss::TaskPurpose);
        }
    }
    if let Some(issuers) = &rule.issuers {
        if !issuers.iter().any(|i| **i == *agent.issuer) {
            return Some(Miss::Issuer);
        }
    }
    if let Some(patterns) = &rule.delegators {
        let Some(delegation) = &agent.delegation else { return Some(Miss::NoDelegation) };
        let d = delegation.delegator.as_str();
        if !patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => d.starts_with(prefix),
            None => **p == *d,
        }) {
            return Some(Miss::Delegator);
        }
    }
    if let Some(max) = rule.max_delegation_depth {
        if agent.delegation.as_ref().map_or(0, |d| d.depth()) > max {
            return Some(Miss::DelegationDepth);
        }
    }
    if rule.require_sender_binding && !agent.sender_bound {
        return Some(Miss::SenderBinding);
    }
    None
}
