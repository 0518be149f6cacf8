//! `warden keygen`: a new bundle-signing key pair (private JWK file with mode 0600, public JWKS).

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

/// Generate a bundle-signing key pair.
///
/// Writes the private key as a JWK to --out, created with mode 0600 (never an existing file unless --force).
/// The public key set (JWKS) — what gateways pin and `warden verify` / `warden serve` take as --keys — is written
/// to --public, or printed on stdout.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Signing algorithm.
    #[arg(long, value_enum, default_value = "EdDSA")]
    alg: Alg,
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
    match &args.public {
        Some(path) => {
            files::create_new(path, public.as_bytes(), 0o644, args.force)?;
            eprintln!("wrote public key set {}: pin it in gateways and pass it to --keys", path.display());
        }
        None => print!("{public}"),
    }
    Ok(Status::Ok)
}
