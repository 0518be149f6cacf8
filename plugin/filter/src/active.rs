//! The active bundle: a signed bundle verified against the pinned keys and compiled, ready for the request path.
//!
//! [`load`] is the whole of `on_configure` that does not talk to the host: parse the configuration, verify and compile
//! the inline bundle. Pure given `now`, so every refusal is tested natively.

use warden_core::compile::{self, CompiledBundle};
use warden_core::envelope;

use crate::config::{self, Config, ConfigError};

/// A verified, compiled bundle. Shared read-only with every HTTP context of the VM.
#[derive(Debug)]
pub struct Active {
    pub bundle: CompiledBundle,
    /// Key id of the authority key that signed it.
    pub key_id: String,
    /// SHA-256 (hex) of the signed payload.
    pub digest: String,
}

/// A configuration that passed every check, and its bundle if one was given inline.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub active: Option<Active>,
}

/// Parses the plugin configuration and activates its inline bundle (if any) at time `now` (seconds since the epoch).
/// A bundle that does not verify or does not validate refuses the whole configuration.
pub fn load(config_bytes: &[u8], now: i64) -> Result<Loaded, ConfigError> {
    let config = config::parse(config_bytes)?;
    let active = match &config.inline_bundle {
        None => None,
        Some(signed) => Some(activate(&config, signed.as_bytes(), now)?),
    };
    Ok(Loaded { config, active })
}

/// Verifies (signature, pinned key, authority, expiry) and compiles one signed bundle.
pub fn activate(config: &Config, signed: &[u8], now: i64) -> Result<Active, ConfigError> {
    let verified = envelope::verify(signed, &config.bundle_keys, &config.authority, &[], now)
        .map_err(|e| ConfigError::field("inline_bundle", e))?;
    let bundle = compile::compile(&verified.bundle).map_err(|errors| {
        let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        ConfigError::field(
            "inline_bundle",
            format!("bundle revision {} is not valid: {}", verified.bundle.revision, all.join("; ")),
        )
    })?;
    if bundle.revoked_signing_keys().contains(&verified.key_id) {
        return Err(ConfigError::field(
            "inline_bundle",
            format!("bundle revision {} revokes its own signing key `{}`", bundle.revision, verified.key_id),
        ));
    }
    Ok(Active { bundle, key_id: verified.key_id, digest: verified.digest })
}
