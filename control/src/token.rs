//! `warden token`: mint an agent token (a JWT) from an issuer's private key, for tests and demos.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};
use warden_core::envelope;
use warden_core::time::{format_rfc3339, parse_rfc3339};

use crate::files;
use crate::Status;

/// Mint an agent token for tests and demos, signed with a token issuer's private key (from `warden keygen --for
/// issuer`, or policies/examples/keys/TEST-ONLY-issuer-*.jwk.json).
///
/// Prints the token (one line) on stdout and its claims on stderr. Claims: `iss`, `sub` (the agent id), `aud`,
/// `iat`, `exp` (`iat` + --ttl), `jti`, and every --claim. Header: `alg` and `kid` from the key, `typ` from --typ
/// (`JWT` for JWT-SVIDs, `at+jwt` for RFC 9068 access tokens, `txntoken+jwt` for Transaction Tokens). Real agents
/// get their tokens from their identity provider (SPIRE, an OAuth server); this is for trying a bundle.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The issuer's private key (JWK: Ed25519 or P-256).
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    key: PathBuf,
    /// `iss`: the issuer URL, as the bundle's `issuers[].iss` names it.
    #[arg(long, value_name = "URL")]
    iss: String,
    /// `sub`: the agent id (e.g. spiffe://acme.example/agents/support/bot-1).
    #[arg(long, value_name = "ID")]
    sub: String,
    /// `aud` (repeat for several; one is written as a string).
    #[arg(long, value_name = "AUDIENCE", default_value = "warden")]
    aud: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    ttl: i64,
    /// `iat`: RFC 3339 UTC or unix seconds; default the system clock (pass the gateway's clock when it is a manual one).
    #[arg(long, value_name = "TIME")]
    issued_at: Option<String>,
    /// `jti`; default a random id.
    #[arg(long, value_name = "ID")]
    jti: Option<String>,
    /// The header's `typ`.
    #[arg(long, value_name = "TYP", default_value = "JWT")]
    typ: String,
    /// An extra claim, NAME=VALUE; VALUE is JSON when it parses as JSON, else a string (e.g. task_id=T-1,
    /// task_exp=1767225600, act='{"sub":"spiffe://..."}').
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness for the jti: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The claims of a token as the arguments describe it.
fn claims(args: &Args, iat: i64) -> Result<Map<String, Value>> {
    if args.ttl <= 0 {
        bail!("--ttl must be a positive number of seconds");
    }
    if args.iss.is_empty() || args.sub.is_empty() {
        bail!("--iss and --sub must not be empty");
    }
    let mut c = Map::new();
    c.insert("iss".into(), json!(args.iss));
    c.insert("sub".into(), json!(args.sub));
    c.insert("aud".into(), if args.aud.len() == 1 { json!(args.aud[0]) } else { json!(args.aud) });
    c.insert("iat".into(), json!(iat));
    c.insert("exp".into(), json!(iat.saturating_add(args.ttl)));
    c.insert("jti".into(), json!(args.jti.clone().map_or_else(random_id, Ok)?));
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            bail!("--claim {claim:?}: expected NAME=VALUE, e.g. task_id=T-1");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        c.insert(name.to_string(), value);
    }
    Ok(c)
}

pub fn run(args: &Args) -> Result<Status> {
    let key = files::read_signing_key(&args.key)?;
    let iat = match &args.issued_at {
        None => files::clock(),
        Some(t) => match t.parse::<i64>() {
            Ok(n) => n,
            Err(_) => parse_rfc3339(t).ok_or_else(|| {
                anyhow!("--issued-at {t:?}: expected RFC 3339 UTC (2026-11-28T10:00:00Z) or unix seconds")
            })?,
        },
    };
    let claims = claims(args, iat)?;
    let payload = serde_json::to_vec(&Value::Object(claims.clone()))?;
    let token = envelope::sign_typed(&payload, &key, &args.typ);
    println!("{token}");
    eprintln!(
        "token for {} from {} (kid {:?}, typ {}), valid {} to {}: {}",
        args.sub,
        args.iss,
        key.kid(),
        args.typ,
        format_rfc3339(iat),
        format_rfc3339(iat.saturating_add(args.ttl)),
        Value::Object(claims)
    );
    Ok(Status::Ok)
}
