//! Why `decide` decided as it did: the chain of reasons for one decision, for `warden eval` and `warden test`.
//!
//! [`explain`] runs [`decide`] and then walks the bundle's rules with decide's own pieces: the same candidate
//! lists from the compiled index (`decide::for_each_candidate_list`) and the same selector checks (`decide::miss`),
//! so there is still one implementation of policy semantics. It is for offline
//! tools: it allocates freely and visits every rule, which the request path never does.
//!
//! Each rule gets one [`RuleVerdict`]: it decided; it matched but was outranked (deny before step-up before allow,
//! then bundle order); it was a candidate but a selector failed (expired, sensitivity, environment, task purpose,
//! issuer); or the index never offered it, because it does not select this agent or this tool. When the decision
//! came before the rules (identity, revocation, task expiry, unknown tool) the rules were not consulted and the
//! explanation says so.
//!
//! Shadow rules are walked through their own index, like `decide::shadow`, and are always reported as such: a
//! shadow rule that matches gets [`RuleVerdict::Shadow`] (never `Decided` or `Outranked`: it is not enforced), and
//! its detail says whether it would have decided. [`Explanation::shadow`] is `decide::shadow`'s answer, and the
//! conclusion names it when shadow rules would have decided otherwise.

use serde_json::Value;

use crate::args::Truth;
use crate::bundle::Effect;
use crate::compile::{CompiledBundle, CompiledRule};
use crate::decide::{decide_with_args, effect_of, for_each_candidate_list, miss, shadow, Args, Miss};
use crate::decision::{Decision, Outcome, Reason};
use crate::facts::{Facts, Identity};
use crate::index::{Candidates, ALL_TOOLS};
use crate::time::format_rfc3339;

/// What happened to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleVerdict {
    /// It matched and named the decision.
    Decided,
    /// It matched, but a rule of higher precedence decided.
    Outranked,
    /// It applies to this agent and tool, but one of its other selectors failed.
    NotMatched,
    /// It does not select this agent, or not this tool.
    NotSelected,
    /// A shadow rule that matched: evaluated, never enforced.
    Shadow,
}

impl RuleVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleVerdict::Decided => "decided",
            RuleVerdict::Outranked => "outranked",
            RuleVerdict::NotMatched => "not_matched",
            RuleVerdict::NotSelected => "not_selected",
            RuleVerdict::Shadow => "shadow",
        }
    }
}

/// One rule's part in the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub id: String,
    pub effect: Effect,
    pub verdict: RuleVerdict,
    /// Why, in words.
    pub detail: String,
}

/// The chain of reasons behind a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The decision itself, exactly as `decide` returns it.
    pub decision: Decision,
    /// The checks before the rules, in precedence order, each in words.
    pub steps: Vec<String>,
    /// Every rule in bundle order; empty when the decision came before the rules.
    pub rules: Vec<RuleTrace>,
    /// What shadow rules would have decided, when that differs from the decision (see `decide::shadow`).
    pub shadow: Option<Decision>,
    /// The outcome in words: which rule or default decided, and the reason code.
    pub conclusion: String,
}

impl Explanation {
    /// One line per step and per rule.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.steps.clone();
        for r in &self.rules {
            out.push(format!("rule {} ({}): {}: {}", r.id, r.effect.as_str(), r.verdict.as_str(), r.detail));
        }
        out.push(self.conclusion.clone());
        out
    }
}

fn list(items: &[Box<str>]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

fn describe_miss(m: Miss, rule: &CompiledRule, facts: &Facts, agent_issuer: &str, purpose: Option<&str>) -> String {
    match m {
        Miss::Expired => {
            format!("expired at {}", rule.expires_at.map_or_else(String::new, format_rfc3339))
        }
        Miss::NotYetGranted => format!(
            "an exception granted from {}, not yet in force",
            rule.exception.as_ref().map_or_else(String::new, |e| format_rfc3339(e.granted_at))
        ),
        Miss::Sensitivity => "does not select tools of this sensitivity".to_string(),
        Miss::Environment => format!(
            "environment {:?} is not one of [{}]",
            facts.environment,
            rule.environments.as_deref().map_or_else(String::new, list)
        ),
        Miss::NoTaskPurpose => format!(
            "needs a task purpose in [{}], and the request has none",
            rule.task_purposes.as_deref().map_or_else(String::new, list)
        ),
        Miss::TaskPurpose => format!(
            "task purpose {:?} is not one of [{}]",
            purpose.unwrap_or(""),
            rule.task_purposes.as_deref().map_or_else(String::new, list)
        ),
        Miss::Issuer => format!(
            "issuer {agent_issuer:?} is not one of [{}]",
            rule.issuers.as_deref().map_or_else(String::new, list)
        ),
        Miss::NoDelegation => format!(
            "needs a delegator in [{}], and the request is not delegated",
            rule.delegators.as_deref().map_or_else(String::new, list)
        ),
        Miss::Delegator => {
            format!("the delegator is not one of [{}]", rule.delegators.as_deref().map_or_else(String::new, list))
        }
        Miss::DelegationDepth => {
            format!("delegation is deeper than {}", rule.max_delegation_depth.unwrap_or(0))
        }
        Miss::SenderBinding => "needs sender binding (mTLS peer = agent id), and the request has none".to_string(),
    }
}

/// What a rule's argument conditions came to, when they are why it did not match or why it denied.
fn describe_conditions(rule: &CompiledRule, arguments: Option<&Value>) -> String {
    let Some(f) = rule.conditions.as_ref().and_then(|c| c.failure(arguments)) else {
        return "its argument conditions hold".to_string();
    };
    match f.truth {
        Truth::False => format!("argument condition {} `{}` is false", f.index, f.condition),
        Truth::Unknown | Truth::True => {
            format!("argument {} is missing or not what condition {} `{}` can check", f.argument, f.index, f.condition)
        }
    }
}

fn decided_by(decision: &Decision) -> String {
    match (&decision.rule, decision.reason) {
        (Some(rule), _) => format!("rule {rule}"),
        (None, Reason::NoMatchingRule) => "default: no rule matched".to_string(),
        (None, _) => "default".to_string(),
    }
}

/// `would_deny`, `would_step_up`, `would_allow`: how records name a shadow decision.
fn would(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "would_allow",
        Outcome::Deny => "would_deny",
        Outcome::StepUp => "would_step_up",
    }
}

fn finish(decision: Decision, steps: Vec<String>, rules: Vec<RuleTrace>, shadow: Option<Decision>) -> Explanation {
    let mut conclusion = format!(
        "decision: {} ({}) by {}, bundle revision {}",
        decision.outcome.as_str(),
        decision.reason.code(),
        decided_by(&decision),
        decision.revision
    );
    if let Some(s) = &shadow {
        conclusion.push_str(&format!(
            "; shadow: {} ({}) by {}, not enforced",
            would(s.outcome),
            s.reason.code(),
            decided_by(s)
        ));
    }
    Explanation { decision, steps, rules, shadow, conclusion }
}

/// Explains the decision the gate made for a request (`gate`): [`explain_call`]'s account of the facts, and where
/// the gate decided otherwise (it refused the request's shape or the bundle before the rules, or settled a step-up
/// with the presented approval) what it did instead.
pub fn explain_gate(
    bundle: &CompiledBundle,
    facts: &Facts,
    arguments: Option<&Value>,
    now: i64,
    gate: &Decision,
) -> Explanation {
    let e = explain_call(bundle, facts, arguments, now);
    if e.decision == *gate {
        return e;
    }
    let Explanation { mut steps, mut rules, shadow, .. } = e;
    let code = gate.reason.code();
    match gate.reason {
        Reason::AllowedByApproval => {
            steps.push("approval: verified for this call and not used before: the step-up call goes on".into())
        }
        Reason::ApprovalRefused(_) => steps.push(format!("approval: refused ({code}): the call still needs one")),
        Reason::McpLifecycle => {
            rules.clear();
            steps.push(format!(
                "mcp: a life-cycle message no tool binds: the server's lifecycle effect applies ({})",
                gate.outcome.as_str()
            ));
        }
        Reason::NoActiveBundle | Reason::BundleExpired => {
            rules.clear();
            steps = vec![format!("bundle: {code}: the gateway refuses every request ({})", gate.http_status())];
        }
        Reason::BadRequest | Reason::BadPath(_) => {
            rules.clear();
            steps = vec![format!("the request path was refused: {code}")];
        }
        Reason::Request(_) => {
            rules.clear();
            steps.push(format!("request: its shape is refused on this route: {code} ({})", gate.http_status()));
        }
        Reason::PublicRoute => {
            rules.clear();
            steps = vec![format!(
                "public route {}: needs no identity; let through without reading a token or forwarding one",
                gate.rule_id()
            )];
        }
        Reason::ResourceMetadata => {
            rules.clear();
            steps = vec!["protected resource: the gateway answers its metadata document (RFC 9728) itself".into()];
        }
        _ => {
            rules.clear();
            steps.push(format!("gate: decided {} ({code}) for the request as a whole", gate.outcome.as_str()));
        }
    }
    finish(gate.clone(), steps, rules, shadow)
}

/// Decides, and explains the decision (see the module doc).
pub fn explain(bundle: &CompiledBundle, facts: &Facts, now: i64) -> Explanation {
    explain_call(bundle, facts, None, now)
}

/// [`explain`] for a call with arguments (an MCP `tools/call`): decided with `decide_with_args`, and a rule whose
/// argument conditions do not hold says which condition failed, with the argument's JSON Pointer.
pub fn explain_call(bundle: &CompiledBundle, facts: &Facts, arguments: Option<&Value>, now: i64) -> Explanation {
    let decision = decide_with_args(bundle, facts, arguments, now);
    let mut steps = Vec::new();

    // Identity.
    let agent = match &facts.identity {
        Identity::Missing => {
            steps.push("identity: no agent token was presented: deny (401) before any rule".to_string());
            return finish(decision, steps, Vec::new(), None);
        }
        Identity::Invalid(f) => {
            steps.push(format!("identity: the agent token was refused ({}): deny (401) before any rule", f.code()));
            return finish(decision, steps, Vec::new(), None);
        }
        Identity::Verified(agent) => agent,
    };
    let mut who = format!("identity: agent {:?} from issuer {:?}", agent.id, agent.issuer);
    if let Some(t) = &agent.task {
        who.push_str(&format!(", task {:?}", t.id));
        if let Some(p) = &t.purpose {
            who.push_str(&format!(" (purpose {p:?})"));
        }
        if let Some(e) = t.expires_at {
            who.push_str(&format!(" until {}", format_rfc3339(e)));
        }
    }
    steps.push(who);

    // Revocations and task expiry: what decide concluded.
    let stop = match decision.reason {
        Reason::RevokedAgent => Some(format!("revocations: agent {:?} is revoked", agent.id)),
        Reason::RevokedTask => {
            Some(format!("revocations: task {:?} is revoked", agent.task.as_ref().map_or("", |t| t.id.as_str())))
        }
        Reason::RevokedToken => {
            Some(format!("revocations: token id {:?} is revoked", agent.token_id.as_deref().unwrap_or("")))
        }
        Reason::TaskExpired => Some("task: its expires_at has passed".to_string()),
        _ => None,
    };
    if let Some(stop) = stop {
        steps.push(format!("{stop}: deny before any rule"));
        return finish(decision, steps, Vec::new(), None);
    }
    steps.push("revocations: agent, task and token id are not revoked; the task has not expired".to_string());

    // Tool.
    let Some(tool) = facts.tool else {
        steps.push(format!(
            "tool: the request reaches no tool in the catalog; defaults.unknown_tool is {}",
            bundle.unknown_tool.as_str()
        ));
        return finish(decision, steps, Vec::new(), None);
    };
    let Some(tool_entry) = bundle.tools.get(tool.0 as usize) else {
        steps.push("tool: an index from another bundle: deny".to_string());
        return finish(decision, steps, Vec::new(), None);
    };
    steps.push(format!("tool: {:?} (sensitivity {})", &*tool_entry.id, tool_entry.sensitivity.as_str()));
    steps.push(format!("environment: {:?}, clock {}", facts.environment, format_rfc3339(now)));
    let rules_consulted = matches!(
        decision.reason,
        Reason::AllowedByRule
            | Reason::AllowedByException
            | Reason::DeniedByRule
            | Reason::StepUpRequired
            | Reason::InvalidArguments
            | Reason::NoMatchingRule
    );
    if !rules_consulted {
        return finish(decision, steps, Vec::new(), None);
    }
    let shadow_decision = shadow(bundle, facts, arguments, now);

    // Rules: the candidates decide looks at (and shadow looks at), for this tool and this agent.
    let tool_bit = tool_entry.sensitivity.bit();
    let exact = bundle.agents.exact(&agent.id);
    let mut candidate = vec![false; bundle.rules.len()];
    let mut mark_candidates = |list: &[u32]| {
        for &r in list {
            if let Some(c) = candidate.get_mut(r as usize) {
                *c = true;
            }
        }
    };
    for_each_candidate_list(bundle, tool.0, exact.class, &agent.id, &mut mark_candidates);
    if let Some(shadow_index) = &bundle.shadow_candidates {
        shadow_index.for_each_list(&bundle.agents, tool.0, exact.class, &agent.id, &mut mark_candidates);
    }
    // Rules that select this agent for some tool (to tell "not this agent" from "not this tool").
    let mut selects_agent = vec![false; bundle.rules.len()];
    for index in std::iter::once(&bundle.candidates).chain(bundle.shadow_candidates.as_ref()) {
        for scope in std::iter::once(ALL_TOOLS).chain((0..bundle.tools.len() as u32).map(Candidates::tool_scope)) {
            let mut mark = |class: u32| {
                for &r in index.get(scope, class) {
                    if let Some(s) = selects_agent.get_mut(r as usize) {
                        *s = true;
                    }
                }
            };
            mark(crate::index::ANY_AGENT);
            if let Some(c) = exact.class {
                mark(c);
            }
            bundle.agents.for_each_prefix_class(&agent.id, &mut mark);
        }
    }

    let purpose = agent.task.as_ref().and_then(|t| t.purpose.as_deref());
    let decided_index = decision.rule.as_deref().and_then(|id| bundle.rules.iter().position(|r| &*r.id == id));
    let call = Args::Call(arguments);
    let decided_rank = decided_index.and_then(|i| bundle.rules.get(i)).and_then(|r| effect_of(r, call)).map(|e| e.0);
    let mut rules = Vec::with_capacity(bundle.rules.len());
    let shadow_rule = shadow_decision.as_ref().and_then(|d| d.rule.as_deref());
    for (i, rule) in bundle.rules.iter().enumerate() {
        let effect = effect_of(rule, call);
        let (verdict, mut detail) = if !candidate.get(i).copied().unwrap_or(false) {
            if selects_agent.get(i).copied().unwrap_or(false) {
                (RuleVerdict::NotSelected, format!("does not select tool {:?}", &*tool_entry.id))
            } else {
                (RuleVerdict::NotSelected, format!("does not select agent {:?}", agent.id))
            }
        } else if let Some(m) = miss(rule, agent, &facts.environment, tool_bit, now) {
            (RuleVerdict::NotMatched, describe_miss(m, rule, facts, &agent.issuer, purpose))
        } else if effect.is_none() {
            (RuleVerdict::NotMatched, describe_conditions(rule, arguments))
        } else if rule.shadow {
            let detail = match &shadow_decision {
                Some(d) if shadow_rule == Some(&*rule.id) => {
                    format!("matched; it would have decided {} ({})", would(d.outcome), d.reason.code())
                }
                Some(_) => "matched; a rule of higher precedence would have decided before it".to_string(),
                None => "matched; it would not have changed the decision".to_string(),
            };
            (RuleVerdict::Shadow, detail)
        } else if Some(i) == decided_index {
            let why = match (rule.effect, effect.map(|e| e.2)) {
                (_, Some(Reason::InvalidArguments)) => &*format!(
                    "{}, so this {} rule denies: a call that cannot be checked never passes",
                    describe_conditions(rule, arguments),
                    rule.effect.as_str()
                ),
                (Effect::Deny, _) => "a matching deny rule wins over step-up and allow",
                (Effect::StepUp, _) => "no deny rule matched; step-up needs an approval",
                (Effect::Allow, _) if rule.exception.is_some() => {
                    "no deny or step-up rule matched; a time-boxed exception"
                }
                (Effect::Allow, _) => "no deny or step-up rule matched",
            };
            (RuleVerdict::Decided, format!("matched; {why}"))
        } else {
            let outranked_by = match (decided_rank, effect) {
                (Some(rank), Some((own, ..))) if rank < own => "a rule of stronger effect decided",
                _ => "an earlier rule of the same effect decided",
            };
            (RuleVerdict::Outranked, format!("matched, but {outranked_by}"))
        };
        if rule.shadow {
            detail = format!("shadow rule, not enforced: {detail}");
        }
        rules.push(RuleTrace { id: rule.id.to_string(), effect: rule.effect, verdict, detail });
    }
    finish(decision, steps, rules, shadow_decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::compile::compile;
    use crate::decide::decide;
    use crate::facts::{Agent, Task, TokenFailure};
    use crate::time::parse_rfc3339;

    fn bundle() -> CompiledBundle {
        let b: Bundle = serde_json::from_value(serde_json::json!({
            "format": "warden.bundle/v1", "revision": 7,
            "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
            "owner": "sec", "authority": "policy.example",
            "approvers": [{"id": "fin", "iss": "https://approvals.example", "algorithms": ["EdDSA"],
                           "max_approval_age_seconds": 300,
                           "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a1",
                                              "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"}]}}],
            "tools": [
                {"id": "crm.read", "sensitivity": "read"},
                {"id": "crm.write", "sensitivity": "write"},
                {"id": "pay.refund", "sensitivity": "payment"}
            ],
            "rules": [
                {"id": "no-writes", "effect": "deny", "agents": ["spiffe://d/support/*"], "sensitivities": ["write"]},
                {"id": "refund-step-up", "effect": "step_up", "tools": ["pay.refund"], "task_purposes": ["refund"],
                 "step_up": {"approvers": ["fin"]}},
                {"id": "old", "effect": "allow", "tools": ["crm.*"], "expires_at": "2026-11-02T00:00:00Z"},
                {"id": "read-prod", "effect": "allow", "agents": ["spiffe://d/support/*"], "tools": ["crm.*"],
                 "environments": ["prod"]},
                {"id": "read-any", "effect": "allow", "agents": ["*"], "tools": ["crm.read"]},
                {"id": "bot-only", "effect": "allow", "agents": ["spiffe://d/other/bot"]}
            ],
            "revocations": {"agents": ["spiffe://d/support/revoked"]}
        }))
        .unwrap();
        compile(&b).unwrap()
    }

    fn agent(id: &str, purpose: Option<&str>) -> Identity {
        Identity::Verified(Agent {
            id: id.into(),
            trust_domain: "d".into(),
            issuer: "i".into(),
            token_id: None,
            expires_at: i64::MAX,
            task: purpose.map(|p| Task { id: "t".into(), purpose: Some(p.into()), expires_at: None }),
            delegation: None,
            sender_bound: false,
        })
    }

    fn facts(b: &CompiledBundle, identity: Identity, tool: &str, env: &str) -> Facts {
        Facts { environment: env.into(), identity, tool: b.tool_by_id(tool) }
    }

    fn verdicts(e: &Explanation) -> Vec<(&str, RuleVerdict)> {
        e.rules.iter().map(|r| (r.id.as_str(), r.verdict)).collect()
    }

    const NOW: &str = "2026-11-28T10:00:00Z";

    #[test]
    fn every_rule_gets_its_verdict() {
        use RuleVerdict::*;
        let b = bundle();
        let now = parse_rfc3339(NOW).unwrap();
        let e = explain(&b, &facts(&b, agent("spiffe://d/support/a", None), "crm.read", "prod"), now);
        assert_eq!(e.decision.rule.as_deref(), Some("read-prod"));
        assert_eq!(
            verdicts(&e),
            vec![
                ("no-writes", NotMatched),
                ("refund-step-up", NotSelected),
                ("old", NotMatched),
                ("read-prod", Decided),
                ("read-any", Outranked),
                ("bot-only", NotSelected),
            ]
        );
        let detail = |id: &str| e.rules.iter().find(|r| r.id == id).unwrap().detail.clone();
        assert_eq!(detail("no-writes"), "does not select tools of this sensitivity");
        assert_eq!(detail("old"), "expired at 2026-11-02T00:00:00Z");
        assert_eq!(detail("read-any"), "matched, but an earlier rule of the same effect decided");
        assert_eq!(detail("bot-only"), "does not select agent \"spiffe://d/support/a\"");
        assert_eq!(detail("refund-step-up"), "does not select tool \"crm.read\"");
        assert_eq!(e.lines().last().unwrap(), "decision: allow (allowed_by_rule) by rule read-prod, bundle revision 7");

        let e = explain(&b, &facts(&b, agent("spiffe://d/support/a", None), "crm.write", "staging"), now);
        assert_eq!(e.decision.rule.as_deref(), Some("no-writes"));
        assert_eq!(e.rules[0].detail, "matched; a matching deny rule wins over step-up and allow");
        let read_prod = e.rules.iter().find(|r| r.id == "read-prod").unwrap();
        assert_eq!(read_prod.detail, "environment \"staging\" is not one of [\"prod\"]");

        let e = explain(&b, &facts(&b, agent("spiffe://d/x", None), "pay.refund", "prod"), now);
        assert_eq!(e.rules[1].detail, "needs a task purpose in [\"refund\"], and the request has none");
        assert_eq!(e.conclusion, "decision: deny (no_matching_rule) by default: no rule matched, bundle revision 7");
    }

    #[test]
    fn decisions_before_the_rules_consult_no_rule() {
        let b = bundle();
        let now = parse_rfc3339(NOW).unwrap();
        for (identity, tool, want) in [
            (Identity::Missing, "crm.read", "identity_missing"),
            (Identity::Invalid(TokenFailure::Expired), "crm.read", "token_expired"),
            (agent("spiffe://d/support/revoked", None), "crm.read", "revoked_agent"),
            (agent("spiffe://d/support/a", None), "no.such.tool", "unknown_tool"),
        ] {
            let e = explain(&b, &facts(&b, identity, tool, "prod"), now);
            assert_eq!(e.decision.reason.code(), want);
            assert!(e.rules.is_empty(), "{want}: {:?}", e.rules);
        }
    }

    #[test]
    fn the_explained_decision_is_decides() {
        let b = bundle();
        for t in ["2026-11-01T12:00:00Z", NOW] {
            let now = parse_rfc3339(t).unwrap();
            for id in ["spiffe://d/support/a", "spiffe://d/other/bot", "spiffe://d/x", "spiffe://d/support/revoked"] {
                for purpose in [None, Some("refund")] {
                    for tool in ["crm.read", "crm.write", "pay.refund", "none"] {
                        for env in ["prod", "dev"] {
                            let f = facts(&b, agent(id, purpose), tool, env);
                            let e = explain(&b, &f, now);
                            assert_eq!(e.decision, decide(&b, &f, now));
                            let decided = e.rules.iter().filter(|r| r.verdict == RuleVerdict::Decided).count();
                            assert_eq!(decided, usize::from(e.decision.rule.is_some()), "{id} {tool} {env}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shadow_rules_are_reported_as_such() {
        let b: Bundle = serde_json::from_value(serde_json::json!({
            "format": "warden.bundle/v1", "revision": 8,
            "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
            "owner": "sec", "authority": "policy.example",
            "tools": [{"id": "crm.read", "sensitivity": "read"}, {"id": "crm.write", "sensitivity": "write"}],
            "rules": [
                {"id": "shadow-no-reads", "effect": "deny", "tools": ["crm.read"], "shadow": true},
                {"id": "shadow-bot", "effect": "deny", "agents": ["spiffe://d/bot"], "shadow": true},
                {"id": "shadow-prod", "effect": "deny", "environments": ["prod"], "shadow": true},
                {"id": "read", "effect": "allow", "tools": ["crm.*"]}
            ]
        }))
        .unwrap();
        let b = compile(&b).unwrap();
        let now = parse_rfc3339(NOW).unwrap();
        let e = explain(&b, &facts(&b, agent("spiffe://d/a", None), "crm.read", "dev"), now);
        assert_eq!(e.decision.rule.as_deref(), Some("read"));
        assert_eq!(e.shadow.as_ref().and_then(|d| d.rule.as_deref()), Some("shadow-no-reads"));
        assert_eq!(
            verdicts(&e),
            vec![
                ("shadow-no-reads", RuleVerdict::Shadow),
                ("shadow-bot", RuleVerdict::NotSelected),
                ("shadow-prod", RuleVerdict::NotMatched),
                ("read", RuleVerdict::Decided),
            ]
        );
        assert_eq!(
            e.rules[0].detail,
            "shadow rule, not enforced: matched; it would have decided would_deny (denied_by_rule)"
        );
        assert_eq!(e.rules[1].detail, "shadow rule, not enforced: does not select agent \"spiffe://d/a\"");
        assert_eq!(e.rules[2].detail, "shadow rule, not enforced: environment \"dev\" is not one of [\"prod\"]");
        assert_eq!(
            e.conclusion,
            "decision: allow (allowed_by_rule) by rule read, bundle revision 8; shadow: would_deny (denied_by_rule) \
             by rule shadow-no-reads, not enforced"
        );

        // Two shadow denies: the first decides the shadow decision, the second would not have.
        let e = explain(&b, &facts(&b, agent("spiffe://d/bot", None), "crm.read", "prod"), now);
        assert_eq!(
            e.rules[1].detail,
            "shadow rule, not enforced: matched; a rule of higher precedence would have decided before it"
        );

        // A shadow rule that changes nothing.
        let e = explain(&b, &facts(&b, agent("spiffe://d/a", None), "crm.write", "dev"), now);
        assert!(e.shadow.is_none());
        assert_eq!(e.conclusion, "decision: allow (allowed_by_rule) by rule read, bundle revision 8");
    }

    #[test]
    fn argument_conditions_are_reported_with_their_pointer() {
        let b: Bundle = serde_json::from_value(serde_json::json!({
            "format": "warden.bundle/v1", "revision": 9,
            "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
            "owner": "sec", "authority": "policy.example",
            "approvers": [{"id": "fin", "iss": "https://approvals.example", "algorithms": ["EdDSA"],
                           "max_approval_age_seconds": 300,
                           "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a1",
                                              "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"}]}}],
            "tools": [{"id": "pay.refund", "sensitivity": "payment"}],
            "rules": [
                {"id": "small", "effect": "allow", "tools": ["pay.refund"],
                 "conditions": [{"argument": "/amount", "max": 100}]},
                {"id": "large", "effect": "step_up", "tools": ["pay.refund"],
                 "conditions": [{"argument": "/amount", "exclusive_min": 100, "max": 5000}],
                 "step_up": {"approvers": ["fin"]}}
            ]
        }))
        .unwrap();
        let b = compile(&b).unwrap();
        let now = parse_rfc3339(NOW).unwrap();
        let f = facts(&b, agent("spiffe://d/a", None), "pay.refund", "prod");
        let args = |v: serde_json::Value| Some(v);

        // 250: the allow rule's condition is false (not "outranked"), the step-up rule decides.
        let a = args(serde_json::json!({"amount": 250}));
        let e = explain_call(&b, &f, a.as_ref(), now);
        assert_eq!(e.decision.reason, Reason::StepUpRequired);
        assert_eq!(verdicts(&e), vec![("small", RuleVerdict::NotMatched), ("large", RuleVerdict::Decided)]);
        assert_eq!(e.rules[0].detail, "argument condition 0 `/amount max 100` is false");

        // 40: the allow rule decides, the step-up rule's condition is false.
        let a = args(serde_json::json!({"amount": 40}));
        let e = explain_call(&b, &f, a.as_ref(), now);
        assert_eq!(verdicts(&e), vec![("small", RuleVerdict::Decided), ("large", RuleVerdict::NotMatched)]);
        assert_eq!(e.rules[1].detail, "argument condition 0 `/amount max 5000 exclusive_min 100` is false");

        // No amount: the step-up rule denies (invalid_arguments) and is named; the allow rule does not match.
        let e = explain_call(&b, &f, None, now);
        assert_eq!(e.decision.reason, Reason::InvalidArguments);
        assert_eq!(e.decision.rule.as_deref(), Some("large"));
        assert_eq!(verdicts(&e), vec![("small", RuleVerdict::NotMatched), ("large", RuleVerdict::Decided)]);
        assert_eq!(
            e.rules[0].detail,
            "argument /amount is missing or not what condition 0 `/amount max 100` can check"
        );
        assert!(e.rules[1].detail.contains("so this step_up rule denies"), "{}", e.rules[1].detail);
        assert_eq!(e.decision, decide_with_args(&b, &f, None, now));
    }
}
