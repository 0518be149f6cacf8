//! `warden init`: a starter policy directory for a scenario: bundle, policy tests, the schema, fresh keys, and the
//! next steps.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use serde_json::{json, Value};
use warden_core::envelope::{Algorithm, SigningKey};

use crate::files;
use crate::fmt::canonical;
use crate::Status;

/// Which example the starter bundle is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A support agent: CRM and knowledge-base reads, ticket comments, no writes to contacts.
    Support,
    /// A finance agent: reads, refunds behind a step-up approval, payouts denied, a time-boxed exception.
    Finance,
    /// A coding agent on CI: repository reads and pull requests, deployments denied.
    Coding,
}

impl Scenario {
    fn files(self) -> (&'static str, &'static str) {
        match self {
            Scenario::Support => (
                include_str!("../../policies/examples/support-agent.json"),
                include_str!("../../policies/examples/support-agent.cases.json"),
            ),
            Scenario::Finance => (
                include_str!("../../policies/examples/finance-agent.json"),
                include_str!("../../policies/examples/finance-agent.cases.json"),
            ),
            Scenario::Coding => (
                include_str!("../../policies/examples/coding-agent.json"),
                include_str!("../../policies/examples/coding-agent.cases.json"),
            ),
        }
    }
}

const SCHEMA: &str = include_str!("../../policies/bundle.schema.json");
const CASES_SCHEMA: &str = include_str!("../../policies/cases.schema.json");

/// Start a policy: write a starter bundle, its policy tests and fresh keys for a scenario into a new directory.
///
/// DIR/bundle.json (from the scenario's example, with `$schema` for editors, the --authority, and the issuer and
/// approver keys replaced by new ones), DIR/bundle.cases.json (its policy tests), the JSON Schemas of both
/// (DIR/bundle.schema.json, DIR/cases.schema.json: associate the second in the editor), and in
/// DIR/keys/ new key pairs: authority (signs bundles; its public JWKS is what gateways pin), one per issuer (mints
/// test agent tokens with `warden token`) and per approver (mints approvals with `warden approve`). Private keys
/// are created with mode 0600. With --authority-key the bundle is meant for an existing authority: no authority key is
/// made, only its public JWKS is written (DIR/keys/authority.jwks.json). Prints the next steps. DIR must not exist or
/// be empty.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The directory to create.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The example to start from.
    #[arg(long, value_enum, default_value = "support")]
    scenario: Scenario,
    /// The policy authority the bundle names (gateways pin it with its keys).
    #[arg(long, value_name = "NAME", default_value = "policy.acme.example")]
    authority: String,
    /// Sign with this existing authority key (private JWK) instead of a new one, e.g. the key gateways already pin.
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    authority_key: Option<PathBuf>,
}

fn write_pair(dir: &Path, stem: &str, kid: &str) -> Result<Value> {
    let key = SigningKey::generate(Algorithm::EdDSA, kid).map_err(|e| anyhow!("{kid}: {e}"))?;
    let private = serde_json::to_string_pretty(&key.private_jwk())? + "\n";
    files::create_new(&dir.join(format!("{stem}.jwk.json")), private.as_bytes(), 0o600, false)?;
    let jwks = json!({ "keys": [key.public_jwk()] });
    files::create_new(
        &dir.join(format!("{stem}.jwks.json")),
        (serde_json::to_string_pretty(&jwks)? + "\n").as_bytes(),
        0o644,
        false,
    )?;
    Ok(jwks)
}

pub fn run(args: &Args) -> Result<Status> {
    let dir = &args.dir;
    if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty; give a new directory", dir.display());
    }
    // Read a given authority key before writing anything, so a wrong file leaves nothing behind.
    let given_key = args.authority_key.as_ref().map(|p| files::read_signing_key(p).map(|k| (p, k))).transpose()?;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| anyhow!("cannot create {}: {e}", keys.display()))?;
    let (bundle_text, cases_text) = args.scenario.files();
    let mut bundle: Value = serde_json::from_str(bundle_text)?;
    bundle["$schema"] = json!("./bundle.schema.json");
    bundle["authority"] = json!(args.authority);
    let d = dir.display();
    let (authority_key, mut made) = match given_key {
        None => {
            write_pair(&keys, "authority", "authority-1")?;
            (
                format!("{d}/keys/authority.jwk.json"),
                vec!["keys/authority.jwk.json (signs bundles; keep it secret)".to_string()],
            )
        }
        Some((path, key)) => {
            let jwks = serde_json::to_string_pretty(&json!({ "keys": [key.public_jwk()] }))? + "\n";
            files::create_new(&keys.join("authority.jwks.json"), jwks.as_bytes(), 0o644, false)?;
            (
                path.display().to_string(),
                vec![format!("keys/authority.jwks.json (the public half of {})", path.display())],
            )
        }
    };
    let mut cases: Value = serde_json::from_str(cases_text)?;
    for list in ["issuers", "approvers"] {
        for entry in bundle.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let id = entry["id"].as_str().unwrap_or("key").to_string();
            let stem = format!("{}-{id}", &list[..list.len() - 1]);
            entry["jwks"] = write_pair(&keys, &stem, &format!("{id}-1"))?;
            made.push(format!("keys/{stem}.jwk.json ({} {id})", &list[..list.len() - 1]));
            // The policy tests mint tokens and approvals with the new keys.
            if let Some(k) = cases.pointer_mut("/defaults/keys").and_then(Value::as_object_mut) {
                if k.contains_key(&id) {
                    k.insert(id.clone(), json!(format!("keys/{stem}.jwk.json")));
                }
            }
        }
    }
    let text = canonical(&serde_json::to_string(&bundle)?).map_err(|e| anyhow!("{e}"))?;
    files::create_new(&dir.join("bundle.json"), text.as_bytes(), 0o644, false)?;
    let cases = canonical(&serde_json::to_string(&cases)?).map_err(|e| anyhow!("{e}"))?;
    files::create_new(&dir.join("bundle.cases.json"), cases.as_bytes(), 0o644, false)?;
    files::create_new(&dir.join("bundle.schema.json"), SCHEMA.as_bytes(), 0o644, false)?;
    files::create_new(&dir.join("cases.schema.json"), CASES_SCHEMA.as_bytes(), 0o644, false)?;
    println!(
        "wrote {d}/bundle.json, {d}/bundle.cases.json, the schemas {d}/bundle.schema.json and {d}/cases.schema.json, \
         and keys: {}",
        made.join(", ")
    );
    println!("next:");
    println!("  warden lint {d}/bundle.json");
    println!("  warden test {d}/bundle.json {d}/bundle.cases.json");
    println!("  warden report {d}/bundle.json");
    println!(
        "  warden publish {d}/bundle.json --key {authority_key} --to http://127.0.0.1:8181/bundles/bundle.jws \
         --upload-token-file upload.token"
    );
    println!("  gateways pin {d}/keys/authority.jwks.json (`bundle_keys`) and authority {:?}", args.authority);
    Ok(Status::Ok)
}
