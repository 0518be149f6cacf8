//! `warden sign` and `warden verify`: the signed bundle (JWS) as gateways see it.

use std::path::PathBuf;

use anyhow::Result;
use warden_core::envelope::{self, TrustedKeys, VerifiedBundle};
use warden_core::time::format_rfc3339;

use crate::files;
use crate::lint;
use crate::Status;

/// Sign a bundle for distribution (lints it first; an invalid bundle is never signed).
///
/// The payload is the bundle file's bytes exactly as they are, so the digest `warden verify` prints is the SHA-256
/// of BUNDLE.json. Signing is refused (exit 1) when the bundle has lint errors, or when gateways would refuse the
/// result right away: expired, issued more than 5 minutes in the future, or signed with a key the bundle itself
/// revokes. The output is written atomically.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct SignArgs {
    /// The bundle (JSON, as authored).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    /// The authority's private signing key (JWK, from `warden keygen`).
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    key: PathBuf,
    /// Where to write the signed bundle (JWS compact serialization).
    #[arg(long, value_name = "BUNDLE.jws")]
    out: PathBuf,
    /// The clock to check the validity window against (RFC 3339 UTC); default: the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

/// Verify a signed bundle exactly as a gateway would, and show what it contains.
///
/// Checks the JWS against the pinned authority keys, the bundle's authority, its validity window (at --now or the
/// system clock), and validates the bundle. Prints revision, signing key, digest and expiry; on refusal prints why
/// and exits 1. The anti-rollback check needs the active revision: pass it with --active-revision.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    /// The signed bundle.
    #[arg(value_name = "BUNDLE.jws")]
    bundle: PathBuf,
    /// The pinned authority public keys (JWKS).
    #[arg(long, value_name = "AUTHORITY.jwks.json")]
    keys: PathBuf,
    /// The authority gateways pin: the bundle's `authority` must equal it.
    #[arg(long, value_name = "NAME")]
    authority: String,
    /// Check the validity window at this time (RFC 3339 UTC) instead of the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Key ids to treat as revoked (as the active bundle's `revocations.signing_keys` would).
    #[arg(long = "revoked-kid", value_name = "KID")]
    revoked_kids: Vec<String>,
    /// Refuse the bundle unless its revision is higher than this one (the gateway's anti-rollback check).
    #[arg(long, value_name = "REVISION")]
    active_revision: Option<u64>,
}

pub fn sign(args: &SignArgs) -> Result<Status> {
    let now = files::now(args.now.as_deref())?;
    let key = files::read_signing_key(&args.key)?;
    let checked = match lint::check_file(&args.bundle)? {
        Ok(c) => c,
        Err(diagnostics) => {
            lint::report(&args.bundle, &diagnostics);
            eprintln!("warden sign: refusing to sign {}: it does not validate", args.bundle.display());
            return Ok(Status::Failed);
        }
    };
    for w in &checked.warnings {
        eprintln!("{w}");
    }
    if checked.bundle.revocations.signing_keys.iter().any(|k| k == key.kid()) {
        eprintln!(
            "warden sign: refusing to sign {}: the bundle revokes the signing key {:?} itself",
            args.bundle.display(),
            key.kid()
        );
        return Ok(Status::Failed);
    }
    let payload = files::read_bytes(&args.bundle)?;
    let signed = envelope::sign(&payload, &key);
    // Check the result as a gateway would (validity window, authority), before anyone ships it.
    let verified = match envelope::verify(signed.as_bytes(), &key.trusted_keys(), &checked.bundle.authority, &[], now) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("warden sign: refusing to sign {}: gateways would refuse it: {e}", args.bundle.display());
            return Ok(Status::Failed);
        }
    };
    let mut out = signed;
    out.push('\n');
    files::write_atomic(&args.out, out.as_bytes(), 0o644)?;
    println!("signed {} -> {}", args.bundle.display(), args.out.display());
    print_summary(&verified, &key.alg().to_string(), now);
    Ok(Status::Ok)
}

pub fn verify(args: &VerifyArgs) -> Result<Status> {
    let now = files::now(args.now.as_deref())?;
    let keys: TrustedKeys = files::read_trusted_keys(&args.keys)?;
    let signed = files::read_bytes(&args.bundle)?;
    let name = args.bundle.display();
    let verified = match envelope::verify(&signed, &keys, &args.authority, &args.revoked_kids, now) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{name}: refused: {e}");
            return Ok(Status::Failed);
        }
    };
    if let Some(active) = args.active_revision {
        if verified.bundle.revision <= active {
            eprintln!(
                "{name}: refused: revision {} is not higher than the active revision {active} (rollback)",
                verified.bundle.revision
            );
            return Ok(Status::Failed);
        }
    }
    // The payload must also validate, as the gateway compiles it before activating it.
    let payload = segment_text(&signed, 1);
    if let Err(diagnostics) = lint::check(&format!("{name}#payload"), &payload) {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        eprintln!("{name}: refused: the signature verifies but the bundle does not validate");
        return Ok(Status::Failed);
    }
    println!("{name}: verified");
    print_summary(&verified, &segment_text(&signed, 0), now);
    Ok(Status::Ok)
}

/// A segment of a JWS that already verified, decoded as text: 0 the header, 1 the payload (for locating validation
/// errors in it). For the header, just its `alg`.
fn segment_text(signed: &[u8], index: usize) -> String {
    let decoded = files::jws_segment_text(signed, index);
    if index == 0 {
        let header: serde_json::Value = serde_json::from_str(&decoded).unwrap_or_default();
        return header.get("alg").and_then(|a| a.as_str()).unwrap_or("").to_string();
    }
    decoded
}

fn print_summary(v: &VerifiedBundle, alg: &str, now: i64) {
    let b = &v.bundle;
    println!("  revision:   {}", b.revision);
    if alg.is_empty() {
        println!("  kid:        {}", v.key_id);
    } else {
        println!("  kid:        {} ({alg})", v.key_id);
    }
    println!("  digest:     sha256:{}", v.digest);
    println!("  authority:  {}", b.authority);
    println!("  owner:      {}", b.owner);
    println!("  issued_at:  {}", b.issued_at);
    let left = warden_core::time::parse_rfc3339(&b.expires_at).map(|e| e - now).unwrap_or(0);
    println!("  expires_at: {} (in {}, checked at {})", b.expires_at, human_duration(left), format_rfc3339(now));
}

/// `3d 4h`, `5h 2m`, `42s`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}
