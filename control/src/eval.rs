//! `warden eval`: one recorded request through the same steps as the filter (path normalization, token
//! verification, tool resolution, `decide`), with the decision and the chain of reasons behind it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use serde_json::{json, Value};
use warden_core::compile::CompiledBundle;
use warden_core::decide::decide;
use warden_core::decision::{Decision, Outcome, Reason};
use warden_core::envelope;
use warden_core::explain::explain;
use warden_core::facts::{Facts, Identity, TokenFailure};
use warden_core::request::RecordedRequest;
use warden_core::time::format_rfc3339;
use warden_core::{identity, path};

use crate::files;
use crate::lint;
use crate::Status;

/// Where a bundle comes from: JSON as authored, or a signed bundle verified with pinned keys.
#[derive(Debug, clap::Args)]
pub struct BundleSource {
    /// For a signed bundle: the pinned authority public keys (JWKS).
    #[arg(long, value_name = "AUTHORITY.jwks.json")]
    keys: Option<PathBuf>,
    /// For a signed bundle: the authority it must name.
    #[arg(long, value_name = "NAME")]
    authority: Option<String>,
}

/// A bundle ready to decide with.
pub struct Loaded {
    pub compiled: CompiledBundle,
}

impl BundleSource {
    /// Loads and validates a bundle (verifying it first when signed). `Ok(None)`: it was refused, and why has been
    /// printed.
    pub fn load(&self, path: &Path) -> Result<Option<Loaded>> {
        let bytes = files::read_bytes(path)?;
        let name = path.display().to_string();
        let text = if files::looks_signed(&bytes) {
            let (Some(keys), Some(authority)) = (&self.keys, &self.authority) else {
                bail!("{name} is a signed bundle: pass --keys AUTHORITY.jwks.json and --authority NAME to verify it");
            };
            let keys = files::read_trusted_keys(keys)?;
            if let Err(e) = envelope::verify(&bytes, &keys, authority, &[], files::clock()) {
                eprintln!("{name}: refused: {e}");
                return Ok(None);
            }
            files::jws_segment_text(&bytes, 1)
        } else {
            String::from_utf8(bytes).map_err(|e| anyhow!("{name}: not UTF-8 text: {e}"))?
        };
        match lint::check(&name, &text) {
            Ok(checked) => Ok(Some(Loaded { compiled: checked.compiled })),
            Err(diagnostics) => {
                lint::report(path, &diagnostics);
                Ok(None)
            }
        }
    }
}

/// An expected outcome for --expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpectOutcome {
    Allow,
    Deny,
    #[value(name = "step_up")]
    StepUp,
}

/// Decide one recorded request and explain the decision.
///
/// REQUEST.json is one request in the recorded-request format the dev gateway's replay reads (method, path, host,
/// headers, time, ...). The token in its Authorization header is verified against the bundle's issuers, the path is
/// normalized, the tool resolved and the core's `decide` run, as the filter does. Prints the decision and the chain
/// of reasons: which rule matched, which rules were considered, and why the others did not match.
///
/// Exits 0 whatever the decision, unless --expect is given and the decision differs (exit 1).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle: JSON as authored, or a signed bundle (then --keys and --authority are required).
    #[arg(long, value_name = "BUNDLE")]
    bundle: PathBuf,
    #[command(flatten)]
    source: BundleSource,
    /// The environment label of the gateway (as in its plugin configuration).
    #[arg(long, value_name = "ENV")]
    environment: String,
    /// The header that carries the agent token.
    #[arg(long, value_name = "NAME", default_value = "authorization")]
    token_header: String,
    /// Decide at this time (RFC 3339 UTC); default: the request's `time`, else the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
    /// Exit 1 unless the decision is this one.
    #[arg(long, value_enum, value_name = "DECISION")]
    expect: Option<ExpectOutcome>,
    /// The request (one JSON object).
    #[arg(value_name = "REQUEST.json")]
    request: PathBuf,
}

/// What eval found, step by step.
struct Evaluation {
    decision: Decision,
    facts: Option<Facts>,
    path: Option<String>,
    path_error: Option<String>,
    now: i64,
}

fn evaluate(
    bundle: &CompiledBundle,
    req: &RecordedRequest,
    environment: &str,
    token_header: &str,
    now: i64,
) -> Evaluation {
    let done = |reason: Reason| Decision { outcome: Outcome::Deny, reason, rule: None, revision: bundle.revision };
    let normalized = match path::normalize(&req.path) {
        Ok(n) => n,
        Err(e) => {
            return Evaluation {
                decision: done(Reason::BadRequest),
                facts: None,
                path: None,
                path_error: Some(format!("{} ({e})", e.code())),
                now,
            }
        }
    };
    let values: Vec<&str> =
        req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(token_header)).map(|(_, v)| v.as_str()).collect();
    let identity = match values[..] {
        [] => Identity::Missing,
        [value] => {
            let token = if token_header.eq_ignore_ascii_case("authorization") || value.contains(' ') {
                identity::bearer_token(value)
            } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(value)
            } else {
                Err(TokenFailure::Malformed)
            };
            match token.and_then(|t| identity::verify(&bundle.issuers, t, now)) {
                Ok(agent) => Identity::Verified(agent),
                Err(f) => Identity::Invalid(f),
            }
        }
        _ => Identity::Invalid(TokenFailure::Ambiguous),
    };
    let host = req.authority().unwrap_or("");
    let tool = bundle.resolve_http(host, &req.method, &normalized.path);
    let facts = Facts { environment: environment.to_string(), identity, tool };
    let decision = decide(bundle, &facts, now);
    Evaluation { decision, facts: Some(facts), path: Some(normalized.path), path_error: None, now }
}

/// The chain of reasons for a decision, one line each (the core's [`explain`], which walks the rules with decide's
/// own candidate lists and predicates).
pub fn explain_lines(loaded: &Loaded, facts: &Facts, now: i64) -> Vec<String> {
    explain(&loaded.compiled, facts, now).lines()
}

pub fn run(args: &Args) -> Result<Status> {
    let text = files::read_text(&args.request)?;
    let req = RecordedRequest::parse_line(&text).map_err(|e| anyhow!("{}: {e}", args.request.display()))?;
    let now = match (&args.now, req.time_seconds()) {
        (Some(n), _) => files::parse_now(n)?,
        (None, Ok(Some(t))) => t,
        (None, _) => files::clock(),
    };
    let Some(loaded) = args.source.load(&args.bundle)? else { return Ok(Status::Failed) };
    let ev = evaluate(&loaded.compiled, &req, &args.environment, &args.token_header, now);
    let bundle = &loaded.compiled;
    let d = &ev.decision;
    let explanation = ev.facts.as_ref().map(|f| explain(bundle, f, ev.now));
    let why = match &explanation {
        Some(e) => e.lines(),
        None => vec![format!("the request path was refused: {}", ev.path_error.clone().unwrap_or_default())],
    };
    let rules: Vec<Value> = explanation
        .iter()
        .flat_map(|e| &e.rules)
        .map(|r| json!({"id": r.id, "effect": r.effect.as_str(), "verdict": r.verdict.as_str(), "detail": r.detail}))
        .collect();
    let tool = ev.facts.as_ref().and_then(|f| f.tool).map(|t| bundle.tool_id(t).to_string());
    let agent = match ev.facts.as_ref().map(|f| &f.identity) {
        Some(Identity::Verified(a)) => json!({
            "id": a.id, "trust_domain": a.trust_domain, "issuer": a.issuer, "token_id": a.token_id,
            "task": a.task.as_ref().map(|t| json!({"id": t.id, "purpose": t.purpose, "expires_at": t.expires_at})),
        }),
        _ => Value::Null,
    };
    if args.json {
        let out = json!({
            "id": req.id,
            "decision": d.outcome.as_str(),
            "status": d.http_status(),
            "reason": d.reason.code(),
            "rule": d.rule_id(),
            "revision": d.revision,
            "environment": args.environment,
            "time": format_rfc3339(now),
            "request": {"method": req.method, "host": req.authority().unwrap_or(""), "path": ev.path},
            "tool": tool,
            "agent": agent,
            "explanation": why,
            "rules": rules,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("decision: {} ({})", d.outcome.as_str(), d.http_status());
        println!("reason:   {}", d.reason.code());
        println!("rule:     {}", d.rule_id());
        println!("revision: {}", d.revision);
        println!(
            "request:  {} {} {}",
            req.method,
            req.authority().unwrap_or(""),
            ev.path.as_deref().unwrap_or(&req.path)
        );
        println!("why:");
        for line in &why {
            println!("  {line}");
        }
    }
    if let Some(expect) = args.expect {
        let want = match expect {
            ExpectOutcome::Allow => Outcome::Allow,
            ExpectOutcome::Deny => Outcome::Deny,
            ExpectOutcome::StepUp => Outcome::StepUp,
        };
        if d.outcome != want {
            eprintln!("warden eval: expected {}, decided {}", want.as_str(), d.outcome.as_str());
            return Ok(Status::Failed);
        }
    }
    Ok(Status::Ok)
}
