//! `warden test`: policy unit tests. A request (or its facts) in, expected decision (and rule, reason, status) out,
//! run through the core's gate exactly as warden.wasm runs a request ([`warden_core::cases`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use warden_core::cases::{CaseRun, Context, Suite};

use crate::eval::BundleSource;
use crate::files;
use crate::report::Format;
use crate::Status;

/// Run policy unit tests against a bundle.
///
/// CASES.json is a list of cases (or `{"defaults": {"environment", "time", "keys"}, "cases": [...]}`); each case
/// gives a request and the expected outcome:
///
///   {"name": "support bot reads a contact",
///    "agent": {"id": "spiffe://acme.example/agents/support/bot-1", "issuer": "acme-workload",
///              "task": {"id": "T-1", "purpose": "ticket", "expires_at": "2026-11-28T11:00:00Z"}},
///    "http": {"host": "crm.acme.example", "method": "GET", "path": "/api/v2/contacts/42"},
///    "environment": "prod", "time": "2026-11-28T10:00:00Z",
///    "expect": {"decision": "allow", "rule": "support-read-crm", "reason": "allowed_by_rule", "status": 200}}
///
/// The request is `http` (with `headers`, `body`) or `mcp` ({"host", "path", "message": <JSON-RPC>}), run through
/// the same gate as warden.wasm; or `tool` (a tool id, with `arguments`) to decide on the facts alone. `agent` may
/// be "missing" or a token failure code ("token_expired", ...). With the issuer's private key in `defaults.keys`
/// ({"<issuer or approver id>": "<path to a private JWK, relative to CASES.json>"}) the agent's facts travel in a
/// real token; `txn_token` ({"issuer", "txn", "purpose"}) adds a Transaction Token, `peer` the mTLS peer URI SAN,
/// and `approval` ({"approver", "approved_by", "claims"}) retries a step-up call with an approval minted for it.
/// `time` defaults to the file's default, else the bundle's issued_at. Format: policies/README.md "Policy tests". A
/// failure prints expected vs actual and the chain of reasons. Rule coverage follows: the rules no case's decision
/// (or shadow decision) named. `--format json` prints one document (every case with its expectation, its actual
/// decision and, on failure, the reasons; the summary; the coverage). Exit 1 when any case fails (with
/// --fail-uncovered, also when a rule is not exercised).
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
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Fail (exit 1) when some rule of the bundle is exercised by no case.
    #[arg(long)]
    fail_uncovered: bool,
}

/// One case as it came out.
struct Outcome {
    name: String,
    expected: Value,
    expected_text: String,
    /// The run, or why the case could not run.
    run: Result<CaseRun, String>,
    passed: bool,
}

impl Outcome {
    fn json(&self) -> Value {
        let mut v = json!({"name": self.name, "passed": self.passed, "expected": self.expected});
        match &self.run {
            Ok(run) => {
                let d = &run.decision;
                v["actual"] = json!({"decision": d.outcome.as_str(), "rule": d.rule.as_deref(),
                                     "reason": d.reason.code(), "status": run.status});
                if !self.passed {
                    v["why"] = json!(run.explanation.lines());
                }
            }
            Err(problem) => v["error"] = json!(format!("invalid case: {problem}")),
        }
        v
    }
}

/// The rules each case exercised: the rule its decision names and the shadow rule its shadow decision names.
fn exercised(run: &CaseRun) -> impl Iterator<Item = &str> {
    run.decision.rule.as_deref().into_iter().chain(run.explanation.shadow.as_ref().and_then(|s| s.rule.as_deref()))
}

pub fn run(args: &Args) -> Result<Status> {
    let Some(loaded) = args.source.load(&args.bundle)? else { return Ok(Status::Failed) };
    let text = files::read_text(&args.cases)?;
    let suite = Suite::parse(&text).map_err(|e| {
        anyhow!(
            "{}: {} (expected a list of cases or {{\"defaults\": ..., \"cases\": [...]}})",
            args.cases.display(),
            files::serde_position(&e)
        )
    })?;
    let dir = args.cases.parent().map(PathBuf::from).unwrap_or_default();
    let mut keys = BTreeMap::new();
    for (id, file) in &suite.defaults.keys {
        let path = dir.join(file);
        let key = files::read_signing_key(&path)
            .map_err(|e| anyhow!("{}: defaults.keys.{id}: {e:#}", args.cases.display()))?;
        keys.insert(id.clone(), key);
    }
    // One store for the file: limits and single use count across its cases, in order.
    let store = std::cell::RefCell::new(warden_core::gate::MemoryStore::default());
    let context = Context {
        bundle: &loaded.bundle,
        compiled: &loaded.compiled,
        defaults: &suite.defaults,
        keys: &keys,
        store: &store,
    };
    let outcomes: Vec<Outcome> = suite
        .cases
        .iter()
        .enumerate()
        .map(|(index, case)| {
            let run = context.run(index, case);
            let passed = match &run {
                Ok(r) => match case.expect.met_by(r) {
                    Ok(ok) => ok,
                    Err(problem) => return Outcome::invalid(case, problem),
                },
                Err(_) => false,
            };
            Outcome {
                name: case.name.clone(),
                expected: expected_json(case),
                expected_text: case.expect.describe(),
                run,
                passed,
            }
        })
        .collect();
    // Coverage: every rule of the bundle, in bundle order, with the cases that exercised it.
    let mut by_rule: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in &outcomes {
        for rule in o.run.as_ref().into_iter().flat_map(exercised) {
            by_rule.entry(rule).or_default().push(&o.name);
        }
    }
    let rules: Vec<(&str, Vec<&str>)> = loaded
        .bundle
        .rules
        .iter()
        .map(|r| (r.id.as_str(), by_rule.get(r.id.as_str()).cloned().unwrap_or_default()))
        .collect();
    let uncovered: Vec<&str> = rules.iter().filter(|(_, c)| c.is_empty()).map(|(id, _)| *id).collect();
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    match args.format {
        Format::Json => {
            let doc = json!({
                "bundle": args.bundle.display().to_string(),
                "cases_file": args.cases.display().to_string(),
                "cases": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
                "summary": {"passed": passed, "failed": failed},
                "coverage": {
                    "rules": rules.iter().map(|(id, cases)| json!({"rule": id, "cases": cases})).collect::<Vec<_>>(),
                    "exercised": rules.len() - uncovered.len(),
                    "total": rules.len(),
                    "not_exercised": uncovered,
                },
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            for o in &outcomes {
                print_text(o, args.verbose);
            }
            println!("coverage: {} of {} rules exercised", rules.len() - uncovered.len(), rules.len());
            if !uncovered.is_empty() {
                println!("not exercised: {}", uncovered.join(", "));
            }
            println!("{passed} passed, {failed} failed");
        }
    }
    let coverage_failed = args.fail_uncovered && !uncovered.is_empty();
    Ok(if failed == 0 && !coverage_failed { Status::Ok } else { Status::Failed })
}

impl Outcome {
    fn invalid(case: &warden_core::cases::Case, problem: String) -> Outcome {
        Outcome {
            name: case.name.clone(),
            expected: expected_json(case),
            expected_text: case.expect.describe(),
            run: Err(problem),
            passed: false,
        }
    }
}

fn expected_json(case: &warden_core::cases::Case) -> Value {
    let e = &case.expect;
    json!({"decision": e.decision, "rule": e.rule, "reason": e.reason, "status": e.status})
}

fn print_text(o: &Outcome, verbose: bool) {
    match (&o.run, o.passed) {
        (Ok(_), true) => {
            if verbose {
                println!("ok    {}", o.name);
            }
        }
        (Ok(run), false) => {
            let d = &run.decision;
            println!("FAIL  {}", o.name);
            println!("      expected: {}", o.expected_text);
            let status =
                if o.expected["status"].is_null() { String::new() } else { format!(", status {}", run.status) };
            println!(
                "      actual:   {}, rule {}, reason {}{status}",
                d.outcome.as_str(),
                d.rule_id(),
                d.reason.code()
            );
            println!("      why:");
            for line in run.explanation.lines() {
                println!("        {line}");
            }
        }
        (Err(problem), _) => {
            println!("FAIL  {}", o.name);
            println!("      invalid case: {problem}");
        }
    }
}
