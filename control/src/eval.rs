//! `warden eval`: one recorded request through the core's gate, the filter's own pipeline
//! ([`warden_core::gate::driver`]), with the decision and the chain of reasons behind it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use serde_json::{json, Value};
use warden_core::bundle::Bundle;
use warden_core::compile::CompiledBundle;
use warden_core::config::{self, GateConfig};
use warden_core::decision::Outcome;
use warden_core::envelope;
use warden_core::explain::explain_gate;
use warden_core::facts::Facts;
use warden_core::gate::driver::{self, Exchange};
use warden_core::gate::MemoryStore;
use warden_core::request::RecordedRequest;
use warden_core::time::format_rfc3339;

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
    /// As authored.
    pub bundle: Bundle,
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
            Ok(checked) => Ok(Some(Loaded { bundle: checked.bundle, compiled: checked.compiled })),
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
/// headers, body, peer_uri_san, time, ...). It runs through the core's gate exactly as warden.wasm runs it: path
/// normalization, the agent token and Transaction Token verified against the bundle's issuers (sender binding to
/// the mTLS peer), the tool resolved from the route or the MCP message, `decide` with the call's arguments, step-up
/// approvals, the bundle's expiry and grace. Prints the decision and the chain of reasons: which rule matched,
/// which rules were considered, and why the others did not match (for argument conditions, which condition).
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
    /// The environment label of the gateway (as in its plugin configuration); overrides --config's.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
    /// The gateway's plugin configuration (JSON, as Envoy's `configuration`): environment, mode, token headers,
    /// grace, body limit as the filter reads them. Without it: the defaults with --environment.
    #[arg(long, value_name = "PLUGIN.json")]
    config: Option<PathBuf>,
    /// The header that carries the agent token (default: the configuration's, else authorization).
    #[arg(long, value_name = "NAME")]
    token_header: Option<String>,
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

pub fn run(args: &Args) -> Result<Status> {
    let text = files::read_text(&args.request)?;
    let req = RecordedRequest::parse_line(&text).map_err(|e| anyhow!("{}: {e}", args.request.display()))?;
    let now = match (&args.now, req.time_seconds()) {
        (Some(n), _) => files::parse_now(n)?,
        (None, Ok(Some(t))) => t,
        (None, _) => files::clock(),
    };
    let mut config = match (&args.config, &args.environment) {
        (Some(path), _) => {
            let bytes = files::read_bytes(path)?;
            config::parse(&bytes).map_err(|e| anyhow!("{}: plugin configuration: {e}", path.display()))?.gate
        }
        (None, Some(env)) => GateConfig::new(env),
        (None, None) => bail!("give --environment ENV, or --config PLUGIN.json (the gateway's plugin configuration)"),
    };
    if let Some(env) = &args.environment {
        config.environment = env.clone();
    }
    if let Some(header) = &args.token_header {
        config.token_header = header.to_ascii_lowercase();
    }
    let Some(loaded) = args.source.load(&args.bundle)? else { return Ok(Status::Failed) };
    let bundle = &loaded.compiled;
    let exchange = Exchange::from_recorded(&req, now).map_err(|e| anyhow!("{}: {e}", args.request.display()))?;
    let run = driver::run(&config, Some(bundle), exchange, &mut MemoryStore::default());
    let flow = &run.flow;
    let d = flow.decision();
    let status = run.status(None);
    let facts = Facts { environment: config.environment.clone(), identity: flow.identity().clone(), tool: flow.tool() };
    let explanation = explain_gate(bundle, &facts, flow.call().and_then(|m| m.arguments()), now, d);
    let why = explanation.lines();
    let rules: Vec<Value> = explanation
        .rules
        .iter()
        .map(|r| json!({"id": r.id, "effect": r.effect.as_str(), "verdict": r.verdict.as_str(), "detail": r.detail}))
        .collect();
    let tool = flow.tool().map(|t| bundle.tool_id(t).to_string());
    let agent = match flow.agent() {
        Some(a) => json!({
            "id": a.id, "trust_domain": a.trust_domain, "issuer": a.issuer, "token_id": a.token_id,
            "task": a.task.as_ref().map(|t| json!({"id": t.id, "purpose": t.purpose, "expires_at": t.expires_at})),
        }),
        None => Value::Null,
    };
    let host = req.authority().unwrap_or("");
    if args.json {
        let record: Value = run.record.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null);
        let out = json!({
            "id": req.id,
            "decision": d.outcome.as_str(),
            "status": status,
            "reason": d.reason.code(),
            "rule": d.rule_id(),
            "revision": d.revision,
            "environment": config.environment,
            "time": format_rfc3339(now),
            "request": {"method": req.method, "host": host, "path": flow.path()},
            "tool": tool,
            "agent": agent,
            "explanation": why,
            "rules": rules,
            "reply": run.reply.as_ref().map(|r| String::from_utf8_lossy(&r.body).into_owned()),
            "record": record,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("decision: {} ({status})", d.outcome.as_str());
        println!("reason:   {}", d.reason.code());
        println!("rule:     {}", d.rule_id());
        println!("revision: {}", d.revision);
        println!("request:  {} {host} {}", req.method, flow.path());
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
