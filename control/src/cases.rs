//! `warden test`: policy unit tests. Request facts in, expected decision (and rule, reason) out, run on the core's
//! own `decide`, exactly as the filter runs it.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use serde::Deserialize;
use warden_core::compile::CompiledBundle;
use warden_core::decide::decide;
use warden_core::decision::Decision;
use warden_core::facts::{Agent, Facts, Identity, Task, TokenFailure};
use warden_core::identity::trust_domain;
use warden_core::path;
use warden_core::time::parse_rfc3339;

use crate::eval::{explain_lines, BundleSource};
use crate::files;
use crate::Status;

/// Run policy unit tests against a bundle.
///
/// CASES.json is a list of cases (or `{"defaults": {"environment", "time"}, "cases": [...]}`); each case gives the
/// request facts and the expected outcome:
///
///   {"name": "support bot reads a contact",
///    "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload",
///              "task": {"id": "T-1", "purpose": "ticket", "expires_at": "2026-11-28T11:00:00Z"}},
///    "http": {"host": "crm.acme.example", "method": "GET", "path": "/api/v2/contacts/42"},
///    "environment": "prod", "time": "2026-11-28T10:00:00Z",
///    "expect": {"decision": "allow", "rule": "support-read-crm", "reason": "allowed_by_rule"}}
///
/// `agent` may instead be "missing" or a token failure code ("token_expired", "token_bad_signature", ...); `tool`
/// (a tool id) may replace `http`. `time` defaults to the file's default, else the bundle's issued_at. A failure
/// prints expected vs actual and the chain of reasons. Exit 1 when any case fails.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle: JSON as authored, or a signed bundle (then --keys and --authority are required).
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// The test cases.
    #[arg(value_name = "CASES.json")]
    cases: PathBuf,
    #[command(flatten)]
    source: BundleSource,
    /// Print passing cases too.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    #[serde(default)]
    defaults: Defaults,
    cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    environment: Option<String>,
    time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: AgentFacts,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    http: Option<HttpFacts>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    time: Option<String>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AgentFacts {
    /// "missing" or a token failure code.
    Code(String),
    Verified(VerifiedAgent),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifiedAgent {
    id: String,
    issuer: String,
    #[serde(default)]
    token_id: Option<String>,
    #[serde(default)]
    task: Option<TaskFacts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFacts {
    id: String,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFacts {
    host: String,
    method: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Every token failure, for reading codes back.
fn time(value: &str, field: &str) -> std::result::Result<i64, String> {
    parse_rfc3339(value).ok_or_else(|| format!("{field} {value:?} is not an RFC 3339 UTC time"))
}

/// Builds the facts and the clock of a case. `Err`: the case itself is wrong (it names something the bundle lacks).
fn facts(case: &Case, defaults: &Defaults, bundle: &CompiledBundle) -> std::result::Result<(Facts, i64), String> {
    let now = match case.time.as_ref().or(defaults.time.as_ref()) {
        Some(t) => time(t, "time")?,
        None => bundle.issued_at,
    };
    let environment = case
        .environment
        .clone()
        .or_else(|| defaults.environment.clone())
        .ok_or("no environment: set `environment` in the case or in `defaults`")?;
    let identity = match &case.agent {
        AgentFacts::Code(code) if code == "missing" => Identity::Missing,
        AgentFacts::Code(code) => match TokenFailure::from_code(code) {
            Some(f) => Identity::Invalid(f),
            None => {
                let codes: Vec<&str> = TokenFailure::ALL.iter().map(|f| f.code()).collect();
                return Err(format!(
                    "agent {code:?} is not \"missing\" nor a token failure code ({})",
                    codes.join(", ")
                ));
            }
        },
        AgentFacts::Verified(a) => {
            if !bundle.issuers.contains(&a.issuer) {
                return Err(format!("agent issuer {:?} is not one of the bundle's issuers", a.issuer));
            }
            let task = match &a.task {
                None => None,
                Some(t) => Some(Task {
                    id: t.id.clone(),
                    purpose: t.purpose.clone(),
                    expires_at: t.expires_at.as_deref().map(|e| time(e, "task.expires_at")).transpose()?,
                }),
            };
            Identity::Verified(Agent {
                trust_domain: trust_domain(&a.id).to_string(),
                id: a.id.clone(),
                issuer: a.issuer.clone(),
                token_id: a.token_id.clone(),
                expires_at: now + 300,
                task,
                delegation: None,
                sender_bound: false,
            })
        }
    };
    let tool = match (&case.tool, &case.http) {
        (Some(id), None) => {
            Some(bundle.tool_by_id(id).ok_or_else(|| format!("tool {id:?} is not in the bundle's catalog"))?)
        }
        (None, Some(h)) => {
            let normalized = path::normalize(&h.path).map_err(|e| format!("http.path {:?}: {e}", h.path))?;
            bundle.resolve_http(&h.host, &h.method, &normalized.path)
        }
        _ => return Err("give exactly one of `tool` and `http`".to_string()),
    };
    Ok((Facts { environment, identity, tool }, now))
}

/// Does the decision meet the expectation? `Err` describes the expectation when it is malformed.
fn meets(expect: &Expect, d: &Decision) -> std::result::Result<bool, String> {
    if !["allow", "deny", "step_up"].contains(&expect.decision.as_str()) {
        return Err(format!("expect.decision {:?} is not allow, deny or step_up", expect.decision));
    }
    Ok(expect.decision == d.outcome.as_str()
        && expect.rule.as_ref().is_none_or(|r| r == d.rule_id())
        && expect.reason.as_ref().is_none_or(|r| r == d.reason.code()))
}

fn describe_expect(e: &Expect) -> String {
    let mut s = e.decision.clone();
    if let Some(rule) = &e.rule {
        s.push_str(&format!(", rule {rule}"));
    }
    if let Some(reason) = &e.reason {
        s.push_str(&format!(", reason {reason}"));
    }
    s
}

pub fn run(args: &Args) -> Result<Status> {
    let Some(bundle) = args.source.load(&args.bundle)? else { return Ok(Status::Failed) };
    let text = files::read_text(&args.cases)?;
    // Parse as the shape the text starts with, so serde's error keeps its line and column.
    let parsed = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Case>>(&text).map(|cases| (Defaults::default(), cases))
    } else {
        serde_json::from_str::<Suite>(&text).map(|s| (s.defaults, s.cases))
    };
    let (defaults, cases) = parsed.map_err(|e| {
        anyhow!(
            "{}: {} (expected a list of cases or {{\"defaults\": ..., \"cases\": [...]}})",
            args.cases.display(),
            files::serde_position(&e)
        )
    })?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &cases {
        let outcome = facts(case, &defaults, &bundle.compiled).and_then(|(facts, now)| {
            let decision = decide(&bundle.compiled, &facts, now);
            meets(&case.expect, &decision).map(|ok| (ok, decision, facts, now))
        });
        match outcome {
            Ok((true, _, _, _)) => {
                passed += 1;
                if args.verbose {
                    println!("ok    {}", case.name);
                }
            }
            Ok((false, decision, facts, now)) => {
                failed += 1;
                println!("FAIL  {}", case.name);
                println!("      expected: {}", describe_expect(&case.expect));
                println!(
                    "      actual:   {}, rule {}, reason {}",
                    decision.outcome.as_str(),
                    decision.rule_id(),
                    decision.reason.code()
                );
                println!("      why:");
                for line in explain_lines(&bundle, &facts, now) {
                    println!("        {line}");
                }
            }
            Err(problem) => {
                failed += 1;
                println!("FAIL  {}", case.name);
                println!("      invalid case: {problem}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { Status::Ok } else { Status::Failed })
}
