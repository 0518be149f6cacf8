//! `warden keygen`: a new signing key pair (private JWK file with mode 0600, public JWKS) for the bundle authority,
//! a step-up approver or a token issuer, with the next step for that kind of key.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::ValueEnum;
use serde_json::json;
use warden_core::envelope::{Algorithm, SigningKey};

use crate::files;
use crate::Status;

/// Signing algorithm of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Alg {
    /// Ed25519 (RFC 8037); small, fast, deterministic signatures.
    #[value(name = "EdDSA")]
    EdDSA,
    /// ECDSA P-256 with SHA-256, for HSM/KMS setups that only do NIST curves.
    #[value(name = "ES256")]
    ES256,
}

/// What a key is for; decides where its public half goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Signs bundles: gateways pin its public key set (`bundle_keys`).
    Authority,
    /// Signs step-up approvals: its public key set goes in the bundle (`approvers[].jwks`), never in gateways.
    Approver,
    /// Signs agent tokens (tests, demos): its public key set goes in the bundle (`issuers[].jwks`).
    Issuer,
}

/// Generate a signing key pair: for the bundle authority (default), a step-up approver, or a token issuer.
///
/// Writes the private key as a JWK to --out, created with mode 0600 (never an existing file unless --force).
/// The public key set (JWKS) is written to --public, or printed on stdout. What to do with it depends on --for:
/// an authority's is pinned by gateways (`bundle_keys`) and given to `warden verify` / `warden serve` as --keys;
/// an approver's or issuer's goes in the bundle (`approvers[].jwks`, `issuers[].jwks`), which the authority signs.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Signing algorithm.
    #[arg(long, value_enum, default_value = "EdDSA")]
    alg: Alg,
    /// What the key signs.
    #[arg(long = "for", value_enum, default_value = "authority")]
    kind: Kind,
    /// Key id, placed in every signature's header (e.g. `policy-2026-11`).
    #[arg(long)]
    kid: String,
    /// Where to write the private key (JWK); created with mode 0600.
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    out: PathBuf,
    /// Where to write the public key set (JWKS); printed on stdout when absent.
    #[arg(long, value_name = "PUBLIC.jwks.json")]
    public: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &Args) -> Result<Status> {
    let alg = match args.alg {
        Alg::EdDSA => Algorithm::EdDSA,
        Alg::ES256 => Algorithm::ES256,
    };
    let key = SigningKey::generate(alg, &args.kid).map_err(|e| anyhow!("--kid {:?}: {e}", args.kid))?;
    let jwks = json!({ "keys": [key.public_jwk()] });
    let mut public = serde_json::to_string_pretty(&jwks)?;
    public.push('\n');
    if let Some(path) = &args.public {
        // Refuse before writing anything, so a refused run leaves no half-made pair behind.
        if path.exists() && !args.force {
            anyhow::bail!("{} already exists; refusing to overwrite it (use --force to replace it)", path.display());
        }
    }
    let mut private = serde_json::to_string_pretty(&key.private_jwk())?;
    private.push('\n');
    files::create_new(&args.out, private.as_bytes(), 0o600, args.force)?;
    eprintln!("wrote private key {} ({alg}, kid {:?}, mode 0600): keep it secret", args.out.display(), args.kid);
    let shown = match &args.public {
        Some(path) => {
            files::create_new(path, public.as_bytes(), 0o644, args.force)?;
            eprintln!("wrote public key set {}", path.display());
            path.display().to_string()
        }
        None => {
            print!("{public}");
            "the public key set (stdout)".to_string()
        }
    };
    let private = args.out.display();
    let next = match args.kind {
        Kind::Authority => format!(
            "next: pin {shown} in every gateway's plugin configuration (`bundle_keys`) and pass it to \
             `warden verify` / `warden serve` as --keys; sign bundles with `warden sign --key {private}`"
        ),
        Kind::Approver => format!(
            "next: put the keys of {shown} in the bundle's `approvers[].jwks` (gateways learn approver keys from the \
             signed bundle: do not pin them in gateways); the approval service signs with {private} \
             (`warden approve --key {private}` for tests)"
        ),
        Kind::Issuer => format!(
            "next: put the keys of {shown} in the bundle's `issuers[].jwks`; mint test agent tokens with \
             `warden token --key {private}`"
        ),
    };
    eprintln!("{next}");
    Ok(Status::Ok)
}
