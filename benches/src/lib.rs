//! Shared fixtures for the benchmarks: generated policy bundles of any size and the requests run against them.
//!
//! [`generate`] builds a realistic bundle with `rules` rules: a catalog of `max(10, rules / 10)` tools in namespaces
//! of ten (`ns{n}.t{k}`, each with an HTTP route `GET|POST ns{n}.bench.example/v1/t{k}/{id}`), rules for
//! `max(1, rules / 20)` agent teams (team prefixes `spiffe://bench.example/agents/team{t}/*`, every fourth rule for
//! one exact agent), every fifth rule on a whole namespace, a mix of allow / deny / step-up and environment
//! selectors, and `rules / 10` revoked agents. Four [`Scenario`]s exercise it; their rules sit at fixed places
//! (the late allow is the last rule of the bundle), so the same requests mean the same work at every size.
//!
//! - [`peer`]: the policy of the peer comparison (Warden, Cedar, regorus) and the requests they must agree on.
//! - [`tokens`]: token issuer keys per algorithm, agent tokens, signed bundles.
//! - [`host`]: `warden.wasm` in the host; [`mcp`]: the MCP `tools/call` request of the MCP bench.
//! - [`record_figure`]: figures that are not timings (module size, linear memory), kept next to criterion's
//!   output for `benches/report.py`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use warden_core::bundle::Bundle;
use warden_core::compile::CompiledBundle;
use warden_core::decision::Outcome;
use warden_core::facts::{Agent, Facts, Identity, Task};

pub mod host;
pub mod mcp;
pub mod peer;
pub mod tokens;

/// The file, under the target directory, where [`record_figure`] keeps its figures.
pub const FIGURES: &str = "criterion/warden-figures.json";

/// Records a figure that criterion does not measure (bytes, counts), merged into `<target>/` [`FIGURES`], and
/// prints it. The report script reads the file. Only under `cargo bench` (the harness gets `--bench`): the debug
/// builds `cargo test` runs must not overwrite the figures of a benchmark run.
pub fn record_figure(name: &str, value: u64, unit: &str) {
    println!("figure {name} = {value} {unit}");
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let path = host::target_dir().join(FIGURES);
    let mut all: BTreeMap<String, serde_json::Value> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    all.insert(name.to_string(), json!({"value": value, "unit": unit}));
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&path, serde_json::to_vec_pretty(&all).unwrap_or_default()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

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

/// A verified agent of the benches: issuer `bench-idp`, a token id and a task (so every revocation check runs),
/// no delegation, not sender-bound. The one place that builds [`Agent`], so that a new field in the core changes
/// one line here.
pub fn verified_agent(id: &str, purpose: &str, task_expires_at: i64) -> Agent {
    Agent {
        id: id.to_string(),
        trust_domain: "bench.example".to_string(),
        issuer: "bench-idp".to_string(),
        token_id: Some("jti-7c1d2e".to_string()),
        expires_at: NOW + 600,
        task: Some(Task {
            id: "task-5521".to_string(),
            purpose: Some(purpose.to_string()),
            expires_at: Some(task_expires_at),
        }),
        delegation: None,
        sender_bound: false,
    }
}

impl Scenario {
    /// The facts of this request against a compiled generated bundle (identity already verified).
    pub fn facts(&self, bundle: &CompiledBundle) -> Facts {
        Facts {
            environment: self.environment.to_string(),
            identity: Identity::Verified(verified_agent(&self.agent_id, "customer-refund", NOW + 900)),
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

fn sensitivity_of(k: usize) -> &'static str {
    match k {
        0..=5 => "read",
        6 | 7 => "write",
        8 => "payment",
        _ => "admin",
    }
}

fn tool_name(idx: usize) -> String {
    format!("ns{}.t{}", idx / 10, idx % 10)
}

/// The bundle's header: format, times, owner, authority and an Ed25519 issuer `bench-idp` (the `tokens` module
/// replaces the issuers with its own keys when it signs a bundle). Bundles are built as JSON and deserialized, so
/// optional fields the core adds later take their defaults.
pub fn bundle_json(revision: u64, tools: Vec<Value>, rules: Vec<Value>, revoked_agents: Vec<String>) -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": revision,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-12-31T00:00:00Z",
        "owner": "bench@bench.example",
        "authority": "policy.bench.example",
        "issuers": [{
            "id": "bench-idp",
            "iss": "https://idp.bench.example",
            "audiences": ["warden"],
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "acme-workload-test-1", "alg": "EdDSA",
                "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"}]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 900,
            "clock_skew_seconds": 30,
            "profile": "spiffe_jwt_svid"
        }],
        "approvers": [{
            "id": "bench-approvals",
            "iss": "https://approvals.bench.example",
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "bench-approvals-1", "alg": "EdDSA",
                "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"}]},
            "algorithms": ["EdDSA"],
            "max_approval_age_seconds": 300
        }],
        "tools": tools,
        "rules": rules,
        "revocations": {"agents": revoked_agents, "tasks": ["task-0000"], "token_ids": ["jti-0000"]},
        "defaults": {"unknown_tool": "deny"}
    })
}

/// Deserializes a bundle built by [`bundle_json`].
pub fn to_bundle(v: Value) -> Bundle {
    match serde_json::from_value(v) {
        Ok(b) => b,
        Err(e) => panic!("generated bundle does not deserialize: {e}"),
    }
}

/// A bundle with `rules` rules (at least 2), deterministic for a given size.
pub fn generate(rules: usize) -> Bundle {
    to_bundle(generate_json(rules))
}

/// [`generate`] as authored JSON: what gets signed for the filter (only the fields set here, so a `warden.wasm`
/// built from a slightly older core reads it too).
pub fn generate_json(rules: usize) -> Value {
    let rules = rules.max(2);
    let tool_count = (rules / 10).max(10);
    let teams = (rules / 20).max(1);
    let tools = (0..tool_count)
        .map(|idx| {
            let sensitivity = sensitivity_of(idx % 10);
            json!({
                "id": tool_name(idx),
                "sensitivity": sensitivity,
                "http": [{
                    "host": format!("ns{}.bench.example", idx / 10),
                    "methods": [if sensitivity == "read" { "GET" } else { "POST" }],
                    "path": format!("/v1/t{}/{{id}}", idx % 10),
                }],
            })
        })
        .collect();
    let mut list: Vec<Value> = (0..rules)
        .map(|i| {
            let team = i % teams;
            let agent =
                if i % 4 == 3 { format!("{AGENTS}/team{team}/bot-{i}") } else { format!("{AGENTS}/team{team}/*") };
            let tool_idx = (i * 7919) % tool_count;
            let tool = if i % 5 == 4 { format!("ns{}.*", tool_idx / 10) } else { tool_name(tool_idx) };
            let effect = if i % 13 == 0 {
                "deny"
            } else if i % 17 == 0 {
                "step_up"
            } else {
                "allow"
            };
            let environments = match i % 3 {
                0 => Some(vec!["prod"]),
                1 => Some(vec!["prod", "staging"]),
                _ => None,
            };
            rule(format!("r{i}"), effect, agent, tool, environments)
        })
        .collect();
    let last = rules - 1;
    list[rules / 2] = rule(
        format!("r{}-refund-step-up", rules / 2),
        "step_up",
        format!("{AGENTS}/payments/*"),
        "ns0.t8".into(),
        None,
    );
    list[last] = rule(
        format!("r{last}-late-allow"),
        "allow",
        format!("{AGENTS}/late-team/eu/bot-1"),
        "ns0.t1".to_string(),
        Some(vec!["prod"]),
    );
    let revoked = (0..(rules / 10).max(1)).map(|k| format!("{AGENTS}/revoked/bot-{k}")).collect();
    bundle_json(rules as u64, tools, list, revoked)
}

fn rule(id: String, effect: &str, agent: String, tool: String, environments: Option<Vec<&str>>) -> Value {
    let mut r = json!({
        "id": id,
        "effect": effect,
        "agents": [agent],
        "tools": [tool],
        "owner": "team@bench.example",
    });
    if let Some(envs) = environments {
        r["environments"] = json!(envs);
    }
    if effect == "step_up" {
        r["step_up"] = json!({"approvers": ["bench-approvals"]});
    }
    r
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
