//! `warden publish`: lint, sign, verify and upload a bundle to `warden serve` in one step, with the revision the
//! publisher reviewed as a precondition, and say what the gateways will see.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use warden_core::envelope;

use crate::files;
use crate::lint;
use crate::Status;

/// Publish a bundle: lint, sign, verify as a gateway would, and upload it to a `warden serve` endpoint.
///
/// Before uploading it fetches the current bundle at --to: the new revision must be higher, and with
/// --expect-previous the current revision must be the one you reviewed. The upload carries `If-Match` with the
/// current ETag (`If-None-Match: *` for a first upload), so a revision published by someone else in between is
/// refused (412) instead of overwritten. Exit 1 when any step refuses; the signed bundle is also written with --out.
/// Speaks plain HTTP (a loopback address, a port-forward, or a trusted network); over HTTPS upload with curl.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle (JSON, as authored).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    /// The authority's private signing key.
    #[arg(long, value_name = "PRIVATE.jwk.json")]
    key: PathBuf,
    /// The bundle's URL on the control endpoint, e.g. http://127.0.0.1:8181/bundles/bundle.jws.
    #[arg(long, value_name = "URL")]
    to: String,
    /// File holding the upload token (one token, or one `LABEL TOKEN` line).
    #[arg(long, value_name = "FILE")]
    upload_token_file: PathBuf,
    /// The pinned authority keys to verify with, as gateways do; default the public half of --key.
    #[arg(long, value_name = "AUTHORITY.jwks.json")]
    keys: Option<PathBuf>,
    /// Refuse unless the endpoint's current revision is this one (the revision the change was reviewed against).
    #[arg(long, value_name = "REVISION")]
    expect_previous: Option<u64>,
    /// Also write the signed bundle here.
    #[arg(long, value_name = "BUNDLE.jws")]
    out: Option<PathBuf>,
    /// The clock for the validity window (RFC 3339 UTC); default the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| Some(format!("{}: {}", v["error"].as_str()?, v["message"].as_str()?)))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// `http://HOST:PORT/PATH` into (host:port, path).
fn parse_url(url: &str) -> Result<(String, String)> {
    if url.starts_with("https://") {
        bail!("--to {url}: publish speaks plain HTTP; over HTTPS sign with `warden sign` and upload with curl -T");
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--to {url:?}: expected http://HOST:PORT/bundles/NAME.jws"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    if authority.is_empty() || !path.ends_with(".jws") {
        bail!("--to {url:?}: expected http://HOST:PORT/bundles/NAME.jws");
    }
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Ok((authority, path))
}

/// One request, `Connection: close`, reply read to the end (a chunked one decoded; `warden pin` talks to MCP
/// servers, which stream).
pub(crate) fn call(authority: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply> {
    let mut s = TcpStream::connect(authority).with_context(|| format!("cannot connect to {authority}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("{method} {path}: no reply from {authority}"))?;
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("{method} {path}: not an HTTP reply"))?;
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: not an HTTP reply"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body).ok_or_else(|| anyhow!("{method} {path}: a malformed chunked reply"))?;
    }
    if let Some(len) =
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok())
    {
        body.truncate(len);
    }
    Ok(Reply { status, headers, body })
}

/// A chunked body (RFC 9112 section 7.1) decoded; `None` when malformed or cut short.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

fn upload_token(path: &std::path::Path) -> Result<String> {
    let text = files::read_text(path)?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    let token =
        line.and_then(|l| l.split_whitespace().last()).ok_or_else(|| anyhow!("{}: no token in it", path.display()))?;
    Ok(token.to_string())
}

pub fn run(args: &Args) -> Result<Status> {
    let now = files::now(args.now.as_deref())?;
    let (authority, path) = parse_url(&args.to)?;
    let key = files::read_signing_key(&args.key)?;
    let trusted = match &args.keys {
        Some(p) => files::read_trusted_keys(p)?,
        None => key.trusted_keys(),
    };
    let token = upload_token(&args.upload_token_file)?;
    let name = args.bundle.display();

    // 1. Lint.
    let checked = match lint::check_file(&args.bundle)? {
        Ok(c) => c,
        Err(diagnostics) => {
            lint::report(&args.bundle, &diagnostics);
            eprintln!("warden publish: {name}: not published: it does not validate");
            return Ok(Status::Failed);
        }
    };
    for w in &checked.warnings {
        eprintln!("{w}");
    }
    if checked.bundle.revocations.signing_keys.iter().any(|k| k == key.kid()) {
        eprintln!("warden publish: {name}: not published: the bundle revokes its own signing key {:?}", key.kid());
        return Ok(Status::Failed);
    }
    // 2. Sign, 3. verify as a gateway pinning --keys would.
    let signed = envelope::sign(&files::read_bytes(&args.bundle)?, &key);
    let verified = match envelope::verify(signed.as_bytes(), &trusted, &checked.bundle.authority, &[], now) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("warden publish: {name}: not published: gateways would refuse it: {e}");
            return Ok(Status::Failed);
        }
    };
    if let Some(out) = &args.out {
        files::write_atomic(out, format!("{signed}\n").as_bytes(), 0o644)?;
    }
    // 4. What is there now.
    let current = call(&authority, "GET", &path, &[], b"")?;
    let previous = match current.status {
        200 => {
            let head: Value = serde_json::from_str(&files::jws_segment_text(&current.body, 1)).unwrap_or_default();
            let revision = head["revision"].as_u64();
            let tag = current.header("etag").map(str::to_string);
            Some((revision, tag))
        }
        404 => None,
        s => bail!("GET {}: {s} {}", args.to, current.message()),
    };
    let previous_revision = previous.as_ref().and_then(|(r, _)| *r);
    if let Some(expected) = args.expect_previous {
        if previous_revision != Some(expected) {
            let now_there = previous_revision.map_or("no bundle".to_string(), |r| format!("revision {r}"));
            eprintln!(
                "warden publish: {name}: not published: the endpoint has {now_there}, not the expected revision {expected}; review the change against it"
            );
            return Ok(Status::Failed);
        }
    }
    let revision = verified.bundle.revision;
    if let Some(p) = previous_revision.filter(|p| revision <= *p) {
        eprintln!(
            "warden publish: {name}: not published: revision {revision} is not higher than the current revision {p}"
        );
        return Ok(Status::Failed);
    }
    // 5. Upload, conditional on what we saw.
    let auth = format!("Bearer {token}");
    let condition = match previous.as_ref().and_then(|(_, t)| t.clone()) {
        Some(tag) => ("If-Match", tag),
        None => ("If-None-Match", "*".to_string()),
    };
    let headers =
        [("Authorization", auth.as_str()), ("Content-Type", "application/jose"), (condition.0, condition.1.as_str())];
    let reply = call(&authority, "PUT", &path, &headers, signed.as_bytes())?;
    if !matches!(reply.status, 200 | 201) {
        eprintln!("warden publish: {name}: refused by {}: {} {}", args.to, reply.status, reply.message());
        if let Ok(v) = serde_json::from_slice::<Value>(&reply.body) {
            for e in v["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", e.as_str().unwrap_or_default());
            }
        }
        return Ok(Status::Failed);
    }
    let stored: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    println!("published {name} to {}", args.to);
    println!(
        "  revision:   {revision} (previous: {})",
        previous_revision.map_or("none".to_string(), |p| p.to_string())
    );
    println!("  kid:        {}", verified.key_id);
    println!("  digest:     sha256:{}", verified.digest);
    println!("  etag:       {}", stored["etag"].as_str().unwrap_or_default());
    println!("  authority:  {}", verified.bundle.authority);
    println!("  expires_at: {}", verified.bundle.expires_at);
    println!(
        "gateways polling {} see revision {revision} on their next poll (long-polling gateways at once), and refuse any \
         revision at or below it from then on",
        path
    );
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8181/bundles/b.jws").unwrap(),
            ("127.0.0.1:8181".into(), "/bundles/b.jws".into())
        );
        assert_eq!(parse_url("http://control/bundles/b.jws").unwrap().0, "control:80");
        assert!(parse_url("https://x/bundles/b.jws").unwrap_err().to_string().contains("plain HTTP"));
        assert!(parse_url("ftp://x/b.jws").is_err());
        assert!(parse_url("http://x/bundles/b").is_err());
    }
}
