//! Shared fixtures for the benchmarks: generated policy bundles of any size and the requests run against them.
//!
//! [`generate`] builds a realistic bundle with `rules` rules: a catalog of `max(10, rules / 10)` tools in namespaces
//! of ten (`ns{n}.t{k}`, each with an HTTP route `GET|POST ns{n}.bench.example/v1/t{k}/{id}`), rules for
//! `max(1, rules / 20)` agent teams (team prefixes `spiffe://bench.example/agents/team{t}/*`, every fourth rule for
//! one exact agent), every fifth rule on a whole namespace, a mix of allow / deny / step-up and environment
//! selectors, and `rules / 10` revoked agents. Four [`Scenario`]s exercise it; their rules sit at fixed places
//! (the late allow is the last rule of the bundle), so the same requests mean the same work at every size.

use serde_json::json;
use warden_core::bundle::{
    Bundle, ClaimMapping, Defaults, Effect, HttpMatch, Issuer, Jwks, Revocations, Rule, Sensitivity, Tool, FORMAT_V1,
};
use warden_core::compile::CompiledBundle;
use warden_core::decision::Outcome;
use warden_core::facts::{Agent, Facts, Identity, Task};

/// 2026-12-01T00:00:00Z: inside the generated bundle's validity.
pub const NOW: i64 = 1_796_083_200;

const AGENTS: &str = "spiffe://bench.example/agents";

/// The rule counts the benches report.
pub const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// One request of a bench, described so that both the native core and the filter in the host can run it.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub environment: &'static str,
    pub agent_id: String,
    pub host: String,
    pub method: &'static str,
    pub path: String,
    pub tool_id: &'static str,
    /// The outcome and reason code `decide` must return.
    pub expected: (Outcome, &'static str),
}

impl Scenario {
    /// The facts of this request against a compiled generated bundle (identity already verified).
    pub fn facts(&self, bundle: &CompiledBundle) -> Facts {
        Facts {
            environment: self.environment.to_string(),
            identity: Identity::Verified(Agent {
                id: self.agent_id.clone(),
                trust_domain: "bench.example".to_string(),
                issuer: "bench-idp".to_string(),
                token_id: Some("jti-7c1d2e".to_string()),
                expires_at: NOW + 600,
                task: Some(Task {
                    id: "task-5521".to_string(),
                    purpose: Some("customer-refund".to_string()),
                    expires_at: Some(NOW + 900),
                }),
            }),
            tool: bundle.tool_by_id(self.tool_id),
        }
    }
}

/// The four requests: allowed by the last rule of the bundle, denied because nothing matches, a revoked agent,
/// and a step-up.
pub fn scenarios() -> Vec<Scenario> {
    let req = |name, agent: &str, tool_id: &'static str, method, expected| Scenario {
        name,
        environment: "prod",
        agent_id: format!("{AGENTS}/{agent}"),
        host: format!("{}.bench.example", tool_id.split('.').next().unwrap_or("")),
        method,
        path: format!("/v1/{}/8841", tool_id.rsplit('.').next().unwrap_or("")),
        tool_id,
        expected,
    };
    vec![
        req("allow_late_rule", "late-team/eu/bot-1", "ns0.t1", "GET", (Outcome::Allow, "allowed_by_rule")),
        req("deny_no_match", "vendor/eu/bot-9", "ns0.t1", "GET", (Outcome::Deny, "no_matching_rule")),
        req("revoked_agent", "revoked/bot-0", "ns0.t1", "GET", (Outcome::Deny, "revoked_agent")),
        req("step_up", "payments/refund-bot", "ns0.t8", "POST", (Outcome::StepUp, "step_up_required")),
    ]
}

fn sensitivity_of(k: usize) -> Sensitivity {
    match k {
        0..=5 => Sensitivity::Read,
        6 | 7 => Sensitivity::Write,
        8 => Sensitivity::Payment,
        _ => Sensitivity::Admin,
    }
}

fn tool_name(idx: usize) -> String {
    format!("ns{}.t{}", idx / 10, idx % 10)
}

/// A bundle with `rules` rules (at least 2), deterministic for a given size.
pub fn generate(rules: usize) -> Bundle {
    let rules = rules.max(2);
    let tool_count = (rules / 10).max(10);
    let teams = (rules / 20).max(1);
    let tools = (0..tool_count)
        .map(|idx| {
            let sensitivity = sensitivity_of(idx % 10);
            Tool {
                id: tool_name(idx),
                sensitivity,
                description: None,
                http: vec![HttpMatch {
                    host: Some(format!("ns{}.bench.example", idx / 10)),
                    methods: vec![if sensitivity == Sensitivity::Read { "GET" } else { "POST" }.to_string()],
                    path: format!("/v1/t{}/{{id}}", idx % 10),
                }],
            }
        })
        .collect();
    let mut list: Vec<Rule> = (0..rules)
        .map(|i| {
            let team = i % teams;
            let agent =
                if i % 4 == 3 { format!("{AGENTS}/team{team}/bot-{i}") } else { format!("{AGENTS}/team{team}/*") };
            let tool_idx = (i * 7919) % tool_count;
            let tool = if i % 5 == 4 { format!("ns{}.*", tool_idx / 10) } else { tool_name(tool_idx) };
            let effect = if i % 13 == 0 {
                Effect::Deny
            } else if i % 17 == 0 {
                Effect::StepUp
            } else {
                Effect::Allow
            };
            let environments = match i % 3 {
                0 => Some(vec!["prod".to_string()]),
                1 => Some(vec!["prod".to_string(), "staging".to_string()]),
                _ => None,
            };
            rule(format!("r{i}"), effect, agent, tool, environments)
        })
        .collect();
    let last = rules - 1;
    list[rules / 2] = rule(
        format!("r{}-refund-step-up", rules / 2),
        Effect::StepUp,
        format!("{AGENTS}/payments/*"),
        "ns0.t8".to_string(),
        None,
    );
    list[last] = rule(
        format!("r{last}-late-allow"),
        Effect::Allow,
        format!("{AGENTS}/late-team/eu/bot-1"),
        "ns0.t1".to_string(),
        Some(vec!["prod".to_string()]),
    );
    Bundle {
        format: FORMAT_V1.to_string(),
        revision: rules as u64,
        issued_at: "2026-11-01T00:00:00Z".to_string(),
        expires_at: "2027-12-31T00:00:00Z".to_string(),
        owner: "bench@bench.example".to_string(),
        authority: "policy.bench.example".to_string(),
        issuers: vec![Issuer {
            id: "bench-idp".to_string(),
            iss: "https://idp.bench.example".to_string(),
            audiences: vec!["warden".to_string()],
            jwks: Jwks {
                keys: vec![json!({"kty": "OKP", "crv": "Ed25519", "kid": "acme-workload-test-1", "alg": "EdDSA",
                    "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"})],
            },
            algorithms: vec!["EdDSA".to_string()],
            max_token_lifetime_seconds: 900,
            clock_skew_seconds: 30,
            claims: ClaimMapping::default(),
        }],
        tools,
        rules: list,
        revocations: Revocations {
            agents: (0..(rules / 10).max(1)).map(|k| format!("{AGENTS}/revoked/bot-{k}")).collect(),
            tasks: vec!["task-0000".to_string()],
            token_ids: vec!["jti-0000".to_string()],
            signing_keys: Vec::new(),
        },
        defaults: Defaults { unknown_tool: Effect::Deny },
    }
}

fn rule(id: String, effect: Effect, agent: String, tool: String, environments: Option<Vec<String>>) -> Rule {
    Rule {
        id,
        effect,
        description: None,
        agents: Some(vec![agent]),
        tools: Some(vec![tool]),
        sensitivities: None,
        environments,
        task_purposes: None,
        issuers: None,
        owner: Some("team@bench.example".to_string()),
        approval: None,
        expires_at: None,
        exception: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::compile::compile;
    use warden_core::decide::decide;

    #[test]
    fn every_scenario_decides_as_expected_at_every_size() {
        for size in SIZES {
            let bundle = generate(size);
            assert_eq!(bundle.rules.len(), size);
            let compiled = compile(&bundle).unwrap();
            for s in scenarios() {
                let tool = compiled.resolve_http(&s.host, s.method, &s.path);
                assert_eq!(tool, compiled.tool_by_id(s.tool_id), "{} at {size}: route", s.name);
                let d = decide(&compiled, &s.facts(&compiled), NOW);
                assert_eq!((d.outcome, d.reason.code()), s.expected, "{} at {size}", s.name);
            }
        }
    }
}
