//! The one support module of the host-tests binary: artifacts (through `warden_host::artifacts`), issuer keys,
//! temporary directories; and per area of tests:
//! - [`conformance`]: the conformance test filter in the host (hostcalls, streams, http calls, time and failure);
//! - [`filter`]: `warden.wasm` in the host with a manual clock and a rich test bundle (end-to-end decisions);
//! - [`live`]: live updates with a real-time test world (`warden serve`, a scripted control endpoint, nginx),
//!   also used by the Envoy tests;
//! - [`envoy`]: a gateway of real Envoy and a recording upstream, and the differential against the host.
#![allow(dead_code)] // each test module uses a different part

pub mod conformance;
pub mod envoy;
pub mod filter;
pub mod live;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use warden_core::envelope::{self, SigningKey};
use warden_host::{artifacts, CompiledModule};

// ---------------------------------------------------------------------------------------------------------------
// Artifacts

fn found(r: Result<PathBuf, artifacts::Missing>) -> PathBuf {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// `warden.wasm` (see [`artifacts::warden_wasm`]); panics with how to build it when missing.
pub fn warden_wasm() -> PathBuf {
    found(artifacts::warden_wasm())
}

/// `warden.wasm`, compiled once per process.
pub fn warden_module() -> CompiledModule {
    let path = warden_wasm();
    CompiledModule::load_cached(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The conformance test filter.
pub fn test_filter_wasm() -> PathBuf {
    found(artifacts::test_filter_wasm())
}

/// The `warden` CLI.
pub fn warden_bin() -> PathBuf {
    found(artifacts::warden_bin())
}

/// The Python of `.venv` (PyJWT, jwcrypto, cryptography, the MCP SDK).
pub fn python() -> PathBuf {
    found(artifacts::python())
}

/// The workspace root.
pub fn repo() -> PathBuf {
    artifacts::workspace()
}

/// `warden-gateway`, built by cargo for this test binary.
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_warden-gateway");

// ---------------------------------------------------------------------------------------------------------------
// Keys

/// An Ed25519 token issuer key: what `jsonwebtoken` signs with, and the public JWK a bundle trusts.
pub struct IssuerKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub public: Value,
    /// The private JWK as `warden keygen` writes it (for `warden approve --key`).
    pub private: Value,
}

impl IssuerKey {
    /// A fresh key (generated through `warden_core::envelope`, whose private JWK carries the Ed25519 seed).
    pub fn generate(kid: &str) -> IssuerKey {
        let key = SigningKey::generate(envelope::Algorithm::EdDSA, kid).expect("key generation");
        let d = key.private_jwk()["d"].as_str().expect("private JWK has d").to_string();
        let seed = URL_SAFE_NO_PAD.decode(d).expect("d is base64url");
        assert_eq!(seed.len(), 32);
        // PKCS#8 v1 (RFC 8410) wrapping of the 32-byte seed, which jsonwebtoken's rust_crypto signer reads.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        IssuerKey {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ed_der(&der),
            public: key.public_jwk(),
            private: key.private_jwk(),
        }
    }

    /// A JWT with these claims (EdDSA, this key's `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("token encodes")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A temporary directory

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "warden-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
