//! The one support module of the CLI tests: the artifact locator ([`warden_bin`], [`root`]), scratch directories,
//! running the built `warden` binary, test keys and bundles; [`serve`]: `warden serve` as a real process.
#![allow(dead_code)] // each test module uses a different part

pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use warden_core::envelope::{Algorithm, SigningKey};

/// The authority named by the example bundles.
pub const AUTHORITY: &str = "policy.acme.example";

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "warden-cli-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Writes a TEST signing key (private JWK) and its public JWKS; returns (private path, public path, key).
    pub fn key(&self, alg: Algorithm, kid: &str) -> (PathBuf, PathBuf, SigningKey) {
        let key = SigningKey::generate(alg, kid).unwrap();
        let private = self.write(&format!("{kid}.jwk.json"), key.private_jwk().to_string());
        let public = self.write(&format!("{kid}.jwks.json"), json!({ "keys": [key.public_jwk()] }).to_string());
        (private, public, key)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pretty JSON with every object's members in name order, whatever serde_json's `preserve_order` feature is (line
/// and column expectations must not depend on it).
pub fn pretty(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut members: Vec<(&String, &Value)> = m.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(members.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&sorted(v)).unwrap()
}

/// The `warden` binary under test (the artifact locator of this binary: cargo builds it for the tests).
pub fn warden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden"))
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// An example bundle from policies/examples as JSON.
pub fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("policies/examples").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A small valid bundle with the given revision.
pub fn bundle(revision: u64) -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": revision,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
        "owner": "identity-security@acme.example",
        "authority": AUTHORITY,
        "tools": [
            {"id": "crm.read", "sensitivity": "read",
             "http": [{"host": "crm.acme.example", "methods": ["GET"], "path": "/contacts/{id}"}]}
        ],
        "rules": [
            {"id": "support-reads", "effect": "allow", "agents": ["spiffe://acme.example/agents/support/*"],
             "tools": ["crm.read"]}
        ]
    })
}

/// Signs bundle JSON with a key, in-process (the CLI's own signing is tested separately).
pub fn sign(bundle: &Value, key: &SigningKey) -> String {
    warden_core::envelope::sign(serde_json::to_string_pretty(bundle).unwrap().as_bytes(), key)
}

/// Runs `warden ARGS` and returns its output.
pub fn warden<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(warden_bin()).args(args).output().unwrap()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}
