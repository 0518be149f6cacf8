//! Tool resolution for HTTP routes (table-driven): host, method and normalized path in, tool id out.

use crate::common;

use common::compiled;
use serde_json::json;

fn route_bundle() -> warden_core::compile::CompiledBundle {
    let mut v = common::base();
    let r = |host: Option<&str>, methods: &[&str], path: &str| json!({"host": host, "methods": methods, "path": path});
    v["tools"] = json!([
        {"id": "contacts.read", "sensitivity": "read", "http": [r(Some("crm.acme.example"), &["GET"], "/contacts/{id}")]},
        {"id": "contacts.search", "sensitivity": "read", "http": [r(Some("crm.acme.example"), &["GET"], "/contacts/search")]},
        {"id": "contacts.any", "sensitivity": "write", "http": [r(Some("crm.acme.example"), &[], "/contacts/{id}")]},
        {"id": "wild.read", "sensitivity": "read", "http": [r(Some("*.acme.example"), &["GET"], "/contacts/{id}")]},
        {"id": "deep.wild", "sensitivity": "read", "http": [r(Some("*.eu.acme.example"), &["GET"], "/contacts/{id}")]},
        {"id": "health", "sensitivity": "read", "http": [r(None, &["GET"], "/health")]},
        {"id": "files.get", "sensitivity": "read", "http": [r(Some("files.acme.example"), &["GET"], "/files/{path...}")]},
        {"id": "files.meta", "sensitivity": "read", "http": [r(Some("files.acme.example"), &["GET"], "/files/{id}/meta")]},
        {"id": "files.root", "sensitivity": "read", "http": [r(Some("files.acme.example"), &["GET"], "/")]},
        {"id": "files.dir", "sensitivity": "read", "http": [r(Some("files.acme.example"), &["GET"], "/dir/")]},
        {"id": "files.upload", "sensitivity": "write", "http": [r(Some("files.acme.example"), &["POST"], "/upload/**")]},
        {"id": "api.pair", "sensitivity": "read", "http": [
            r(Some("api.acme.example"), &["GET", "HEAD"], "/v1/{a}/{b}"),
            r(Some("api.acme.example"), &["GET"], "/v2/{a}/{b}")
        ]},
        {"id": "mcp.endpoint", "sensitivity": "write", "http": [r(Some("mcp.acme.example"), &["POST"], "/mcp")]}
    ]);
    v["rules"] = json!([]);
    compiled(v)
}

fn check(b: &warden_core::compile::CompiledBundle, host: &str, method: &str, path: &str, want: Option<&str>) {
    let got = b.resolve_http(host, method, path).map(|t| b.tool_id(t));
    assert_eq!(got, want, "{method} {host} {path}");
}

#[test]
fn resolves_routes() {
    let b = route_bundle();
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        // Host: exact, case-insensitive, port and trailing dot ignored.
        ("crm.acme.example", "GET", "/contacts/42", Some("contacts.read")),
        ("CRM.Acme.Example", "GET", "/contacts/42", Some("contacts.read")),
        ("crm.acme.example:8443", "GET", "/contacts/42", Some("contacts.read")),
        ("crm.acme.example.", "GET", "/contacts/42", Some("contacts.read")),
        // Literal beats parameter; method-specific beats any method.
        ("crm.acme.example", "GET", "/contacts/search", Some("contacts.search")),
        ("crm.acme.example", "POST", "/contacts/search", Some("contacts.any")),
        ("crm.acme.example", "POST", "/contacts/42", Some("contacts.any")),
        ("crm.acme.example", "get", "/contacts/42", Some("contacts.any")),
        // `{id}` is exactly one non-empty segment.
        ("crm.acme.example", "GET", "/contacts/42/notes", None),
        ("crm.acme.example", "GET", "/contacts/", None),
        ("crm.acme.example", "GET", "/contacts", None),
        // Path literals are case-sensitive; the path must be absolute.
        ("crm.acme.example", "GET", "/Contacts/42", None),
        ("crm.acme.example", "GET", "contacts/42", None),
        ("crm.acme.example", "GET", "", None),
        // Wildcard hosts: one or more labels in front; the longest domain wins; falls through when nothing matches.
        ("other.acme.example", "GET", "/contacts/1", Some("wild.read")),
        ("a.b.acme.example", "GET", "/contacts/1", Some("wild.read")),
        ("OTHER.acme.example:443", "GET", "/contacts/1", Some("wild.read")),
        ("acme.example", "GET", "/contacts/1", None),
        ("x.eu.acme.example", "GET", "/contacts/1", Some("deep.wild")),
        ("x.eu.acme.example", "POST", "/contacts/1", None),
        ("notacme.example", "GET", "/contacts/1", None),
        // Routes without a host match any host, after the more specific hosts.
        ("anything.example", "GET", "/health", Some("health")),
        ("crm.acme.example", "GET", "/health", Some("health")),
        ("[::1]:8080", "GET", "/health", Some("health")),
        ("", "GET", "/health", Some("health")),
        ("anything.example", "POST", "/health", None),
        // `{name...}` and `**`: one or more remaining segments; literals and `{id}` beat them.
        ("files.acme.example", "GET", "/files/a", Some("files.get")),
        ("files.acme.example", "GET", "/files/a/b/c", Some("files.get")),
        ("files.acme.example", "GET", "/files/a/", Some("files.get")),
        ("files.acme.example", "GET", "/files/a/meta", Some("files.meta")),
        ("files.acme.example", "GET", "/files/a/meta/x", Some("files.get")),
        ("files.acme.example", "GET", "/files/", None),
        ("files.acme.example", "GET", "/files", None),
        ("files.acme.example", "POST", "/upload/x/y", Some("files.upload")),
        ("files.acme.example", "POST", "/upload", None),
        ("files.acme.example", "GET", "/upload/x", None),
        // Root and trailing slashes are exact.
        ("files.acme.example", "GET", "/", Some("files.root")),
        ("files.acme.example", "GET", "/dir/", Some("files.dir")),
        ("files.acme.example", "GET", "/dir", None),
        // Several methods and several routes per tool.
        ("api.acme.example", "HEAD", "/v1/a/b", Some("api.pair")),
        ("api.acme.example", "GET", "/v2/a/b", Some("api.pair")),
        ("api.acme.example", "HEAD", "/v2/a/b", None),
        ("api.acme.example", "DELETE", "/v1/a/b", None),
        ("api.acme.example", "GET", "/v1/a", None),
        ("mcp.acme.example", "POST", "/mcp", Some("mcp.endpoint")),
        ("mcp.acme.example", "POST", "/mcp/", None),
    ];
    for (host, method, path, want) in cases {
        check(&b, host, method, path, *want);
    }
}
