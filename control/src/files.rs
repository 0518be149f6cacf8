//! File helpers shared by the subcommands: reading with context, atomic writes, the clock, bundle loading.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use warden_core::envelope::{SigningKey, TrustedKeys};
use warden_core::time::parse_rfc3339;

/// Reads a whole file as bytes, naming the file on error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a whole file as UTF-8 text, naming the file on error.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| anyhow!("{}: not UTF-8 text: {e}", path.display()))
}

/// Reads a JSON file into a `Value`; the error names the file, line and column.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), serde_position(&e)))
}

/// `LINE:COL: message` for a serde_json error (serde's own " at line L column C" suffix removed).
pub fn serde_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    format!("{}:{}: {message}", e.line(), e.column())
}

/// Loads the pinned authority keys (a public JWKS file).
pub fn read_trusted_keys(path: &Path) -> Result<TrustedKeys> {
    let jwks = read_json(path)?;
    TrustedKeys::from_jwks(&jwks).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Loads a private signing key (a private JWK file).
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let jwk = read_json(path)?;
    SigningKey::from_jwk(&jwk).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Seconds since the epoch: `--now` when given, else the system clock.
pub fn now(now: Option<&str>) -> Result<i64> {
    match now {
        Some(text) => parse_now(text),
        None => Ok(clock()),
    }
}

/// Parses a `--now` value (RFC 3339 UTC).
pub fn parse_now(text: &str) -> Result<i64> {
    parse_rfc3339(text)
        .ok_or_else(|| anyhow!("--now {text:?} is not an RFC 3339 UTC time such as 2026-11-28T10:00:00Z"))
}

/// The system clock in seconds since the epoch.
pub fn clock() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A sibling temporary file name that no reader mistakes for the real file (leading dot, unique suffix).
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename, fsync of the
/// directory. Readers see the old file or the new one, never a partial one. The file gets `mode` (before umask).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(path);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Best effort: fsync the directory holding `path`, so a rename survives a crash.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates a new file with `mode` (applied at creation, never changed afterwards) and writes `bytes`. With `force`,
/// an existing file is removed first so that the new one gets `mode` too; without it, an existing file is an error.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut file = match OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; refusing to overwrite it (use --force to replace it)", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// Segment `index` of a JWS compact serialization (0 the header, 1 the payload) decoded as text, for showing and
/// locating what a signed bundle holds; empty when it is not there or not base64url. Never a trust decision: callers
/// verify the JWS first or only use this to explain a refusal.
pub fn jws_segment_text(signed: &[u8], index: usize) -> String {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(signed);
    let segment = text.trim_end().split('.').nth(index).unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Does this file look like a signed bundle (a JWS compact serialization: three base64url segments joined by dots)
/// rather than bundle JSON? Only the shape is looked at; verifying it is `envelope::verify`'s.
pub fn looks_signed(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii();
    let b64url = |s: &[u8]| s.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    let parts: Vec<&[u8]> = text.split(|c| *c == b'.').collect();
    parts.len() == 3 && !parts[0].is_empty() && !parts[2].is_empty() && parts.iter().all(|p| b64url(p))
}
