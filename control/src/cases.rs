//! `warden test`: policy unit tests. A request (or its facts) in, expected decision (and rule, reason, status) out,
//! run through the core's gate exactly as warden.wasm runs a request ([`warden_core::cases`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use warden_core::cases::{Context, Suite};

use crate::eval::BundleSource;
use crate::files;
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
/// failure prints expected vs actual and the chain of reasons. Exit 1 when any case fails.
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
    let (mut passed, mut failed) = (0usize, 0usize);
    for (index, case) in suite.cases.iter().enumerate() {
        let outcome = context.run(index, case).and_then(|run| case.expect.met_by(&run).map(|ok| (ok, run)));
        match outcome {
            Ok((true, _)) => {
                passed += 1;
                if args.verbose {
                    println!("ok    {}", case.name);
                }
            }
            Ok((false, run)) => {
                failed += 1;
                let d = &run.decision;
                println!("FAIL  {}", case.name);
                println!("      expected: {}", case.expect.describe());
                let status =
                    if case.expect.status.is_some() { format!(", status {}", run.status) } else { String::new() };
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
