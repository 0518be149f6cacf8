//! The deployment files under `envoy/` against the real `warden.wasm`.
//!
//! Every plugin configuration embedded in them (Envoy's `configuration` `StringValue`, Istio's
//! `WasmPlugin.spec.pluginConfig`, Envoy Gateway's `EnvoyExtensionPolicy.spec.wasm[].config`) is extracted the way
//! each platform hands it to the filter and must be accepted by the filter's own validation (`on_configure` in the
//! wasmtime host). Each must also work: with its control cluster mapped to a loopback server that serves the example
//! bundle signed by the TEST authority, the filter fetches it from the configured path and enforces it. A typo in a
//! field name is refused, with the reason in the proxy log.
//!
//! envoy/tests/test_configs.py checks the same files against Envoy's protobuf schema and the platforms' resource
//! shapes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use crate::support::repo;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use warden_core::envelope::{self, SigningKey};
use warden_host::{Clock, LogLevel, Plugin, PluginConfig, StartError};

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// The deployment files; each must embed at least one plugin configuration.
const DEPLOY_FILES: [&str; 3] =
    ["envoy/envoy.yaml", "envoy/istio/wasmplugin.yaml", "envoy/envoy-gateway/extension-policy.yaml"];

/// Host clock for the activation test: 2026-12-01T00:00:00Z, inside the example bundle's validity window
/// (`issued_at` 2026-11-01, `expires_at` 2027-12-31, policies/examples/support-agent.json).
const EXAMPLE_BUNDLE_NOW: u64 = 1_796_083_200;
const EXAMPLE_REVISION: i64 = 41;
/// Where a fetch goes when the test does not serve anything: nothing listens on port 1.
const NOWHERE: &str = "127.0.0.1:1";

/// One plugin configuration found in a deployment file: the bytes the filter's `on_configure` would read.
struct Embedded {
    file: &'static str,
    /// Where in the file, for messages.
    at: String,
    bytes: Vec<u8>,
}

impl Embedded {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| panic!("{}: {}: not JSON: {e}", self.file, self.at))
    }

    /// `control` of the configuration (every deployment here polls a control endpoint).
    fn control(&self) -> Json {
        let c = self.json()["control"].clone();
        assert!(c.is_object(), "{}: {}: no `control` object", self.file, self.at);
        c
    }

    fn control_cluster(&self) -> String {
        self.control()["cluster"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {}: no control.cluster", self.file, self.at))
            .into()
    }

    fn name(&self) -> String {
        format!("{}: {}", self.file, self.at)
    }
}

fn yaml_documents(file: &str) -> Vec<Yaml> {
    let path = repo().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: not YAML: {e}")))
        .filter(|doc: &Yaml| !doc.is_null())
        .collect()
}

fn get<'a>(v: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    v.as_mapping().and_then(|m| m.get(key))
}

/// A YAML mapping as the JSON text a Kubernetes control plane passes on: Istio turns `pluginConfig` (a
/// `google.protobuf.Struct`) into JSON, Envoy Gateway passes `config` (`apiextensions JSON`) as JSON. Integers stay
/// integers in both (Go's protojson writes an integral double without a fraction).
fn as_json_text(v: &Yaml, what: &str) -> Vec<u8> {
    let json: Json = serde_json::to_value(v).unwrap_or_else(|e| panic!("{what}: cannot be JSON: {e}"));
    assert!(json.is_object(), "{what}: expected a mapping, got {json}");
    json.to_string().into_bytes()
}

/// Every plugin configuration in one file.
fn extract(file: &'static str) -> Vec<Embedded> {
    let mut found = Vec::new();
    for (i, doc) in yaml_documents(file).iter().enumerate() {
        let kind = get(doc, "kind").and_then(Yaml::as_str).unwrap_or("");
        let name = get(doc, "metadata").and_then(|m| get(m, "name")).and_then(Yaml::as_str).unwrap_or("?");
        match kind {
            "WasmPlugin" => {
                let at = format!("WasmPlugin {name} .spec.pluginConfig");
                let config = get(doc, "spec").and_then(|s| get(s, "pluginConfig"));
                let config = config.unwrap_or_else(|| panic!("{file}: {at}: missing"));
                found.push(Embedded { file, bytes: as_json_text(config, &at), at });
            }
            "EnvoyExtensionPolicy" => {
                let wasm = get(doc, "spec").and_then(|s| get(s, "wasm")).and_then(Yaml::as_sequence);
                for (j, w) in wasm.unwrap_or_else(|| panic!("{file}: {name}: no spec.wasm")).iter().enumerate() {
                    let at = format!("EnvoyExtensionPolicy {name} .spec.wasm[{j}].config");
                    let config = get(w, "config").unwrap_or_else(|| panic!("{file}: {at}: missing"));
                    found.push(Embedded { file, bytes: as_json_text(config, &at), at });
                }
            }
            _ => walk_envoy(doc, &format!("document {i}"), file, &mut found),
        }
    }
    found
}

/// Envoy configuration (bootstrap or xDS resources): every `typed_config` of the Wasm HTTP filter.
fn walk_envoy(v: &Yaml, at: &str, file: &'static str, found: &mut Vec<Embedded>) {
    match v {
        Yaml::Mapping(m) => {
            if get(v, "@type").and_then(Yaml::as_str) == Some(WASM_FILTER_TYPE) {
                let at = format!("{at} (Wasm filter) .config.configuration");
                let configuration = get(v, "config").and_then(|c| get(c, "configuration"));
                let configuration = configuration.unwrap_or_else(|| panic!("{file}: {at}: missing"));
                assert_eq!(
                    get(configuration, "@type").and_then(Yaml::as_str),
                    Some(STRING_VALUE_TYPE),
                    "{file}: {at}: the configuration must be a StringValue holding JSON"
                );
                let value = get(configuration, "value").and_then(Yaml::as_str);
                let value = value.unwrap_or_else(|| panic!("{file}: {at}: no string `value`"));
                // Envoy passes the StringValue's bytes as they are.
                found.push(Embedded { file, at, bytes: value.as_bytes().to_vec() });
                return;
            }
            for (k, child) in m {
                let key = k.as_str().unwrap_or("?");
                walk_envoy(child, &format!("{at}.{key}"), file, found);
            }
        }
        Yaml::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_envoy(child, &format!("{at}[{i}]"), file, found);
            }
        }
        _ => {}
    }
}

fn all_embedded() -> Vec<Embedded> {
    DEPLOY_FILES.iter().flat_map(|f| extract(f)).collect()
}

fn start(embedded: &Embedded, cluster_addr: SocketAddr, clock: Clock) -> Result<Plugin, StartError> {
    let mut config = PluginConfig::new(embedded.bytes.clone())
        .workers(2)
        .cluster(&embedded.control_cluster(), cluster_addr)
        .clock(clock);
    // All three deployments name the root context `warden` (root_id, pluginName, rootID).
    config.root_id = "warden".into();
    config.plugin_name = "warden".into();
    config.vm_id = "warden".into();
    Plugin::start(&crate::support::filter::module(), config)
}

fn logs_text(logs: &[warden_host::LogEntry]) -> String {
    logs.iter().map(|l| format!("[{:?}] {}", l.level, l.message)).collect::<Vec<_>>().join("\n")
}

#[test]
fn every_deployment_file_embeds_a_plugin_configuration() {
    for file in DEPLOY_FILES {
        let found = extract(file);
        assert!(!found.is_empty(), "{file}: no plugin configuration found");
        for e in &found {
            // Every deployment polls a control endpoint; the cluster it names is mapped in the tests below.
            let _ = e.control_cluster();
        }
    }
}

#[test]
fn every_embedded_configuration_is_accepted_by_warden_wasm() {
    let nowhere: SocketAddr = NOWHERE.parse().unwrap();
    let mut failures = Vec::new();
    for e in all_embedded() {
        match start(&e, nowhere, Clock::manual_default()) {
            Ok(p) => {
                let logs = p.logs();
                let text = logs_text(&logs);
                let env = e.json()["environment"].as_str().unwrap_or_default().to_string();
                if !p.logged(&format!("warden: configured: environment `{env}`")) {
                    failures.push(format!("{}: started but did not log its configuration:\n{text}", e.name()));
                }
                let cluster_line = format!("(cluster `{}`)", e.control_cluster());
                if !p.logged(&cluster_line) {
                    failures
                        .push(format!("{}: the configured control cluster is not {cluster_line}:\n{text}", e.name()));
                }
                if logs.iter().any(|l| l.level >= LogLevel::Error) {
                    failures.push(format!("{}: errors while starting:\n{text}", e.name()));
                }
            }
            Err(err) => failures.push(format!("{}: refused: {err}\n{}", e.name(), logs_text(err.logs()))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// A control endpoint on loopback serving the example bundle

/// What the server saw of one request: the request line and the `host` header.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    host: Option<String>,
}

/// Serves `body` (with an ETag) to every request until dropped; records what it was asked.
struct BundleServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BundleServer {
    fn start(body: String) -> BundleServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let etag = format!("\"sha256-{}\"", envelope::sha256_hex(body.as_bytes()));
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let mut host = None;
                let mut content_length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "host" => host = Some(v.trim().to_string()),
                            "content-length" => content_length = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                let mut discard = vec![0; content_length];
                let _ = reader.read_exact(&mut discard);
                seen2.lock().unwrap().push(Seen { method, path, host });
                let mut stream = reader.into_inner();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\netag: {etag}\r\ncache-control: no-cache\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body.as_bytes());
                let _ = stream.flush();
            }
        });
        BundleServer { addr, seen, stop, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// policies/examples/support-agent.json signed with the TEST authority key, as `warden sign` would.
fn example_bundle_jws() -> String {
    let examples = repo().join("policies/examples");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let jwk: Json = serde_json::from_slice(&read(&examples.join("keys/TEST-ONLY-authority.jwk.json"))).unwrap();
    let key = SigningKey::from_jwk(&jwk).expect("TEST authority key");
    envelope::sign(&read(&examples.join("support-agent.json")), &key)
}

#[test]
fn each_deployment_fetches_and_enforces_the_example_bundle_from_its_control_endpoint() {
    let jws = example_bundle_jws();
    for e in all_embedded() {
        let control = e.control();
        let server = BundleServer::start(jws.clone());
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(EXAMPLE_BUNDLE_NOW));
        let mut p = start(&e, server.addr, clock).unwrap_or_else(|err| panic!("{}: refused: {err}", e.name()));

        // Before the first fetch: no policy, fail closed.
        let x = crate::support::filter::send(
            &mut p,
            crate::support::filter::request("GET", "crm.acme.example", "/api/v2/contacts/42"),
        );
        assert_eq!(x.status, Some(503), "{}: before any bundle", e.name());

        // Within one poll period (jitter only shortens it) the bundle is fetched, and every worker VM enforces it.
        let period = Duration::from_secs(control["poll_seconds"].as_u64().unwrap_or(10));
        let budget = period + Duration::from_secs(1);
        let step = Duration::from_millis(250);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut waited = Duration::ZERO;
        let enforced = |p: &mut Plugin, worker: usize| {
            let mut up = crate::support::filter::upstream();
            p.send(worker, crate::support::filter::request("GET", "crm.acme.example", "/api/v2/contacts/42"), &mut up)
        };
        loop {
            let all = (0..p.worker_count()).all(|w| enforced(&mut p, w).status == Some(401));
            if all || Instant::now() > deadline {
                break;
            }
            if waited < budget {
                p.advance(step);
                waited += step;
            }
            p.poll(Duration::from_millis(20));
        }
        assert_eq!(
            p.metric("warden.bundle.revision"),
            Some(EXAMPLE_REVISION),
            "{}: bundle not active after {waited:?} of host time; logs:\n{}",
            e.name(),
            logs_text(&p.logs())
        );

        // The fetch went to the configured path and authority.
        let seen = server.seen();
        assert!(!seen.is_empty(), "{}: the control endpoint saw no request", e.name());
        for s in &seen {
            assert_eq!(s.method, "GET", "{}", e.name());
            assert_eq!(Some(s.path.as_str()), control["path"].as_str(), "{}", e.name());
            assert_eq!(s.host.as_deref(), control["authority"].as_str(), "{}", e.name());
        }

        // Enforced on every worker: a request without a token is refused by the policy (401), not for want of one.
        for worker in 0..p.worker_count() {
            let x = enforced(&mut p, worker);
            assert_eq!(x.status, Some(401), "{}: worker {worker}: {:?}", e.name(), String::from_utf8_lossy(&x.body));
            assert_eq!(crate::support::filter::reply_json(&x)["reason"], "identity_missing", "{}", e.name());
            let record = x.filter_state.get("wasm.warden_decision");
            let record = record.unwrap_or_else(|| panic!("{}: no filter state wasm.warden_decision", e.name()));
            let record: Json = serde_json::from_slice(record).unwrap();
            assert_eq!(record["bundles"]["warden"]["revision"], EXAMPLE_REVISION, "{}", e.name());
        }
    }
}

#[test]
fn the_access_log_reads_the_filter_state_the_filter_writes() {
    // envoy/envoy.yaml prints %FILTER_STATE(<key>:PLAIN)%; the key must be the one the filter writes.
    let text = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
    let at = text.find("%FILTER_STATE(").expect("envoy/envoy.yaml: no FILTER_STATE access-log operator") + 14;
    let key = text[at..].split([':', ')']).next().unwrap();
    let nowhere: SocketAddr = NOWHERE.parse().unwrap();
    let e = extract("envoy/envoy.yaml").remove(0);
    let mut p = start(&e, nowhere, Clock::manual_default()).expect("envoy/envoy.yaml configuration starts");
    let x = crate::support::filter::send(&mut p, crate::support::filter::request("GET", "crm.acme.example", "/"));
    assert!(
        x.filter_state.contains_key(key),
        "filter state keys written: {:?}; access log reads `{key}`",
        x.filter_state.keys()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Typos are refused

/// The envoy/envoy.yaml configuration with `from` renamed to `to` in the object at `path` ("" = top level).
fn with_renamed_field(path: &[&str], from: &str, to: &str) -> Vec<u8> {
    let e = extract("envoy/envoy.yaml").remove(0);
    let mut json = e.json();
    let mut obj = &mut json;
    for p in path {
        obj = &mut obj[*p];
    }
    let map = obj.as_object_mut().expect("an object");
    let v = map.remove(from).unwrap_or_else(|| panic!("envoy/envoy.yaml configuration has no `{from}`"));
    map.insert(to.to_string(), v);
    serde_json::to_vec_pretty(&json).unwrap()
}

fn refusal(bytes: Vec<u8>) -> StartError {
    let config = PluginConfig::new(bytes).workers(1).cluster("warden-control", NOWHERE.parse().unwrap());
    match Plugin::start(&crate::support::filter::module(), config) {
        Ok(p) => panic!("a configuration with a typo was accepted; logs:\n{}", logs_text(&p.logs())),
        Err(e) => e,
    }
}

#[test]
fn a_typo_in_a_field_name_is_refused_with_the_reason_logged() {
    let err = refusal(with_renamed_field(&[], "forward_identity_headers", "forward_identity_header"));
    assert!(matches!(err, StartError::Refused { .. }), "{err}");
    let line = err.logs().iter().find(|l| l.level == LogLevel::Error).map(|l| l.message.clone());
    let line = line.unwrap_or_else(|| panic!("no error line; logs:\n{}", logs_text(err.logs())));
    assert!(line.starts_with("warden: plugin configuration: unknown field `forward_identity_header`"), "{line}");
    assert!(line.contains("expected one of"), "{line}");

    let err = refusal(with_renamed_field(&["control"], "poll_seconds", "poll_secs"));
    assert!(matches!(err, StartError::Refused { .. }), "{err}");
    assert!(
        err.logged("warden: plugin configuration: field `control`: unknown field `poll_secs`"),
        "logs:\n{}",
        logs_text(err.logs())
    );
}
