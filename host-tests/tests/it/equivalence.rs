//! The offline answer is the gateway's: every policy case of the example bundles (`policies/examples/*.cases.json`)
//! is decided by the core's gate driver (what `warden test` and `warden eval` decide with, tokens and approvals
//! minted as the cases say) and by warden.wasm in the host, from the same request bytes at the same clock; the
//! decision, reason, rule and HTTP status must be equal, case by case.
//!
//! Data-driven: a [`Scenario`] is a bundle (signed with the TEST authority key into the plugin configuration) and
//! a list of [`Probe`]s, requests with their clock and what the core answered. The example suites are the first
//! scenarios; the end-to-end scenario tables of the host and Envoy suites can be added as further ones.
//!
//! Through real Envoy as well (`support::envoy::differential`) would be the next step, but not a cheap one: the
//! cases run at their own clock (tokens, approvals and the example bundles' validity are fixed in time), and Envoy
//! only has the real one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::support;
use serde_json::{json, Value};
use warden_core::bundle::Bundle;
use warden_core::cases::{listing_before, Context, Suite};
use warden_core::compile::compile;
use warden_core::envelope::{self, SigningKey};
use warden_core::request::RecordedRequest;
use warden_host::{CannedUpstream, Clock, HttpRequest, Plugin, PluginConfig, TlsInfo, UpstreamResponse};

const AUTHORITY_KEY: &str = "keys/TEST-ONLY-authority.jwk.json";
const AUTHORITY_JWKS: &str = "keys/TEST-ONLY-authority.jwks.json";
const DECISION_STATE: &str = "wasm.warden_decision";

fn examples() -> PathBuf {
    support::repo().join("policies/examples")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What one side answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    decision: String,
    reason: String,
    rule: String,
    status: u16,
}

/// A request to decide on both sides.
struct Probe {
    label: String,
    environment: String,
    /// The clock, seconds since the epoch.
    now: i64,
    request: RecordedRequest,
    /// The core's answer.
    core: Answer,
    /// The tools the server listed on this VM before (`listed_before`): sent first, on a VM of its own.
    listed_before: Option<Vec<Value>>,
}

/// A bundle and the requests to decide with it.
struct Scenario {
    name: String,
    /// The bundle JSON as authored (signed into the plugin configuration).
    bundle: Vec<u8>,
    probes: Vec<Probe>,
}

/// The answer in a decision record (JSON text) plus the status the client saw.
fn answer(record: &str, status: u16) -> Answer {
    let r: Value = serde_json::from_str(record).unwrap_or_else(|e| panic!("record {record}: {e}"));
    let text = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("record without {k}: {record}")).to_string();
    Answer { decision: text("decision"), reason: text("reason"), rule: text("rule"), status }
}

/// The example suites as scenarios: every case with a request whose identity travels in tokens (a case that
/// states the agent's facts, or a facts-only case, has no request warden.wasm could be given).
fn example_scenarios() -> (Vec<Scenario>, usize) {
    let dir = examples();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cases.json"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "example suites: {names:?}");
    let mut skipped = 0;
    let mut scenarios = Vec::new();
    for cases_file in names {
        let bundle_file = cases_file.replace(".cases.json", ".json");
        let bundle_bytes = std::fs::read(dir.join(&bundle_file)).unwrap();
        let bundle: Bundle = serde_json::from_slice(&bundle_bytes).unwrap();
        let compiled = compile(&bundle).unwrap_or_else(|e| panic!("{bundle_file}: {e}"));
        let suite = Suite::parse(&std::fs::read_to_string(dir.join(&cases_file)).unwrap()).unwrap();
        let keys: BTreeMap<String, SigningKey> = suite
            .defaults
            .keys
            .iter()
            .map(|(id, file)| (id.clone(), SigningKey::from_jwk(&read_json(&dir.join(file))).unwrap()))
            .collect();
        let store = std::cell::RefCell::new(warden_core::gate::MemoryStore::default());
        let context =
            Context { bundle: &bundle, compiled: &compiled, defaults: &suite.defaults, keys: &keys, store: &store };
        let mut probes = Vec::new();
        for (index, case) in suite.cases.iter().enumerate() {
            let run = context.run(index, case).unwrap_or_else(|e| panic!("{cases_file}: {}: {e}", case.name));
            assert!(case.expect.met_by(&run).unwrap(), "{cases_file}: {}: the core misses its expectation", case.name);
            let (Some(request), false) = (run.request, run.identity_stated) else {
                skipped += 1;
                continue;
            };
            let record = run.record.unwrap_or_else(|| panic!("{}: the core wrote no record", case.name));
            probes.push(Probe {
                label: case.name.clone(),
                environment: run.environment,
                now: run.now,
                request,
                core: answer(&record, run.status),
                listed_before: case.listed_before.clone(),
            });
        }
        scenarios.push(Scenario { name: cases_file, bundle: bundle_bytes, probes });
    }
    (scenarios, skipped)
}

/// The host stream for a recorded request (as `warden-gateway replay` builds it).
fn http_request(r: &RecordedRequest) -> HttpRequest {
    let mut request = HttpRequest::new(&r.method, &r.path).authority(r.authority().unwrap());
    request.headers = r.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")).cloned().collect();
    request.body = r.body_bytes().unwrap();
    if let Some(san) = &r.peer_uri_san {
        request.tls = Some(TlsInfo::mtls_with_uri_san(san.clone()));
    }
    request
}

/// warden.wasm with `bundle` inline, for `environment`, its clock at `now`.
fn plugin(bundle: &[u8], environment: &str, now: i64) -> (Plugin, Clock) {
    let dir = examples();
    let key = SigningKey::from_jwk(&read_json(&dir.join(AUTHORITY_KEY))).unwrap();
    let authority = read_json_bytes(bundle)["authority"].as_str().unwrap().to_string();
    let config = json!({
        "environment": environment,
        "authority": authority,
        "bundle_keys": read_json(&dir.join(AUTHORITY_JWKS)),
        "inline_bundle": envelope::sign(bundle, &key),
    });
    let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap()));
    let p =
        Plugin::start(&support::warden_module(), PluginConfig::new(config.to_string()).workers(1).clock(clock.clone()))
            .unwrap_or_else(|e| panic!("plugin did not start: {e}; logs: {:#?}", e.logs()));
    (p, clock)
}

fn read_json_bytes(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Runs every probe of a scenario through warden.wasm; returns the disagreements.
fn run_in_wasm(s: &Scenario) -> Vec<String> {
    let mut plugins: BTreeMap<String, (Plugin, Clock)> = BTreeMap::new();
    let mut upstream =
        CannedUpstream(UpstreamResponse::ok(&b"{\"ok\":true}"[..]).header("content-type", "application/json"));
    let mut differences = Vec::new();
    for probe in &s.probes {
        let (p, clock) = plugins
            .entry(probe.environment.clone())
            .or_insert_with(|| plugin(&s.bundle, &probe.environment, probe.now));
        clock.set(UNIX_EPOCH + Duration::from_secs(u64::try_from(probe.now).unwrap()));
        let mut own = None;
        let p = match &probe.listed_before {
            None => p,
            // What this VM was listed stays in its memory: a VM of its own, as the core runs the case alone.
            Some(tools) => {
                let (p, _) = own.insert(plugin(&s.bundle, &probe.environment, probe.now));
                let (list, answer) = listing_before(&probe.request, tools);
                let mut listing =
                    CannedUpstream(UpstreamResponse::ok(answer).header("content-type", "application/json"));
                let x = p.send_round_robin(http_request(&list), &mut listing);
                assert_eq!(x.status, Some(200), "{}: {}: the listing first: {:#?}", s.name, probe.label, x.logs);
                p
            }
        };
        let x = p.send_round_robin(http_request(&probe.request), &mut upstream);
        let record = x
            .filter_state_str(DECISION_STATE)
            .unwrap_or_else(|| panic!("{}: {}: warden.wasm wrote no record; logs {:#?}", s.name, probe.label, x.logs));
        let wasm = answer(&record, x.status.unwrap_or(0));
        if wasm != probe.core {
            differences.push(format!("{}: {}:\n  core: {:?}\n  wasm: {:?}", s.name, probe.label, probe.core, wasm));
        }
    }
    differences
}

#[test]
fn every_example_case_gets_the_same_answer_from_the_core_and_from_warden_wasm() {
    let (scenarios, skipped) = example_scenarios();
    let compared: usize = scenarios.iter().map(|s| s.probes.len()).sum();
    // The suites hold more than 45 request cases with tokens: a run that compares fewer lost some.
    assert!(compared >= 45, "only {compared} cases compared ({skipped} without a request carrying tokens)");
    let differences: Vec<String> = scenarios.iter().flat_map(run_in_wasm).collect();
    assert!(differences.is_empty(), "{} of {compared} cases differ:\n{}", differences.len(), differences.join("\n"));
    // Both sides were asked about every kind of answer the suites hold.
    let reasons: std::collections::BTreeSet<&str> =
        scenarios.iter().flat_map(|s| s.probes.iter().map(|p| p.core.reason.as_str())).collect();
    for r in [
        "allowed_by_rule",
        "allowed_by_approval",
        "step_up_required",
        "invalid_arguments",
        "mcp_lifecycle",
        "tool_definition_changed",
    ] {
        assert!(reasons.contains(r), "no case with reason {r}: {reasons:?}");
    }
}
