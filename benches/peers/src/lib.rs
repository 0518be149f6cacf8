//! The peer comparison: one agent tool-access policy written for Warden, Cedar and Rego (regorus), and the requests
//! every engine must decide identically.
//!
//! The policy of size `n` (issue 8): `n` allow rules, each on an agent id prefix (`spiffe://bench.example/agents/
//! team{t}/*`, `max(1, n / 10)` teams), one tool, one or two environments and a task purpose, with the task not
//! expired; one forbid rule on every payment tool; 100 revoked agents. The catalog has `max(10, n / 10)` tools
//! `ns{k}.t{j}` (`t8` is a payment tool). Two rules sit at fixed places so that the same requests mean the same work
//! at every size: the last rule allows `late-team/*` on `ns0.t1`, the middle one allows `late-team/*` on the payment
//! tool `ns0.t8` (which the forbid rule then overrides).
//!
//! - [`warden_bundle`]: the Warden bundle (the forbid rule is a `deny` rule on sensitivity `payment`; "task not
//!   expired" is built into Warden's `decide`).
//! - [`Cedar`]: one `permit` per rule (`context.agent like "<prefix>/*"`, the tool in the scope, environment, purpose
//!   and task expiry in the condition), `forbid` on `resource.sensitivity == "payment"`, `forbid` on
//!   `principal in Group::"revoked"`; schema, policies and entities are prepared once, and [`Cedar::decide`] builds
//!   the `Request` (with its context, validated against the schema) per call, as a gateway would.
//! - [`Rego`]: [`RegoStyle::RulePerRule`] writes one Rego rule per policy rule; [`RegoStyle::Indexed`] keeps the
//!   rules as data in the data document, indexed by tool and agent prefix, so a decision looks at the few rules of
//!   the request's tool and the agent id's prefixes. Both are compiled once with `compile_with_entrypoint` and
//!   evaluated with `CompiledPolicy::eval_with_input`, the input built per call.
//!
//! Every engine is checked against Warden on every [`PeerRequest`] before it is timed ([`check_agreement`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde_json::json;
use warden_core::bundle::{Bundle, Sensitivity};
use warden_core::compile::{compile, CompiledBundle};
use warden_core::decide::decide;
use warden_core::decision::Outcome;
use warden_core::facts::{Facts, Identity};

use warden_bench_fixtures::{bundle_json, to_bundle, verified_agent, NOW};

const AGENTS: &str = "spiffe://bench.example/agents";

/// The policy sizes of the peer comparison (number of allow rules).
pub const PEER_SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// Revoked agents in every policy.
pub const REVOKED: usize = 100;

/// The id of the forbid rule (Warden rule id, Cedar policy id).
pub const FORBID_PAYMENT: &str = "forbid-payment";
/// Cedar's revocation policy (Warden checks revocation before any rule, so it has no rule id there).
pub const FORBID_REVOKED: &str = "forbid-revoked";

/// One rule of the generated policy, in engine-neutral form.
#[derive(Debug, Clone)]
pub struct AllowRule {
    pub id: String,
    /// Agent id prefix without the trailing `/`: the rule matches ids strictly below it.
    pub prefix: String,
    pub tool: String,
    pub environments: Vec<&'static str>,
    pub purpose: String,
}

/// The generated policy of size `n`, engine-neutral.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub n: usize,
    /// `(tool id, sensitivity)`.
    pub tools: Vec<(String, Sensitivity)>,
    pub rules: Vec<AllowRule>,
    pub revoked: Vec<String>,
}

fn sensitivity_of(j: usize) -> Sensitivity {
    match j {
        0..=5 => Sensitivity::Read,
        6 | 7 => Sensitivity::Write,
        8 => Sensitivity::Payment,
        _ => Sensitivity::Admin,
    }
}

impl PeerPolicy {
    /// The policy with `n` allow rules (at least 10).
    pub fn generate(n: usize) -> PeerPolicy {
        let n = n.max(10);
        let tool_count = (n / 10).max(10);
        let teams = (n / 10).max(1);
        let tools = (0..tool_count).map(|k| (format!("ns{}.t{}", k / 10, k % 10), sensitivity_of(k % 10))).collect();
        let mut rules: Vec<AllowRule> = (0..n)
            .map(|i| {
                let k = (i * 7919) % tool_count;
                AllowRule {
                    id: format!("r{i}"),
                    prefix: format!("{AGENTS}/team{}", i % teams),
                    tool: format!("ns{}.t{}", k / 10, k % 10),
                    environments: match i % 3 {
                        0 => vec!["prod"],
                        1 => vec!["prod", "staging"],
                        _ => vec!["staging"],
                    },
                    purpose: format!("purpose-{}", i % 4),
                }
            })
            .collect();
        let late = |id: String, tool: &str| AllowRule {
            id,
            prefix: format!("{AGENTS}/late-team"),
            tool: tool.to_string(),
            environments: vec!["prod"],
            purpose: "customer-refund".to_string(),
        };
        rules[n / 2] = late(format!("r{}-late-payment", n / 2), "ns0.t8");
        rules[n - 1] = late(format!("r{}-late-allow", n - 1), "ns0.t1");
        let revoked = (0..REVOKED).map(|k| format!("{AGENTS}/late-team/revoked-{k}")).collect();
        PeerPolicy { n, tools, rules, revoked }
    }
}

/// One request of the peer comparison, with the outcome and reason Warden must give.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    pub name: &'static str,
    pub agent: String,
    pub tool: &'static str,
    pub environment: &'static str,
    pub purpose: &'static str,
    pub task_expires_at: i64,
    pub now: i64,
    pub expected: (Outcome, &'static str),
}

/// The requests every engine decides: allowed by the last rule, denied because nothing matches, a revoked agent,
/// a payment tool the agent is allowed but the forbid rule overrides, and a task past its expiry.
pub fn peer_requests() -> Vec<PeerRequest> {
    let req = |name, agent: &str, tool, task_expires_at, expected| PeerRequest {
        name,
        agent: format!("{AGENTS}/{agent}"),
        tool,
        environment: "prod",
        purpose: "customer-refund",
        task_expires_at,
        now: NOW,
        expected,
    };
    let live = NOW + 900;
    vec![
        req("allow_late_rule", "late-team/eu/bot-1", "ns0.t1", live, (Outcome::Allow, "allowed_by_rule")),
        req("deny_no_match", "vendor/eu/bot-9", "ns0.t1", live, (Outcome::Deny, "no_matching_rule")),
        req("revoked_agent", "late-team/revoked-7", "ns0.t1", live, (Outcome::Deny, "revoked_agent")),
        req("payment_forbidden", "late-team/eu/bot-1", "ns0.t8", live, (Outcome::Deny, "denied_by_rule")),
        req("task_expired", "late-team/eu/bot-1", "ns0.t1", NOW - 1, (Outcome::Deny, "task_expired")),
    ]
}

impl PeerRequest {
    /// Warden's facts for this request (identity already verified).
    pub fn facts(&self, bundle: &CompiledBundle) -> Facts {
        Facts {
            environment: self.environment.to_string(),
            identity: Identity::Verified(verified_agent(&self.agent, self.purpose, self.task_expires_at)),
            tool: bundle.tool_by_id(self.tool),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Warden

/// The policy as a Warden bundle (`n + 1` rules: the allow rules, then the payment deny rule).
pub fn warden_bundle(p: &PeerPolicy) -> Bundle {
    let mut rules: Vec<serde_json::Value> = p
        .rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "effect": "allow",
                "agents": [format!("{}/*", r.prefix)],
                "tools": [r.tool],
                "environments": r.environments,
                "task_purposes": [r.purpose],
                "owner": "team@bench.example",
            })
        })
        .collect();
    rules.push(json!({"id": FORBID_PAYMENT, "effect": "deny", "sensitivities": ["payment"],
        "owner": "security@bench.example"}));
    let tools = p.tools.iter().map(|(id, s)| json!({"id": id, "sensitivity": s.as_str()})).collect();
    to_bundle(bundle_json(p.n as u64, tools, rules, p.revoked.clone()))
}

/// The compiled Warden bundle of a peer policy.
pub fn warden_compiled(p: &PeerPolicy) -> CompiledBundle {
    match compile(&warden_bundle(p)) {
        Ok(b) => b,
        Err(e) => panic!("peer policy of {} rules does not compile:\n{e}", p.n),
    }
}

/// Warden's decision on a peer request, as (outcome, reason code, rule id).
pub fn warden_decide(bundle: &CompiledBundle, r: &PeerRequest) -> (Outcome, &'static str, String) {
    let d = decide(bundle, &r.facts(bundle), r.now);
    (d.outcome, d.reason.code(), d.rule_id().to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// Cedar

const CEDAR_SCHEMA: &str = r#"
entity Group;
entity Agent in [Group];
entity Tool { sensitivity: String };
action call appliesTo {
  principal: Agent,
  resource: Tool,
  context: { agent: String, environment: String, task_purpose: String, task_expires_at: Long, now: Long }
};
"#;

/// Cedar with the policy, schema and entities prepared.
pub struct Cedar {
    pub policies: PolicySet,
    pub entities: Entities,
    pub schema: Schema,
    authorizer: Authorizer,
    agent_type: EntityTypeName,
    tool_type: EntityTypeName,
    action: EntityUid,
}

/// Cedar's answer: the decision and the ids of the policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CedarAnswer {
    pub allow: bool,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
}

fn cedar_str(s: &str) -> String {
    // Agent ids, tool ids and purposes of the generated policy hold no quote or backslash.
    format!("\"{s}\"")
}

impl Cedar {
    /// The Cedar policies of `p` as text: one `permit` per allow rule, then the two `forbid`s. Each policy is
    /// preceded by `// <id>` (ids are given to the parser separately).
    pub fn policy_texts(p: &PeerPolicy) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(p.rules.len() + 2);
        for r in &p.rules {
            let envs = r
                .environments
                .iter()
                .map(|e| format!("context.environment == {}", cedar_str(e)))
                .collect::<Vec<_>>()
                .join(" || ");
            out.push((
                r.id.clone(),
                format!(
                    "permit(principal, action == Action::\"call\", resource == Tool::{tool}) when {{\n  \
                     context.agent like \"{prefix}/*\" &&\n  ({envs}) &&\n  context.task_purpose == {purpose} &&\n  \
                     context.task_expires_at > context.now\n}};",
                    tool = cedar_str(&r.tool),
                    prefix = r.prefix,
                    purpose = cedar_str(&r.purpose),
                ),
            ));
        }
        out.push((
            FORBID_PAYMENT.to_string(),
            "forbid(principal, action, resource) when { resource.sensitivity == \"payment\" };".to_string(),
        ));
        out.push((
            FORBID_REVOKED.to_string(),
            "forbid(principal in Group::\"revoked\", action, resource);".to_string(),
        ));
        out
    }

    /// Parses the schema and the policies, validates the policies against the schema (strict), and loads the
    /// entities (every tool with its sensitivity, the revoked agents as members of `Group::"revoked"`).
    pub fn new(p: &PeerPolicy) -> Cedar {
        let (schema, _warnings) = match Schema::from_cedarschema_str(CEDAR_SCHEMA) {
            Ok(s) => s,
            Err(e) => panic!("Cedar schema: {e:?}"),
        };
        let mut policies = PolicySet::new();
        for (id, text) in Cedar::policy_texts(p) {
            let policy = match Policy::parse(Some(PolicyId::new(&id)), &text) {
                Ok(policy) => policy,
                Err(e) => panic!("Cedar policy {id}: {e:?}\n{text}"),
            };
            if let Err(e) = policies.add(policy) {
                panic!("Cedar policy {id}: {e:?}");
            }
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        assert!(
            validation.validation_passed(),
            "Cedar policies do not validate: {:?}",
            validation.validation_errors().collect::<Vec<_>>()
        );
        let mut entities = vec![json!({"uid": {"type": "Group", "id": "revoked"}, "attrs": {}, "parents": []})];
        for a in &p.revoked {
            entities.push(json!({"uid": {"type": "Agent", "id": a}, "attrs": {},
                "parents": [{"type": "Group", "id": "revoked"}]}));
        }
        for (id, s) in &p.tools {
            entities
                .push(json!({"uid": {"type": "Tool", "id": id}, "attrs": {"sensitivity": s.as_str()}, "parents": []}));
        }
        let entities = match Entities::from_json_value(serde_json::Value::Array(entities), Some(&schema)) {
            Ok(e) => e,
            Err(e) => panic!("Cedar entities: {e:?}"),
        };
        let name = |n: &str| match EntityTypeName::from_str(n) {
            Ok(t) => t,
            Err(e) => panic!("Cedar type name {n}: {e:?}"),
        };
        let action = EntityUid::from_type_name_and_id(name("Action"), EntityId::new("call"));
        Cedar {
            policies,
            entities,
            schema,
            authorizer: Authorizer::new(),
            agent_type: name("Agent"),
            tool_type: name("Tool"),
            action,
        }
    }

    /// Builds the request (principal, resource, context validated against the schema) and authorizes it.
    pub fn decide(&self, r: &PeerRequest) -> CedarAnswer {
        let principal = EntityUid::from_type_name_and_id(self.agent_type.clone(), EntityId::new(&r.agent));
        let resource = EntityUid::from_type_name_and_id(self.tool_type.clone(), EntityId::new(r.tool));
        let context = Context::from_pairs([
            ("agent".to_string(), RestrictedExpression::new_string(r.agent.clone())),
            ("environment".to_string(), RestrictedExpression::new_string(r.environment.to_string())),
            ("task_purpose".to_string(), RestrictedExpression::new_string(r.purpose.to_string())),
            ("task_expires_at".to_string(), RestrictedExpression::new_long(r.task_expires_at)),
            ("now".to_string(), RestrictedExpression::new_long(r.now)),
        ]);
        let context = match context {
            Ok(c) => c,
            Err(e) => panic!("Cedar context: {e:?}"),
        };
        let request = match Request::new(principal, self.action.clone(), resource, context, Some(&self.schema)) {
            Ok(q) => q,
            Err(e) => panic!("Cedar request: {e:?}"),
        };
        let response = self.authorizer.is_authorized(&request, &self.policies, &self.entities);
        let mut reasons: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        reasons.sort();
        CedarAnswer {
            allow: response.decision() == CedarDecision::Allow,
            reasons,
            errors: response.diagnostics().errors().map(|e| e.to_string()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Rego (regorus)

/// How the policy is written in Rego.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegoStyle {
    /// One Rego rule per policy rule (`permit if { startswith(input.agent, ...); input.tool == ...; ... }`).
    RulePerRule,
    /// Rules as data, indexed by tool and agent prefix in the data document; the policy is a fixed handful of
    /// Rego rules whatever the number of rules.
    Indexed,
}

impl RegoStyle {
    pub fn bench_name(self) -> &'static str {
        match self {
            RegoStyle::RulePerRule => "rego_rule_per_rule",
            RegoStyle::Indexed => "rego_indexed",
        }
    }
}

const REGO_COMMON: &str = r#"package warden
import rego.v1

default allow := false
"#;

const REGO_INDEXED: &str = r#"
allow if {
	not data.revoked[input.agent]
	data.tools[input.tool] != "payment"
	input.task_expires_at > input.now
	rules := data.index[input.tool]
	parts := split(input.agent, "/")
	some k in numbers.range(3, count(parts) - 1)
	some r in rules[concat("/", array.slice(parts, 0, k))]
	input.environment in r.environments
	input.task_purpose == r.purpose
}
"#;

/// A compiled Rego formulation of the policy.
pub struct Rego {
    pub style: RegoStyle,
    policy: regorus::CompiledPolicy,
}

impl Rego {
    /// The Rego modules of this formulation, all in package `warden`. One Rego rule per policy rule is split into
    /// modules of 1 000 rules (regorus refuses a policy file over 1 MiB, which 10 000 rules exceed).
    pub fn modules(p: &PeerPolicy, style: RegoStyle) -> Vec<String> {
        let mut m = REGO_COMMON.to_string();
        match style {
            RegoStyle::RulePerRule => {
                m.push_str(
                    "\nallow if {\n\tpermit\n\tnot forbid\n}\n\nforbid if data.revoked[input.agent]\n\n\
                     forbid if data.tools[input.tool] == \"payment\"\n",
                );
                let mut out = vec![m];
                for chunk in p.rules.chunks(1_000) {
                    let mut m = "package warden\nimport rego.v1\n".to_string();
                    for r in chunk {
                        let envs = r.environments.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ");
                        let _ = write!(
                            m,
                            "\n# {id}\npermit if {{\n\tstartswith(input.agent, \"{prefix}/\")\n\t\
                             input.tool == {tool:?}\n\tinput.environment in {{{envs}}}\n\t\
                             input.task_purpose == {purpose:?}\n\tinput.task_expires_at > input.now\n}}\n",
                            id = r.id,
                            prefix = r.prefix,
                            tool = r.tool,
                            purpose = r.purpose,
                        );
                    }
                    out.push(m);
                }
                out
            }
            RegoStyle::Indexed => {
                m.push_str(REGO_INDEXED);
                vec![m]
            }
        }
    }

    /// The data document: revoked agents and tool sensitivities (both styles) and, for [`RegoStyle::Indexed`],
    /// the rules by tool and agent prefix.
    pub fn data(p: &PeerPolicy, style: RegoStyle) -> serde_json::Value {
        let revoked: serde_json::Map<String, serde_json::Value> =
            p.revoked.iter().map(|a| (a.clone(), json!(true))).collect();
        let tools: serde_json::Map<String, serde_json::Value> =
            p.tools.iter().map(|(id, s)| (id.clone(), json!(s.as_str()))).collect();
        let mut data = json!({"revoked": revoked, "tools": tools});
        if style == RegoStyle::Indexed {
            let mut index: BTreeMap<&str, BTreeMap<&str, Vec<serde_json::Value>>> = BTreeMap::new();
            for r in &p.rules {
                index.entry(&r.tool).or_default().entry(&r.prefix).or_default().push(json!({
                    "id": r.id, "environments": r.environments, "purpose": r.purpose,
                }));
            }
            data["index"] = json!(index);
        }
        data
    }

    /// Parses, loads the data and compiles with the entry point `data.warden.allow`.
    pub fn new(p: &PeerPolicy, style: RegoStyle) -> Rego {
        let mut engine = regorus::Engine::new();
        for (i, module) in Rego::modules(p, style).into_iter().enumerate() {
            if let Err(e) = engine.add_policy(format!("warden-{i}.rego"), module) {
                panic!("Rego policy ({style:?}, {} rules, module {i}): {e}", p.n);
            }
        }
        if let Err(e) = engine.add_data(regorus::Value::from(Rego::data(p, style))) {
            panic!("Rego data: {e}");
        }
        let policy = match engine.compile_with_entrypoint(&"data.warden.allow".into()) {
            Ok(c) => c,
            Err(e) => panic!("Rego compile ({style:?}): {e}"),
        };
        Rego { style, policy }
    }

    /// Builds the input document and evaluates `allow`.
    pub fn decide(&self, r: &PeerRequest) -> bool {
        let mut input = BTreeMap::new();
        input.insert(regorus::Value::from("agent"), regorus::Value::from(r.agent.as_str()));
        input.insert(regorus::Value::from("tool"), regorus::Value::from(r.tool));
        input.insert(regorus::Value::from("environment"), regorus::Value::from(r.environment));
        input.insert(regorus::Value::from("task_purpose"), regorus::Value::from(r.purpose));
        input.insert(regorus::Value::from("task_expires_at"), regorus::Value::from(r.task_expires_at));
        input.insert(regorus::Value::from("now"), regorus::Value::from(r.now));
        match self.policy.eval_with_input(regorus::Value::from(input)) {
            Ok(v) => v == regorus::Value::from(true),
            Err(e) => panic!("Rego eval ({:?}): {e}", self.style),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Agreement

/// Checks that Warden decides every request as expected and that every peer agrees with it: the same allow / deny,
/// and for Cedar the same deciding policy (the allowing rule, `forbid-payment` for the payment deny,
/// `forbid-revoked` for the revoked agent, none otherwise) and no evaluation error. Panics with the first
/// disagreement.
pub fn check_agreement(p: &PeerPolicy, warden: &CompiledBundle, cedar: Option<&Cedar>, regos: &[&Rego]) {
    for r in peer_requests() {
        let (outcome, reason, rule) = warden_decide(warden, &r);
        assert_eq!((outcome, reason), r.expected, "Warden on {} at {} rules", r.name, p.n);
        let allow = outcome == Outcome::Allow;
        if let Some(cedar) = cedar {
            let answer = cedar.decide(&r);
            let reasons: Vec<String> = match reason {
                "allowed_by_rule" | "denied_by_rule" => vec![rule.clone()],
                "revoked_agent" => vec![FORBID_REVOKED.to_string()],
                _ => Vec::new(),
            };
            assert_eq!(
                answer,
                CedarAnswer { allow, reasons, errors: Vec::new() },
                "Cedar disagrees with Warden ({outcome:?} {reason} {rule}) on {} at {} rules",
                r.name,
                p.n
            );
        }
        for rego in regos {
            assert_eq!(
                rego.decide(&r),
                allow,
                "Rego ({:?}) disagrees with Warden ({outcome:?} {reason}) on {} at {} rules",
                rego.style,
                r.name,
                p.n
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_agrees_with_warden_at_small_sizes() {
        for n in [10, 100] {
            let p = PeerPolicy::generate(n);
            let warden = warden_compiled(&p);
            let cedar = Cedar::new(&p);
            let a = Rego::new(&p, RegoStyle::RulePerRule);
            let b = Rego::new(&p, RegoStyle::Indexed);
            check_agreement(&p, &warden, Some(&cedar), &[&a, &b]);
        }
    }
}
