//! `warden pin`: pins an MCP server's tool definitions in a bundle source, from a saved `tools/list` response or
//! from the server itself over loopback HTTP, and prints what changed for review (`--check`: only compare).
//!
//! The response is read by the core's `tools/list` reader (`warden_core::mcp::list::answer_tools`, the filter's own
//! strict JSON / event-stream reading) and each tool digested by `warden_core::pins::definition_digest`, so a pin
//! written here is exactly what the gateway compares with. The bundle is rewritten in `warden fmt`'s canonical form.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use warden_core::args::{canonical_json, check_exact_numbers};
use warden_core::mcp::list::{answer_tools, list_framing, ListFraming};
use warden_core::pins::{definition_digest, DEFINITION_FIELDS};

use crate::{files, fmt, lint, publish, Status};

/// Pin an MCP server's tool definitions in a bundle source (or check them, with --check).
///
/// Reads the server's tools/list answer from a saved response (--from: the JSON body, or the event stream as the
/// server sent it) or asks the server itself (--url: initialize, then tools/list page by page, over plain HTTP to a
/// loopback address only — reach another server through a port-forward, or save its response). Each tool's pin is
/// the SHA-256 of the canonical JSON (RFC 8785) of its description, inputSchema, outputSchema and annotations, the
/// digest the gateway compares every listing with. The server's pins become exactly the listed tools: new tools are
/// added, changed ones updated, tools no longer listed removed; each is printed for review, with the definition of
/// every added or changed tool (and, given --previous, the fields that changed). The bundle is written back in the
/// canonical form of `warden fmt` and linted first.
/// With --check nothing is written and the exit code is 1 when the pins differ from the listing.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle source to update.
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    /// The MCP server (its `name` in `mcp_servers`).
    #[arg(long, value_name = "NAME")]
    server: String,
    /// A saved tools/list response body (JSON or text/event-stream).
    #[arg(long, value_name = "RESPONSE", conflicts_with = "url", required_unless_present = "url")]
    from: Option<PathBuf>,
    /// Ask the server: http://127.0.0.1:PORT/PATH (loopback addresses only).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A header for every request to --url (`Name: value`, e.g. an Authorization the server needs); repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "url")]
    headers: Vec<String>,
    /// The listing the current pins were reviewed from: changed tools name the fields that changed.
    #[arg(long, value_name = "RESPONSE")]
    previous: Option<PathBuf>,
    /// Also mark the server `pinned` (every tool must have a pin).
    #[arg(long)]
    pinned: bool,
    /// Only compare; exit 1 when the pins differ from the listing.
    #[arg(long)]
    check: bool,
}

/// The framing of a saved response: JSON when it starts (after blanks and a byte-order mark) with `{`.
fn saved_framing(body: &[u8]) -> ListFraming {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => ListFraming::Json,
        _ => ListFraming::Sse,
    }
}

/// The tools of one `tools/list` response body, checked as the gateway checks a pinned server's listing.
fn tools_of(framing: ListFraming, body: &[u8], what: &str) -> Result<(Vec<Value>, Option<String>)> {
    let (tools, next) = answer_tools(framing, body).map_err(|_| {
        anyhow!(
            "{what}: not a tools/list answer the gateway could read ({} framing; a JSON-RPC answer with result.tools, \
             each tool an object with a string name, no member twice)",
            match framing {
                ListFraming::Json => "JSON",
                ListFraming::Sse => "event-stream",
            }
        )
    })?;
    for t in &tools {
        // The gateway refuses a pinned server's listing with a number the canonical form cannot hold exactly.
        check_exact_numbers(&t.to_string()).map_err(|e| anyhow!("{what}: tool {}: {e}", t["name"]))?;
    }
    Ok((tools, next))
}

/// Tool name → definition (the tool object), refusing a name listed twice.
fn by_name(tools: Vec<Value>, what: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for t in tools {
        let name = t.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if out.insert(name.clone(), t).is_some() {
            bail!("{what}: the tool {name:?} is listed twice");
        }
    }
    Ok(out)
}

/// `http://HOST:PORT/PATH` into (host:port, path), refusing anything but a loopback host.
fn loopback_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        anyhow!("--url {url:?}: expected http://127.0.0.1:PORT/PATH (plain HTTP to a loopback address)")
    })?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "--url {url:?}: warden pin asks only servers on a loopback address (what it pins is what the gateway \
             will trust, and plain HTTP elsewhere can be tampered with): reach the server through a port-forward \
             (kubectl port-forward) or save its tools/list response and use --from"
        );
    }
    let authority = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    Ok((authority, path))
}

/// Asks the server over MCP Streamable HTTP: `initialize`, `notifications/initialized`, then `tools/list` until no
/// `nextCursor`.
fn ask(url: &str, extra: &[String]) -> Result<Vec<Value>> {
    let (authority, path) = loopback_url(url)?;
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Accept".into(), "application/json, text/event-stream".into()),
    ];
    for h in extra {
        let (k, v) = h.split_once(':').ok_or_else(|| anyhow!("--header {h:?}: expected `Name: value`"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let post = |headers: &[(String, String)], body: &Value| {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        publish::call(&authority, "POST", &path, &pairs, body.to_string().as_bytes())
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "warden-pin", "version": env!("CARGO_PKG_VERSION")}}});
    let reply = post(&headers, &init).with_context(|| format!("initialize at {url}"))?;
    if reply.status != 200 {
        bail!("initialize at {url}: HTTP {} {}", reply.status, String::from_utf8_lossy(&reply.body).trim());
    }
    if let Some(session) = reply.header("mcp-session-id") {
        headers.push(("Mcp-Session-Id".into(), session.to_string()));
    }
    headers.push(("MCP-Protocol-Version".into(), "2025-06-18".into()));
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = post(&headers, &note).with_context(|| format!("notifications/initialized at {url}"))?;
    if !(200..300).contains(&reply.status) {
        bail!("notifications/initialized at {url}: HTTP {}", reply.status);
    }
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..100 {
        let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({"cursor": c}));
        let list = json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params});
        let reply = post(&headers, &list).with_context(|| format!("tools/list at {url}"))?;
        if reply.status != 200 {
            bail!("tools/list at {url}: HTTP {} {}", reply.status, String::from_utf8_lossy(&reply.body).trim());
        }
        let framing = list_framing(reply.header("content-type"), reply.header("content-encoding"))
            .ok_or_else(|| anyhow!("tools/list at {url}: a content type the gateway does not filter"))?;
        let (page_tools, next) = tools_of(framing, &reply.body, &format!("tools/list at {url}"))?;
        tools.extend(page_tools);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(tools),
        }
    }
    bail!("tools/list at {url}: more than 100 pages")
}

fn saved(path: &Path) -> Result<Vec<Value>> {
    let body = files::read_bytes(path)?;
    Ok(tools_of(saved_framing(&body), &body, &path.display().to_string())?.0)
}

/// The definition members of a tool that differ between two listings of it.
fn changed_fields(old: &Value, new: &Value) -> Vec<&'static str> {
    DEFINITION_FIELDS
        .into_iter()
        .filter(|f| old.get(*f).map(canonical_json) != new.get(*f).map(canonical_json))
        .collect()
}

/// A tool's pinned members, for review: each as canonical JSON on its own line.
fn show_definition(tool: &Value) {
    for f in DEFINITION_FIELDS {
        if let Some(v) = tool.get(f) {
            println!("      {f}: {}", canonical_json(v));
        }
    }
}

pub fn run(args: &Args) -> Result<Status> {
    let text = files::read_text(&args.bundle)?;
    let name = args.bundle.display().to_string();
    if let Err(diagnostics) = lint::check(&name, &text) {
        lint::report(&args.bundle, &diagnostics);
        bail!("{name}: fix the bundle's errors before pinning");
    }
    let mut doc: Value = serde_json::from_str(&text).with_context(|| name.clone())?;
    let servers = doc.get_mut("mcp_servers").and_then(Value::as_array_mut);
    let server = servers
        .and_then(|s| s.iter_mut().find(|s| s.get("name").and_then(Value::as_str) == Some(args.server.as_str())))
        .ok_or_else(|| anyhow!("{name}: no MCP server named {:?} in mcp_servers", args.server))?;

    let (listed, source) = match (&args.from, &args.url) {
        (Some(path), _) => (saved(path)?, path.display().to_string()),
        (None, Some(url)) => (ask(url, &args.headers)?, url.clone()),
        (None, None) => bail!("give --from RESPONSE or --url URL"),
    };
    let listed = by_name(listed, &source)?;
    let previous = match &args.previous {
        Some(p) => Some(by_name(saved(p)?, &p.display().to_string())?),
        None => None,
    };
    let old: BTreeMap<String, String> = server
        .get("pins")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();

    println!("{}: {} tools listed by {source}", args.server, listed.len());
    let mut pins = Map::new();
    let mut differ = 0;
    for (tool, def) in &listed {
        let digest = definition_digest(def);
        match old.get(tool) {
            None => {
                differ += 1;
                println!("  added     {tool}  sha256 {digest}");
                show_definition(def);
            }
            Some(pin) if *pin != digest => {
                differ += 1;
                let fields = match previous.as_ref().and_then(|p| p.get(tool)) {
                    Some(before) if definition_digest(before) == *pin => {
                        format!(" (changed: {})", changed_fields(before, def).join(", "))
                    }
                    Some(_) => " (--previous does not hold the pinned definition of it)".to_string(),
                    None => String::new(),
                };
                println!("  changed   {tool}  sha256 {pin} -> {digest}{fields}");
                show_definition(def);
            }
            Some(_) => println!("  unchanged {tool}"),
        }
        pins.insert(tool.clone(), Value::String(digest));
    }
    for tool in old.keys().filter(|t| !listed.contains_key(*t)) {
        differ += 1;
        println!("  removed   {tool}  (no longer listed)");
    }
    let mark = args.pinned && server.get("pinned").and_then(Value::as_bool) != Some(true);
    if mark {
        differ += 1;
        println!("  the server becomes pinned: every tool it lists needs a pin");
    }
    if args.check {
        if differ == 0 {
            println!("{name}: the pins of {} match the listing", args.server);
            return Ok(Status::Ok);
        }
        println!(
            "{name}: the pins of {} differ from the listing in {differ} places (run without --check)",
            args.server
        );
        return Ok(Status::Failed);
    }
    if differ == 0 {
        println!("{name}: nothing to change");
        return Ok(Status::Ok);
    }
    let Some(obj) = server.as_object_mut() else { bail!("{name}: the MCP server entry is not an object") };
    obj.insert("pins".into(), Value::Object(pins));
    if args.pinned {
        obj.insert("pinned".into(), Value::Bool(true));
    }
    let mut out = serde_json::to_string_pretty(&fmt::sorted(doc))?;
    out.push('\n');
    if let Err(diagnostics) = lint::check(&name, &out) {
        lint::report(&args.bundle, &diagnostics);
        bail!("{name}: the pinned bundle does not lint; nothing written");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&args.bundle)?.permissions()) & 0o7777;
    files::write_atomic(&args.bundle, out.as_bytes(), mode)?;
    println!("{name}: wrote the pins of {} ({differ} changes); review, then sign and publish", args.server);
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        assert_eq!(loopback_url("http://127.0.0.1:8080/mcp").unwrap(), ("127.0.0.1:8080".into(), "/mcp".into()));
        assert_eq!(loopback_url("http://localhost/mcp").unwrap().0, "localhost:80");
        assert_eq!(loopback_url("http://[::1]:9/x").unwrap().0, "[::1]:9");
        for bad in
            ["http://10.0.0.1/mcp", "https://127.0.0.1/mcp", "http://example.com/mcp", "http://127.0.0.1.nip.io/"]
        {
            assert!(loopback_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_that_changed() {
        let a = json!({"name": "t", "description": "a", "inputSchema": {"type": "object"}});
        let b = json!({"name": "t", "description": "b", "inputSchema": {"type": "object"}, "annotations": {}});
        assert_eq!(changed_fields(&a, &b), vec!["description", "annotations"]);
        assert_eq!(saved_framing(b" \n{}"), ListFraming::Json);
        assert_eq!(saved_framing(b"event: message\n"), ListFraming::Sse);
    }
}
