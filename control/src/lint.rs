//! `warden lint`: parse and validate a bundle, reporting every problem at once as `FILE:LINE:COL: /pointer: message`,
//! and warning about what can never match.
//!
//! Three passes: the JSON itself (syntax, a member name twice), the bundle schema over the raw document
//! ([`crate::schema`], every shape error at once), then the core's `compile` (every validation error at once, the
//! semantics the gateway applies). Compile's message wins where both passes name the same place (or the schema
//! names a part of what compile reports). A bundle that passes gets warnings for parts no request can reach (see
//! [`warnings`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;
use warden_core::bundle::{Bundle, Effect};
use warden_core::compile::{compile, CompiledBundle};
use warden_core::path;
use warden_core::time::parse_rfc3339;

use crate::files;
use crate::fmt::no_duplicates;
use crate::locate::locate;
use crate::schema::{Finding, Schema};
use crate::suggest::did_you_mean;
use crate::Status;

/// Check a bundle: JSON syntax, the bundle schema, and every validation rule.
///
/// Prints every problem at once, one per line, as `FILE:LINE:COL: /json/pointer: message`, so editors and CI can jump
/// to it; a misspelt field, value or id gets "did you mean". A valid bundle may still get warnings
/// (`FILE:LINE:COL: warning: /pointer: message`) for parts no request can reach: a route that path normalization
/// always refuses, a tool with no route, a rule that expired before the bundle was issued. Exit 1 when there is any
/// problem (or any warning, with --strict).
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle (JSON, as authored).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    /// Treat warnings as errors.
    #[arg(long)]
    strict: bool,
}

/// A bundle that parsed and validated.
pub struct Checked {
    pub bundle: Bundle,
    pub compiled: CompiledBundle,
    /// Located warnings (`name:LINE:COL: warning: /pointer: message`); they do not make the bundle invalid.
    pub warnings: Vec<String>,
}

/// Parses and compiles bundle JSON. `Err` holds the diagnostics, one line each, located in `text` and prefixed by
/// `name` (`name:LINE:COL: ...`).
pub fn check(name: &str, text: &str) -> std::result::Result<Checked, Vec<String>> {
    let at = |pointer: &str| locate(text, pointer).map_or(String::new(), |p| format!("{}:{}:", p.line, p.column));
    let line = |pointer: &str, message: &str| format!("{name}:{} {pointer}: {message}", at(pointer));
    if let Err(why) = no_duplicates(text) {
        return Err(vec![format!("{name}:{why}")]);
    }
    let findings = match serde_json::from_str::<Value>(text) {
        Ok(value) => match Schema::bundle() {
            Ok(schema) => schema.check(&value),
            Err(e) => vec![Finding { pointer: String::new(), message: format!("the embedded bundle schema: {e}") }],
        },
        Err(e) => return Err(vec![format!("{name}:{}", files::serde_position(&e))]),
    };
    let bundle: Bundle = match serde_json::from_str(text) {
        Ok(b) => b,
        // Every shape error the schema found says more than serde's first one.
        Err(_) if !findings.is_empty() => return Err(by_position(text, &findings, line)),
        Err(e) => return Err(vec![format!("{name}:{}", files::serde_position(&e))]),
    };
    match compile(&bundle) {
        Ok(compiled) if findings.is_empty() => {
            let warnings = warnings(&bundle, &compiled)
                .iter()
                .map(|f| format!("{name}:{} warning: {}: {}", at(&f.pointer), f.pointer, f.message))
                .collect();
            Ok(Checked { bundle, compiled, warnings })
        }
        Ok(_) => Err(by_position(text, &findings, line)),
        Err(errors) => {
            let mut out: Vec<String> = errors
                .0
                .iter()
                .map(|e| line(&e.location, &format!("{}{}", e.message, hint(&bundle, &e.message))))
                .collect();
            // A schema finding at or inside a place compile already reports says the same thing again.
            let covered = |f: &Finding| {
                errors.0.iter().any(|e| f.pointer == e.location || f.pointer.starts_with(&format!("{}/", e.location)))
            };
            let rest: Vec<Finding> = findings.into_iter().filter(|f| !covered(f)).collect();
            out.extend(by_position(text, &rest, line));
            Err(out)
        }
    }
}

/// Schema findings as located lines, in the order they appear in the text.
fn by_position(text: &str, findings: &[Finding], line: impl Fn(&str, &str) -> String) -> Vec<String> {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| locate(text, &f.pointer).map(|p| (p.line, p.column)));
    sorted.iter().map(|f| line(&f.pointer, &f.message)).collect()
}

/// "Did you mean" for compile's messages that name something the bundle lacks.
fn hint(bundle: &Bundle, message: &str) -> String {
    let named = |prefix: &str| message.strip_prefix(prefix).and_then(|rest| rest.strip_suffix('"'));
    if let Some(id) = named("unknown tool \"") {
        return did_you_mean(id, bundle.tools.iter().map(|t| t.id.as_str()));
    }
    if let Some(id) = named("unknown issuer \"") {
        return did_you_mean(id, bundle.issuers.iter().map(|i| i.id.as_str()));
    }
    if let Some(id) = named("unknown MCP server \"") {
        return did_you_mean(id, bundle.mcp_servers.iter().map(|s| s.name.as_str()));
    }
    if let Some(pattern) = message.strip_prefix("pattern \"").and_then(|r| r.strip_suffix("\" matches no tool")) {
        let namespaces: Vec<String> = bundle
            .tools
            .iter()
            .flat_map(|t| t.id.match_indices('.').map(|(i, _)| format!("{}.*", &t.id[..i])))
            .collect();
        return did_you_mean(pattern, namespaces.iter().map(String::as_str));
    }
    String::new()
}

/// What a valid bundle holds that no request can reach:
/// - a route path (or an MCP server path) that the filter's path normalization refuses or rewrites for every request
///   it would match (an encoded `/` as `%2F`, a `;`, a raw `"`): requests are matched after normalization
///   (`warden_core::path::normalize`), so such a route never matches;
/// - a tool with neither an HTTP route nor an MCP binding: only `warden test` cases naming it reach it;
/// - a rule whose `expires_at` is not after the bundle's `issued_at`: it never decides anything;
/// - a pin naming an MCP tool no catalog tool binds on its server, under `unknown_tool: deny` (its calls are refused
///   whatever the pin says), and a tool the catalog binds on a `pinned` server without a pin (every listing
///   removes it, every call is refused `tool_not_pinned`).
pub fn warnings(bundle: &Bundle, compiled: &CompiledBundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut warn = |pointer: String, message: String| out.push(Finding { pointer, message });
    for (si, server) in bundle.mcp_servers.iter().enumerate() {
        if let Some(why) = unreachable_path(&server.path) {
            warn(format!("/mcp_servers/{si}/path"), format!("no request reaches this MCP server: {why}"));
        }
        let bound: Vec<&str> = bundle
            .tools
            .iter()
            .flat_map(|t| t.mcp.iter())
            .filter(|m| m.server == server.name)
            .filter_map(|m| m.tool.as_deref())
            .collect();
        if bundle.defaults.unknown_tool == Effect::Deny {
            for tool in server.pins.keys().filter(|t| !bound.contains(&t.as_str())) {
                warn(
                    format!("/mcp_servers/{si}/pins/{}", tool.replace('~', "~0").replace('/', "~1")),
                    format!(
                        "no catalog tool binds MCP tool \"{tool}\" of server \"{}\": its calls are refused \
                         (unknown_tool: deny) whatever its pin says",
                        server.name
                    ),
                );
            }
        }
        if server.pinned {
            for tool in bound.iter().filter(|t| !server.pins.contains_key(**t)) {
                warn(
                    format!("/mcp_servers/{si}/pins"),
                    format!(
                        "server \"{}\" is pinned and MCP tool \"{tool}\", which the catalog binds, has no pin: every \
                         listing removes it and every call is refused (tool_not_pinned); pin it with `warden pin`",
                        server.name
                    ),
                );
            }
        }
    }
    for (ti, tool) in bundle.tools.iter().enumerate() {
        if tool.http.is_empty() && tool.mcp.is_empty() {
            warn(
                format!("/tools/{ti}"),
                format!(
                    "no request reaches tool \"{}\": it has no http route and no mcp binding (only `warden test` \
                     cases naming it do)",
                    tool.id
                ),
            );
        }
        for (hi, route) in tool.http.iter().enumerate() {
            if let Some(why) = unreachable_path(&sample_path(&route.path)) {
                warn(format!("/tools/{ti}/http/{hi}/path"), format!("this route never matches: {why}"));
            }
        }
    }
    if bundle.defaults.unknown_tool == Effect::Allow {
        let routes = bundle.tools.iter().filter(|t| !t.http.is_empty()).count() + bundle.mcp_servers.len();
        if routes > 0 {
            warn(
                "/defaults/unknown_tool".into(),
                format!(
                    "\"allow\" lets through every request that matches no route, next to {routes} tool(s) and MCP \
                     server(s) with routes: a tool that answers its route under another spelling (a trailing \
                     slash, other letter case, a \".json\" suffix, a prefix it ignores) would be reached without \
                     its rules. The gateway refuses those three near-misses of a route (route_near_miss), not \
                     every spelling a tool may accept: prefer \"deny\" and list the tools"
                ),
            );
        }
    }
    for (ri, rule) in bundle.rules.iter().enumerate() {
        if let Some(expires) = rule.expires_at.as_deref().and_then(parse_rfc3339) {
            if expires <= compiled.issued_at {
                warn(
                    format!("/rules/{ri}/expires_at"),
                    format!("rule \"{}\" never decides: it expires before the bundle is issued", rule.id),
                );
            }
        }
    }
    out
}

/// A request path a route pattern (already validated by compile) matches: each `{name}`, `{name...}` or `**`
/// segment filled with `x`.
fn sample_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| if seg == "**" || (seg.starts_with('{') && seg.ends_with('}')) { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Why no request path equal to (or, for a route, matching) `sample` survives normalization unchanged, if so.
fn unreachable_path(sample: &str) -> Option<String> {
    match path::normalize(sample) {
        Err(e) => {
            Some(format!("the gateway refuses every request path containing it before matching ({}: {e})", e.code()))
        }
        Ok(n) if n.path != sample => {
            Some(format!("requests are matched after normalization, which turns such a path into \"{}\"", n.path))
        }
        Ok(_) => None,
    }
}

/// Reads and checks a bundle file; diagnostics as in [`check`].
pub fn check_file(path: &Path) -> Result<std::result::Result<Checked, Vec<String>>> {
    let bytes = files::read_bytes(path)?;
    let name = path.display().to_string();
    if files::looks_signed(&bytes) {
        return Ok(Err(vec![format!(
            "{name}: this is a signed bundle (JWS), not bundle JSON: check the JSON it was signed from, or check it \
             as a gateway does with `warden verify {name} --keys AUTHORITY.jwks.json --authority NAME`"
        )]));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(check(&name, &text)),
        Err(e) => Ok(Err(vec![format!("{name}: not UTF-8 text: {e}")])),
    }
}

/// Prints diagnostics and a count line.
pub fn report(path: &Path, diagnostics: &[String]) {
    for d in diagnostics {
        println!("{d}");
    }
    let n = diagnostics.len();
    println!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
}

pub fn run(args: &Args) -> Result<Status> {
    match check_file(&args.bundle)? {
        Ok(checked) => {
            for w in &checked.warnings {
                println!("{w}");
            }
            let b = &checked.compiled;
            let n = checked.warnings.len();
            let warned = if n == 0 { String::new() } else { format!(", {n} warning{}", if n == 1 { "" } else { "s" }) };
            println!(
                "{}: ok: revision {}, {} tools, {} rules, {} issuers, authority {:?}{warned}",
                args.bundle.display(),
                b.revision,
                b.tool_count(),
                b.rules().len(),
                b.issuers.len(),
                b.authority
            );
            Ok(if args.strict && n > 0 { Status::Failed } else { Status::Ok })
        }
        Err(diagnostics) => {
            report(&args.bundle, &diagnostics);
            Ok(Status::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_paths_fill_parameters() {
        assert_eq!(sample_path("/a/{id}/b/{rest...}"), "/a/x/b/x");
        assert_eq!(sample_path("/files/**"), "/files/x");
        assert_eq!(sample_path("/"), "/");
        assert_eq!(sample_path("/a/"), "/a/");
    }

    #[test]
    fn paths_normalization_never_leaves_as_written() {
        assert!(unreachable_path("/a/x").is_none());
        assert!(unreachable_path("/a%20b/").unwrap().contains("path_encoded_char"));
        let slash = unreachable_path("/a%2Fb").unwrap();
        assert!(slash.contains("path_encoded_slash"), "{slash}");
        assert!(unreachable_path("/a;v=1/x").unwrap().contains("path_semicolon"));
        assert!(unreachable_path("/a\"b").unwrap().contains("path_invalid_char"));
        assert!(unreachable_path("/a%5Cb").unwrap().contains("path_encoded_backslash"));
    }
}
